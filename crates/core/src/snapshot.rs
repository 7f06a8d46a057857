//! `GetSnapshot`: clones each shard's persistent map under a short lock ([`take`]), then streams
//! the state out without holding any lock ([`stream`]), translated when the call names a
//! translator. Packing the entries into wire-sized chunks is the gRPC layer's job.

use std::{collections::HashMap, ops::Bound, sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    buffer::Weighed,
    error::Error,
    filter::{Filter, KeyFilter},
    record::{Output, PartitionOffset, Record},
    subscribe::start::{beyond_end, WATERMARK_WAIT},
    translate::Translation,
    view::{Shard, StateAt, StateMap, TopicView, View},
    watermarks::{Answer, WatermarkCache},
};

/// Waits until the view has caught up, at most `wait`.
pub async fn wait_ready(view: &View, wait: Duration) -> Result<(), Error> {
    let mut ready = view.ready_watch();
    let waited = tokio::time::timeout(wait, async { ready.wait_for(|r| *r).await.is_ok() }).await;
    match waited {
        Ok(true) => Ok(()),
        _ => Err(Error::NotReady { percent: view.load_percent() }),
    }
}

/// The state of some topics and the offsets it is exact at (rule 3).
pub struct Snapshot {
    /// Every partition of every requested topic, empty ones included (rule 1).
    pub offsets: Vec<PartitionOffset>,
    states: Vec<StateMap>,
}

/// Takes the snapshot of `topics`: O(1) per partition (the maps are persistent). With sharding,
/// of the partitions held here (the offsets list which); UNAVAILABLE (view still loading) while
/// one of them has not loaded yet (one assigned to this replica after it was ready: without
/// sharding every shard has loaded once the view is ready).
pub fn take(view: &View, topics: &[Arc<TopicView>]) -> Result<Snapshot, Error> {
    let mut offsets = Vec::new();
    let mut states = Vec::new();
    for topic in topics {
        for shard in topic.shards() {
            if !shard.is_loaded() {
                return Err(Error::NotReady { percent: view.load_percent() });
            }
            let (map, next) = shard.snapshot();
            offsets.push(shard.at(next));
            states.push(map);
        }
    }
    Ok(Snapshot { offsets, states })
}

