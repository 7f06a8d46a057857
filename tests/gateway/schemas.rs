//! Values framed by a real schema registry (Apicurio, `scripts/registry.sh`): Avro, Protobuf and
//! JSON Schema records of A's reach B as JSON in snapshots, catch-up reads and live streams;
//! undecodable ones are skipped or waited at as configured; a registry that is down loses nothing.

use std::{collections::BTreeMap, time::Duration};

use apache_avro::types::Value as Avro;
use prost_reflect::DynamicMessage;
use serde_json::{json, Value};
use tributary_server::{
    config::{Config, Limits, SchemasConfig, TopicSchemas},
    pb,
};
use tributary_testkit::schemas::{framed, register, registry_url};

use crate::harness::*;

const ORDER_AVRO: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "string"},
    {"name": "qty", "type": "int"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OPEN", "PAID"]}}
]}"#;

const SHOP_PROTO: &str = r#"syntax = "proto3";
package shop;
message Refund { string order_id = 1; int64 cents = 2; }
message Note { string text = 1; }
"#;

const ORDER_JSON_SCHEMA: &str = r#"{"type": "object", "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"enum": ["OPEN", "PAID"]}}}"#;

/// An Avro datum of [`ORDER_AVRO`].
fn avro_order(id: &str, qty: i32, status: &str) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(ORDER_AVRO).unwrap();
    let symbol = u32::from(status == "PAID");
    let record = Avro::Record(vec![
        ("id".into(), Avro::String(id.into())),
        ("qty".into(), Avro::Int(qty)),
        ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("status".into(), Avro::Enum(symbol, status.into())),
    ]);
    apache_avro::to_avro_datum(&schema, record).unwrap()
}

/// The second message of [`SHOP_PROTO`] (`shop.Note`), with Confluent's message indexes [1].
fn proto_note(text: &str) -> Vec<u8> {
    let pool = compile_proto(SHOP_PROTO);
    let descriptor = pool.get_message_by_name("shop.Note").unwrap();
    let mut message = DynamicMessage::new(descriptor);
    message.set_field_by_name("text", prost_reflect::Value::String(text.into()));
    let mut out = vec![2, 2]; // one index (zigzag 2), the index 1 (zigzag 2)
    prost_reflect::prost::Message::encode(&message, &mut out).unwrap();
    out
}

/// A's protobuf file compiled the way A's build would, from a file.
fn compile_proto(text: &str) -> prost_reflect::DescriptorPool {
    let dir = scratch_dir("proto");
    std::fs::write(dir.join("shop.proto"), text).unwrap();
    let mut compiler = protox::Compiler::new([&dir]).unwrap();
    compiler.open_file("shop.proto").unwrap();
    compiler.descriptor_pool()
}

fn out(key: &str, value: Option<Vec<u8>>) -> Out {
    Out { partition: Some(0), key: Some(key.as_bytes().to_vec()), value, headers: vec![] }
}

fn schemas_config(topic: &str, on_error: &str, registry: String) -> SchemasConfig {
    let mut config = SchemasConfig { registry, retry_ms: 300, ..SchemasConfig::default() };
    let topic_config: TopicSchemas = serde_json::from_value(json!({ "on_error": on_error })).unwrap();
    config.topics.insert(topic.to_string(), topic_config);
    config
}

