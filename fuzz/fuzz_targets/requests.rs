//! Requests as any client could send them: arbitrary bytes decoded as each RPC's request, then
//! checked as the gateway checks them before doing anything (topics and offsets against a view,
//! key and record filters, translator names and digests, subscription names), and the filters run
//! on arbitrary records. Whatever comes in, the gateway answers with a status a client can act on: never a
//! panic, never INTERNAL or UNKNOWN, INVALID_ARGUMENT naming the field at fault.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;
use tributary_core::{
    positions::check_subscription_name,
    subscribe,
    view::{Shard, View},
    Error, Limits, Record, RecordRef,
};
use tributary_server::{
    api::{convert, status},
    pb,
};
use tributary_wasm::registry::{check_digest, check_translator_name};

#[derive(Arbitrary, Debug)]
struct Input {
    rpc: u8,
    request: Vec<u8>,
    /// A record the request's filters are tried on.
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Topic `t` of two partitions, both held from offset 0 to 10.
fn view() -> &'static View {
    static VIEW: OnceLock<View> = OnceLock::new();
    VIEW.get_or_init(|| {
        let view = View::new(&["t".to_string()]);
        for partition in 0..2 {
            let shard = Arc::new(Shard::new("t".into(), partition, 0, 10));
            for offset in 0..10 {
                let record = Record::new("t".into(), partition, offset, 0, Some(b"k"), Some(b"{}"), &[]);
                shard.apply(record, &Limits::default());
            }
            view.topic("t").expect("exposed").add_shard(shard);
        }
        view.set_assigned();
        view
    })
}

/// A refused request's status: one a client can act on, naming the field when the request is
/// at fault.
fn refused(error: Error) {
    let status = status::status(error);
    assert!(!status.message().is_empty(), "{status:?}");
    match status.code() {
        Code::InvalidArgument => assert!(status::bad_field(&status).is_some(), "names the field: {status:?}"),
        Code::NotFound | Code::OutOfRange | Code::FailedPrecondition => {}
        other => panic!("a bad request answered {other:?}: {status:?}"),
    }
}

fn check<T>(result: Result<T, Error>) -> Option<T> {
    result.map_err(refused).ok()
}

fn positions(offsets: Vec<pb::PartitionOffset>) -> Vec<tributary_core::PartitionOffset> {
    offsets.into_iter().map(convert::from_partition_offset).collect()
}

fn translator(reference: Option<pb::TranslatorRef>) {
    let Some(reference) = reference else { return };
    let _ = check_translator_name(&reference.name);
    if !reference.digest.is_empty() {
        let _ = check_digest(&reference.digest);
    }
    let _ = convert::translator_ref(reference);
}

fuzz_target!(|input: Input| {
    let view = view();
    let (topics, offsets, field, keys, records, reference) = match input.rpc % 7 {
        0 => {
            let Ok(r) = pb::SubscribeRequest::decode(&input.request[..]) else { return };
            if !r.subscription_name.is_empty() {
                check(check_subscription_name(&r.subscription_name, "subscription_name"));
            }
            (r.topics, r.from_offsets, "from_offsets", r.key_filter, r.record_filter, r.translator)
        }
        1 => {
            let Ok(r) = pb::GetSnapshotRequest::decode(&input.request[..]) else { return };
            (r.topics, r.as_of_offsets, "as_of_offsets", r.key_filter, r.record_filter, r.translator)
        }
        2 => {
            // The translator registry's names and digests (describes, deletes).
            let Ok(r) = pb::DeleteTranslatorRequest::decode(&input.request[..]) else { return };
            let _ = (check_translator_name(&r.name), check_digest(&r.digest));
            return;
        }
        3 => {
            let Ok(r) = pb::UploadTranslatorRequest::decode(&input.request[..]) else { return };
            if let Some(pb::upload_translator_request::Part::Header(h)) = r.part {
                let _ = check_translator_name(&h.name);
                if !h.sha256.is_empty() {
                    let _ = check_digest(&h.sha256);
                }
            }
            return;
        }
        4 => {
            let Ok(r) = pb::DescribeTopicsRequest::decode(&input.request[..]) else { return };
            check(view.requested(&r.topics, "topics"));
            return;
        }
        5 => {
            // A durable subscription's commit: its name and offsets.
            let Ok(r) = pb::CommitRequest::decode(&input.request[..]) else { return };
            check(check_subscription_name(&r.name, "name"));
            check(subscribe::start::plan_offsets(view, &[], &positions(r.offsets), "offsets"));
            return;
        }
        _ => {
            let Ok(r) = pb::DeleteSubscriptionRequest::decode(&input.request[..]) else { return };
            check(check_subscription_name(&r.name, "name"));
            return;
        }
    };
    translator(reference);
    check(subscribe::start::plan_offsets(view, &topics, &positions(offsets), field));
    let Some(filter) = check(convert::filter(keys, records)) else { return };
    let headers: Vec<(&str, Option<&[u8]>)> = input.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
    let record = RecordRef {
        topic: "t",
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: input.key.as_deref(),
        value: input.value.as_deref(),
        headers: &headers,
    };
    let _ = filter.verdict(&record);
});