/// Takes the snapshot of `topics` as of the offsets in `as_of` (partitions it does not name are
/// taken at the head, as [`take`] does): each partition's state exactly at its offset, rolled
/// back from the head through the tail buffer ([`Shard::state_at`]). An offset beyond the view's
/// head is waited for (at most `wait`) unless it is beyond Kafka's end (OUT_OF_RANGE, with every
/// partition's latest offset); one below the tail buffer's reach is OUT_OF_RANGE, with every
/// partition's earliest offset a snapshot can be taken at.
pub async fn take_as_of(
    view: &View,
    topics: &[Arc<TopicView>],
    as_of: &HashMap<(String, i32), i64>,
    watermarks: &WatermarkCache,
    wait: Duration,
) -> Result<Snapshot, Error> {
    let shards: Vec<(Arc<TopicView>, Arc<Shard>)> =
        topics.iter().flat_map(|t| t.shards().into_iter().map(move |s| (t.clone(), s))).collect();
    if shards.iter().any(|(_, s)| !s.is_loaded()) {
        return Err(Error::NotReady { percent: view.load_percent() });
    }
    let wanted = |s: &Shard| as_of.get(&(s.topic.to_string(), s.partition)).copied();
    if shards.iter().any(|(_, s)| wanted(s).is_some_and(|at| at > s.next_offset())) {
        let partitions: Vec<_> = shards.iter().map(|(_, s)| (s.topic.clone(), s.partition)).collect();
        let Answer { marks, stale } = watermarks.get(&partitions, WATERMARK_WAIT).await?;
        for ((_, s), m) in shards.iter().zip(&marks) {
            let Some(at) = wanted(s).filter(|&at| at > m.latest) else { continue };
            let latest = shards.iter().zip(&marks).map(|((_, s), m)| s.at(m.latest)).collect();
            return Err(beyond_end(s, at, m.latest, stale, latest));
        }
        // Within Kafka's end: the view gets there.
        let reached = tokio::time::timeout(wait, async {
            for (topic, shard) in &shards {
                let Some(at) = wanted(shard) else { continue };
                let mut changed = topic.watch();
                while shard.next_offset() < at {
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        if reached.is_err() {
            return Err(Error::NotReady { percent: view.load_percent() });
        }
    }
    let mut offsets = Vec::new();
    let mut states = Vec::new();
    for (_, shard) in &shards {
        let (map, at) = match wanted(shard) {
            None => shard.snapshot(),
            Some(at) => match shard.state_at(at) {
                StateAt::State(map) => (map, at),
                StateAt::Ahead { .. } => return Err(Error::NotReady { percent: view.load_percent() }),
                StateAt::Behind { tail_start } => {
                    return Err(Error::AsOfTooOld {
                        topic: shard.topic.to_string(),
                        partition: shard.partition,
                        requested: at,
                        earliest: tail_start,
                        earliest_offsets: shards.iter().map(|(_, s)| s.at(s.as_of_start())).collect(),
                    })
                }
            },
        };
        offsets.push(shard.at(at));
        states.push(map);
    }
    Ok(Snapshot { offsets, states })
}

/// What a snapshot stream carries after its offsets.
#[derive(Debug)]
pub enum SnapshotEvent {
    /// The next entries, each the last record of its key (translated: B's records of it).
    Entries(Vec<Output>),
    /// The snapshot is complete; `skipped` entries' translation returned an error (`skip_errors`).
    End { skipped: u64 },
}

/// The bytes an event holds while it waits for its client: its entries' sizes.
impl Weighed for Result<SnapshotEvent, Error> {
    fn weight(&self) -> usize {
        match self {
            Ok(SnapshotEvent::Entries(outputs)) => outputs.iter().map(Output::size).sum(),
            _ => 0,
        }
    }
}

pub type EventSender = crate::buffer::Sender<Result<SnapshotEvent, Error>>;

/// Streams the entries of `snapshot` that `filter` selects into `tx`, in events of about
/// `event_bytes` of record data. Ends with [`SnapshotEvent::End`], or an error (a translator's);
/// stops early when the receiver is gone.
pub async fn stream(
    snapshot: Snapshot,
    filter: Filter,
    translation: Option<Translation>,
    event_bytes: usize,
    tx: EventSender,
) {
    if let Err(Some(e)) = stream_entries(&snapshot.states, &filter, translation.as_ref(), event_bytes, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

/// `Err(None)`: the receiver is gone; `Err(Some(e))`: the snapshot failed.
async fn stream_entries(
    states: &[StateMap],
    filter: &Filter,
    translation: Option<&Translation>,
    event_bytes: usize,
    tx: &EventSender,
) -> Result<(), Option<Error>> {
    let batch_records = translation.map_or(usize::MAX, |t| t.batch_records.max(1));
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_bytes = 0;
    let mut skipped = 0;
    for state in states {
        // A key whose latest record does not meet the record filter is not in the selection
        // (`entries` already keeps only the keys the key filter matches).
        let selected = entries(state, &filter.keys).filter(|r| filter.records.matches(r.value(), r.headers()));
        for record in selected {
            pending_bytes += record.size();
            pending.push(record.clone());
            if pending.len() >= batch_records || pending_bytes >= event_bytes {
                skipped += flush(&mut pending, translation, tx).await?;
                pending_bytes = 0;
            }
        }
    }
    skipped += flush(&mut pending, translation, tx).await?;
    tx.send(Ok(SnapshotEvent::End { skipped })).await.map_err(|_| None)
}

/// Sends the pending records (translated), returning how many were skipped.
async fn flush(
    pending: &mut Vec<Record>,
    translation: Option<&Translation>,
    tx: &EventSender,
) -> Result<u64, Option<Error>> {
    if pending.is_empty() {
        return Ok(0);
    }
    let records = std::mem::take(pending);
    let (outputs, skipped) = match translation {
        None => (records.into_iter().map(Output::untranslated).collect(), 0),
        Some(t) => {
            let mut translated = t.translate(records).await.map_err(Some)?;
            // An output with a null value is a tombstone in B's model: not state.
            translated.outputs.retain(|o| o.value().is_some());
            (translated.outputs, translated.skipped)
        }
    };
    if !outputs.is_empty() {
        tx.send(Ok(SnapshotEvent::Entries(outputs))).await.map_err(|_| None)?;
    }
    Ok(skipped)
}

/// The records of `map` that match `filter`, each once, in key order per prefix.
pub fn entries<'a>(map: &'a StateMap, filter: &'a KeyFilter) -> Box<dyn Iterator<Item = &'a Record> + Send + 'a> {
    if filter.is_empty() {
        return Box::new(map.iter().map(|k| &k.0));
    }
    // Drop prefixes covered by a shorter one, and exact keys covered by a prefix, so nothing is
    // listed twice.
    let mut prefixes: Vec<&Bytes> = filter.prefixes().iter().collect();
    prefixes.sort();
    prefixes.dedup();
    let mut kept: Vec<&Bytes> = Vec::new();
    for p in prefixes {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    let exact: Vec<&Record> = filter
        .exact()
        .iter()
        .filter(|k| !kept.iter().any(|p| k.starts_with(p)))
        .filter_map(|k| map.get(k.as_ref()))
        .map(|k| &k.0)
        .collect();
    let by_prefix = kept.into_iter().flat_map(move |p| {
        map.range::<_, [u8]>((Bound::Included(p.as_ref()), Bound::Unbounded))
            .take_while(move |k| k.key().starts_with(p))
            .map(|k| &k.0)
    });
    Box::new(exact.into_iter().chain(by_prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        error::TranslatorFailure,
        record::Payload,
        translate::{Outcome, Translate},
        view::{Keyed, Shard},
        Limits,
    };

    fn record(key: &str, offset: i64) -> Record {
        Record::new("t".into(), 0, offset, 0, Some(key.as_bytes()), Some(&[b'x'; 10]), &[])
    }

    #[test]
    fn overlapping_filters_list_each_key_once() {
        let mut map = StateMap::new();
        for k in ["a", "ab", "abc", "b", "ba"] {
            map.insert(Keyed(record(k, 0)));
        }
        let filter = KeyFilter::new(
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"b"), Bytes::from_static(b"zz")],
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"a")],
            "f",
        )
        .unwrap();
        let mut keys: Vec<_> = entries(&map, &filter).map(|r| r.key_bytes().unwrap()).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"ab"),
                Bytes::from_static(b"abc"),
                Bytes::from_static(b"b")
            ]
        );
    }

    /// Tombstones every record whose key is "gone".
    struct DropGone;

    impl Translate for DropGone {
        fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
            Ok(batch
                .iter()
                .map(|r| {
                    let value = (r.key() != Some(b"gone")).then(|| Bytes::from_static(b"B"));
                    Outcome::Ok(vec![Payload { key: r.key_bytes(), value, headers: vec![] }])
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn streams_every_entry_then_the_end_and_drops_translated_tombstones() {
        let view = View::new(&["t".to_string()]);
        let topic = view.topic("t").unwrap();
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        topic.add_shard(shard.clone());
        for (offset, key) in ["a", "gone", "c", "d"].iter().enumerate() {
            shard.apply(record(key, offset as i64), &Limits::default());
        }
        let snapshot = take(&view, std::slice::from_ref(&topic)).unwrap();
        assert_eq!(snapshot.offsets, vec![PartitionOffset::new("t", 0, 4)]);
        // Sharding: a partition held elsewhere is not in it; one still loading makes it wait.
        topic.extend_partitions(3);
        assert_eq!(
            take(&view, std::slice::from_ref(&topic)).unwrap().offsets,
            snapshot.offsets,
            "partitions held here"
        );
        topic.hold(Arc::new(Shard::new("t".into(), 2, 0, 5)));
        assert!(matches!(take(&view, std::slice::from_ref(&topic)), Err(Error::NotReady { .. })));
        topic.release(2);
        let translation = Translation {
            name: "drop".into(),
            digest: "d".into(),
            translator: Arc::new(DropGone),
            skip_errors: false,
            batch_records: 3,
        };
        let (tx, mut rx) = crate::buffer::channel(4, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
        tokio::spawn(stream(snapshot, Filter::default(), Some(translation), 1 << 20, tx));
        let mut keys = Vec::new();
        loop {
            match rx.recv().await.expect("an End event").unwrap() {
                SnapshotEvent::Entries(outputs) => {
                    keys.extend(outputs.iter().map(|o| o.payload().unwrap().key.clone().unwrap()))
                }
                SnapshotEvent::End { skipped } => {
                    assert_eq!(skipped, 0);
                    break;
                }
            }
        }
        assert_eq!(keys, vec![Bytes::from_static(b"a"), Bytes::from_static(b"c"), Bytes::from_static(b"d")]);
    }

    #[test]
    fn an_event_weighs_its_entries() {
        let entries: Result<SnapshotEvent, Error> =
            Ok(SnapshotEvent::Entries(vec![Output::untranslated(record("k", 0)); 3]));
        assert_eq!(entries.weight(), 3 * (1 + 10 + crate::record::RECORD_OVERHEAD));
        assert_eq!(Ok(SnapshotEvent::End { skipped: 0 }).weight(), 0);
    }
}
