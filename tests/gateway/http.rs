//! Issue 22: the HTTP log (`GET /v1/topics/{topic}/log`) against real Kafka, over real HTTP:
//! snapshot then chunks then live equals a raw rebuild; chunks are immutable and the same for
//! everyone; long-polls wait and move their URL when empty; SSE streams with keep-alives and
//! resumes; every error is `no-store` JSON with a reason; CORS and auth apply.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use serde_json::Value;
use tributary_server::config::{Config, Limits};
use tributary_testkit::web::*;

use crate::harness::*;

/// A gateway configuration serving the HTTP log on a free port, with a small chunk grid.
pub fn http_config(topics: &[&str], limits: Limits, chunk_offsets: u64) -> (Config, SocketAddr) {
    let mut config = config(topics, limits);
    let addr = free_addr();
    config.http.listen = Some(addr);
    config.http.chunk_offsets = chunk_offsets;
    config.http.long_poll_ms = 1_500;
    config.http.cors_origins = vec!["http://page.test".into()];
    (config, addr)
}

/// Records over `partitions` partitions: updates of 60 keys, one in seven a delete.
pub fn changes(from: usize, n: usize, partitions: i32) -> Vec<Out> {
    (from..from + n)
        .map(|i| {
            let key = format!("k{}", i % 60);
            let value = (i % 7 != 3).then(|| format!("v{i}"));
            Out { partition: Some((i % partitions as usize) as i32), ..Out::kv(&key, value.as_deref()) }
        })
        .collect()
}

