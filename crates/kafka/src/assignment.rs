//! The consumer protocol's assignment bytes, as the group coordinator returns them for each member
//! in DescribeGroups, decoded into the partitions that member owns. Pure: no rdkafka here, so
//! malformed input is tested byte by byte.
//!
//! The layout is Kafka's `ConsumerProtocolAssignment` (clients/src/main/resources/common/message/
//! ConsumerProtocolAssignment.json), not flexible in any version, identical in versions 0 to 3:
//!
//! ```text
//! version            int16
//! assigned_partitions int32 count, then per topic:
//!     topic          int16 length, then UTF-8 bytes (not nullable)
//!     partitions     int32 count, then int32 each
//! user_data          int32 length (-1: null), then bytes
//! ```
//!
//! Like Kafka's own reader, a version above the highest known one is read with the known layout
//! and whatever follows is ignored (a later version may only append fields); a known version must
//! end where its layout ends.

use std::fmt;

/// The highest `ConsumerProtocolAssignment` version whose layout is known (Kafka 4.x).
const HIGHEST_KNOWN_VERSION: i16 = 3;

/// Assignment bytes that are not a `ConsumerProtocolAssignment`: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed consumer protocol assignment: {}", self.0)
    }
}

/// The partitions of each topic assigned to one member, in the order the bytes list them (a topic
/// listed twice appears twice: the coordinator never does that, and callers merge by partition).
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, Malformed> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.i16("version")?;
    if version < 0 {
        return Err(Malformed(format!("negative version {version}")));
    }
    let topics = reader.count("the topic count", 2 + 4)?;
    let mut assigned = Vec::with_capacity(topics);
    for _ in 0..topics {
        let topic = reader.string("a topic name")?;
        let partitions = reader.count("a partition count", 4)?;
        let mut list = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let partition = reader.i32("a partition")?;
            if partition < 0 {
                return Err(Malformed(format!("negative partition {partition} of topic {topic:?}")));
            }
            list.push(partition);
        }
        assigned.push((topic, list));
    }
    reader.user_data()?;
    if version <= HIGHEST_KNOWN_VERSION && reader.at != bytes.len() {
        return Err(Malformed(format!(
            "{} bytes after the end of a version {version} assignment",
            bytes.len() - reader.at
        )));
    }
    Ok(assigned)
}

