//! Issue 8: damaged files, hostile clients and Kafka outages must not take the gateway down.

use std::path::Path;

use tonic::Code;
use tributary_server::{
    api::status,
    config::{ConnectionLimits, Limits},
    pb, sha256_hex,
};

use crate::{
    harness::{proxy::FaultyProxy, *},
    translators::{artifact, registry as translators_client, upload_bytes as upload_translator},
};

fn translator(name: &str) -> Option<pb::TranslatorRef> {
    Some(pb::TranslatorRef { name: name.into(), ..Default::default() })
}

async fn translated_snapshot(client: &mut Client, topic: &str, name: &str) -> Result<Snapshot, tonic::Status> {
    snapshot(client, pb::GetSnapshotRequest { translator: translator(name), ..topic_snapshot(topic) }).await
}

fn flip_bytes(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Case 1: a compiled artifact with flipped bytes (it used to crash the gateway with SIGSEGV) or
/// truncated is recompiled from the verified component; a component that no longer hashes to its
/// digest, a missing file, or an index entry with a bad name or digest disables only that entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_translator_files_disable_only_their_version() {
    let topic = unique_topic("damaged");
    create_topic(&topic, 1).await;
    produce(&topic, &[Out::kv("a", Some(r#"{"id":1,"station":"x","status":"done"}"#))]);
    let config = config(&[&topic], Limits::default());
    let dir = config.translators.data_dir.clone();
    let (identity, mapper) = (sha256_hex(&artifact("identity.wasm")), sha256_hex(&artifact("field-mapper.wasm")));
    let compiled = |digest: &str| dir.join("compiled").join(format!("{digest}.cwasm"));
    let component = |digest: &str| dir.join("components").join(format!("{digest}.wasm"));

    let gateway = Gateway::start_with(config.clone()).await;
    let mut reg = translators_client(&gateway).await;
    upload_translator(&mut reg, "ident", &artifact("identity.wasm")).await.unwrap();
    upload_translator(&mut reg, "mapper", &artifact("field-mapper.wasm")).await.unwrap();
    gateway.stop().await;

    // Flipped bytes (same length) and a truncated artifact: recompiled, both translators work.
    flip_bytes(&compiled(&identity));
    let flipped = std::fs::read(compiled(&identity)).unwrap();
    let truncated = std::fs::read(compiled(&mapper)).unwrap();
    std::fs::write(compiled(&mapper), &truncated[..truncated.len() / 3]).unwrap();
    let gateway = Gateway::start_with(config.clone()).await;
    let mut client = gateway.client().await;
    assert_eq!(translated_snapshot(&mut client, &topic, "ident").await.unwrap().entries.len(), 1);
    assert_eq!(translated_snapshot(&mut client, &topic, "mapper").await.unwrap().entries.len(), 1);
    assert_ne!(std::fs::read(compiled(&identity)).unwrap(), flipped, "the damaged artifact was replaced");
    assert_eq!(std::fs::read(compiled(&mapper)).unwrap().len(), truncated.len(), "the truncated one too");
    gateway.stop().await;

    // A component replaced by other bytes, a missing component, and index entries whose name or
    // digest is not valid (they would point outside the data directory).
    std::fs::write(component(&identity), artifact("field-mapper.wasm")).unwrap();
    std::fs::remove_file(compiled(&identity)).unwrap();
    std::fs::remove_file(component(&mapper)).unwrap();
    std::fs::remove_file(compiled(&mapper)).unwrap();
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let version = index["names"]["ident"][0].clone();
    index["names"]["../../etc"] = serde_json::json!([version.clone()]);
    let mut bad_digest = version;
    bad_digest["digest"] = "../../../etc/passwd".into();
    index["names"]["sneaky"] = serde_json::json!([bad_digest]);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let gateway = Gateway::start_with(config.clone()).await;
    let mut client = gateway.client().await;
    assert_eq!(snapshot(&mut client, topic_snapshot(&topic)).await.unwrap().entries.len(), 1, "untranslated serves");
    let mut reg = translators_client(&gateway).await;
    let listed = reg.list(pb::ListTranslatorsRequest {}).await.unwrap().into_inner();
    let names: Vec<&str> = listed.translators.iter().map(|t| t.name.as_str()).collect();
    assert!(!names.contains(&"../../etc"), "an invalid name is not loaded: {names:?}");
    for name in ["ident", "mapper"] {
        let status = translated_snapshot(&mut client, &topic, name).await.err().expect("a damaged version fails");
        assert_eq!(status.code(), Code::DataLoss, "{name}: {status:?}");
        assert_eq!(status::reason(&status).as_deref(), Some("TRANSLATOR_DAMAGED"));
        assert!(status.message().contains("upload the same component again"), "{}", status.message());
        assert!(!status.message().contains(dir.to_str().unwrap()), "no server path in the message");
    }
    assert!(!names.contains(&"sneaky"), "a name left without a valid version is not loaded: {names:?}");

    // Uploading the same bytes again repairs the version, also across a restart.
    upload_translator(&mut reg, "ident", &artifact("identity.wasm")).await.unwrap();
    assert_eq!(translated_snapshot(&mut client, &topic, "ident").await.unwrap().entries.len(), 1);
    gateway.stop().await;
    let gateway = Gateway::start_with(config).await;
    let mut client = gateway.client().await;
    assert_eq!(translated_snapshot(&mut client, &topic, "ident").await.unwrap().entries.len(), 1);
}

/// The gateway's health as a load balancer sees it.
async fn health(addr: std::net::SocketAddr) -> tonic_health::pb::health_check_response::ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    response.into_inner().status()
}

/// Serves `config` in this process without waiting for it to be ready.
async fn serve_unready(
    config: tributary_server::config::Config,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tributary_server::serve(config, listener, async {
        let _ = stopped.await;
    });
    let server = tokio::spawn(async move { served.await.map_err(|e| e.to_string()) });
    (addr, stop, server)
}

/// Calls that need Kafka's partitions answer UNAVAILABLE at once while the gateway cannot reach
/// it, and health says NOT_SERVING.
async fn assert_waiting_for_kafka(addr: std::net::SocketAddr, topic: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(health(addr).await, ServingStatus::NotServing);
    let mut client = connect(addr).await;
    let started = std::time::Instant::now();
    let status = client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.into()] }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("KAFKA_UNAVAILABLE"));
    let request = pb::SubscribeRequest { topics: vec![topic.into()], ..Default::default() };
    let status = client.subscribe(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "answered at once: {:?}", started.elapsed());
}