/// The whole follow: a snapshot, then chunks (read from Kafka, behind the small tail buffer),
/// then the live part while the producer writes; the state equals a raw rebuild. Chunks end on
/// the grid, are immutable with an ETag (304 on a match), and read the same twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_and_live_rebuild_the_topic_exactly() {
    let topic = unique_topic("http-follow");
    create_topic(&topic, 3).await;
    produce(&topic, &changes(0, 300, 3));
    let limits = Limits { tail_max_records: 64, tail_pool_bytes: 0, ..Limits::default() };
    let (config, addr) = http_config(&[&topic], limits, 100);
    let _gateway = Gateway::start_with(config).await;

    let snapshot = snapshot_when_ready(addr, &topic).await;
    assert_eq!(snapshot["kind"], "snapshot");
    assert_eq!(offsets(&snapshot), vec![100, 100, 100]);
    let mut state = State::new();
    apply_json(&mut state, &snapshot);
    assert_eq!(state, rebuild(&read_all(&topic)), "the snapshot is the state at its offsets");

    // 1000 more records: 10 complete cells per partition, mostly behind the 64-record tail.
    produce(&topic, &changes(300, 3000, 3));
    let target = ends(&topic);
    let mut next = snapshot["next"].as_str().unwrap().to_string();
    let (mut chunks, mut live) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never reached the end; at {next}");
        let url = format!("/v1/topics/{topic}/log?from={next}&live=1");
        let reply = get(addr, &url, &[]).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let answer = reply.json();
        assert_eq!(answer["from"], next.as_str(), "the body repeats the position it answers");
        let before: Vec<i64> = next.split('_').nth(1).unwrap().split('.').map(|o| o.parse().unwrap()).collect();
        match answer["kind"].as_str().unwrap() {
            "chunk" => {
                chunks += 1;
                assert_eq!(reply.header("cache-control"), "public, max-age=31536000, immutable");
                let etag = reply.header("etag").to_string();
                assert!(etag.starts_with('"'), "a chunk has an ETag: {etag:?}");
                for (p, (b, a)) in before.iter().zip(offsets(&answer)).enumerate() {
                    assert!(a == *b || a % 100 == 0, "partition {p} moved from {b} to {a}, off the grid");
                }
                let again = get(addr, &url, &[]).await;
                assert_eq!(again.body, reply.body, "a chunk reads the same every time");
                let cached = get(addr, &url, &[("if-none-match", &etag)]).await;
                assert_eq!((cached.status, cached.body.len()), (304, 0));
            }
            "live" => {
                live += 1;
                assert_eq!(reply.header("cache-control"), "public, max-age=1");
                assert!(reply.header("etag").is_empty());
            }
            other => panic!("kind {other}"),
        }
        apply_json(&mut state, &answer);
        next = answer["next"].as_str().unwrap().to_string();
        let reached = offsets(&answer).iter().enumerate().all(|(p, o)| *o >= target[&(topic.clone(), p as i32)]);
        if reached {
            break;
        }
    }
    assert!(chunks >= 9, "1000 records per partition on a grid of 100 are at least 9 chunks, got {chunks}");
    assert_eq!(state, rebuild(&read_all(&topic)));

    // Live: a long-poll at the head waits for the next record.
    let url = format!("/v1/topics/{topic}/log?from={next}&live=1");
    let poll = tokio::spawn(async move { get(addr, &url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(&topic, &[Out { partition: Some(1), ..Out::kv("late", Some("yes")) }]);
    let reply = poll.await.unwrap();
    let answer = reply.json();
    assert_eq!(answer["kind"], "live");
    assert_eq!(answer["records"][0]["key"], "late");
    assert_eq!(answer["up_to_date"], true);
    live += 1;
    assert!(live >= 1);
}

/// An empty long-poll waits `long_poll_ms`, answers nothing and hands out a new URL (its wait
/// count), so a cache that kept it cannot loop a client on it; NDJSON carries the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_long_poll_waits_then_moves_its_url() {
    let topic = unique_topic("http-poll");
    create_topic(&topic, 2).await;
    produce(&topic, &changes(0, 10, 2));
    let (config, addr) = http_config(&[&topic], Limits::default(), 1000);
    let _gateway = Gateway::start_with(config).await;
    let snapshot = snapshot_when_ready(addr, &topic).await;
    let next = snapshot["next"].as_str().unwrap().to_string();
    assert_eq!(next, "1_5.5");

    let started = Instant::now();
    let reply = get(addr, &format!("/v1/topics/{topic}/log?from={next}&live=1"), &[]).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_400), "answered after {waited:?}, before long_poll_ms");
    let answer = reply.json();
    assert_eq!((answer["records"].as_array().unwrap().len(), &answer["next"]), (0, &Value::from("1_5.5_1")));
    let again = get(addr, &format!("/v1/topics/{topic}/log?from=1_5.5_1&live=1"), &[]).await.json();
    assert_eq!(again["next"], "1_5.5_2");

    // Without live=1 the head answers at once.
    let started = Instant::now();
    let now = get(addr, &format!("/v1/topics/{topic}/log?from={next}"), &[]).await.json();
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert_eq!((now["next"].as_str(), now["up_to_date"].as_bool()), (Some("1_5.5"), Some(true)));

    let nd = get(addr, &format!("/v1/topics/{topic}/log?from=1_0.0&format=ndjson"), &[]).await;
    assert_eq!(nd.header("content-type"), "application/x-ndjson");
    let lines: Vec<Value> =
        std::str::from_utf8(&nd.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["next"], "1_5.5");
    assert_eq!(lines.len(), 1 + 10 + 1, "envelope, ten records, end");
    assert_eq!(lines[11]["end"], true);
}

/// Reads SSE events from `target` until `done` says so; the events as (name, id, data) and
/// whether a keep-alive comment came.
async fn sse(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    mut done: impl FnMut(&[(String, String, String)]) -> bool,
) -> (Vec<(String, String, String)>, usize, u16, String) {
    let response = open(addr, "GET", target, headers).await;
    let status = response.status().as_u16();
    let cache = response.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let mut body = response.into_body();
    let (mut text, mut events, mut keepalive) = (String::new(), Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&events) {
        assert!(Instant::now() < deadline, "SSE: events so far {events:?}");
        let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap() else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.starts_with(':') {
                keepalive += 1;
                continue;
            }
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string)).unwrap_or_default()
            };
            events.push((field("event"), field("id"), field("data")));
        }
    }
    (events, keepalive, status, cache)
}

