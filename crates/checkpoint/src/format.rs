//! How a partition's state is laid out in the checkpoint: a sequence of segments (a few MiB
//! each), each a run of entries, replayed in order on read. An entry puts a record under its key
//! or deletes the key. Writing a whole state gives entries that are all puts; writing the changes
//! since the last checkpoint appends a segment of puts and deletes. Reading checks every length,
//! so a damaged segment is an error, never a panic or a wrong record.
//!
//! Segments, not one row per key: a restart reads a partition as a few long sequential values
//! (a row per key cost redb ~500 bytes of B-tree per 100-byte record and read back slower than
//! Kafka itself).
//!
//! Entry layout, little-endian: `key_len u32, key, row_len u32 (u32::MAX for a delete), row`.
//! Row layout: `offset i64, timestamp_ms i64, value_len u32, value, header_count u32, then per
//! header: key_len u32, key (UTF-8), value_len u32 (u32::MAX for a null value), value`. A change
//! of layout is a new [`VERSION`].

use std::sync::Arc;

use tributary_core::Record;

/// The layout version written in the file; a file of another version is not read.
pub const VERSION: u64 = 2;

/// A null header value.
const NULL: u32 = u32::MAX;

/// The row value of a state record (one with a key and a value).
pub fn encode(record: &Record) -> Vec<u8> {
    let value = record.value().unwrap_or_default();
    let mut out = Vec::with_capacity(24 + value.len());
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    put(&mut out, Some(value));
    let headers: Vec<_> = record.headers().collect();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (key, value) in headers {
        put(&mut out, Some(key.as_bytes()));
        put(&mut out, value);
    }
    out
}

fn put(out: &mut Vec<u8>, part: Option<&[u8]>) {
    match part {
        Some(p) => {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        None => out.extend_from_slice(&NULL.to_le_bytes()),
    }
}

/// Appends to `segment` the entry that puts `record` under its key (a state record: it has a
/// key and a value).
pub fn put_entry(segment: &mut Vec<u8>, key: &[u8], record: &Record) {
    put(segment, Some(key));
    let row = encode(record);
    put(segment, Some(&row));
}

/// Appends to `segment` the entry that deletes `key`.
pub fn delete_entry(segment: &mut Vec<u8>, key: &[u8]) {
    put(segment, Some(key));
    put(segment, None);
}

/// What one entry of a segment says.
pub enum Entry<'a> {
    Put(Record),
    Delete(&'a [u8]),
}

/// Calls `apply` with each entry of `segment`, in order, decoded as records of
/// `topic`/`partition`; stops at the first damaged entry.
pub fn replay<'a>(
    topic: &Arc<str>,
    partition: i32,
    segment: &'a [u8],
    mut apply: impl FnMut(Entry<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut r = Reader(segment);
    while !r.0.is_empty() {
        let key = r.part()?.ok_or("an entry without a key")?;
        match r.part()? {
            Some(row) => apply(Entry::Put(decode(topic, partition, key, row)?))?,
            None => apply(Entry::Delete(key))?,
        }
    }
    Ok(())
}

/// The record of `topic`/`partition` with `key` whose row value is `row`.
pub fn decode(topic: &Arc<str>, partition: i32, key: &[u8], row: &[u8]) -> Result<Record, String> {
    let mut r = Reader(row);
    let offset = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let timestamp_ms = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let value = r.part()?.ok_or("a state record without a value")?;
    let count = r.u32()? as usize;
    // Each header takes at least 8 bytes: a count beyond what is left is damage, not a reason to
    // allocate.
    if count > r.0.len() / 8 {
        return Err(format!("{count} headers in {} bytes", r.0.len()));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.part()?.ok_or("a header without a key")?;
        let name = std::str::from_utf8(name).map_err(|e| format!("a header key is not UTF-8: {e}"))?;
        headers.push((name, r.part()?));
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the record", r.0.len()));
    }
    if offset < 0 {
        return Err(format!("offset {offset}"));
    }
    Ok(Record::new(topic.clone(), partition, offset, timestamp_ms, Some(key), Some(value), &headers))
}

/// The unread rest of a row.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: {n} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn part(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.u32()? {
            NULL => Ok(None),
            len => self.take(len as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_written() {
        let topic: Arc<str> = "t".into();
        let headers: [(&str, Option<&[u8]>); 3] = [("a", Some(b"1")), ("n", None), ("e", Some(b""))];
        let record = Record::new(topic.clone(), 2, 41, 1_700_000_000_000, Some(b"k"), Some(b"value"), &headers);
        let back = decode(&topic, 2, b"k", &encode(&record)).unwrap();
        assert_eq!(back, record);
        let empty = Record::new(topic.clone(), 2, 0, -1, Some(b""), Some(b""), &[]);
        assert_eq!(decode(&topic, 2, b"", &encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn a_segment_replays_its_puts_and_deletes_in_order_and_a_damaged_one_is_an_error() {
        let topic: Arc<str> = "t".into();
        let a = Record::new(topic.clone(), 0, 3, 10, Some(b"a"), Some(b"1"), &[("h", None)]);
        let b = Record::new(topic.clone(), 0, 4, 11, Some(b"b"), Some(b""), &[]);
        let mut segment = Vec::new();
        put_entry(&mut segment, b"a", &a);
        let first = segment.len();
        delete_entry(&mut segment, b"z");
        let second = segment.len();
        put_entry(&mut segment, b"b", &b);
        let mut seen = Vec::new();
        replay(&topic, 0, &segment, |e| {
            seen.push(match e {
                Entry::Put(r) => (r.key().unwrap().to_vec(), Some(r)),
                Entry::Delete(k) => (k.to_vec(), None),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"a".to_vec(), Some(a)), (b"z".to_vec(), None), (b"b".to_vec(), Some(b))]);
        // Cut anywhere but between entries, a segment is damaged.
        for cut in 1..segment.len() {
            let result = replay(&topic, 0, &segment[..cut], |_| Ok(()));
            assert_eq!(result.is_ok(), cut == first || cut == second, "cut at {cut} of {}", segment.len());
        }
    }

    #[test]
    fn a_damaged_row_is_an_error() {
        let topic: Arc<str> = "t".into();
        let row = encode(&Record::new(topic.clone(), 0, 7, 0, Some(b"k"), Some(b"v"), &[("h", Some(b"x"))]));
        for cut in 0..row.len() {
            assert!(decode(&topic, 0, b"k", &row[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(decode(&topic, 0, b"k", &longer).unwrap_err().contains("after the record"));
        let mut many = row[..21].to_vec();
        many.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(decode(&topic, 0, b"k", &many).is_err());
    }
}