/// Big-endian reads that fail instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], Malformed> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| Malformed(format!("truncated at byte {} reading {what}", self.at)))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i16(&mut self, what: &str) -> Result<i16, Malformed> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, Malformed> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An array count, checked against what is left: each element takes at least `min_size`
    /// bytes, so garbage cannot make the decoder allocate more than the input's size.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, Malformed> {
        let at = self.at;
        let count = self.i32(what)?;
        let count = usize::try_from(count).map_err(|_| Malformed(format!("{what} {count} at byte {at}")))?;
        if count.saturating_mul(min_size) > self.bytes.len() - self.at {
            return Err(Malformed(format!("{what} {count} at byte {at} exceeds the remaining bytes")));
        }
        Ok(count)
    }

    fn string(&mut self, what: &str) -> Result<String, Malformed> {
        let at = self.at;
        let len = self.i16(what)?;
        let len = usize::try_from(len).map_err(|_| Malformed(format!("{what} of length {len} at byte {at}")))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Malformed(format!("{what} at byte {at} is not UTF-8")))
    }

    /// The user data (cooperative-sticky puts nothing there; other assignors may): skipped.
    fn user_data(&mut self) -> Result<(), Malformed> {
        let at = self.at;
        let len = self.i32("the user data length")?;
        if len == -1 {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| Malformed(format!("user data of length {len} at byte {at}")))?;
        self.take(len, "the user data").map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an assignment as Kafka does, for tests (here and in the group's tests).
    pub(crate) fn encode(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        match user_data {
            None => out.extend((-1i32).to_be_bytes()),
            Some(data) => {
                out.extend((data.len() as i32).to_be_bytes());
                out.extend(data);
            }
        }
        out
    }

    fn owned(topics: &[(&str, &[i32])]) -> Vec<(String, Vec<i32>)> {
        topics.iter().map(|(t, ps)| (t.to_string(), ps.to_vec())).collect()
    }

    #[test]
    fn every_known_version_decodes_to_its_topics_and_partitions() {
        let topics: &[(&str, &[i32])] = &[("orders", &[0, 3]), ("customers", &[]), ("é-topic", &[7])];
        for version in 0..=HIGHEST_KNOWN_VERSION {
            for user_data in [None, Some(&b""[..]), Some(&b"sticky"[..])] {
                let bytes = encode(version, topics, user_data);
                assert_eq!(decode(&bytes), Ok(owned(topics)), "version {version}, user data {user_data:?}");
            }
        }
        assert_eq!(decode(&encode(0, &[], None)), Ok(vec![]), "a member assigned nothing");
    }

    #[test]
    fn hand_written_bytes_decode() {
        // A version 3 assignment of orders/1 and orders/2 with null user data, written out byte
        // by byte (so `encode` and `decode` cannot agree on a mistake).
        let bytes = [
            0, 3, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 255, 255,
            255, 255,
        ];
        assert_eq!(decode(&bytes), Ok(owned(&[("orders", &[1, 2])])));
    }

    #[test]
    fn a_later_version_may_append_fields_but_a_known_one_may_not() {
        let mut later = encode(HIGHEST_KNOWN_VERSION + 1, &[("t", &[1])], None);
        later.extend([0xAB; 9]);
        assert_eq!(decode(&later), Ok(owned(&[("t", &[1])])));
        let mut known = encode(HIGHEST_KNOWN_VERSION, &[("t", &[1])], None);
        known.push(0);
        let err = decode(&known).unwrap_err();
        assert!(err.to_string().contains("1 bytes after the end of a version 3"), "{err}");
    }

    #[test]
    fn every_truncation_of_a_valid_assignment_is_an_error() {
        let bytes = encode(1, &[("orders", &[0, 1, 2]), ("b", &[9])], Some(b"data"));
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).expect_err(&format!("{len} of {} bytes", bytes.len()));
            assert!(err.to_string().contains("truncated") || err.to_string().contains("exceeds"), "{len}: {err}");
        }
    }

    #[test]
    fn negative_or_oversized_counts_and_lengths_are_errors_not_allocations() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([&(-1i16).to_be_bytes()[..], &0i32.to_be_bytes(), &(-1i32).to_be_bytes()].concat(), "negative version"),
            ([&0i16.to_be_bytes()[..], &(-1i32).to_be_bytes()].concat(), "topic count -1"),
            ([&0i16.to_be_bytes()[..], &i32::MAX.to_be_bytes(), &[0; 16]].concat(), "exceeds the remaining bytes"),
            ([&0i16.to_be_bytes()[..], &1i32.to_be_bytes(), &(-1i16).to_be_bytes(), &[0; 8]].concat(), "length -1"),
            (
                [&0i16.to_be_bytes()[..], &1i32.to_be_bytes(), &1i16.to_be_bytes(), b"t", &i32::MAX.to_be_bytes()]
                    .concat(),
                "partition count 2147483647",
            ),
            (encode(0, &[("t", &[-4])], None), "negative partition -4"),
            ([&encode(0, &[], None)[..6], &(-2i32).to_be_bytes()].concat(), "user data of length -2"),
            ([&encode(0, &[], None)[..6], &i32::MAX.to_be_bytes()].concat(), "truncated"),
            (
                [&0i16.to_be_bytes()[..], &1i32.to_be_bytes(), &2i16.to_be_bytes(), &[0xff, 0xfe], &[0; 8]].concat(),
                "not UTF-8",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode(&bytes).expect_err(expected);
            assert!(err.to_string().contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over lengths and bytes (xorshift), plus mutations of
        // a valid assignment: every input returns, Ok or Err.
        let valid = encode(3, &[("orders", &[0, 1]), ("b", &[2])], Some(b"u"));
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode(&garbage);
            let mut mutated = valid.clone();
            let i = (next() as usize) % mutated.len();
            mutated[i] = next() as u8;
            let _ = decode(&mutated);
        }
    }
}