/// SSE from a snapshot: the snapshot event, then the changes as they are written, keep-alive
/// comments in between; Last-Event-ID resumes after the last event seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_the_snapshot_then_changes_and_resumes_from_the_last_event() {
    let topic = unique_topic("http-sse");
    create_topic(&topic, 1).await;
    produce(&topic, &changes(0, 5, 1));
    let (mut config, addr) = http_config(&[&topic], Limits::default(), 1000);
    config.http.sse_keepalive_s = 1;
    let _gateway = Gateway::start_with(config).await;
    snapshot_when_ready(addr, &topic).await;

    let writer = {
        let topic = topic.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            produce(&topic, &[Out::kv("a", Some("1"))]);
        })
    };
    let url = format!("/v1/topics/{topic}/log?from=-1&live=sse");
    let (events, keepalive, status, cache) = sse(addr, &url, &[], |e| e.len() >= 2).await;
    writer.await.unwrap();
    assert_eq!((status, cache.as_str()), (200, "no-store"));
    assert!(
        (1..=4).contains(&keepalive),
        "keep-alive comments about every second while nothing was written for 2.5 s: {keepalive}"
    );
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("snapshot", "1_5"));
    let snapshot: Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(snapshot["records"].as_array().unwrap().len(), 4, "five records, one of them a delete");
    assert_eq!((events[1].0.as_str(), events[1].1.as_str()), ("live", "1_6"));
    let change: Value = serde_json::from_str(&events[1].2).unwrap();
    assert_eq!(change["records"][0]["key"], "a");

    // Resume after the snapshot event: the change comes again, nothing before it.
    let (events, ..) = sse(addr, &url, &[("last-event-id", "1_5")], |e| !e.is_empty()).await;
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("live", "1_6"));
    let resumed: Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(resumed["records"].as_array().unwrap().len(), 1);

    // A bad start is an HTTP error, not an event.
    let bad = get(addr, &format!("/v1/topics/{topic}/log?from=1_99999&live=sse"), &[]).await;
    assert_eq!((bad.status, bad.json()["error"]["reason"].as_str()), (409, Some("OFFSET_BEYOND_END")));
}

