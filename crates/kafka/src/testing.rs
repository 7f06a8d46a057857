//! What the crate's tests against the real broker share: its address (`TRIBUTARY_TEST_BOOTSTRAP`),
//! topics no other test uses, records written to a partition and deleted below an offset. Not
//! tributary-testkit: that depends on the server, which depends on this crate.

use std::{
    future::Future,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
    Offset, TopicPartitionList,
};

use crate::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's configuration for the test broker.
pub(crate) fn config() -> KafkaConfig {
    let bootstrap_servers = std::env::var("TRIBUTARY_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    KafkaConfig { bootstrap_servers, ..KafkaConfig::default() }
}

/// `prefix` made unique per process and call, for topics and consumer groups.
pub(crate) fn unique(prefix: &str) -> String {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("kafka-{prefix}-{}-{}-{}", std::process::id(), now.as_millis(), CALLS.fetch_add(1, Ordering::Relaxed))
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own: helpers are called
/// from plain tests and from inside the runtime of async ones alike.
fn block_on<F: Future<Output: Send> + Send>(f: F) -> F::Output {
    let run = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f);
    std::thread::scope(|s| s.spawn(run).join().expect("the helper's thread"))
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", config().bootstrap_servers).create().expect("an admin client")
}

/// A new topic with `partitions` partitions, named after `prefix`. Blocking.
pub(crate) fn topic(prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let created =
        block_on(admin().create_topics([&NewTopic::new(&name, partitions, TopicReplication::Fixed(1))], &options))
            .unwrap_or_else(|e| panic!("cannot reach Kafka at {} ({e})", config().bootstrap_servers));
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    name
}

/// A record to write: key, value, headers and create time in ms (0: now, as librdkafka takes it).
pub(crate) type Write<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [(&'a str, Option<&'a [u8]>)], i64);

/// Writes `records` to `topic`/`partition`, in order, and waits until Kafka has them. Blocking.
pub(crate) fn write(topic: &str, partition: i32, records: &[Write<'_>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", config().bootstrap_servers)
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    for (key, value, headers, timestamp) in records {
        let headers =
            headers.iter().fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: *value }));
        let mut record =
            BaseRecord::<[u8], [u8]>::to(topic).partition(partition).timestamp(*timestamp).headers(headers);
        record.key = *key;
        record.payload = *value;
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    producer.flush(TIMEOUT).expect("written");
}

/// Writes `n` records `k<i>` = `v<i>` to `topic`/`partition`. Blocking.
pub(crate) fn write_n(topic: &str, partition: i32, n: usize) {
    let kvs: Vec<_> = (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let records: Vec<Write<'_>> =
        kvs.iter().map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes()), &[][..], 0)).collect();
    write(topic, partition, &records);
}

/// Deletes every record of `topic`/`partition` below `offset` (Kafka's DeleteRecords). Blocking.
pub(crate) fn delete_below(topic: &str, partition: i32, offset: i64) {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("a partition list");
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let deleted = block_on(admin().delete_records(&list, &options)).expect("records deleted");
    for e in deleted.elements() {
        e.error().unwrap_or_else(|e| panic!("delete records of {topic}/{partition}: {e}"));
    }
}

/// A decoder standing in for a schema registry: `ok:<x>` decodes to `{"v":"<x>"}`, anything
/// else is a mismatch until `healed` (a schema registered late), then decodes to
/// `{"v":"healed"}`.
pub(crate) struct StubDecode {
    pub on_error: tributary_core::decode::OnError,
    pub healed: std::sync::atomic::AtomicBool,
}

impl StubDecode {
    pub(crate) fn new(on_error: tributary_core::decode::OnError) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { on_error, healed: Default::default() })
    }
}

impl tributary_core::decode::Decode for StubDecode {
    fn on_error(&self, _topic: &str) -> Option<tributary_core::decode::OnError> {
        Some(self.on_error)
    }

    fn decode(&self, _topic: &str, value: &[u8]) -> Result<Vec<u8>, tributary_core::decode::DecodeError> {
        use tributary_core::decode::{DecodeError, DecodeFailure};
        match value.strip_prefix(b"ok:") {
            Some(x) => Ok(format!("{{\"v\":\"{}\"}}", String::from_utf8_lossy(x)).into_bytes()),
            None if self.healed.load(Ordering::SeqCst) => Ok(b"{\"v\":\"healed\"}".to_vec()),
            None => Err(DecodeError::new(DecodeFailure::Mismatch, "not ok")),
        }
    }
}