/// Case 5: a gateway started before its topic exists (or right after it was created, before it
/// has a leader) used to exit with status 1. It keeps retrying and serves once the topic is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_topic_exists_serves_once_it_does() {
    let topic = unique_topic("late");
    let (addr, stop, server) = serve_unready(config(&[&topic], Limits::default())).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!server.is_finished(), "the gateway keeps running: {:?}", server.await);
    assert_waiting_for_kafka(addr, &topic).await;

    create_topic(&topic, 2).await;
    produce(&topic, &[Out::kv("a", Some("1"))]);
    wait_serving(addr).await;
    let mut client = connect(addr).await;
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.entries.len(), 1);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Case 5: with Kafka unreachable the gateway keeps retrying, answers at once, and still stops
/// promptly when told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_kafka_keeps_retrying_and_stops_when_told() {
    let topic = unique_topic("no-kafka");
    let mut config = config(&[&topic], Limits::default());
    config.kafka.bootstrap_servers = "127.0.0.1:1".into(); // nothing listens there
    let (addr, stop, server) = serve_unready(config).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!server.is_finished(), "the gateway keeps running: {:?}", server.await);
    assert_waiting_for_kafka(addr, &topic).await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(12), "stopped in {:?}", started.elapsed());
}

/// Case 10: an upload stream that never ends used to be held forever. It ends RESOURCE_EXHAUSTED
/// after `translators.upload_timeout_ms`, and uploads beyond `max_concurrent_uploads` are refused
/// at once instead of queueing compiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_upload_times_out_and_uploads_are_bounded() {
    use pb::upload_translator_request::Part;
    let topic = unique_topic("uploads");
    create_topic(&topic, 1).await;
    let mut config = config(&[&topic], Limits::default());
    config.translators.upload_timeout_ms = 1_500;
    config.translators.max_concurrent_uploads = 1;
    let gateway = Gateway::start_with(config).await;

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = pb::UploadHeader { name: "slow".into(), ..Default::default() };
    tx.send(pb::UploadTranslatorRequest { part: Some(Part::Header(header)) }).await.unwrap();
    tx.send(pb::UploadTranslatorRequest { part: Some(Part::Chunk(artifact("identity.wasm")[..100].to_vec().into())) })
        .await
        .unwrap();
    let mut hanging_client = translators_client(&gateway).await;
    let started = std::time::Instant::now();
    let hanging = tokio::spawn(async move {
        hanging_client.upload(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map(|r| r.into_inner())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut reg = translators_client(&gateway).await;
    let status = upload_translator(&mut reg, "other", &artifact("identity.wasm")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_concurrent_uploads"), "{}", status.message());

    let status = hanging.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("upload_timeout_ms"), "{}", status.message());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "ended after {:?}", started.elapsed());
    drop(tx);

    upload_translator(&mut reg, "other", &artifact("identity.wasm")).await.expect("the slot is free again");
}

fn leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            return out.push(byte);
        }
        out.push(byte | 0x80);
    }
}