/// Every error: the right status, `no-store`, a stable reason, and details to act on (the field
/// at fault; the restart URL and epoch of a 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_no_store_json_with_a_reason_and_what_to_do() {
    let topic = unique_topic("http-errors");
    create_topic(&topic, 2).await;
    produce(&topic, &changes(0, 400, 2));
    let limits = Limits { tail_max_records: 16, tail_pool_bytes: 0, ..Limits::default() };
    let (config, addr) = http_config(&[&topic], limits, 50);
    let _gateway = Gateway::start_with(config).await;
    snapshot_when_ready(addr, &topic).await;
    let log = format!("/v1/topics/{topic}/log");
    let check = |reply: Reply, status: u16, reason: &str| -> Value {
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(reply.header("content-type"), "application/json");
        let body = reply.json();
        assert_eq!(body["error"]["reason"], reason, "{body}");
        assert_eq!(body["error"]["status"], status);
        assert!(body["error"]["code"].as_str().is_some_and(|c| c != "Unknown" && !c.contains(' ')), "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        body["error"]["details"].clone()
    };

    let d = check(get(addr, "/v1/topics/nope/log?from=-1", &[]).await, 404, "UNKNOWN_TOPIC");
    assert_eq!(d, serde_json::json!({}));
    check(get(addr, "/v1/elsewhere", &[]).await, 404, "NOT_FOUND");
    let d = check(get(addr, &log, &[]).await, 400, "INVALID_ARGUMENT");
    assert_eq!(d["field"], "from");
    let d = check(get(addr, &format!("{log}?from=1_x"), &[]).await, 400, "INVALID_ARGUMENT");
    assert_eq!(d["field"], "from");
    let d = check(get(addr, &format!("{log}?from=-1&limit=5"), &[]).await, 400, "INVALID_ARGUMENT");
    assert_eq!(d["field"], "limit");
    let d = check(get(addr, &format!("{log}?from=-1&live=2"), &[]).await, 400, "INVALID_ARGUMENT");
    assert_eq!(d["field"], "live");
    let d = check(get(addr, &format!("{log}?from=-1&key_prefix="), &[]).await, 400, "INVALID_ARGUMENT");
    assert_eq!(d["field"], "key.prefixes");
    let d = check(get(addr, &format!("{log}?from=-1&translator=missing"), &[]).await, 404, "UNKNOWN_TRANSLATOR");
    assert_eq!(d["translator"], "missing");
    let reply = request(addr, "POST", &log, &[]).await;
    assert_eq!(reply.header("allow"), "GET, OPTIONS");
    check(reply, 405, "METHOD_NOT_ALLOWED");

    // Positions that cannot be served: 409 with the way back.
    let restart = |d: &Value| {
        assert_eq!(d["epoch"], "1");
        assert_eq!(d["restart"], format!("/v1/topics/{topic}/log?from=-1&epoch=1"));
    };
    restart(&check(get(addr, &format!("{log}?from=0_0.0"), &[]).await, 409, "EPOCH_CHANGED"));
    restart(&check(get(addr, &format!("{log}?from=-1&epoch=0"), &[]).await, 409, "EPOCH_CHANGED"));
    restart(&check(get(addr, &format!("{log}?from=1_0"), &[]).await, 409, "PARTITIONS_CHANGED"));
    let d = check(get(addr, &format!("{log}?from=1_0.999"), &[]).await, 409, "OFFSET_BEYOND_END");
    restart(&d);
    assert_eq!(d["latest"], 200);
    delete_records(&topic, 0, 150).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let reply = get(addr, &format!("{log}?from=1_100.0"), &[]).await;
        if reply.status == 409 {
            break check(reply, 409, "OFFSET_TOO_OLD");
        }
        assert!(Instant::now() < deadline, "offset 100 stayed readable after its deletion");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d["earliest"], 150);
    restart(&d);
    // The same position past the deleted records still reads.
    assert_eq!(get(addr, &format!("{log}?from=1_150.0"), &[]).await.status, 200);

    // CORS: the configured origin may read (and see the position headers); another may not.
    let page = [("origin", "http://page.test")];
    let ok = get(addr, &format!("{log}?from=1_150.0"), &page).await;
    assert_eq!(ok.header("access-control-allow-origin"), "http://page.test");
    assert!(ok.header("access-control-expose-headers").contains("tributary-next"));
    let preflight = request(addr, "OPTIONS", &log, &page).await;
    assert_eq!(preflight.status, 204);
    assert!(preflight.header("access-control-allow-headers").contains("authorization"));
    let other = get(addr, &format!("{log}?from=1_150.0"), &[("origin", "http://evil.test")]).await;
    assert_eq!((other.status, other.header("access-control-allow-origin")), (200, ""));
    // A cache must tell answers with and without CORS headers apart, even for a first request
    // that came without an Origin.
    let plain = get(addr, &format!("{log}?from=1_150.0"), &[]).await;
    assert_eq!(plain.header("vary"), "origin");
}

