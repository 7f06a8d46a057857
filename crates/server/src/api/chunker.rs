//! Packs snapshot entries into `SnapshotChunk`s whose encoded size stays under a bound, the
//! first one carrying the snapshot's offsets and the last one marked `last`.

use prost::Message;

use crate::pb;

/// Bytes a repeated field adds around one element: tag plus length prefix (at most 5 bytes).
const FIELD_OVERHEAD: usize = 6;

/// Packs entries into chunks whose encoded size stays under the bound.
pub struct Chunker {
    max_bytes: usize,
    current: pb::SnapshotChunk,
    bytes: usize,
}

impl Chunker {
    pub fn new(max_bytes: usize, offsets: Vec<pb::PartitionOffset>) -> Self {
        let current = pb::SnapshotChunk { offsets, ..Default::default() };
        let bytes = current.encoded_len();
        Self { max_bytes, current, bytes }
    }

    /// Adds an entry; returns the full chunk when the entry does not fit in the current one. An
    /// entry larger than the bound goes alone in its chunk.
    pub fn push(&mut self, entry: pb::SnapshotEntry) -> Option<pb::SnapshotChunk> {
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

    /// The last chunk.
    pub fn finish(mut self, skipped_records: u64) -> pb::SnapshotChunk {
        self.current.last = true;
        self.current.skipped_records = skipped_records;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(key: &str, size: usize) -> pb::SnapshotEntry {
        pb::SnapshotEntry {
            topic: "t".into(),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(vec![b'x'; size]),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_stay_under_the_bound() {
        let offsets = vec![pb::PartitionOffset { topic: "t".into(), partition: 0, offset: 9 }];
        let mut chunker = Chunker::new(1000, offsets);
        let mut chunks = Vec::new();
        for i in 0..100 {
            chunks.extend(chunker.push(entry(&i.to_string(), 90)));
        }
        chunks.push(chunker.finish(0));
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
        assert!(chunker.push(entry("a", 10)).is_none());
        let full = chunker.push(entry("b", 500)).unwrap();
        assert_eq!(full.entries.len(), 1);
        let full = chunker.push(entry("c", 10)).unwrap();
        assert_eq!(full.entries[0].key.as_ref(), b"b");
    }
}
