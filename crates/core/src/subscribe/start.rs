//! Start positions: which partitions a subscription follows and the offset each one starts at.
//! Explicit offsets are checked against what Kafka retains only when they fall outside the view
//! (behind the tail buffer or beyond the view's head); partitions not listed start at their
//! earliest retained offset (rule 4). Too old and beyond the end are errors with every partition's
//! earliest or latest offsets in them, never clamped (rule 7).

use std::{collections::HashMap, sync::Arc};

use super::Cursor;
use crate::{
    error::Error,
    record::PartitionOffset,
    source::Watermarks,
    view::{Holding, Shard, TopicView, View},
    watermarks::{Answer, WatermarkCache},
};

/// How long a Subscribe waits for Kafka's watermarks before it uses the last known ones.
pub const WATERMARK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A checked request: the topics to follow and the offsets the client gave.
#[derive(Debug)]
pub struct Plan {
    pub topics: Vec<Arc<TopicView>>,
    explicit: HashMap<(String, i32), i64>,
}

/// Checks the requested topics and offsets; `topics` and `from_offsets` name the request's fields
/// in errors.
pub fn plan(view: &View, topics: &[String], from_offsets: &[PartitionOffset]) -> Result<Plan, Error> {
    plan_offsets(view, topics, from_offsets, "from_offsets")
}

/// [`plan`], with the offsets' field named `offsets_field` in errors.
pub fn plan_offsets(
    view: &View,
    topics: &[String],
    from_offsets: &[PartitionOffset],
    offsets_field: &str,
) -> Result<Plan, Error> {
    view.check_assigned()?;
    let mut followed = view.requested(topics, "topics")?;
    let mut explicit: HashMap<(String, i32), i64> = HashMap::new();
    for (i, po) in from_offsets.iter().enumerate() {
        let field = format!("{offsets_field}[{i}]");
        if po.topic.is_empty() {
            return Err(Error::invalid(format!("{field}.topic"), "topic name is empty"));
        }
        let topic = view.topic(&po.topic)?;
        if po.partition < 0 {
            return Err(Error::invalid(
                format!("{field}.partition"),
                format!("partition {} is negative", po.partition),
            ));
        }
        match topic.holding(po.partition) {
            // A loading partition is followed from where it is asked for: its records are
            // delivered as ingest reads them.
            Holding::Held(_) | Holding::Loading(_) => {}
            Holding::NotHeld => return Err(Error::not_held(po.topic.clone(), po.partition)),
            Holding::Unknown => {
                return Err(Error::UnknownPartition {
                    topic: po.topic.clone(),
                    partition: po.partition,
                    partitions: topic.partitions(),
                })
            }
        }
        if po.offset < 0 {
            return Err(Error::invalid(
                format!("{field}.offset"),
                format!("offset {} is negative; offsets name the next offset to read, from 0", po.offset),
            ));
        }
        if explicit.insert((po.topic.clone(), po.partition), po.offset).is_some() {
            return Err(Error::invalid(field, format!("{}/{} is listed twice", po.topic, po.partition)));
        }
        if !followed.iter().any(|t| *t.name == *po.topic) {
            followed.push(topic);
        }
    }
    if followed.is_empty() {
        return Err(Error::invalid("topics", "name at least one topic, in `topics` or in `from_offsets`"));
    }
    Ok(Plan { topics: followed, explicit })
}

impl Plan {
    /// The offsets the request named, by (topic, partition).
    pub fn offsets(&self) -> &HashMap<(String, i32), i64> {
        &self.explicit
    }

    /// Starts the cursors that name no offset at the last known earliest offsets, without asking
    /// Kafka, when every one of them is in its tail buffer (a small or recently trimmed topic):
    /// the records from there are in the view. The earliest offset only grows, and records Kafka
    /// deleted since the last refresh leave the tail at the next one. True when it did.
    fn start_in_tails(
        cursors: &mut [Cursor],
        to_check: &[(usize, Option<i64>)],
        known: Option<Vec<Watermarks>>,
    ) -> bool {
        let Some(marks) = known else { return false };
        let in_tail = |&(i, pos): &(usize, Option<i64>)| {
            let (shard, earliest) = (&cursors[i].shard, marks[i].earliest);
            pos.is_none() && earliest >= shard.tail_start() && earliest <= shard.next_offset()
        };
        if !to_check.iter().all(in_tail) {
            return false;
        }
        for &(i, _) in to_check {
            cursors[i].pos = marks[i].earliest;
        }
        true
    }

