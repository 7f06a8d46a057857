use std::borrow::Cow;

use super::__private::State;
use super::*;

/// Adds a header with the configuration; flat-maps records whose value is `twice`, filters out
/// `drop`, and fails `bad`.
struct Echo(String);

impl Translator for Echo {
    fn init(config: &str) -> Result<Self, String> {
        if config == "reject" {
            return Err("rejected".into());
        }
        Ok(Echo(config.to_string()))
    }

    fn translate<'a>(&mut self, record: SourceRecord<'a>) -> Outcome<'a> {
        match record.value {
            Some(b"drop") => Outcome::none(),
            Some(b"bad") => Outcome::err(format!("bad at {}", record.offset)),
            Some(b"twice") => Outcome::many([record.clone().into_output(), record.into_output()]),
            _ => Outcome::one(record.into_output().with_header("config", self.0.clone())),
        }
    }
}

/// A record for [`input`]: topic, offset, key, value, headers.
type In<'a> = (&'a str, i64, Option<&'a [u8]>, Option<&'a [u8]>, &'a [HeaderRef<'a>]);

/// Input frames as FRAMES.md says (what the gateway writes).
fn input(records: &[In]) -> Vec<u8> {
    let mut topics: Vec<&str> = Vec::new();
    for r in records {
        if !topics.contains(&r.0) {
            topics.push(r.0);
        }
    }
    let mut out = Vec::new();
    let u32 = |out: &mut Vec<u8>, n: u32| out.extend_from_slice(&n.to_le_bytes());
    let len = |b: Option<&[u8]>| b.map_or(u32::MAX, |b| b.len() as u32);
    u32(&mut out, topics.len() as u32);
    for t in &topics {
        u32(&mut out, t.len() as u32);
        out.extend_from_slice(t.as_bytes());
    }
    u32(&mut out, records.len() as u32);
    for (topic, offset, key, value, headers) in records {
        u32(&mut out, topics.iter().position(|t| t == topic).unwrap() as u32);
        out.extend_from_slice(&3i32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(-1i64).to_le_bytes());
        u32(&mut out, len(*key));
        u32(&mut out, len(*value));
        u32(&mut out, headers.len() as u32);
        out.extend_from_slice(key.unwrap_or_default());
        out.extend_from_slice(value.unwrap_or_default());
        for (k, v) in *headers {
            u32(&mut out, k.len() as u32);
            u32(&mut out, len(*v));
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v.unwrap_or_default());
        }
    }
    out
}

type Read = Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>)>, String>;

/// Output frames read back (what the gateway does).
fn output(bytes: &[u8]) -> Vec<Read> {
    let mut at = 0;
    let u32 = |at: &mut usize| {
        let n = u32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap());
        *at += 4;
        n
    };
    let take = |at: &mut usize, n: u32| -> Option<Vec<u8>> {
        if n == u32::MAX {
            return None;
        }
        let b = bytes[*at..*at + n as usize].to_vec();
        *at += n as usize;
        Some(b)
    };
    let count = u32(&mut at);
    let mut outcomes = Vec::new();
    for _ in 0..count {
        let tag = bytes[at];
        at += 1;
        if tag == 1 {
            let n = u32(&mut at);
            outcomes.push(Err(String::from_utf8(take(&mut at, n).unwrap()).unwrap()));
            continue;
        }
        let n = u32(&mut at);
        let mut records = Vec::new();
        for _ in 0..n {
            let (k, v, h) = (u32(&mut at), u32(&mut at), u32(&mut at));
            let (key, value) = (take(&mut at, k), take(&mut at, v));
            let mut headers = Vec::new();
            for _ in 0..h {
                let (k, v) = (u32(&mut at), u32(&mut at));
                headers.push((String::from_utf8(take(&mut at, k).unwrap()).unwrap(), take(&mut at, v)));
            }
            records.push((key, value, headers));
        }
        outcomes.push(Ok(records));
    }
    assert_eq!(at, bytes.len(), "nothing after the last outcome");
    outcomes
}

#[test]
fn translate_before_init_fails_the_batch() {
    let state = State::<Echo>::new();
    assert_eq!(state.translate_frames(&input(&[])), Err("init was not called".into()));
}

#[test]
fn failed_init_is_reported_by_translate() {
    let state = State::<Echo>::new();
    assert_eq!(state.init("reject"), Err("rejected".into()));
    assert_eq!(state.translate_frames(&input(&[])), Err("init failed: rejected".into()));
    assert_eq!(state.init("ok"), Ok(()));
    assert_eq!(output(&state.translate_frames(&input(&[])).unwrap()), vec![]);
}