fn gateway_config(topic: &str, schemas: SchemasConfig) -> Config {
    // A tail of 2 records: a stream from 0 reads the rest through the catch-up reader.
    let limits = Limits { tail_max_records: 2, tail_pool_bytes: 0, ..Limits::default() };
    let mut config = config(&[topic], limits);
    config.schemas = schemas;
    config
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn decoded(state: &State) -> BTreeMap<String, Value> {
    state.iter().map(|(k, v)| (String::from_utf8(k.clone()).unwrap(), json_of(v))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_protobuf_and_json_schema_values_reach_b_as_json_and_undecodable_ones_are_skipped() {
    let (avro, proto, json_schema) = tokio::task::spawn_blocking(|| {
        (register("AVRO", ORDER_AVRO), register("PROTOBUF", SHOP_PROTO), register("JSON", ORDER_JSON_SCHEMA))
    })
    .await
    .unwrap();
    let topic = unique_topic("schemas");
    create_topic(&topic, 1).await;
    let records = vec![
        out("o1", Some(framed(avro, &avro_order("o1", 2, "OPEN")))),
        out("n1", Some(framed(proto, &proto_note("hello")))),
        out("j1", Some(framed(json_schema, br#"{"id": "j1", "status": "PAID"}"#))),
        // Skipped: not framed, an unknown schema id, bytes that are not the schema's, JSON the
        // JSON Schema refuses.
        out("raw", Some(b"{\"plain\": true}".to_vec())),
        out("unknown", Some(framed(999_999_999, b"\x02"))),
        out("o1", Some(framed(avro, b"\xff\xff\xff"))),
        out("j2", Some(framed(json_schema, br#"{"id": "j2", "status": "LOST"}"#))),
        out("o2", Some(framed(avro, &avro_order("o2", 5, "PAID")))),
        out("n1", None),
    ];
    produce(&topic, &records);
    let gateway = Gateway::start_with(gateway_config(&topic, schemas_config(&topic, "skip", registry_url()))).await;
    let mut client = gateway.client().await;

    let expected: BTreeMap<String, Value> = [
        ("o1".to_string(), json!({"id": "o1", "qty": 2, "note": null, "status": "OPEN"})),
        ("j1".to_string(), json!({"id": "j1", "status": "PAID"})),
        ("o2".to_string(), json!({"id": "o2", "qty": 5, "note": null, "status": "PAID"})),
    ]
    .into();
    let snapshot = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(decoded(&snapshot.state()), expected);
    assert_eq!(offset_map(&snapshot.offsets), ends(&topic), "exact at the end: the skipped records are passed");

    // From 0, mostly through the catch-up reader: the same JSON, the skipped records left out.
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let got: Vec<(i64, String, Option<Value>)> = follower
        .records
        .iter()
        .map(|r| {
            (r.offset, String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap(), r.value.as_deref().map(json_of))
        })
        .collect();
    let expected_stream = vec![
        (0, "o1".to_string(), Some(json!({"id": "o1", "qty": 2, "note": null, "status": "OPEN"}))),
        (1, "n1".to_string(), Some(json!({"text": "hello"}))),
        (2, "j1".to_string(), Some(json!({"id": "j1", "status": "PAID"}))),
        (7, "o2".to_string(), Some(json!({"id": "o2", "qty": 5, "note": null, "status": "PAID"}))),
        (8, "n1".to_string(), None),
    ];
    assert_eq!(got, expected_stream);

    // Live: a new record arrives decoded, and a field filter reads the decoded JSON.
    let filter = pb::RecordFilter {
        fields: vec![pb::FieldCondition { pointer: "/status".into(), any_of: vec![r#""PAID""#.into()] }],
        ..Default::default()
    };
    let request =
        pb::SubscribeRequest { topics: vec![topic.clone()], record_filter: Some(filter), ..Default::default() };
    let mut paid = Follower::start(&mut client, request).await.unwrap();
    produce(&topic, &[out("o3", Some(framed(avro, &avro_order("o3", 1, "PAID"))))]);
    paid.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let keys: Vec<_> =
        paid.records.iter().map(|r| String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap()).collect();
    // A tombstone has no fields to check: it is delivered (the key may have been selected).
    assert_eq!(keys, ["j1", "o2", "n1", "o3"], "only the PAID orders, Avro and JSON alike");
    gateway.stop().await;
}

/// A TCP forwarder from `listen` to `to`: the registry, reachable at another port once started.
async fn forward(listen: std::net::SocketAddr, to: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_registry_is_down_a_failing_topic_waits_exact_and_loses_nothing() {
    let avro = tokio::task::spawn_blocking(|| register("AVRO", ORDER_AVRO)).await.unwrap();
    let topic = unique_topic("schemas-down");
    create_topic(&topic, 1).await;
    // The registry as the gateway sees it: a port nobody listens at yet.
    let registry = url_parts(&registry_url());
    let down = tributary_testkit::web::free_addr();
    let gateway_url = format!("http://{down}{}", registry.path);
    let gateway = Gateway::start_with(gateway_config(&topic, schemas_config(&topic, "fail", gateway_url))).await;
    let mut client = gateway.client().await;
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let mut follower = Follower::start(&mut client, request).await.unwrap();

    produce(
        &topic,
        &[
            out("o1", Some(framed(avro, &avro_order("o1", 1, "OPEN")))),
            out("o2", Some(framed(avro, &avro_order("o2", 2, "OPEN")))),
        ],
    );
    // Several retries: nothing is applied, nothing delivered, and the snapshot is exact at 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert!(snap.entries.is_empty(), "nothing applied past the record ingest waits at");
    assert_eq!(offset_map(&snap.offsets), [((topic.clone(), 0), 0)].into());
    let waited = tokio::time::timeout(Duration::from_millis(500), follower.next()).await;
    if let Ok(message) = waited {
        message.unwrap().unwrap();
        assert!(follower.records.is_empty(), "a record delivered while its value cannot be decoded");
    }

    // The registry comes back: ingest goes on from the record it waited at.
    let _up = forward(down, registry.authority.clone()).await;
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let got: Vec<_> =
        follower.records.iter().map(|r| (r.offset, json_of(r.value.as_deref().unwrap())["id"].clone())).collect();
    assert_eq!(got, vec![(0, json!("o1")), (1, json!("o2"))]);
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(decoded(&snap.state()).len(), 2);
    gateway.stop().await;
}

/// The parts of an `http://host:port/path` URL.
struct Url {
    authority: String,
    path: String,
}

fn url_parts(url: &str) -> Url {
    let rest = url.strip_prefix("http://").expect("an http:// registry URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Url { authority: authority.to_string(), path: path.to_string() }
}

#[tokio::test]
async fn schema_settings_that_cannot_work_are_refused_at_start_naming_the_key() {
    let topic = unique_topic("schemas-config");
    let mut config = gateway_config(&topic, schemas_config("not-exposed", "skip", registry_url()));
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("schemas.topics") && err.contains("not-exposed"), "{err}");
    config.schemas = schemas_config(&topic, "skip", "registry:8081".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("schemas.registry"), "{err}");
    let undecodable = serde_json::from_value::<TopicSchemas>(json!({"on_error": "ignore"}));
    assert!(undecodable.unwrap_err().to_string().contains("unknown variant"));
}