fn wasm_section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb128(body.len(), out);
    out.extend_from_slice(body);
}

/// A valid translator that takes Cranelift tens of seconds and hundreds of MB to compile, though
/// it is under 1 MB: the identity component plus an unused core module with one function of
/// `loops` nested loops, each updating all of `locals` locals (all of them live across every
/// back edge). Compile time grows with loops² × locals.
fn slow_to_compile_component(loops: usize, locals: usize) -> Vec<u8> {
    let mut body = vec![1];
    leb128(locals, &mut body);
    body.push(0x7e); // locals of type i64
    for _ in 0..loops {
        body.extend_from_slice(&[0x03, 0x40]); // loop (no result)
    }
    for depth in 0..loops {
        for local in 0..locals {
            body.push(0x20); // local.get
            leb128(local, &mut body);
            body.push(0x20);
            leb128((local + depth) % locals, &mut body);
            body.push(0x7c); // i64.add
            body.push(0x21); // local.set
            leb128(local, &mut body);
        }
        // local.get 0; i64.eqz; br_if 0 (back to this loop); end
        body.extend_from_slice(&[0x20, 0x00, 0x50, 0x0d, 0x00, 0x0b]);
    }
    body.extend_from_slice(&[0x20, 0x00, 0x0b]); // local.get 0; end: (i64) -> i64
    let mut code = vec![1];
    leb128(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    wasm_section(1, &[1, 0x60, 1, 0x7e, 1, 0x7e], &mut module); // type (i64) -> i64
    wasm_section(3, &[1, 0], &mut module); // one function of that type
    wasm_section(10, &code, &mut module);
    let mut component = artifact("identity.wasm");
    wasm_section(1, &module, &mut component); // a core module section of the component
    component
}

/// Processes compiling for the registry in `data_dir` (their arguments are in it).
fn compilers_of(data_dir: &Path) -> Vec<u32> {
    let marker = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("compile-translator") && cmdline.contains(&marker)
        })
        .collect()
}