#[test]
fn frames_round_trip_with_absent_apart_from_empty_flat_maps_filters_and_errors() {
    let state = State::<Echo>::new();
    state.init("c").unwrap();
    let batch = input(&[
        ("t", 1, Some(b"k"), Some(b"a"), &[("h", None), ("e", Some(b""))]),
        ("\u{e9}t\u{e9}", 2, None, None, &[]),
        ("t", 3, Some(b""), Some(b""), &[]),
        ("t", 4, Some(b"k"), Some(b"drop"), &[]),
        ("t", 5, Some(b"k"), Some(b"twice"), &[("h", Some(b"v"))]),
        ("t", 6, Some(b"k"), Some(b"bad"), &[]),
    ]);
    let bytes = state.translate_frames(&batch).unwrap();
    assert_eq!(bytes.len(), bytes.capacity(), "allocated once at its exact size");
    let out = output(&bytes);
    let config = || ("config".to_string(), Some(b"c".to_vec()));
    let b = |s: &[u8]| Some(s.to_vec());
    assert_eq!(
        out,
        vec![
            Ok(vec![(b(b"k"), b(b"a"), vec![("h".into(), None), ("e".into(), b(b"")), config()])]),
            Ok(vec![(None, None, vec![config()])]),
            Ok(vec![(b(b""), b(b""), vec![config()])]),
            Ok(vec![]),
            Ok(vec![(b(b"k"), b(b"twice"), vec![("h".into(), b(b"v"))]); 2]),
            Err("bad at 6".into()),
        ]
    );
}

#[test]
fn records_borrow_their_coordinates_and_headers_from_the_frames() {
    let batch = input(&[("topic", 42, Some(b"k"), Some(b"v"), &[("a", Some(b"1")), ("n", None)])]);
    let records = frames::read_input(&batch).unwrap();
    let r = &records[0];
    assert_eq!((r.topic, r.partition, r.offset, r.timestamp_ms), ("topic", 3, 42, -1));
    assert_eq!(r.header("a"), Some(Some(&b"1"[..])));
    assert_eq!(r.header("n"), Some(None));
    assert_eq!(r.header("x"), None);
    let list: Headers = [("a", Some(Cow::Borrowed(&b"1"[..]))), ("n", None)].into_iter().collect();
    assert_eq!(r.headers, list, "frames equal a list with the same headers");
}

#[test]
fn malformed_input_fails_the_batch_with_where() {
    let good = input(&[("t", 1, Some(b"k"), Some(b"v"), &[("h", None)])]);
    for cut in [0, 3, 8, 20, good.len() - 1] {
        let err = frames::read_input(&good[..cut]).unwrap_err();
        assert!(err.starts_with("malformed input: "), "{cut}: {err}");
    }
    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(frames::read_input(&extra).unwrap_err(), "malformed input: 1 bytes after the last record");
    let mut huge = good.clone();
    huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(frames::read_input(&huge).unwrap_err().contains("topics in"), "refused before allocating");
    let mut index = good.clone();
    index[13] = 9; // the record's topic index
    assert!(frames::read_input(&index).unwrap_err().contains("topic index out of range"));
}

#[test]
fn a_wrong_number_of_outcomes_fails_the_batch() {
    struct Short;
    impl Translator for Short {
        fn init(_: &str) -> Result<Self, String> {
            Ok(Short)
        }
        fn translate<'a>(&mut self, _: SourceRecord<'a>) -> Outcome<'a> {
            Outcome::none()
        }
        fn translate_batch<'a>(&mut self, _: Vec<SourceRecord<'a>>) -> Result<Vec<Outcome<'a>>, String> {
            Ok(vec![])
        }
    }
    let state = State::<Short>::new();
    state.init("").unwrap();
    let batch = input(&[("t", 1, None, None, &[])]);
    assert_eq!(state.translate_frames(&batch), Err("translator returned 0 outcomes for 1 records".into()));
}

#[test]
fn version_1_lends_records_and_owns_outcomes() {
    use bindings::v1 as wit;
    let state = State::<Echo>::new();
    state.init("c").unwrap();
    let record = |value: &[u8]| wit::SourceRecord {
        topic: "t".into(),
        partition: 0,
        offset: 1,
        timestamp_ms: -1,
        key: Some(b"k".to_vec()),
        value: Some(value.to_vec()),
        headers: vec![wit::Header { key: "h".into(), value: None }],
    };
    let out = state.translate_v1(vec![record(b"a"), record(b"drop"), record(b"bad")]).unwrap();
    let header = |k: &str, v: Option<&[u8]>| wit::Header { key: k.into(), value: v.map(<[u8]>::to_vec) };
    assert_eq!(
        out,
        vec![
            wit::Outcome::Ok(vec![wit::OutputRecord {
                key: Some(b"k".to_vec()),
                value: Some(b"a".to_vec()),
                headers: vec![header("h", None), header("config", Some(b"c"))],
            }]),
            wit::Outcome::Ok(vec![]),
            wit::Outcome::Err("bad at 1".into()),
        ]
    );
}

#[test]
fn constructors() {
    assert_eq!(Outcome::none().outputs(), Some(&[][..]));
    assert_eq!(Outcome::err("x"), Outcome::Err("x".into()));
    let r = OutputRecord::upsert("k", "v".to_string()).with_null_header("n");
    assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(r.headers.iter().collect::<Vec<_>>(), vec![("n", None)]);
    assert_eq!(OutputRecord::tombstone(b"k").value, None);
    assert_eq!(OutputRecord::keyless(vec![1u8]).key, None);
    let record = SourceRecord::new("t", Some(b"k"), None);
    assert!(record.is_tombstone());
    assert_eq!(Outcome::pass(record).into_outputs().unwrap()[0].key.as_deref(), Some(&b"k"[..]));
}
