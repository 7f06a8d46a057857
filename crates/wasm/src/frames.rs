//! The host's side of the frames of `tributary:translator/batch@0.2.0` (version 2 of the
//! translator contract, `translators/wit/FRAMES.md`): a batch of records written as one buffer for
//! the guest, and the guest's one buffer of outcomes read back into the core's [`Outcome`]s.
//!
//! Reading trusts nothing: every length is checked against what is left before it is used, and a
//! malformed buffer is an error that says what is wrong at which byte. Outputs are slices of the
//! guest's buffer (no copy per record), unless they keep only a small part of it.

use bytes::Bytes;
use tributary_core::{
    translate::{Counted, Outcomes},
    Payload, Record,
};

/// A length that means "absent": a keyless record, a tombstone, a null header value.
const NONE: u32 = u32::MAX;

/// Writes `batch` as the input frames of one `translate` call into `out` (cleared first, so a
/// caller reuses one buffer for every call). Lengths are `u32`: the gateway's records are far
/// below 4 GiB (Kafka's own message limit is an `i32`).
pub fn write_input(batch: &[Record], out: &mut Vec<u8>) {
    out.clear();
    // The topic table: a batch holds runs of one topic, so compare with the last one first.
    let mut topics: Vec<&str> = Vec::new();
    let mut indexes = Vec::with_capacity(batch.len());
    for record in batch {
        let topic = &*record.topic;
        let index = match topics.last() {
            Some(last) if *last == topic => topics.len() - 1,
            _ => match topics.iter().position(|t| *t == topic) {
                Some(i) => i,
                None => {
                    topics.push(topic);
                    topics.len() - 1
                }
            },
        };
        indexes.push(index as u32);
    }
    let size: usize = 8
        + topics.iter().map(|t| 4 + t.len()).sum::<usize>()
        + batch
            .iter()
            .map(|r| 36 + r.data_bytes() + r.headers().map(|(k, _)| 8 + k.len()).sum::<usize>())
            .sum::<usize>();
    out.reserve(size);
    put_u32(out, topics.len() as u32);
    for topic in &topics {
        put_bytes(out, topic.as_bytes());
    }
    put_u32(out, batch.len() as u32);
    for (record, index) in batch.iter().zip(indexes) {
        put_u32(out, index);
        out.extend_from_slice(&record.partition.to_le_bytes());
        out.extend_from_slice(&record.offset.to_le_bytes());
        out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
        let (key, value) = (record.key(), record.value());
        put_u32(out, len_of(key));
        put_u32(out, len_of(value));
        put_u32(out, record.headers().count() as u32);
        out.extend_from_slice(key.unwrap_or_default());
        out.extend_from_slice(value.unwrap_or_default());
        for (key, value) in record.headers() {
            put_u32(out, key.len() as u32);
            put_u32(out, len_of(value));
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(value.unwrap_or_default());
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn len_of(bytes: Option<&[u8]>) -> u32 {
    bytes.map_or(NONE, |b| b.len() as u32)
}

/// What an output buffer holds besides its outcomes: what the output caps count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Output records.
    pub records: usize,
    /// Key, value and header bytes of the outputs, and error messages (as version 1 counts).
    pub bytes: usize,
    /// Key, value and header bytes of the outputs alone.
    pub payload: usize,
}

/// Why an output buffer is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the translator's output is malformed: {what} at byte {at} of {len}")]
pub struct Malformed {
    pub what: String,
    pub at: usize,
    pub len: usize,
}

/// An output buffer checked completely for a batch of `records` inputs, before anything is made
/// of it: what the caps count is known, and a malformed buffer costs no allocation.
pub struct Checked {
    buffer: Vec<u8>,
    records: usize,
    pub counts: Counts,
}

/// Checks the guest's output frames for a batch of `records` inputs.
pub fn check_output(buffer: Vec<u8>, records: usize) -> Result<Checked, Malformed> {
    let counts = check(&buffer, records)?;
    Ok(Checked { buffer, records, counts })
}

impl Checked {
    /// The outcomes, one per input, every output in one list.
    pub fn outcomes(self) -> Outcomes {
        let Checked { buffer, records, counts } = self;
        let shared = Bytes::from(buffer);
        // Slices share the buffer; when the outputs keep little of it (a filter), copies free it.
        let copy = counts.payload < shared.len() / 2;
        let slice = |range: std::ops::Range<usize>| -> Bytes {
            if copy {
                Bytes::copy_from_slice(&shared[range])
            } else {
                shared.slice(range)
            }
        };
        let mut reader = Reader { buf: &shared, at: 4 };
        let mut outcomes =
            Outcomes { payloads: Vec::with_capacity(counts.records), records: Vec::with_capacity(records) };
        let payloads = &mut outcomes.payloads;
        for _ in 0..records {
            // Checked above: these reads cannot fail.
            let tag = reader.u8().expect("checked");
            if tag == 1 {
                let message = reader.str().expect("checked");
                outcomes.records.push(Counted::Err(message.to_string()));
                continue;
            }
            let n = reader.u32().expect("checked");
            for _ in 0..n {
                let (key_len, value_len, header_count) =
                    (reader.u32().expect("checked"), reader.u32().expect("checked"), reader.u32().expect("checked"));
                let key = reader.span(key_len).expect("checked").map(&slice);
                let value = reader.span(value_len).expect("checked").map(&slice);
                let mut headers = Vec::with_capacity(header_count as usize);
                for _ in 0..header_count {
                    let (k, v) = (reader.u32().expect("checked"), reader.u32().expect("checked"));
                    let name = reader.span(k).expect("checked").expect("a header key is never absent");
                    let name = std::str::from_utf8(&shared[name]).expect("checked").to_string();
                    headers.push((name, reader.span(v).expect("checked").map(&slice)));
                }
                payloads.push(Payload { key, value, headers });
            }
            outcomes.records.push(Counted::Ok(n));
        }
        outcomes
    }
}

/// Checks an output buffer completely: structure, UTF-8 of strings, the number of outcomes, no
/// bytes left over. Returns what the caps count.
fn check(buffer: &[u8], records: usize) -> Result<Counts, Malformed> {
    let mut reader = Reader { buf: buffer, at: 0 };
    let bad = |what: String, at: usize| Malformed { what, at, len: buffer.len() };
    let outcomes = reader.u32().ok_or_else(|| bad("no outcome count".into(), 0))? as usize;
    if outcomes != records {
        return Err(bad(format!("{outcomes} outcomes for {records} records; one outcome per record is required"), 0));
    }
    let mut counts = Counts::default();
    for i in 0..records {
        let at = reader.at;
        match reader.u8() {
            Some(0) => {
                let n = reader.u32().ok_or_else(|| bad(format!("outcome {i}: no record count"), at))?;
                for j in 0..n {
                    let at = reader.at;
                    let cut = || bad(format!("outcome {i}, record {j}: cut short"), at);
                    let (key, value, headers) =
                        (reader.u32().ok_or_else(cut)?, reader.u32().ok_or_else(cut)?, reader.u32().ok_or_else(cut)?);
                    let key = reader.span(key).ok_or_else(cut)?;
                    let value = reader.span(value).ok_or_else(cut)?;
                    counts.payload += key.map_or(0, |r| r.len()) + value.map_or(0, |r| r.len());
                    for h in 0..headers {
                        let at = reader.at;
                        let cut = || bad(format!("outcome {i}, record {j}, header {h}: cut short"), at);
                        let (k, v) = (reader.u32().ok_or_else(cut)?, reader.u32().ok_or_else(cut)?);
                        if k == NONE {
                            return Err(bad(
                                format!("outcome {i}, record {j}, header {h}: a header key is absent"),
                                at,
                            ));
                        }
                        let name = reader.span(k).ok_or_else(cut)?.expect("not NONE");
                        if std::str::from_utf8(&buffer[name.clone()]).is_err() {
                            return Err(bad(format!("outcome {i}, record {j}, header {h}: key is not UTF-8"), at));
                        }
                        let value = reader.span(v).ok_or_else(cut)?;
                        counts.payload += name.len() + value.map_or(0, |r| r.len());
                    }
                    counts.records += 1;
                }
            }
            Some(1) => {
                let message = reader
                    .str()
                    .ok_or_else(|| bad(format!("outcome {i}: error message cut short or not UTF-8"), at))?;
                counts.bytes += message.len();
            }
            Some(tag) => return Err(bad(format!("outcome {i}: tag {tag} is neither 0 (ok) nor 1 (err)"), at)),
            None => return Err(bad(format!("outcome {i}: cut short"), at)),
        }
    }
    counts.bytes += counts.payload;
    if reader.at != buffer.len() {
        return Err(bad(format!("{} bytes after the last outcome", buffer.len() - reader.at), reader.at));
    }
    Ok(counts)
}

/// Reads little-endian fields from a buffer; `None` when the buffer is cut short.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// The range of `len` bytes here (`Some(None)` for an absent one).
    fn span(&mut self, len: u32) -> Option<Option<std::ops::Range<usize>>> {
        if len == NONE {
            return Some(None);
        }
        let start = self.at;
        self.take(len as usize)?;
        Some(Some(start..self.at))
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()?;
        if len == NONE {
            return None;
        }
        std::str::from_utf8(self.take(len as usize)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcomes of an output buffer and what the caps count.
    fn read_output(buffer: Vec<u8>, records: usize) -> Result<(Outcomes, Counts), Malformed> {
        let checked = check_output(buffer, records)?;
        let counts = checked.counts.clone();
        Ok((checked.outcomes(), counts))
    }

    fn record(
        topic: &str,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Record {
        Record::new(topic.into(), 2, offset, 1_700_000_000_000, key, value, headers)
    }

    /// The example of FRAMES.md, byte for byte.
    #[test]
    fn input_frames_are_the_documented_bytes() {
        let r = Record::new("t".into(), 0, 5, -1, Some(b"k"), Some(b"v"), &[]);
        let mut out = Vec::new();
        write_input(&[r], &mut out);
        let expected = "01000000 01000000 74 01000000 00000000 00000000 0500000000000000 ffffffffffffffff \
                        01000000 01000000 00000000 6b 76";
        assert_eq!(hex(&out), expected.replace(' ', ""));
    }

    #[test]
    fn input_frames_keep_absent_apart_from_empty_and_share_a_topic_table() {
        let batch = [
            record("a", 1, None, Some(b""), &[("h", None), ("e", Some(b""))]),
            record("b", 2, Some(b""), None, &[]),
            record("a", 3, Some(b"k"), Some(b"v"), &[]),
        ];
        let mut out = vec![0xAA; 3]; // cleared first
        write_input(&batch, &mut out);
        let mut r = Reader { buf: &out, at: 0 };
        assert_eq!(r.u32(), Some(2));
        assert_eq!((r.str(), r.str()), (Some("a"), Some("b")));
        assert_eq!(r.u32(), Some(3));
        let fixed = |r: &mut Reader| {
            (r.u32().unwrap(), r.take(20).unwrap().to_vec(), r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap())
        };
        let (topic, _, key, value, headers) = fixed(&mut r);
        assert_eq!((topic, key, value, headers), (0, NONE, 0, 2));
        assert_eq!((r.u32(), r.u32(), r.take(1)), (Some(1), Some(NONE), Some(&b"h"[..])));
        assert_eq!((r.u32(), r.u32(), r.take(1)), (Some(1), Some(0), Some(&b"e"[..])));
        let (topic, _, key, value, headers) = fixed(&mut r);
        assert_eq!((topic, key, value, headers), (1, 0, NONE, 0));
        let (topic, coords, key, value, _) = fixed(&mut r);
        assert_eq!((topic, key, value), (0, 1, 1));
        assert_eq!(&coords[..4], &2i32.to_le_bytes());
        assert_eq!(&coords[4..12], &3i64.to_le_bytes());
        assert_eq!(&coords[12..], &1_700_000_000_000i64.to_le_bytes());
        assert_eq!(r.take(2), Some(&b"kv"[..]));
        assert_eq!(r.at, out.len());
    }

    /// Output frames, written as FRAMES.md says (what the SDKs do).
    #[derive(Default)]
    struct Out(Vec<u8>);

    impl Out {
        fn new(outcomes: u32) -> Self {
            Out(outcomes.to_le_bytes().to_vec())
        }
        fn ok(mut self, records: u32) -> Self {
            self.0.push(0);
            self.0.extend_from_slice(&records.to_le_bytes());
            self
        }
        fn record(mut self, key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> Self {
            for n in [len_of(key), len_of(value), headers.len() as u32] {
                self.0.extend_from_slice(&n.to_le_bytes());
            }
            self.0.extend_from_slice(key.unwrap_or_default());
            self.0.extend_from_slice(value.unwrap_or_default());
            for (k, v) in headers {
                put_u32(&mut self.0, k.len() as u32);
                put_u32(&mut self.0, len_of(*v));
                self.0.extend_from_slice(k.as_bytes());
                self.0.extend_from_slice(v.unwrap_or_default());
            }
            self
        }
        fn err(mut self, message: &str) -> Self {
            self.0.push(1);
            put_bytes(&mut self.0, message.as_bytes());
            self
        }
    }

    #[test]
    fn outputs_read_back_with_absent_empty_errors_flat_maps_and_filters() {
        let out = Out::new(4)
            .ok(2)
            .record(Some(b"k"), None, &[("n", None), ("e", Some(b""))])
            .record(None, Some(b""), &[])
            .err("bad record")
            .ok(0)
            .ok(1)
            .record(Some(b"x"), Some(b"value"), &[]);
        let (outcomes, counts) = read_output(out.0, 4).unwrap();
        assert_eq!(counts, Counts { records: 3, bytes: 1 + 2 + 10 + 6, payload: 1 + 2 + 6 });
        let b = |s: &[u8]| Some(Bytes::copy_from_slice(s));
        assert_eq!(
            outcomes,
            Outcomes {
                payloads: vec![
                    Payload { key: b(b"k"), value: None, headers: vec![("n".into(), None), ("e".into(), b(b""))] },
                    Payload { key: None, value: b(b""), headers: vec![] },
                    Payload { key: b(b"x"), value: b(b"value"), headers: vec![] },
                ],
                records: vec![Counted::Ok(2), Counted::Err("bad record".into()), Counted::Ok(0), Counted::Ok(1)],
            }
        );
    }

    #[test]
    fn malformed_outputs_say_what_and_where() {
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (vec![], 1, "no outcome count at byte 0"),
            (Out::new(2).ok(0).0, 1, "2 outcomes for 1 records"),
            (Out::new(1).0, 1, "outcome 0: cut short at byte 4"),
            (Out::new(1).ok(1).0, 1, "outcome 0, record 0: cut short at byte 9"),
            (
                {
                    let mut o = Out::new(1).ok(1).record(Some(b"k"), None, &[]).0;
                    o.pop();
                    o
                },
                1,
                "outcome 0, record 0: cut short",
            ),
            (
                {
                    let mut o = Out::new(1).0;
                    o.push(7);
                    o
                },
                1,
                "outcome 0: tag 7 is neither 0 (ok) nor 1 (err) at byte 4",
            ),
            (
                {
                    let mut o = Out::new(1).ok(0).0;
                    o.push(0);
                    o
                },
                1,
                "1 bytes after the last outcome at byte 9",
            ),
            (
                {
                    let mut o = Out::new(1).0;
                    o.push(1);
                    put_bytes(&mut o, &[0xff, 0xfe]);
                    o
                },
                1,
                "outcome 0: error message cut short or not UTF-8",
            ),
            (
                Out::new(1)
                    .ok(1)
                    .record(None, None, &[("\u{1F600}", None)])
                    .0
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 29 { 0xff } else { b })
                    .collect(),
                1,
                "header 0: key is not UTF-8",
            ),
            (
                {
                    let mut o = Out::new(1).ok(1).0;
                    for n in [NONE, NONE, 1, NONE, NONE] {
                        put_u32(&mut o, n)
                    }
                    o
                },
                1,
                "header 0: a header key is absent",
            ),
            // A length near u32::MAX must not wrap or allocate.
            (
                {
                    let mut o = Out::new(1).ok(1).0;
                    for n in [NONE - 1, NONE, 0] {
                        put_u32(&mut o, n)
                    }
                    o
                },
                1,
                "outcome 0, record 0: cut short",
            ),
        ];
        for (buffer, records, expected) in cases {
            let err = read_output(buffer, records).unwrap_err().to_string();
            assert!(err.starts_with("the translator's output is malformed: "), "{err}");
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn outputs_keeping_little_of_the_buffer_are_copied_out_of_it() {
        // In the buffer, a record's value follows its key: slices of it are adjacent, copies (two
        // allocations of their own) are not.
        let adjacent = |p: &Payload| {
            let (k, v) = (p.key.as_ref().unwrap(), p.value.as_ref().unwrap());
            k.as_ptr().wrapping_add(k.len()) == v.as_ptr()
        };
        // A filter: one small output among large error messages is copied, freeing the buffer.
        let big = "e".repeat(1000);
        let (outcomes, _) = read_output(Out::new(2).ok(1).record(Some(b"k"), Some(b"v"), &[]).err(&big).0, 2).unwrap();
        let p = &outcomes.payloads;
        assert_eq!(p[0].value.as_deref(), Some(&b"v"[..]));
        assert!(!adjacent(&p[0]), "copied");
        // An output that is most of the buffer is a slice of it.
        let (outcomes, _) = read_output(Out::new(1).ok(1).record(Some(b"k"), Some(big.as_bytes()), &[]).0, 1).unwrap();
        let p = &outcomes.payloads;
        assert_eq!(p[0].value.as_deref().map(<[u8]>::len), Some(1000));
        assert!(adjacent(&p[0]), "sliced");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