async fn wait_no_compilers(data_dir: &Path, within: std::time::Duration) {
    let started = std::time::Instant::now();
    while !compilers_of(data_dir).is_empty() {
        assert!(started.elapsed() < within, "the compiler process is still running after {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Case 2: a component slow to compile (one huge function, well under the size limit) used to
/// keep a core busy and grow the gateway past 1.3 GB for over ten minutes, go on after the client
/// left, and keep SIGTERM from stopping the gateway. Compiles run in a child process with a time
/// and a memory budget, killed when the client leaves or the gateway stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_slow_to_compile_is_stopped_at_its_budget_or_when_its_client_leaves() {
    use std::time::{Duration, Instant};
    let topic = unique_topic("compile");
    create_topic(&topic, 1).await;
    let slow = slow_to_compile_component(200, 400);
    assert!(slow.len() < 1 << 20, "small: {} bytes", slow.len());

    // Time budget: the upload fails RESOURCE_EXHAUSTED at the deadline, naming the setting; the
    // compiler is gone and the next upload compiles normally.
    let mut config = config(&[&topic], Limits::default());
    config.translators.compile_timeout_ms = 1_500;
    let data_dir = config.translators.data_dir.clone();
    let gateway = Gateway::start_with(config).await;
    let mut reg = translators_client(&gateway).await;
    let started = Instant::now();
    let status = upload_translator(&mut reg, "slow", &slow).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("LIMIT_REACHED"));
    assert!(status.message().contains("translators.compile_timeout_ms"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(10), "stopped at its deadline: {:?}", started.elapsed());
    wait_no_compilers(&data_dir, Duration::from_secs(2)).await;
    upload_translator(&mut reg, "ident", &artifact("identity.wasm")).await.expect("a normal upload compiles");
    let names = reg.list(pb::ListTranslatorsRequest {}).await.unwrap().into_inner().translators;
    assert_eq!(names.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ident"], "nothing of the slow one kept");

    // The client leaves mid-compile: the compiler is killed, not left running for minutes.
    let mut leaving = translators_client(&gateway).await;
    let upload = tokio::spawn({
        let slow = slow.clone();
        async move { upload_translator(&mut leaving, "slow", &slow).await }
    });
    let started = Instant::now();
    while compilers_of(&data_dir).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the compile never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upload.abort();
    wait_no_compilers(&data_dir, Duration::from_secs(3)).await;

    // The gateway stops mid-compile: the call ends UNAVAILABLE at once, and the compiler with it.
    let mut stopping = translators_client(&gateway).await;
    let upload = tokio::spawn({
        let slow = slow.clone();
        async move { upload_translator(&mut stopping, "slow", &slow).await }
    });
    while compilers_of(&data_dir).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    gateway.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "stopped promptly: {:?}", started.elapsed());
    let status = upload.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_no_compilers(&data_dir, Duration::from_secs(2)).await;

    // Memory budget: past it the compile fails RESOURCE_EXHAUSTED, naming the setting.
    let mut config = tributary_testkit::config(&[&topic], Limits::default());
    config.translators.compile_memory_bytes = 64 << 20;
    let gateway = Gateway::start_with(config).await;
    let mut reg = translators_client(&gateway).await;
    let status = upload_translator(&mut reg, "slow", &slow).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("translators.compile_memory_bytes"), "{}", status.message());
    upload_translator(&mut reg, "ident", &artifact("identity.wasm")).await.expect("small components fit in 64 MiB");
}

/// Case 3: idle TCP connections that never speak HTTP/2 used to pile up until the process ran out
/// of file descriptors. They are closed after `limits.handshake_timeout_ms`, at most
/// `limits.max_connections` are open at once, and a real client gets through once slots free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let topic = unique_topic("conns");
    create_topic(&topic, 1).await;
    let mut config = config(&[&topic], Limits::default());
    config.limits.connections =
        ConnectionLimits { max_connections: 20, handshake_timeout_ms: 1_000, ..ConnectionLimits::default() };
    let gateway = Gateway::start_with(config).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await; // wait_serving's connections close

    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(gateway.addr).await.unwrap());
    }
    // A real client waits for a slot (the first 20 idle ones hold them), then gets through.
    let started = std::time::Instant::now();
    let mut client = gateway.client().await;
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(500), "waited for a slot: {:?}", started.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "got through in {:?}", started.elapsed());

    // Every idle connection is closed by the gateway (end of stream or reset), none is kept.
    for mut c in idle {
        let closed = async {
            let mut buf = [0u8; 256];
            // The server's own SETTINGS frame may come first; then the end of the stream.
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), closed)
            .await
            .expect("the gateway closes a connection that never sends the preface");
    }
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic] }).await.unwrap();
}

