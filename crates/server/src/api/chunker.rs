//! Packs snapshot entries into encoded `SnapshotChunk`s whose size stays under a bound, the first
//! one carrying the snapshot's offsets and the last one marked `last`.
//!
//! Entries are written straight into the chunk's buffer as protobuf (no `SnapshotEntry` structs,
//! no allocation per entry); the chunks go out through [`super::codec::WireCodec`] as they are.

use bytes::{BufMut, Bytes, BytesMut};
use prost::{
    encoding::{encode_key, encode_varint, WireType},
    Message,
};
use tributary_core::Output;

use crate::{
    api::encode::{encode_entry, Wire, WireBuf},
    pb,
};

/// `SnapshotChunk` fields.
const OFFSETS: u32 = 1;
const ENTRIES: u32 = 2;
const LAST: u32 = 3;
const SKIPPED: u32 = 4;

/// An encoded `tributary.v1.SnapshotChunk`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk(pub Bytes);

impl Chunk {
    /// The chunk as the generated struct (for the generated server, which the routed path does
    /// not use, and for tests).
    pub fn into_message(self) -> Result<pb::SnapshotChunk, tonic::Status> {
        pb::SnapshotChunk::decode(self.0).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Wire for Chunk {
    fn write(&self, buf: &mut impl WireBuf) {
        buf.reserve(self.0.len());
        buf.put_slice(&self.0);
    }
}

/// Packs entries into chunks whose encoded size stays under the bound.
pub struct Chunker {
    max_bytes: usize,
    chunk: BytesMut,
    entries: usize,
    /// One entry's encoding, reused (its length frames it in the chunk).
    scratch: BytesMut,
}

impl Chunker {
    pub fn new(max_bytes: usize, offsets: Vec<pb::PartitionOffset>) -> Self {
        let mut chunk = BytesMut::new();
        for offset in &offsets {
            prost::encoding::message::encode(OFFSETS, offset, &mut chunk);
        }
        Self { max_bytes, chunk, entries: 0, scratch: BytesMut::new() }
    }

    /// Adds an entry; returns the full chunk when the entry does not fit in the current one. An
    /// entry larger than the bound goes alone in its chunk.
    pub fn push(&mut self, output: Output) -> Option<Chunk> {
        self.scratch.clear();
        encode_entry(&output, &mut self.scratch);
        let len = self.scratch.len();
        let framed = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        let full = (self.entries > 0 && self.chunk.len() + framed > self.max_bytes).then(|| {
            self.entries = 0;
            Chunk(self.chunk.split().freeze())
        });
        encode_key(ENTRIES, WireType::LengthDelimited, &mut self.chunk);
        encode_varint(len as u64, &mut self.chunk);
        self.chunk.put_slice(&self.scratch);
        self.entries += 1;
        full
    }

    /// The last chunk.
    pub fn finish(mut self, skipped_records: u64) -> Chunk {
        encode_key(LAST, WireType::Varint, &mut self.chunk);
        encode_varint(1, &mut self.chunk);
        if skipped_records > 0 {
            encode_key(SKIPPED, WireType::Varint, &mut self.chunk);
            encode_varint(skipped_records, &mut self.chunk);
        }
        Chunk(self.chunk.freeze())
    }
}

#[cfg(test)]
mod tests {

    use tributary_core::Record;

    use super::*;

    fn entry(key: &str, size: usize) -> Output {
        let value = vec![b'x'; size];
        Output::untranslated(Record::new("t".into(), 0, 7, 1, Some(key.as_bytes()), Some(&value), &[]))
    }

    #[test]
    fn chunks_stay_under_the_bound() {
        let offsets = vec![pb::PartitionOffset { topic: "t".into(), partition: 0, offset: 9 }];
        let mut chunker = Chunker::new(1000, offsets.clone());
        let mut chunks = Vec::new();
        for i in 0..100 {
            chunks.extend(chunker.push(entry(&i.to_string(), 90)));
        }
        chunks.push(chunker.finish(3));
        assert!(chunks.len() > 5);
        assert!(chunks.iter().all(|c| c.0.len() <= 1000), "{:?}", chunks.iter().map(|c| c.0.len()).collect::<Vec<_>>());
        let chunks: Vec<_> = chunks.into_iter().map(|c| c.into_message().unwrap()).collect();
        assert_eq!(chunks[0].offsets, offsets);
        assert!(chunks[1..].iter().all(|c| c.offsets.is_empty()));
        assert_eq!(chunks.iter().map(|c| c.entries.len()).sum::<usize>(), 100);
        assert_eq!(chunks[0].entries[0].key.as_ref(), b"0");
        assert_eq!((chunks[0].entries[0].offset, chunks[0].entries[0].timestamp_ms), (7, 1));
        let last = chunks.last().unwrap();
        assert!(last.last && last.skipped_records == 3);
        assert!(chunks[..chunks.len() - 1].iter().all(|c| !c.last && c.skipped_records == 0));
    }

    #[test]
    fn an_oversized_entry_goes_alone() {
        let mut chunker = Chunker::new(100, vec![]);
        assert!(chunker.push(entry("a", 10)).is_none());
        let full = chunker.push(entry("b", 500)).unwrap().into_message().unwrap();
        assert_eq!(full.entries.len(), 1);
        let full = chunker.push(entry("c", 10)).unwrap().into_message().unwrap();
        assert_eq!(full.entries[0].key.as_ref(), b"b");
    }
}
