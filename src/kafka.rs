//! The one module that knows rdkafka: client settings, metadata and watermarks.

use std::time::Duration;

use rdkafka::{
    config::{ClientConfig, RDKafkaLogLevel},
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaError,
    Offset, TopicPartitionList,
};

use crate::{config::KafkaConfig, error::Error};

/// Timeout of one metadata or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings shared by every consumer of the gateway, with the passthrough applied last.
fn consumer_config(kafka: &KafkaConfig, purpose: &str, prefetch_kbytes: Option<usize>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", format!("tributary-{purpose}"))
        // Positions are assigned explicitly; no group coordination, no commits. librdkafka
        // still wants a group id for some calls.
        .set("group.id", format!("tributary-{purpose}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only committed data is A's state: aborted transactions are never delivered.
        .set("isolation.level", "read_committed")
        // Never clamp silently (rule 7): an out-of-range position is an error we report.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(kbytes) = prefetch_kbytes {
        config
            .set("queued.max.messages.kbytes", kbytes.to_string())
            .set("fetch.max.bytes", (kbytes * 1024).max(1 << 20).to_string())
            .set("max.partition.fetch.bytes", (kbytes * 1024).clamp(64 << 10, 1 << 20).to_string())
            // With a small queue the threshold is hit all the time; librdkafka's default 1 s
            // backoff would then throttle a catch-up reader to a few MB/s.
            .set("fetch.queue.backoff.ms", "5");
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// The gateway's ingest consumer (one per gateway).
pub fn ingest_consumer(kafka: &KafkaConfig) -> Result<StreamConsumer, Error> {
    consumer_config(kafka, "ingest", None).create().map_err(kafka_error)
}

/// A catch-up reader with a bounded prefetch.
pub fn catchup_consumer(kafka: &KafkaConfig, prefetch_kbytes: usize) -> Result<StreamConsumer, Error> {
    consumer_config(kafka, "catchup", Some(prefetch_kbytes)).create().map_err(kafka_error)
}

/// A consumer used only for metadata and watermark requests.
pub fn metadata_client(kafka: &KafkaConfig) -> Result<BaseConsumer, Error> {
    consumer_config(kafka, "metadata", Some(64)).create().map_err(kafka_error)
}

pub fn kafka_error(error: KafkaError) -> Error {
    Error::Kafka { message: error.to_string(), resume: Vec::new() }
}

/// Number of partitions of `topic`, or `None` if Kafka does not know the topic.
pub fn partition_count<C: Consumer>(client: &C, topic: &str) -> Result<Option<i32>, Error> {
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(kafka_error)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

/// Earliest retained offset and latest offset (high watermark) of one partition.
pub fn watermarks<C: Consumer>(client: &C, topic: &str, partition: i32) -> Result<(i64, i64), Error> {
    client.fetch_watermarks(topic, partition, REQUEST_TIMEOUT).map_err(kafka_error)
}

/// A partition list assigning each `(topic, partition)` at `offset`.
pub fn assignment<'a>(positions: impl IntoIterator<Item = (&'a str, i32, i64)>) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        list.add_partition_offset(topic, partition, Offset::Offset(offset)).map_err(kafka_error)?;
    }
    Ok(list)
}

/// The consumer's current position per partition (the next offset it will return), which moves
/// past transaction markers that no record stands for.
pub fn positions<C: Consumer>(consumer: &C) -> Vec<(String, i32, i64)> {
    let Ok(list) = consumer.position() else { return Vec::new() };
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
            _ => None,
        })
        .collect()
}
