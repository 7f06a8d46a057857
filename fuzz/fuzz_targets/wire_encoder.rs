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
use tributary_core::{Encode, Encoded, Lender, Lent, Output, Payload, Record, RecordRef};
use tributary_server::{
    api::{
        convert,
        encode::{encode_entry, encode_record, RecordEncoder, SubscribeWire, Wire},
    },
    pb,
};

type Headers = Vec<(String, Option<Vec<u8>>)>;
/// A translator's output: key, value and headers.
type Produced = (Option<Vec<u8>>, Option<Vec<u8>>, Headers);

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
    outputs: Vec<Produced>,
    /// How the untranslated record reaches the encoder: encoded already, kept by the tail, lent
    /// from a reader's batch (as itself or as a tombstone of its key), or in a run of the tail
    /// encoded once for every follower (consecutive ones in the same run).
    via: Via,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Via {
    Bytes,
    Tail,
    Lent { tombstone: bool },
    Run,
}

/// Records gathered into one shared run, as the tail encodes them (`Encode::encode_item`).
#[derive(Default)]
struct Gathered {
    items: BytesMut,
    records: usize,
    data_bytes: usize,
}

impl Gathered {
    /// The run gathered so far, if any, pushed to `encoded`.
    fn flush(&mut self, encoded: &mut Vec<Encoded>) {
        let Gathered { items, records, data_bytes } = std::mem::take(self);
        if records > 0 {
            encoded.push(Encoded::run(tributary_core::Run { bytes: items.freeze(), records }, data_bytes));
        }
    }
}

/// A reader's batch: the records it lends by index.
struct Batch(Vec<Record>);

impl Lender for Batch {
    fn lend(&self, index: usize, f: &mut dyn FnMut(&RecordRef<'_>)) {
        self.0[index].with_ref(|r| f(r));
    }
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
    let (mut outputs, mut encoded, mut expected_encoded) = (Vec::new(), Vec::new(), Vec::new());
    let records: Vec<Record> = sources
        .iter()
        .map(|s| {
            let headers: Vec<(&str, Option<&[u8]>)> =
                s.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            Record::new(
                Arc::from(s.topic.as_str()),
                s.partition,
                s.offset,
                s.timestamp_ms,
                s.key.as_deref(),
                s.value.as_deref(),
                &headers,
            )
        })
        .collect();
    let batch_of_reader: Arc<dyn Lender> = Arc::new(Batch(records.clone()));
    let mut run = Gathered::default();
    for (index, (s, record)) in sources.iter().zip(&records).enumerate() {
        let untranslated = Output::untranslated(record.clone());

        // One record as the encoder writes it, its length told before it is written.
        let mut wire = BytesMut::new();
        record.with_ref(|r| encode_record(r, &mut wire));
        assert_eq!(record.with_ref(|r| RecordEncoder.encoded_len(r)), wire.len());
        let expected = convert::record(untranslated.clone());
        assert_eq!(decode::<pb::Record>(wire.clone()), expected);
        if let Via::Run = s.via {
            let mut item = BytesMut::new();
            record.with_ref(|r| RecordEncoder.encode_item(r, &mut item));
            // An item is an entry of a `RecordBatch`.
            let alone = pb::RecordBatch::decode(item.clone().freeze()).expect("valid protobuf");
            assert_eq!(alone.records, vec![expected.clone()]);
            run.items.extend_from_slice(&item);
            run.records += 1;
            run.data_bytes += record.data_bytes();
            expected_encoded.push(expected.clone());
        } else {
            run.flush(&mut encoded);
        }
        let (one, expected) = match s.via {
            Via::Run => (None, expected),
            Via::Bytes => (Some(Encoded::bytes(wire.freeze(), record.data_bytes())), expected),
            Via::Tail => (Some(record.to_encode(&RecordEncoder)), expected),
            Via::Lent { tombstone } => {
                // As a subscription's filter verdict has it: the record, or a tombstone of its key.
                let delivered = if tombstone { record.to_tombstone() } else { record.clone() };
                let len = delivered.with_ref(|r| RecordEncoder.encoded_len(r));
                let lent = Encoded {
                    wire: tributary_core::Wire::Lent(Lent::new(batch_of_reader.clone(), index, tombstone, len)),
                    data_bytes: delivered.data_bytes(),
                };
                (Some(lent), convert::record(Output::untranslated(delivered)))
            }
        };
        if let Some(one) = one {
            assert_eq!(
                pb::Record::decode(one.to_bytes(&RecordEncoder)).expect("the encoder writes valid protobuf"),
                expected
            );
            encoded.push(one);
            expected_encoded.push(expected);
        }

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

    run.flush(&mut encoded);
    let mut wire = BytesMut::new();
    SubscribeWire::Encoded(encoded).write(&mut wire);
    assert_eq!(batch(decode(wire)), expected_encoded);
});