    /// A cursor per partition of every followed topic at its start position. Asks for
    /// watermarks only when a position falls outside the view (or the partition is not listed).
    ///
    /// While Kafka does not answer within [`WATERMARK_WAIT`], the last known watermarks decide:
    /// an offset below a known earliest is too old for sure (earliest offsets only grow); an
    /// offset above a known latest cannot be told from a newer one, so that call is UNAVAILABLE.
    pub async fn cursors(&self, watermarks: &WatermarkCache) -> Result<Vec<Cursor>, Error> {
        let mut cursors = Vec::new();
        let mut to_check = Vec::new();
        for topic in &self.topics {
            for shard in topic.shards() {
                let pos = self.explicit.get(&(topic.name.to_string(), shard.partition)).copied();
                if pos.is_none_or(|p| p < shard.tail_start() || p > shard.next_offset()) {
                    to_check.push((cursors.len(), pos));
                }
                cursors.push(Cursor::new(shard.clone(), pos.unwrap_or(0)));
            }
        }
        if to_check.is_empty() {
            return Ok(cursors);
        }
        // Every partition's watermarks, so that an error's details list the whole subscription.
        let partitions: Vec<_> = cursors.iter().map(|c| (c.shard.topic.clone(), c.shard.partition)).collect();
        if Self::start_in_tails(&mut cursors, &to_check, watermarks.known(&partitions)) {
            return Ok(cursors);
        }
        let Answer { marks, stale } = watermarks.get(&partitions, WATERMARK_WAIT).await?;
        let all = |pick: fn(&Watermarks) -> i64| -> Vec<PartitionOffset> {
            cursors.iter().zip(&marks).map(|(c, m)| c.shard.at(pick(m))).collect()
        };
        for &(i, pos) in &to_check {
            let (shard, m) = (&cursors[i].shard, marks[i]);
            match pos {
                Some(p) if p < m.earliest => {
                    return Err(Error::TooOld {
                        topic: shard.topic.to_string(),
                        partition: shard.partition,
                        requested: p,
                        earliest: m.earliest,
                        earliest_offsets: all(|m| m.earliest),
                    })
                }
                Some(p) if p > m.latest => return Err(beyond_end(shard, p, m.latest, stale, all(|m| m.latest))),
                _ => {}
            }
        }
        for (i, pos) in to_check {
            if pos.is_none() {
                cursors[i].pos = marks[i].earliest;
            }
        }
        Ok(cursors)
    }
}

/// The error for `requested`, beyond the `latest` offset of `shard` Kafka reported: OUT_OF_RANGE
/// with every partition's latest offset, or UNAVAILABLE when those offsets are `stale` (Kafka did
/// not answer, so a newer end cannot be ruled out).
pub(crate) fn beyond_end(
    shard: &Shard,
    requested: i64,
    latest: i64,
    stale: Option<std::time::Duration>,
    latest_offsets: Vec<PartitionOffset>,
) -> Error {
    if let Some(age) = stale {
        return Error::kafka(format!(
            "offset {requested} of {}/{} is beyond the end known {age:.0?} ago ({latest}); Kafka does not answer, so it cannot be checked; retry shortly",
            shard.topic, shard.partition
        ));
    }
    Error::BeyondEnd { topic: shard.topic.to_string(), partition: shard.partition, requested, latest, latest_offsets }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicI64, AtomicUsize, Ordering},
        time::Duration,
    };

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{
        limits::Limits,
        record::Record,
        source::{CatchUpReader, Log, Partition},
        view::Shard,
    };

    /// A log that counts watermark requests; its earliest offset can be moved.
    #[derive(Default)]
    struct Counted {
        requests: AtomicUsize,
        earliest: AtomicI64,
    }

    impl Log for Counted {
        fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let earliest = self.earliest.load(Ordering::SeqCst);
            Ok(partitions.iter().map(|_| Watermarks { earliest, latest: 10 }).collect())
        }

        fn catch_up(
            &self,
            _: usize,
            _: Option<crate::source::Encoding>,
            _: tokio::sync::OwnedSemaphorePermit,
        ) -> Result<Box<dyn CatchUpReader>, Error> {
            Err(Error::Internal("start tests read no records".into()))
        }
    }

    #[tokio::test]
    async fn a_subscription_from_the_start_of_a_topic_held_in_the_tail_asks_kafka_nothing() {
        let view = Arc::new(View::new(&["t".to_string()]));
        let shard = Arc::new(Shard::new("t".into(), 0, 5, 10));
        for offset in 5..10 {
            shard.apply(Record::new("t".into(), 0, offset, 0, Some(b"k"), Some(b"v"), &[]), &Limits::default());
        }
        view.topic("t").unwrap().add_shard(shard);
        view.set_assigned();
        let log = Arc::new(Counted { earliest: 5.into(), ..Default::default() });
        let cache = WatermarkCache::new(log.clone(), view.clone());
        let stop = CancellationToken::new();
        tokio::spawn(cache.clone().run(Duration::from_secs(3600), stop.clone()));
        let topics = ["t".to_string()];

        // Nothing known yet: Kafka is asked.
        let cursors = plan(&view, &topics, &[]).unwrap().cursors(&cache).await.unwrap();
        assert_eq!((cursors[0].pos, log.requests.load(Ordering::SeqCst)), (5, 1));
        // Known, and the tail starts there: no request.
        let cursors = plan(&view, &topics, &[]).unwrap().cursors(&cache).await.unwrap();
        assert_eq!((cursors[0].pos, log.requests.load(Ordering::SeqCst)), (5, 1));
        // The last known earliest offset is before the tail: only Kafka can say where to start.
        log.earliest.store(3, Ordering::SeqCst);
        cache.get(&[("t".into(), 0)], Duration::from_secs(1)).await.unwrap();
        let cursors = plan(&view, &topics, &[]).unwrap().cursors(&cache).await.unwrap();
        assert_eq!((cursors[0].pos, log.requests.load(Ordering::SeqCst)), (3, 3));
        stop.cancel();
    }
}