/// With a policy: no token is 401 with `WWW-Authenticate`, a topic outside the grant is 403,
/// and answers are `private` so no shared cache hands one caller's data to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_applies_and_answers_to_callers_are_private() {
    let topic = unique_topic("http-auth");
    let hidden = unique_topic("http-hidden");
    create_topic(&topic, 1).await;
    create_topic(&hidden, 1).await;
    produce(&topic, &changes(0, 3, 1));
    let dir = scratch_dir("http-auth");
    let token = "reader-secret-token";
    std::fs::write(
        dir.join("tokens.toml"),
        format!("[[token]]\nidentity = \"reader\"\nsha256 = \"{}\"\n", tributary_server::sha256_hex(token.as_bytes())),
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[grant]]\nidentities = [\"reader\"]\nread_topics = [\"{topic}\"]\n"),
    )
    .unwrap();
    let (mut config, addr) = http_config(&[&topic, &hidden], Limits::default(), 100);
    config.auth.tokens_file = Some(dir.join("tokens.toml"));
    config.auth.policy_file = Some(dir.join("policy.toml"));
    let _gateway = Gateway::start_with(config).await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        let reply = get(addr, &format!("/v1/topics/{topic}/log?from=-1"), &auth).await;
        if reply.status == 200 {
            break reply;
        }
        assert!(Instant::now() < deadline, "never served: {}", String::from_utf8_lossy(&reply.body));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.header("cache-control"), "private, max-age=5");
    assert_eq!(reply.json()["records"].as_array().unwrap().len(), 3);

    let anonymous = get(addr, &format!("/v1/topics/{topic}/log?from=-1"), &[]).await;
    assert_eq!((anonymous.status, anonymous.header("www-authenticate")), (401, "Bearer"));
    assert_eq!(anonymous.json()["error"]["reason"], "UNAUTHENTICATED");
    let wrong = get(addr, &format!("/v1/topics/{topic}/log?from=-1"), &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    let denied = get(addr, &format!("/v1/topics/{hidden}/log?from=-1"), &auth).await;
    assert_eq!((denied.status, denied.json()["error"]["reason"].as_str()), (403, Some("PERMISSION_DENIED")));
}

/// Translators over HTTP: the snapshot and the chunks through the field mapper rebuild B's model
/// of a raw rebuild; a translator that traps is a 422 naming it (before any byte of a
/// snapshot); with `skip_errors`, records whose translation fails are counted, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translators_apply_to_snapshots_and_chunks_and_their_failures_are_errors() {
    use crate::translators::{assignments, mapped, registry, upload, MAPPER_CONFIG};
    let topic = unique_topic("http-translate");
    let mixed = unique_topic("http-translate-mixed");
    create_topic(&topic, 2).await;
    create_topic(&mixed, 2).await;
    produce(&topic, &assignments(0, 200));
    let values: Vec<String> =
        (0..20).map(|i| if i % 4 == 1 { format!("bad-{i}") } else { format!("good-{i}") }).collect();
    produce(&mixed, &values.iter().enumerate().map(|(i, v)| Out::kv(&format!("m{i}"), Some(v))).collect::<Vec<_>>());
    let (config, addr) = http_config(&[&topic, &mixed], Limits::default(), 50);
    let gateway = Gateway::start_with(config).await;
    let mut reg = registry(&gateway).await;
    upload(&mut reg, "mapper", "field-mapper.wasm").await;
    upload(&mut reg, "panic", "panic.wasm").await;
    upload(&mut reg, "errors", "error-value.wasm").await;
    snapshot_when_ready(addr, &topic).await;
    let config: String =
        percent_encoding::utf8_percent_encode(MAPPER_CONFIG, percent_encoding::NON_ALPHANUMERIC).to_string();
    let query = format!("translator=mapper&translator_config={config}");
    let log = format!("/v1/topics/{topic}/log");

    let snapshot = get(addr, &format!("{log}?from=-1&{query}"), &[]).await;
    assert_eq!(snapshot.status, 200, "{}", String::from_utf8_lossy(&snapshot.body));
    let snapshot = snapshot.json();
    let mut state = State::new();
    apply_json(&mut state, &snapshot);
    produce(&topic, &assignments(1, 300));
    let target: Vec<i64> = ends(&topic).values().copied().collect();
    let mut next = snapshot["next"].as_str().unwrap().to_string();
    let mut kinds = std::collections::BTreeSet::new();
    loop {
        let answer = get(addr, &format!("{log}?from={next}&{query}"), &[]).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        let answer = answer.json();
        kinds.insert(answer["kind"].as_str().unwrap().to_string());
        let records = answer["records"].as_array().unwrap();
        assert!(records.iter().all(|r| r["index"] == 0), "translated outputs say which output they are");
        apply_json(&mut state, &answer);
        next = answer["next"].as_str().unwrap().to_string();
        if offsets(&answer).iter().zip(&target).all(|(o, t)| o >= t) {
            break;
        }
    }
    let expected: State =
        rebuild(&read_all(&topic)).into_iter().map(|(k, v)| ([b"b/".as_slice(), &k].concat(), mapped(&v))).collect();
    assert!(kinds.contains("chunk"), "{kinds:?}");
    assert_eq!(state.len(), expected.len());
    assert!(state == expected, "B's state through the mapper over HTTP equals the mapped raw rebuild");

    for from in ["-1", "1_0.0"] {
        let trap = get(addr, &format!("{log}?from={from}&translator=panic"), &[]).await;
        assert_eq!(trap.status, 422, "{}", String::from_utf8_lossy(&trap.body));
        assert_eq!(trap.header("cache-control"), "no-store");
        let error = trap.json();
        assert_eq!(
            (error["error"]["reason"].as_str(), error["error"]["details"]["translator"].as_str()),
            (Some("TRANSLATOR_TRAP"), Some("panic"))
        );
    }
    let mixed_log = format!("/v1/topics/{mixed}/log");
    let failing = get(addr, &format!("{mixed_log}?from=1_0.0&translator=errors"), &[]).await;
    assert_eq!(failing.status, 422, "{}", String::from_utf8_lossy(&failing.body));
    assert_eq!(failing.json()["error"]["reason"], "TRANSLATOR_ERROR");
    let skipping = get(addr, &format!("{mixed_log}?from=1_0.0&translator=errors&skip_errors=1"), &[]).await.json();
    let sent: Vec<&str> =
        skipping["records"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(skipping["skipped_records"], 5, "the five 'bad' records are counted");
    assert_eq!(sent.len(), 15);
    assert!(sent.iter().all(|v| v.starts_with("good")), "{sent:?}");
}