/// A shutdown does not wait on a connection without a call whose client never answers HTTP/2's
/// PING (gRPC's C core only reads during a call): it is closed after a short grace, and the
/// gateway stops well within its drain deadline (it waited the whole drain before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_connections_without_calls_instead_of_waiting_for_them() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let topic = unique_topic("quiet-stop");
    create_topic(&topic, 1).await;
    let gateway = Gateway::start(&[&topic]).await;
    let mut quiet = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    quiet.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    quiet.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
                                                                  // A call on another connection, so the gateway is surely serving.
    let mut client = gateway.client().await;
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic] }).await.unwrap();
    drop(client);

    let started = Instant::now();
    tokio::time::timeout(tributary_server::app::DRAIN * 2, gateway.stop()).await.expect("the gateway stops");
    let took = started.elapsed();
    assert!(took < tributary_server::app::DRAIN / 2, "stopped in {took:?}, not after the drain deadline");
    // The quiet connection was closed by the gateway (its GOAWAY, then the end of the stream).
    let mut buf = [0u8; 1024];
    let closed = async { while matches!(quiet.read(&mut buf).await, Ok(n) if n > 0) {} };
    tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the quiet connection is closed");
}

/// Case 3 (established connections): a connection without a call for `limits.idle_timeout_ms`
/// used to be kept forever. It is closed; a connection with an open stream is not, however quiet
/// the stream; and a client whose connection was closed gets through on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_calls_are_closed_after_the_idle_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let topic = unique_topic("idle");
    create_topic(&topic, 1).await;
    let mut config = config(&[&topic], Limits::default());
    config.limits.connections = ConnectionLimits { idle_timeout_ms: 1_000, ..ConnectionLimits::default() };
    let gateway = Gateway::start_with(config).await;

    // A connection that completes the HTTP/2 handshake and then makes no call.
    let mut quiet = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    quiet.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    quiet.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = async {
        while let Ok(n) = quiet.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed).await.expect("an idle connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout: {:?}", started.elapsed());

    // A stream with nothing to deliver but progress keeps its connection three timeouts long.
    let mut client = gateway.client().await;
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        stream.message().await.expect("the stream goes on").expect("not ended");
    }
    drop(stream);

    // A client idle past the timeout reconnects on its next call without an error.
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic] }).await.unwrap();
}

/// A broker of the test's own (scripts/kafka.sh on other ports), so that stopping it disturbs no
/// other test. Stopped on drop.
pub(crate) struct OwnBroker {
    port: u16,
    /// With a SASL_SSL listener on `port + 2`: the broker's data directory (its CA is in `tls/`).
    sasl_ssl: Option<std::path::PathBuf>,
    /// The client port it advertises, when not its own (a proxy forwards from there).
    advertised: Option<u16>,
}

impl OwnBroker {
    fn kafka_sh(&self, command: &str) -> String {
        let mut kafka = std::process::Command::new(repo_root().join("scripts/kafka.sh"));
        kafka
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string());
        // Never the suite's broker's data directory (scripts/test.sh exports it).
        kafka.env_remove("KAFKA_DATA_DIR").env_remove("KAFKA_SASL_SSL_PORT").env_remove("KAFKA_ADVERTISED_PORT");
        if let Some(port) = self.advertised {
            kafka.env("KAFKA_ADVERTISED_PORT", port.to_string());
        }
        if let Some(dir) = &self.sasl_ssl {
            kafka.env("KAFKA_SASL_SSL_PORT", (self.port + 2).to_string()).env("KAFKA_DATA_DIR", dir);
        }
        let out = kafka.output().unwrap();
        assert!(out.status.success(), "kafka.sh {command}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A broker with fresh data (the last run's topics deleted) on `port`.
    fn start(port: u16) -> (Self, String) {
        let broker = OwnBroker { port, sasl_ssl: None, advertised: None };
        broker.kafka_sh("reset");
        let bootstrap = broker.kafka_sh("start");
        (broker, bootstrap)
    }

    /// A broker with fresh data on `port` that every client reaches through a [`FaultyProxy`] on
    /// `port + 2` (it advertises that port); returns both and the proxy's bootstrap address.
    pub(crate) async fn start_behind_proxy(port: u16) -> (Self, FaultyProxy, String) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port + 2)).unwrap();
        let proxy = FaultyProxy::start(listener, ([127, 0, 0, 1], port).into());
        let broker = OwnBroker { port, sasl_ssl: None, advertised: Some(port + 2) };
        let started = tokio::task::spawn_blocking(move || {
            broker.kafka_sh("reset");
            broker.kafka_sh("start");
            broker
        });
        let broker = started.await.unwrap();
        let bootstrap = proxy.addr.to_string();
        (broker, proxy, bootstrap)
    }

    /// A fresh broker that also listens with SASL_SSL on `port + 2`; returns its plain bootstrap.
    pub(crate) fn start_with_sasl_ssl(port: u16, data_dir: std::path::PathBuf) -> (Self, String) {
        let broker = OwnBroker { port, sasl_ssl: Some(data_dir), advertised: None };
        let bootstrap = broker.kafka_sh("start");
        (broker, bootstrap)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kafka_sh("stop");
    }
}

