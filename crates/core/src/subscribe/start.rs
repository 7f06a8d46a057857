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
    view::{TopicView, View},
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
        if topic.shard(po.partition).is_none() {
            return Err(Error::UnknownPartition {
                topic: po.topic.clone(),
                partition: po.partition,
                partitions: topic.partitions(),
            });
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
                Some(p) if p > m.latest => {
                    if let Some(age) = stale {
                        return Err(Error::kafka(format!(
                            "offset {p} of {}/{} is beyond the end known {age:.0?} ago ({}); Kafka does not answer, so it cannot be checked; retry shortly",
                            shard.topic, shard.partition, m.latest
                        )));
                    }
                    return Err(Error::BeyondEnd {
                        topic: shard.topic.to_string(),
                        partition: shard.partition,
                        requested: p,
                        latest: m.latest,
                        latest_offsets: all(|m| m.latest),
                    });
                }
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
