//! Tributary's test harness, shared by the end-to-end tests and the benchmark: a real Kafka broker
//! (started by `scripts/kafka.sh`), real gateways on port 0 (in-process or as the real binary),
//! raw consumers that rebuild state the slow, obvious way, and a follower that checks the
//! contract on every message it reads.
//!
//! It must not share code with the gateway's data path: the reference is only independent if it
//! reads Kafka on its own.
//!
//! [`bench`] holds what the benchmarks share (the raw-consumer baseline and its profiles); [`web`]
//! the HTTP log's client side (an HTTP client, a follower, nginx as a cache); [`schemas`] a real
//! schema registry's side (schemas registered, values framed).

pub mod bench;
pub mod proxy;
pub mod schemas;
pub mod web;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Message, OwnedHeaders},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Offset, TopicPartitionList,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tributary_server::{
    config::{Config, Limits},
    pb::{self, gateway_client::GatewayClient},
};

pub type Client = GatewayClient<Channel>;

pub fn bootstrap() -> String {
    std::env::var("TRIBUTARY_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

fn admin() -> AdminClient<DefaultClientContext> {
    admin_at(&bootstrap())
}

fn admin_at(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client")
}

/// Deletes a topic (a benchmark's big one, once measured).
pub async fn delete_topic(name: &str) {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin().delete_topics(&[name], &opts).await.expect("delete topic") {
        r.unwrap_or_else(|(t, e)| panic!("delete topic {t}: {e}"));
    }
}

/// Creates a topic on the broker at `bootstrap` (a test's own broker).
pub async fn create_topic_at(bootstrap: &str, name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let result = admin_at(bootstrap).create_topics([&topic], &opts).await.expect("create topic");
    for r in result {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Creates a topic; fails the test with a hint when Kafka is not running.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await
}

pub async fn create_topic_with(name: &str, partitions: i32, config: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let result = admin().create_topics([&topic], &opts).await.unwrap_or_else(|e| {
        panic!("cannot reach Kafka at {} ({e}); start it with `scripts/kafka.sh start`", bootstrap())
    });
    for r in result {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

pub async fn add_partitions(name: &str, total: i32) {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let parts = rdkafka::admin::NewPartitions::new(name, total as usize);
    for r in admin().create_partitions([&parts], &opts).await.unwrap() {
        r.unwrap();
    }
}

/// Deletes every record of `topic`/`partition` below `offset` (Kafka's DeleteRecords).
pub async fn delete_records(topic: &str, partition: i32, offset: i64) {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let result = admin().delete_records(&list, &opts).await.expect("delete records");
    for e in result.elements() {
        assert!(e.error().is_ok(), "delete records {topic}/{partition}: {:?}", e.error());
    }
}

/// A record to produce: `value: None` is a tombstone.
#[derive(Clone, Debug)]
pub struct Out {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Out {
    pub fn kv(key: &str, value: Option<&str>) -> Self {
        Out {
            partition: None,
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![],
        }
    }
}

pub struct Writer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl Writer {
    pub fn new(topic: &str) -> Self {
        Self::new_at(&bootstrap(), topic)
    }

    /// A writer to the broker at `bootstrap` (a test's own broker).
    pub fn new_at(bootstrap: &str, topic: &str) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        Writer { producer, topic: topic.to_string() }
    }

    pub fn send(&self, out: &Out) {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &out.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        loop {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers.clone());
            if let Some(k) = &out.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &out.value {
                record = record.payload(v.as_slice());
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            match self.producer.send(record) {
                Ok(()) => return,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => std::thread::sleep(Duration::from_millis(5)),
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }

    /// Connects and learns the topic's partitions, so that the first record sent is not delayed.
    pub fn warm_up(&self) {
        self.producer.client().fetch_metadata(Some(&self.topic), Duration::from_secs(10)).expect("metadata");
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(60)).expect("flush");
    }
}

/// Produces `records` and waits until Kafka has them.
pub fn produce(topic: &str, records: &[Out]) {
    let w = Writer::new(topic);
    for r in records {
        w.send(r);
    }
    w.flush();
}

/// A record as a raw consumer saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Raw {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads every record of `topic` from the beginning to the current end, with a plain consumer.
pub fn read_all(topic: &str) -> Vec<Raw> {
    read_all_at(&bootstrap(), topic)
}

/// [`read_all`] from the broker at `bootstrap`.
pub fn read_all_at(bootstrap: &str, topic: &str) -> Vec<Raw> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-rebuild")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        if high > low {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "raw consumer did not reach the end of {topic}");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("raw consume");
        let headers = m
            .headers()
            .map(|hs| {
                use rdkafka::message::Headers;
                hs.iter().map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec()))).collect()
            })
            .unwrap_or_default();
        out.push(Raw {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
        });
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    out
}

/// State = key → value, per rule 2, from raw records.
pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

pub fn rebuild(records: &[Raw]) -> State {
    let mut state = State::new();
    for r in records {
        if let Some(k) = &r.key {
            match &r.value {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
    }
    state
}

/// Applies a streamed record to a client's state, as a client would.
pub fn apply(state: &mut State, record: &pb::Record) {
    if let Some(k) = &record.key {
        match &record.value {
            Some(v) => state.insert(k.to_vec(), v.to_vec()),
            None => state.remove(&k.to_vec()),
        };
    }
}

/// A gateway serving in this process, stopped on drop.
pub struct Gateway {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tributary_core::Error>>>,
}

/// A gateway's configuration for `topics`, with the data path's `limits` (the connection limits
/// are their defaults: set `config.limits.connections` to change them).
pub fn config(topics: &[&str], limits: Limits) -> Config {
    let mut config = Config::default();
    config.limits.core = limits;
    config.kafka.bootstrap_servers = bootstrap();
    config.kafka.topics = topics.iter().map(|t| t.to_string()).collect();
    config.kafka.metadata_refresh_ms = 500;
    config.limits.core.progress_interval_ms = 200;
    config.translators.data_dir = scratch_dir("registry");
    // The gateway runs in the test's process: compiles run in the real `tributary` binary.
    config.translators.compiler = Some(binary());
    config
}

/// A fresh directory for one test's files (left in the system's temp dir).
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-test-{}", unique_topic(what)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Gateway {
    pub async fn start(topics: &[&str]) -> Self {
        Self::start_with(config(topics, Limits::default())).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves on `addr` (a restarted gateway takes its predecessor's address).
    pub async fn start_on(config: Config, addr: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tributary_server::serve(config, listener, async {
            let _ = stopped.await;
        }));
        let gateway = Gateway { addr, stop: Some(stop), task: Some(task) };
        wait_serving(addr).await;
        gateway
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn connect(addr: std::net::SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    GatewayClient::new(channel).max_decoding_message_size(64 << 20)
}

/// Polls grpc.health.v1 until the gateway reports SERVING.
pub async fn wait_serving(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "gateway at {addr} did not become SERVING");
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|s| {
                s.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            }) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The root of the repository (for `translators/dist`, `scripts/`, `docs/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A client of a gateway's translator registry.
pub type Registry = tributary_server::pb::translators_client::TranslatorsClient<Channel>;

/// `translators/dist/<name>`, built by scripts/build-translators.sh.
pub fn artifact(name: &str) -> Vec<u8> {
    let path = repo_root().join("translators/dist").join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; build it with scripts/build-translators.sh", path.display()))
}

/// Uploads `bytes` as a new version of translator `name`, in chunks of 1 MiB (a gRPC message is
/// at most 4 MiB; components of JavaScript or Python are 12-19 MB).
pub async fn upload_bytes(
    client: &mut Registry,
    name: &str,
    bytes: &[u8],
) -> Result<pb::TranslatorVersion, tonic::Status> {
    use pb::upload_translator_request::Part;
    let header = pb::UploadTranslatorRequest {
        part: Some(Part::Header(pb::UploadHeader {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: String::new(),
        })),
    };
    let chunks: Vec<pb::UploadTranslatorRequest> = bytes
        .chunks(1 << 20)
        .map(|c| pb::UploadTranslatorRequest { part: Some(Part::Chunk(bytes::Bytes::copy_from_slice(c))) })
        .collect();
    client.upload(tokio_stream::iter(std::iter::once(header).chain(chunks))).await.map(|r| r.into_inner())
}

/// Uploads `translators/dist/<file>` as translator `name`.
pub async fn upload(client: &mut Registry, name: &str, file: &str) -> pb::TranslatorVersion {
    upload_bytes(client, name, &artifact(file)).await.unwrap_or_else(|s| panic!("upload {file}: {s:?}"))
}

/// The `tributary` binary cargo built next to the running test or bench (`target/<profile>/`).
pub fn binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/tributary
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join("tributary");
    assert!(path.exists(), "{} is missing: run the tests with cargo test -p tributary-cli", path.display());
    path
}

/// The real `tributary` binary, killed on drop.
pub struct Process {
    pub child: Child,
    pub addr: std::net::SocketAddr,
}

impl Process {
    pub async fn spawn(topics: &[&str], extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_logging_to(topics, extra_env, Stdio::inherit()).await
    }

    /// Like [`Process::spawn`], with the gateway's log (stderr) going to `log`.
    pub async fn spawn_logging_to(topics: &[&str], extra_env: &[(&str, &str)], log: Stdio) -> Self {
        Self::spawn_at(&bootstrap(), topics, extra_env, log).await
    }

    /// Like [`Process::spawn_logging_to`], reading the Kafka at `bootstrap`.
    pub async fn spawn_at(bootstrap: &str, topics: &[&str], extra_env: &[(&str, &str)], log: Stdio) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--bootstrap-servers", bootstrap]);
        for t in topics {
            cmd.args(["--topic", t]);
        }
        cmd.env("TRIBUTARY__LIMITS__PROGRESS_INTERVAL_MS", "200");
        if !extra_env.iter().any(|(k, _)| *k == "TRIBUTARY__TRANSLATORS__DATA_DIR") {
            cmd.env("TRIBUTARY__TRANSLATORS__DATA_DIR", scratch_dir("registry"));
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().expect("spawn tributary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // Owned before the wait: a gateway that never reports SERVING is killed when the wait
        // panics, instead of outliving the test (and holding its output pipe open).
        let process = Process { child, addr: addr.parse().unwrap() };
        wait_serving(process.addr).await;
        process
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fully read snapshot: its offsets, entries and chunk count.
pub struct Snapshot {
    pub offsets: Vec<pb::PartitionOffset>,
    pub entries: Vec<pb::SnapshotEntry>,
    pub chunks: usize,
}

impl Snapshot {
    pub fn state(&self) -> State {
        self.entries.iter().map(|e| (e.key.to_vec(), e.value.to_vec())).collect()
    }
}

pub async fn snapshot(client: &mut Client, request: pb::GetSnapshotRequest) -> Result<Snapshot, tonic::Status> {
    let mut stream = client.get_snapshot(request).await?.into_inner();
    let mut snap = Snapshot { offsets: Vec::new(), entries: Vec::new(), chunks: 0 };
    let mut last = false;
    while let Some(chunk) = stream.message().await? {
        assert!(!last, "a chunk after the last one");
        if snap.chunks == 0 {
            snap.offsets = chunk.offsets;
        } else {
            assert!(chunk.offsets.is_empty(), "offsets only in the first chunk");
        }
        snap.chunks += 1;
        snap.entries.extend(chunk.entries);
        last = chunk.last;
    }
    assert!(last, "snapshot stream ended without its last chunk");
    Ok(snap)
}

pub fn topic_snapshot(topic: &str) -> pb::GetSnapshotRequest {
    pb::GetSnapshotRequest { topics: vec![topic.to_string()], ..Default::default() }
}

/// Offsets as a map (topic, partition) → offset.
pub fn offset_map(offsets: &[pb::PartitionOffset]) -> BTreeMap<(String, i32), i64> {
    offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect()
}

/// A subscription stream with the bookkeeping every test needs.
pub struct Follower {
    pub stream: tonic::Streaming<pb::SubscribeResponse>,
    pub records: Vec<pb::Record>,
    pub position: BTreeMap<(String, i32), i64>,
    pub progress_messages: usize,
}

impl Follower {
    pub async fn start(client: &mut Client, request: pb::SubscribeRequest) -> Result<Self, tonic::Status> {
        let stream = client.subscribe(request).await?.into_inner();
        Ok(Follower { stream, records: Vec::new(), position: BTreeMap::new(), progress_messages: 0 })
    }

    /// Reads one message; checks per-partition order, no duplicate, and positions only moving on.
    pub async fn next(&mut self) -> Result<Option<()>, tonic::Status> {
        let Some(message) = self.stream.message().await? else { return Ok(None) };
        match message.message.expect("message set") {
            pb::subscribe_response::Message::Records(batch) => {
                assert!(!batch.records.is_empty(), "empty batch");
                for r in batch.records {
                    let key = (r.topic.clone(), r.partition);
                    if let Some(pos) = self.position.get(&key) {
                        // A translator may make several outputs of one record: same offset, next index.
                        let next_output = r.output_index > 0 && r.offset + 1 == *pos;
                        assert!(
                            r.offset >= *pos || next_output,
                            "record {}/{}@{} at or before position {pos}",
                            r.topic,
                            r.partition,
                            r.offset
                        );
                    }
                    self.position.insert(key, r.offset + 1);
                    self.records.push(r);
                }
            }
            pb::subscribe_response::Message::Progress(p) => {
                self.progress_messages += 1;
                for o in p.offsets {
                    let key = (o.topic.clone(), o.partition);
                    if let Some(pos) = self.position.get(&key) {
                        assert!(
                            o.offset >= *pos,
                            "progress went back on {}/{}: {} < {pos}",
                            o.topic,
                            o.partition,
                            o.offset
                        );
                    }
                    self.position.insert(key, o.offset);
                }
            }
        }
        Ok(Some(()))
    }

    /// Reads until every partition's position reaches `ends` (or fails after `timeout`).
    pub async fn until(&mut self, ends: &BTreeMap<(String, i32), i64>, timeout: Duration) -> Result<(), tonic::Status> {
        let deadline = Instant::now() + timeout;
        while !ends.iter().all(|(k, end)| self.position.get(k).is_some_and(|p| p >= end)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "positions {:?} did not reach {:?}", self.position, ends);
            match tokio::time::timeout(left, self.next()).await {
                Ok(r) => {
                    r?.expect("stream ended early");
                }
                Err(_) => panic!("positions {:?} did not reach {:?}", self.position, ends),
            }
        }
        Ok(())
    }
}

/// Current end offsets (high watermarks) of every partition of `topic`.
pub fn ends(topic: &str) -> BTreeMap<(String, i32), i64> {
    ends_at(&bootstrap(), topic)
}

/// [`ends`] on the broker at `bootstrap`.
pub fn ends_at(bootstrap: &str, topic: &str) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    (0..metadata.topics()[0].partitions().len() as i32)
        .map(|p| ((topic.to_string(), p), consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1))
        .collect()
}
