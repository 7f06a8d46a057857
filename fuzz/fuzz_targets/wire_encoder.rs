//! The hand-written encoder of `Subscribe` responses and snapshot entries
//! (`crates/server/src/api/encode.rs`) against prost: whatever A's records and a translator's
//! outputs hold, the bytes it writes decode, with prost's generated code, to exactly the messages
//! the gateway would otherwise build field by field (`api::convert`).
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tributary_core::{Encoded, Output, Payload, Record};
use tributary_server::{
    api::{
        convert,
        encode::{encode_entry, encode_record, SubscribeWire, Wire},
    },
    pb,
};

type Headers = Vec<(String, Option<Vec<u8>>)>;

#[derive(Arbitrary, Debug)]
struct Source {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
    /// What a translator made of it (none: delivered as it is).
    outputs: Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Headers)>,
}

fn decode<M: Message + Default>(wire: BytesMut) -> M {
    M::decode(wire.freeze()).expect("the encoder writes valid protobuf")
}

fn batch(response: pb::SubscribeResponse) -> Vec<pb::Record> {
    match response.message {
        Some(pb::subscribe_response::Message::Records(batch)) => batch.records,
        other => panic!("a record batch, not {other:?}"),
    }
}

fuzz_target!(|sources: Vec<Source>| {
    let (mut outputs, mut encoded) = (Vec::new(), Vec::new());
    for s in &sources {
        let headers: Vec<(&str, Option<&[u8]>)> = s.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let topic = Arc::from(s.topic.as_str());
        let record =
            Record::new(topic, s.partition, s.offset, s.timestamp_ms, s.key.as_deref(), s.value.as_deref(), &headers);
        let untranslated = Output::untranslated(record.clone());

        // One record as catch-up readers and the tail buffer encode it.
        let mut wire = BytesMut::new();
        record.with_ref(|r| encode_record(r, &mut wire));
        assert_eq!(decode::<pb::Record>(wire.clone()), convert::record(untranslated.clone()));
        encoded.push(Encoded { wire: wire.freeze(), data_bytes: record.data_bytes() });

        // The translator's outputs of it, sharing one list as a translator call's do.
        let payloads: Arc<[Payload]> = s
            .outputs
            .iter()
            .map(|(key, value, headers)| Payload {
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers: headers.iter().map(|(k, v)| (k.clone(), v.clone().map(Bytes::from))).collect(),
            })
            .collect();
        let translated = (0..payloads.len()).map(|i| Output::translated(record.clone(), payloads.clone(), i as u32));
        for output in std::iter::once(untranslated).chain(translated) {
            let mut entry = BytesMut::new();
            encode_entry(&output, &mut entry);
            assert_eq!(decode::<pb::SnapshotEntry>(entry), convert::entry(output.clone()));
            outputs.push(output);
        }
    }

    // Whole responses: outputs encoded in place, and records encoded already.
    let expected: Vec<pb::Record> = outputs.iter().cloned().map(convert::record).collect();
    let mut wire = BytesMut::new();
    SubscribeWire::Records(outputs).write(&mut wire);
    assert_eq!(batch(decode(wire)), expected);

    let expected: Vec<pb::Record> =
        encoded.iter().map(|e| pb::Record::decode(e.wire.clone()).expect("decoded above")).collect();
    let mut wire = BytesMut::new();
    SubscribeWire::Encoded(encoded).write(&mut wire);
    assert_eq!(batch(decode(wire)), expected);
});
