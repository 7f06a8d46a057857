//! The guest's side of the frames of `tributary:translator/batch@0.2.0`
//! (`translators/wit/FRAMES.md`): the gateway's input buffer read into records that borrow from
//! it, and outcomes written into one output buffer. The input is checked as it is read (a
//! malformed buffer fails the batch with a message, never a misread), so a record's headers can
//! be read again later without checks failing.

use std::borrow::Cow;

use crate::{Header, HeaderRef, Headers, Outcome, OutputRecord, SourceRecord};

/// A length that means "absent": a keyless record, a tombstone, a null header value.
const NONE: u32 = u32::MAX;

/// The fixed part of a record: topic index, partition, offset, timestamp, key length, value
/// length, header count.
const RECORD_HEAD: usize = 36;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end =
            self.at.checked_add(n).filter(|end| *end <= self.buf.len()).ok_or_else(|| {
                format!("malformed input: {n} bytes wanted at byte {} of {}", self.at, self.buf.len())
            })?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn optional(&mut self, len: u32) -> Result<Option<&'a [u8]>, String> {
        if len == NONE {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    fn str(&mut self, len: u32) -> Result<&'a str, String> {
        let at = self.at;
        std::str::from_utf8(self.take(len as usize)?).map_err(|_| format!("malformed input: not UTF-8 at byte {at}"))
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

fn le_i64(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// The records of an input buffer, borrowing from it.
pub(crate) fn read_input(input: &[u8]) -> Result<Vec<SourceRecord<'_>>, String> {
    let mut r = Reader { buf: input, at: 0 };
    let topic_count = r.u32()? as usize;
    // Each topic takes at least 4 bytes and each record 36: counts larger than the buffer can
    // hold are refused before anything is allocated for them.
    if topic_count > input.len() / 4 {
        return Err(format!("malformed input: {topic_count} topics in {} bytes", input.len()));
    }
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let len = r.u32()?;
        topics.push(r.str(len)?);
    }
    let count = r.u32()? as usize;
    if count > input.len() / RECORD_HEAD {
        return Err(format!("malformed input: {count} records in {} bytes", input.len()));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let head = r.take(RECORD_HEAD)?;
        let topic = *topics
            .get(le_u32(&head[0..4]) as usize)
            .ok_or_else(|| format!("malformed input: topic index out of range at byte {}", r.at - RECORD_HEAD))?;
        let (key_len, value_len, header_count) = (le_u32(&head[24..28]), le_u32(&head[28..32]), le_u32(&head[32..36]));
        let key = r.optional(key_len)?;
        let value = r.optional(value_len)?;
        let start = r.at;
        for _ in 0..header_count {
            let (k, v) = (r.u32()?, r.u32()?);
            if k == NONE {
                return Err(format!("malformed input: a header key is absent at byte {}", r.at - 8));
            }
            r.str(k)?;
            r.optional(v)?;
        }
        records.push(SourceRecord {
            topic,
            partition: i32::from_le_bytes(head[4..8].try_into().expect("4 bytes")),
            offset: le_i64(&head[8..16]),
            timestamp_ms: le_i64(&head[16..24]),
            key,
            value,
            headers: Headers::frames(header_count, &input[start..r.at]),
        });
    }
    if r.at != input.len() {
        return Err(format!("malformed input: {} bytes after the last record", input.len() - r.at));
    }
    Ok(records)
}

/// The first header of checked header frames, and the rest.
pub(crate) fn next_header(bytes: &[u8]) -> Option<(HeaderRef<'_>, &[u8])> {
    let mut r = Reader { buf: bytes, at: 0 };
    let (k, v) = (r.u32().ok()?, r.u32().ok()?);
    let key = r.str(k).ok()?;
    let value = r.optional(v).ok()?;
    Some(((key, value), &bytes[r.at..]))
}