pub(crate) async fn health_of(
    addr: std::net::SocketAddr,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
    response.into_inner().status()
}

/// Case 6: during a Kafka outage the gateway used to stay silent: DescribeTopics took Kafka's
/// 10 s timeout, a new Subscribe got no message at all, and health said nothing. Now the view
/// keeps serving, DescribeTopics answers at once with the last known offsets and their age, a
/// Subscribe gets its first progress at once, and the `tributary.kafka` health service says
/// NOT_SERVING until Kafka is back; then records flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_kafka_outage_the_view_keeps_serving_and_says_kafka_is_away() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let (broker, bootstrap) = OwnBroker::start(19_392);
    let topic = unique_topic("outage");
    create_topic_at(&bootstrap, &topic, 2).await;
    let writer = Writer::new_at(&bootstrap, &topic);
    writer.send(&Out::kv("a", Some("1")));
    writer.flush();
    drop(writer);
    let mut config = config(&[&topic], Limits::default());
    config.kafka.bootstrap_servers = bootstrap.clone();
    let gateway = Gateway::start_with(config).await;
    let mut client = gateway.client().await;
    let described = client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();
    assert!(described.get_ref().kafka_reachable && described.get_ref().watermarks_age_ms == 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while health_of(gateway.addr, "tributary.kafka").await != ServingStatus::Serving {
        assert!(std::time::Instant::now() < deadline, "Kafka is reported reachable while it is up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Its sibling says whether ingest keeps up (`NOT_SERVING` with `view_falling_behind`).
    assert_eq!(health_of(gateway.addr, "tributary.ingest").await, ServingStatus::Serving, "ingest keeps up");
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() })
            .await
            .unwrap();

    broker.kafka_sh("stop");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while health_of(gateway.addr, "tributary.kafka").await != ServingStatus::NotServing {
        assert!(std::time::Instant::now() < deadline, "the kafka health service notices the outage");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(health_of(gateway.addr, "").await, ServingStatus::Serving, "the view still serves");

    let started = std::time::Instant::now();
    let described = client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();
    let described = described.into_inner();
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered in {:?}", started.elapsed());
    assert!(!described.kafka_reachable && described.watermarks_age_ms > 0, "{described:?}");
    assert_eq!(described.topics[0].partitions.iter().map(|p| p.latest_offset).sum::<i64>(), 1);

    let started = std::time::Instant::now();
    let mut stream = client
        .subscribe(pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.message, Some(pb::subscribe_response::Message::Progress(_))), "{first:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "first progress in {:?}", started.elapsed());
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.entries.len(), 1, "snapshots are served from the view");

    // Kafka comes back: reachable again, and a record written now reaches the follower.
    broker.kafka_sh("start");
    let writer = Writer::new_at(&bootstrap, &topic);
    writer.send(&Out::kv("b", Some("2")));
    writer.flush();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while follower.records.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "records flow again after the outage");
        tokio::time::timeout(std::time::Duration::from_secs(1), follower.next()).await.ok();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while health_of(gateway.addr, "tributary.kafka").await != ServingStatus::Serving {
        assert!(std::time::Instant::now() < deadline, "Kafka is reported reachable again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Fills a topic with `records` records of 1 KiB, opens `stalled` Subscribe streams from offset 0
/// on a gateway with `env` whose clients read the first message and then never again, and has one
/// more client read everything meanwhile. Returns how many MiB the gateway grew.
async fn grown_by_stalled_streams(prefix: &str, records: usize, stalled: usize, env: &[(&str, &str)]) -> u64 {
    let topic = unique_topic(prefix);
    create_topic(&topic, 1).await;
    let value = "v".repeat(1024);
    let outs: Vec<Out> = (0..records).map(|i| Out::kv(&format!("k{i}"), Some(&value))).collect();
    produce(&topic, &outs);
    let gateway = Process::spawn(&[&topic], env).await;
    // A connection each: on a shared connection, streams that are not read would use up the
    // client's HTTP/2 connection window and block the others' first message (client side).
    let mut clients = Vec::new();
    for _ in 0..stalled {
        clients.push(connect(gateway.addr).await);
    }
    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
    let request = || pb::SubscribeRequest { from_offsets: from.clone(), ..Default::default() };
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let before = gateway.rss_kib();
    let mut streams = Vec::new();
    for client in &mut clients {
        let mut s = client.subscribe(request()).await.unwrap().into_inner();
        s.message().await.unwrap().unwrap(); // the first progress, then never again
        streams.push(s);
    }
    // A client that reads gets everything while the others hold their streams.
    let mut reader = connect(gateway.addr).await;
    let mut follower = Follower::start(&mut reader, request()).await.unwrap();
    follower.until(&ends(&topic), std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(follower.records.len(), records, "the reading client got everything");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    gateway.rss_kib().saturating_sub(before) / 1024
}

/// Case 4: Subscribe streams whose clients never read used to buffer up to
/// `stream_buffer_messages` batches each (16 MiB with 1 MiB batches: ~16 GiB at the stream
/// limit). Each now holds at most `limits.stream_buffer_bytes` (or one batch), and a client that
/// reads is not slowed by them. Measured with 1 MiB batches: 20 stalled streams grew the gateway
/// by ~520 MiB before, ~180 MiB now (most of it the 21 catch-up readers' librdkafka clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_hold_bounded_memory() {
    let env = [
        ("TRIBUTARY__LIMITS__STREAM_BUFFER_BYTES", "65536"),
        ("TRIBUTARY__LIMITS__MAX_BATCH_BYTES", "1048576"),
        ("TRIBUTARY__LIMITS__MAX_CATCHUP_READERS", "32"),
    ];
    let grown_mib = grown_by_stalled_streams("stalled", 30_000, 20, &env).await;
    assert!(grown_mib < 300, "20 stalled streams grew the gateway by {grown_mib} MiB");
}

/// Case 4, in total: clients that stop reading share one budget of buffered bytes
/// (`limits.stream_buffer_total_bytes`) beyond one message each, however large each stream's own
/// buffer may be; a client that reads is not held up by them. Measured: the gateway grew by
/// 255 MiB without the shared budget, by 54 MiB with it (most of it the catch-up readers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_share_one_budget_of_buffered_bytes() {
    let env = [
        // Each stream alone could hold 16 MiB (64 batches of 256 KiB); together they may hold 1 MiB.
        ("TRIBUTARY__LIMITS__STREAM_BUFFER_BYTES", "16777216"),
        ("TRIBUTARY__LIMITS__STREAM_BUFFER_MESSAGES", "64"),
        ("TRIBUTARY__LIMITS__STREAM_BUFFER_TOTAL_BYTES", "1048576"),
        ("TRIBUTARY__LIMITS__MAX_CATCHUP_READERS", "32"),
    ];
    let grown_mib = grown_by_stalled_streams("budget", 40_000, 10, &env).await;
    assert!(grown_mib < 150, "10 stalled streams grew the gateway by {grown_mib} MiB");
}
