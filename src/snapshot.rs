//! `GetSnapshot`: clones each shard's persistent map under a short lock, then streams the state in
//! chunks bounded in bytes, without holding any lock.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::Status;

use crate::{
    error::Error,
    filter::KeyFilter,
    pb,
    registry::{self, Translation},
    view::{Rec, StateMap, View},
};

/// A validated snapshot request.
#[derive(Debug)]
pub struct SnapshotRequest {
    pub topics: Vec<String>,
    pub filter: KeyFilter,
    pub max_chunk_bytes: usize,
}

/// Waits until the view has caught up, at most `wait`.
pub async fn wait_ready(view: &View, wait: Duration) -> Result<(), Error> {
    let mut ready = view.ready_watch();
    let waited = tokio::time::timeout(wait, async { ready.wait_for(|r| *r).await.is_ok() }).await;
    match waited {
        Ok(true) => Ok(()),
        _ => Err(Error::NotReady { percent: view.load_percent() }),
    }
}

/// Takes the snapshot and spawns the task that streams it into a channel of `buffer` chunks.
pub fn start(
    view: &View,
    request: SnapshotRequest,
    translation: Option<Translation>,
    buffer: usize,
    permit: OwnedSemaphorePermit,
) -> Result<mpsc::Receiver<Result<pb::SnapshotChunk, Status>>, Error> {
    let mut offsets = Vec::new();
    let mut states = Vec::new();
    for name in &request.topics {
        let topic = view.topic(name)?;
        for shard in topic.shards() {
            let (map, next) = shard.snapshot();
            offsets.push(pb::PartitionOffset { topic: name.clone(), partition: shard.partition, offset: next });
            states.push(map);
        }
    }
    let (tx, rx) = mpsc::channel(buffer);
    tokio::spawn(async move {
        let _permit = permit;
        let chunker = Chunker::new(request.max_chunk_bytes, offsets);
        if let Err(Some(e)) = stream(&tx, &states, &request, translation.as_ref(), chunker).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(rx)
}

type ChunkSender = mpsc::Sender<Result<pb::SnapshotChunk, Status>>;

/// Streams the cloned states in chunks. `Err(None)`: the client left; `Err(Some(e))`: the
/// snapshot failed (a translator) and the client is to be told.
async fn stream(
    tx: &ChunkSender,
    states: &[StateMap],
    request: &SnapshotRequest,
    translation: Option<&Translation>,
    mut chunker: Chunker,
) -> Result<(), Option<Error>> {
    let mut pending: Vec<Arc<Rec>> = Vec::new();
    let mut skipped = 0u64;
    for state in states {
        for rec in entries(state, &request.filter) {
            let chunks = match translation {
                None => chunker.push(to_entry(rec)).into_iter().collect(),
                Some(t) => {
                    pending.push(rec.clone());
                    if pending.len() < t.batch_records {
                        continue;
                    }
                    let batch = std::mem::take(&mut pending);
                    translate_entries(t, batch, &mut chunker, &mut skipped).await.map_err(Some)?
                }
            };
            send_all(tx, chunks).await?;
        }
    }
    if let Some(t) = translation {
        let chunks = translate_entries(t, pending, &mut chunker, &mut skipped).await.map_err(Some)?;
        send_all(tx, chunks).await?;
    }
    let mut last = chunker.finish();
    last.skipped_records = skipped;
    send_all(tx, vec![last]).await
}

async fn send_all(tx: &ChunkSender, chunks: Vec<pb::SnapshotChunk>) -> Result<(), Option<Error>> {
    for chunk in chunks {
        tx.send(Ok(chunk)).await.map_err(|_| None)?;
    }
    Ok(())
}

/// Translates entries and packs B's entries into chunks. Outputs with a null value (a
/// tombstone in B's model) are not state, so they are left out of a snapshot.
async fn translate_entries(
    t: &Translation,
    recs: Vec<Arc<Rec>>,
    chunker: &mut Chunker,
    skipped: &mut u64,
) -> Result<Vec<pb::SnapshotChunk>, Error> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let translated = registry::translate(t, recs).await?;
    *skipped += translated.skipped;
    let mut full = Vec::new();
    for (rec, index, out) in translated.outputs {
        let Some(value) = out.value else { continue };
        let entry = pb::SnapshotEntry {
            topic: rec.topic.to_string(),
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
            key: out.key.map(Bytes::from).unwrap_or_default(),
            value: Bytes::from(value),
            headers: out
                .headers
                .into_iter()
                .map(|h| pb::Header { key: h.key, value: h.value.map(Bytes::from) })
                .collect(),
            output_index: index,
        };
        full.extend(chunker.push(entry));
    }
    Ok(full)
}

/// The records of `map` that match `filter`, each once, in key order per prefix.
fn entries<'a>(map: &'a StateMap, filter: &'a KeyFilter) -> Box<dyn Iterator<Item = &'a Arc<Rec>> + Send + 'a> {
    if filter.is_empty() {
        return Box::new(map.values());
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
    let exact: Vec<&Arc<Rec>> =
        filter.exact().iter().filter(|k| !kept.iter().any(|p| k.starts_with(p))).filter_map(|k| map.get(k)).collect();
    let by_prefix = kept
        .into_iter()
        .flat_map(move |p| map.range((*p).clone()..).take_while(move |(k, _)| k.starts_with(p)).map(|(_, v)| v));
    Box::new(exact.into_iter().chain(by_prefix))
}

pub fn to_entry(rec: &Rec) -> pb::SnapshotEntry {
    pb::SnapshotEntry {
        topic: rec.topic.to_string(),
        partition: rec.partition,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
        key: rec.key.clone().unwrap_or_default(),
        value: rec.value.clone().unwrap_or_default(),
        headers: rec.headers.iter().map(|(k, v)| pb::Header { key: k.clone(), value: v.clone() }).collect(),
        output_index: 0,
    }
}

/// Packs entries into chunks whose encoded size stays under the bound.
struct Chunker {
    max_bytes: usize,
    current: pb::SnapshotChunk,
    bytes: usize,
}

/// Bytes a repeated field adds around one element: tag plus length prefix (at most 5 bytes).
const FIELD_OVERHEAD: usize = 6;

impl Chunker {
    fn new(max_bytes: usize, offsets: Vec<pb::PartitionOffset>) -> Self {
        let current = pb::SnapshotChunk { offsets, ..Default::default() };
        let bytes = current.encoded_len();
        Self { max_bytes, current, bytes }
    }

    /// Adds an entry; returns the full chunk when the entry does not fit in the current one.
    fn push(&mut self, entry: pb::SnapshotEntry) -> Option<pb::SnapshotChunk> {
        let size = entry.encoded_len() + FIELD_OVERHEAD;
        let full = if !self.current.entries.is_empty() && self.bytes + size > self.max_bytes {
            let chunk = std::mem::take(&mut self.current);
            self.bytes = 0;
            Some(chunk)
        } else {
            None
        };
        self.bytes += size;
        self.current.entries.push(entry);
        full
    }

    fn finish(mut self) -> pb::SnapshotChunk {
        self.current.last = true;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, size: usize) -> Arc<Rec> {
        Arc::new(Rec {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::from(vec![b'x'; size])),
            headers: vec![],
        })
    }

    #[test]
    fn chunks_stay_under_the_bound() {
        let offsets = vec![pb::PartitionOffset { topic: "t".into(), partition: 0, offset: 9 }];
        let mut chunker = Chunker::new(1000, offsets);
        let mut chunks = Vec::new();
        for i in 0..100 {
            chunks.extend(chunker.push(to_entry(&rec(&i.to_string(), 90))));
        }
        chunks.push(chunker.finish());
        assert!(chunks.len() > 5);
        assert_eq!(chunks[0].offsets.len(), 1);
        assert!(chunks[1..].iter().all(|c| c.offsets.is_empty()));
        assert!(
            chunks.iter().all(|c| c.encoded_len() <= 1000),
            "{:?}",
            chunks.iter().map(|c| c.encoded_len()).collect::<Vec<_>>()
        );
        assert_eq!(chunks.iter().map(|c| c.entries.len()).sum::<usize>(), 100);
        assert!(chunks.last().unwrap().last);
    }

    #[test]
    fn an_oversized_entry_goes_alone() {
        let mut chunker = Chunker::new(100, vec![]);
        assert!(chunker.push(to_entry(&rec("a", 10))).is_none());
        let full = chunker.push(to_entry(&rec("b", 500))).unwrap();
        assert_eq!(full.entries.len(), 1);
        let full = chunker.push(to_entry(&rec("c", 10))).unwrap();
        assert_eq!(full.entries[0].key.as_ref(), b"b");
    }

    #[test]
    fn overlapping_filters_list_each_key_once() {
        let mut map = StateMap::new();
        for k in ["a", "ab", "abc", "b", "ba"] {
            map.insert(Bytes::copy_from_slice(k.as_bytes()), rec(k, 1));
        }
        let filter = KeyFilter::from_proto(
            Some(pb::KeyFilter {
                exact: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"b"), Bytes::from_static(b"zz")],
                prefixes: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"a")],
            }),
            "f",
        )
        .unwrap();
        let mut keys: Vec<_> = entries(&map, &filter).map(|r| r.key.clone().unwrap()).collect();
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
}