/// Header frames as a list, to change.
pub(crate) fn header_list<'a>(headers: &Headers<'a>) -> Vec<Header<'a>> {
    let Some(mut bytes) = headers.as_frames() else { unreachable!("only frames are made into a list") };
    let mut list = Vec::with_capacity(headers.len());
    while let Some(((key, value), rest)) = next_header(bytes) {
        list.push((Cow::Borrowed(key), value.map(Cow::Borrowed)));
        bytes = rest;
    }
    list
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn len_of(bytes: Option<&[u8]>) -> u32 {
    bytes.map_or(NONE, |b| b.len() as u32)
}

/// The output buffer of `outcomes`, allocated once at its exact size: guest memory never
/// shrinks, and a buffer grown by doubling would take up to twice its size more on the way.
pub(crate) fn write_output(outcomes: &[Outcome<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(output_size(outcomes));
    put_u32(&mut out, outcomes.len() as u32);
    for outcome in outcomes {
        match outcome {
            Outcome::Err(message) => {
                out.push(1);
                put_u32(&mut out, message.len() as u32);
                out.extend_from_slice(message.as_bytes());
            }
            ok => {
                let records = ok.outputs().expect("not an error");
                out.push(0);
                put_u32(&mut out, records.len() as u32);
                for record in records {
                    write_record(&mut out, record);
                }
            }
        }
    }
    out
}

/// The size of the output frames of `outcomes`.
fn output_size(outcomes: &[Outcome<'_>]) -> usize {
    let record = |r: &OutputRecord<'_>| {
        let headers = match r.headers.as_frames() {
            Some(frames) => frames.len(),
            None => r.headers.iter().map(|(k, v)| 8 + k.len() + v.map_or(0, <[u8]>::len)).sum(),
        };
        12 + r.key.as_deref().map_or(0, <[u8]>::len) + r.value.as_deref().map_or(0, <[u8]>::len) + headers
    };
    4 + outcomes
        .iter()
        .map(|o| match o {
            Outcome::Err(message) => 5 + message.len(),
            ok => 5 + ok.outputs().expect("not an error").iter().map(record).sum::<usize>(),
        })
        .sum::<usize>()
}

fn write_record(out: &mut Vec<u8>, record: &OutputRecord<'_>) {
    let (key, value) = (record.key.as_deref(), record.value.as_deref());
    put_u32(out, len_of(key));
    put_u32(out, len_of(value));
    put_u32(out, record.headers.len() as u32);
    out.extend_from_slice(key.unwrap_or_default());
    out.extend_from_slice(value.unwrap_or_default());
    // Headers passed through unchanged are copied as the frames they came in.
    if let Some(frames) = record.headers.as_frames() {
        out.extend_from_slice(frames);
        return;
    }
    for (key, value) in record.headers.iter() {
        put_u32(out, key.len() as u32);
        put_u32(out, len_of(value));
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value.unwrap_or_default());
    }
}

/// Version 1: the canonical ABI's owned records lent to the translator, and its outcomes owned.
#[cfg(any(feature = "world-v1", not(target_arch = "wasm32")))]
pub(crate) mod v1 {
    use super::*;
    use crate::bindings::v1 as wit;

    pub(crate) fn borrow(record: &wit::SourceRecord) -> SourceRecord<'_> {
        SourceRecord {
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: record.headers.iter().map(|h| (&*h.key, h.value.as_deref().map(Cow::Borrowed))).collect(),
        }
    }

    pub(crate) fn own(outcome: Outcome<'_>) -> wit::Outcome {
        match outcome.into_outputs() {
            Ok(records) => wit::Outcome::Ok(
                records
                    .into_iter()
                    .map(|r| wit::OutputRecord {
                        key: r.key.map(Cow::into_owned),
                        value: r.value.map(Cow::into_owned),
                        headers: r
                            .headers
                            .iter()
                            .map(|(key, value)| wit::Header { key: key.to_string(), value: value.map(<[u8]>::to_vec) })
                            .collect(),
                    })
                    .collect(),
            ),
            Err(message) => wit::Outcome::Err(message),
        }
    }
}
