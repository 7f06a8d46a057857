//! What the gateway asks Kafka about partitions and offsets (partition counts, watermarks, a
//! consumer's positions) and the partition lists it assigns: blocking requests and conversions
//! between the core's positions and rdkafka's partition lists, shared by ingest, the catch-up
//! readers and the subscription positions.

use std::time::Duration;

use rdkafka::{consumer::Consumer, Offset, TopicPartitionList};
use tributary_core::{
    source::{Partition, Watermarks},
    Error, PartitionOffset,
};

use crate::settings::kafka_error;

/// Timeout of one metadata, watermark, commit, offset fetch or group request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Number of partitions of `topic`, or `None` if Kafka does not know the topic.
pub(crate) fn partition_count<C: Consumer>(client: &C, topic: &str) -> Result<Option<i32>, Error> {
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(kafka_error)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

/// The earliest (`Offset::Beginning`) or latest (`Offset::End`: the high watermark, or the last
/// stable offset under `read_committed`) offset of every partition, in one ListOffsets request per
/// broker. Blocking.
fn list_offsets<C: Consumer>(client: &C, partitions: &[Partition], which: Offset) -> Result<Vec<i64>, Error> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, which).map_err(kafka_error)?;
    }
    let found = client.offsets_for_times(list, REQUEST_TIMEOUT).map_err(kafka_error)?;
    partitions
        .iter()
        .map(|(topic, partition)| {
            let missing = || Error::kafka(format!("Kafka returned no {which:?} offset for {topic}/{partition}"));
            let element = found.find_partition(topic, *partition).ok_or_else(missing)?;
            element.error().map_err(kafka_error)?;
            match element.offset() {
                Offset::Offset(offset) => Ok(offset),
                _ => Err(missing()),
            }
        })
        .collect()
}

/// Watermarks of `partitions`, in order: two requests for all of them (the earliest offsets, then
/// the latest), where asking partition by partition took two round trips each. Blocking.
pub(crate) fn watermarks<C: Consumer>(client: &C, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
    // librdkafka refuses an empty request (InvalidArgument); a sharded replica may hold nothing.
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let earliest = list_offsets(client, partitions, Offset::Beginning)?;
    let latest = list_offsets(client, partitions, Offset::End)?;
    Ok(earliest.into_iter().zip(latest).map(|(earliest, latest)| Watermarks { earliest, latest }).collect())
}

/// A partition list assigning each partition at its offset.
pub(crate) fn assignment(positions: &[PartitionOffset]) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    for p in positions {
        list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset)).map_err(kafka_error)?;
    }
    Ok(list)
}

/// The partitions of `list` that are at an offset; the others (no committed offset, no position
/// yet) are left out.
pub(crate) fn offsets_of(list: &TopicPartitionList) -> Vec<PartitionOffset> {
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(PartitionOffset::new(e.topic(), e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The consumer's current position per partition (the next offset it will return), which moves
/// past transaction markers that no record stands for.
pub(crate) fn positions<C: Consumer>(consumer: &C) -> Vec<PartitionOffset> {
    consumer.position().map(|list| offsets_of(&list)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::consumer::BaseConsumer;

    use super::*;
    use crate::{
        settings::{consumer_config, metadata_tuning},
        testing,
    };

    #[test]
    fn an_assignment_lists_every_partition_at_its_offset_and_reads_back_the_same() {
        let positions =
            vec![PartitionOffset::new("a", 0, 0), PartitionOffset::new("a", 2, 17), PartitionOffset::new("b", 1, 5)];
        let list = assignment(&positions).unwrap();
        assert_eq!(list.count(), 3);
        assert_eq!(list.find_partition("a", 2).map(|e| e.offset()), Some(Offset::Offset(17)));
        assert_eq!(offsets_of(&list), positions);
    }

    #[test]
    fn partitions_without_an_offset_are_left_out() {
        let mut list = assignment(&[PartitionOffset::new("a", 0, 3)]).unwrap();
        list.add_partition("a", 1); // no offset (Offset::Invalid), as a partition nothing was committed for
        list.add_partition_offset("a", 2, Offset::End).unwrap();
        assert_eq!(offsets_of(&list), vec![PartitionOffset::new("a", 0, 3)]);
    }

    fn client() -> BaseConsumer {
        consumer_config(&testing::config(), "metadata", &metadata_tuning()).create().unwrap()
    }

    #[test]
    fn partition_counts_of_a_topic_and_of_none() {
        let topic = testing::topic("count", 3);
        let client = client();
        assert_eq!(partition_count(&client, &topic).unwrap(), Some(3));
        assert_eq!(partition_count(&client, &testing::unique("missing")).unwrap(), None);
    }

    #[test]
    fn watermarks_of_an_empty_a_written_and_a_trimmed_partition_in_the_order_asked() {
        let topic = testing::topic("marks", 3);
        testing::write_n(&topic, 1, 5);
        testing::write_n(&topic, 2, 8);
        testing::delete_below(&topic, 2, 3);
        let partitions: Vec<Partition> = [2, 0, 1].into_iter().map(|p| (Arc::from(topic.as_str()), p)).collect();
        let marks = watermarks(&client(), &partitions).unwrap();
        let expected = [(3, 8), (0, 0), (0, 5)].map(|(earliest, latest)| Watermarks { earliest, latest });
        assert_eq!(marks, expected);
    }

    #[test]
    fn watermarks_of_no_partition_are_none() {
        assert_eq!(watermarks(&client(), &[]).unwrap(), Vec::new());
    }

    #[test]
    fn watermarks_of_a_partition_kafka_does_not_have_are_an_error() {
        let topic = testing::topic("nopartition", 1);
        let err = watermarks(&client(), &[(Arc::from(topic.as_str()), 7)]).unwrap_err();
        assert!(matches!(err, Error::Kafka { .. }), "{err:?}");
    }
}