/// Key filters over HTTP: `key` (exact, repeatable) and `key_prefix` select the same records in
/// the snapshot and in the log, binary keys by percent-encoding; an answer still moves the
/// position past the records it filtered out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_select_records_in_snapshots_and_in_the_log() {
    let topic = unique_topic("http-filter");
    create_topic(&topic, 1).await;
    let mut records: Vec<Out> =
        (0..30).map(|i| Out::kv(&format!("{}-{i}", ["a", "b", "c"][i % 3]), Some("v"))).collect();
    records.push(Out { key: Some(vec![0xff, 0x01]), ..Out::kv("", Some("binary")) });
    produce(&topic, &records);
    let (config, addr) = http_config(&[&topic], Limits::default(), 1000);
    let _gateway = Gateway::start_with(config).await;
    snapshot_when_ready(addr, &topic).await;
    let log = format!("/v1/topics/{topic}/log");
    let keys = |answer: &Value| -> Vec<String> {
        answer["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["key"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("b64:{}", r["key_b64"].as_str().unwrap()))
            })
            .collect()
    };
    let snapshot = get(addr, &format!("{log}?from=-1&key_prefix=a-&key=b-1&key=%FF%01"), &[]).await.json();
    let mut got = keys(&snapshot);
    got.sort();
    let mut want: Vec<String> = (0..30).step_by(3).map(|i| format!("a-{i}")).collect();
    want.extend(["b-1".to_string(), "b64:/wE=".to_string()]);
    want.sort();
    assert_eq!(got, want);
    let changes = get(addr, &format!("{log}?from=1_0&key_prefix=c-"), &[]).await.json();
    assert_eq!(keys(&changes), (0..30).filter(|i| i % 3 == 2).map(|i| format!("c-{i}")).collect::<Vec<_>>());
    assert_eq!(changes["next"], "1_31", "the position moves past what the filter left out");
}
