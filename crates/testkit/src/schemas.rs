//! A real schema registry for the tests (`scripts/registry.sh start`, Apicurio Registry serving
//! the Confluent-compatible API): its address, schemas registered under subjects no other test
//! uses, and values framed the way Confluent's serializers frame them.

use std::time::Duration;

/// The registry's Confluent-compatible API (`TRIBUTARY_TEST_REGISTRY`).
pub fn registry_url() -> String {
    std::env::var("TRIBUTARY_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:18081/apis/ccompat/v7".into())
}

/// Registers `schema` of `kind` (`AVRO`, `PROTOBUF`, `JSON`) under a new subject; returns its id.
/// Blocking.
pub fn register(kind: &str, schema: &str) -> u32 {
    let subject = crate::unique_topic("subject");
    let url = format!("{}/subjects/{subject}/versions", registry_url());
    let body = serde_json::json!({ "schema": schema, "schemaType": kind }).to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    let mut response = agent
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .send(body.as_bytes())
        .unwrap_or_else(|e| panic!("cannot register a schema at {url} (is scripts/registry.sh running?): {e}"));
    let reply: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("a reply")).expect("a JSON reply");
    let id = reply["id"].as_u64().unwrap_or_else(|| panic!("no id in the registry's reply {reply}"));
    u32::try_from(id).expect("an id of 32 bits")
}

/// `payload` framed as Confluent's serializers frame it: a zero byte, the id (4 bytes,
/// big-endian), then the payload.
pub fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(payload);
    out
}
