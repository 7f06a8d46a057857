//! The Rust client against a real gateway and a real Kafka: the follow helper's handoff, resume
//! after a gateway restart, recovery from OUT_OF_RANGE, translators, TLS with a token, decoded
//! error details and durable subscriptions (`clients/FOLLOW.md`, "Tests every client has").
//!
//! Needs Kafka (`scripts/kafka.sh start`) and the `tributary` binary next to this test (it compiles
//! translators): `cargo test --workspace` builds both.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::Code;
use tributary_client::{
    follow, pb, BoxError, Change, Client, FollowError, FollowOptions, Handler, MemoryStore, OffsetsKind, Position,
    Store,
};
use tributary_testkit::{self as kit, Gateway, Out};

/// B's model: key → value, plus what the test checks about how it was built.
#[derive(Default)]
struct Model {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    resets: usize,
    snapshot_entries: usize,
    streamed: Vec<(i32, i64)>,
    duplicates: usize,
    seen: HashSet<(String, i32, i64, u32)>,
    /// The position `apply` was given last.
    position: Option<Position>,
    /// The position the store holds.
    saved: Option<Position>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Model>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.0.lock().unwrap())
    }
}

impl Handler for Shared {
    async fn reset(&mut self) -> Result<(), BoxError> {
        let mut m = self.0.lock().unwrap();
        m.state.clear();
        m.seen.clear();
        m.resets += 1;
        Ok(())
    }

    async fn apply(&mut self, changes: &[Change], position: Option<&Position>) -> Result<(), BoxError> {
        let mut m = self.0.lock().unwrap();
        for c in changes {
            if !m.seen.insert((c.topic.clone(), c.partition, c.offset, c.output_index)) {
                m.duplicates += 1;
            }
            if c.snapshot {
                m.snapshot_entries += 1;
            } else {
                m.streamed.push((c.partition, c.offset));
            }
            if let Some(key) = &c.key {
                match &c.value {
                    Some(v) => m.state.insert(key.to_vec(), v.to_vec()),
                    None => m.state.remove(key.as_ref()),
                };
            }
        }
        if let Some(p) = position {
            m.position = Some(p.clone());
        }
        Ok(())
    }
}

/// A store that tells the model what it holds.
struct Tracked<S> {
    inner: S,
    model: Shared,
}

impl<S: Store> Store for Tracked<S> {
    async fn load(&mut self) -> Result<Option<Position>, BoxError> {
        self.inner.load().await
    }

    async fn save(&mut self, position: &Position) -> Result<(), BoxError> {
        self.inner.save(position).await?;
        self.model.0.lock().unwrap().saved = Some(position.clone());
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), BoxError> {
        self.inner.clear().await?;
        self.model.0.lock().unwrap().saved = None;
        Ok(())
    }
}

/// A follow running in its own task until `stop` is sent.
struct Running<S> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(Result<(), FollowError>, S)>,
}

fn start<S: Store + 'static>(client: &Client, options: FollowOptions, model: &Shared, store: S) -> Running<S> {
    let (stop, stopped) = oneshot::channel::<()>();
    let (client, mut handler) = (client.clone(), model.clone());
    let mut store = Tracked { inner: store, model: model.clone() };
    let task = tokio::spawn(async move {
        let result = follow(&client, options, &mut handler, &mut store, stopped).await;
        (result, store.inner)
    });
    Running { stop, task }
}

impl<S> Running<S> {
    async fn stop(self) -> (Result<(), FollowError>, S) {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// Waits until the saved position has reached every end offset of `topic`.
async fn caught_up(model: &Shared, topic: &str) {
    let ends = kit::ends(topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = model.with(|m| {
            m.saved.as_ref().is_some_and(|p| ends.iter().all(|((t, part), end)| p.get(t, *part).unwrap_or(0) >= *end))
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the follow did not reach {ends:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn records(prefix: &str, n: usize, keys: usize) -> Vec<Out> {
    (0..n)
        .map(|i| {
            let key = format!("{prefix}-k{}", i % keys);
            // Every seventh record deletes its key.
            if i % 7 == 6 {
                Out::kv(&key, None)
            } else {
                Out::kv(&key, Some(&format!("{prefix}-v{i}")))
            }
        })
        .collect()
}

fn rebuilt(topic: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    kit::rebuild(&kit::read_all(topic))
}

async fn connect(gateway: &Gateway) -> Client {
    Client::builder(format!("http://{}", gateway.addr)).connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_hands_off_from_snapshot_to_changes_with_no_gap_and_no_duplicate() {
    let topic = kit::unique_topic("client-handoff");
    kit::create_topic(&topic, 3).await;
    kit::produce(&topic, &records("before", 600, 90));
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;
    let model = Shared::default();
    // A keeps writing while B snapshots and subscribes.
    let writer = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || kit::produce(&topic, &records("during", 3000, 120)))
    };
    let running = start(&client, FollowOptions::new([topic.as_str()]).max_batch(50), &model, MemoryStore::default());
    writer.await.unwrap();
    caught_up(&model, &topic).await;
    let (result, store) = running.stop().await;
    result.unwrap();

    model.with(|m| {
        assert_eq!(m.resets, 1, "one snapshot");
        assert!(m.snapshot_entries > 0, "the snapshot held A's state");
        assert!(!m.streamed.is_empty(), "changes followed the snapshot");
        assert_eq!(m.duplicates, 0, "no record was applied twice");
        assert_eq!(m.state, rebuilt(&topic), "B's state equals a raw rebuild of A's topic");
        assert_eq!(store.0.as_ref(), m.saved.as_ref(), "the store holds the last saved position");
        let applied = m.position.as_ref().expect("records were applied with their position");
        assert!(applied.iter().all(|(t, p, o)| m.saved.as_ref().unwrap().get(t, p) >= Some(o)));
    });
}

/// A record filter with tombstones for mismatches: B's model is exactly the keys whose latest
/// value is open, through the snapshot and the changes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_filter_keeps_the_model_at_exactly_the_selection() {
    let topic = kit::unique_topic("client-record-filter");
    kit::create_topic(&topic, 2).await;
    let orders = |round: usize| -> Vec<Out> {
        (0..400)
            .map(|i| {
                let status = if (i * 7 + round) % 3 == 0 { "open" } else { "closed" };
                Out::kv(&format!("order/{}", i % 50), Some(&format!(r#"{{"status":"{status}","round":{round}}}"#)))
            })
            .collect()
    };
    kit::produce(&topic, &orders(0));
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;
    let model = Shared::default();
    let filter = pb::RecordFilter {
        fields: vec![pb::FieldCondition { pointer: "/status".into(), any_of: vec![r#""open""#.into()] }],
        tombstone_mismatches: true,
        ..Default::default()
    };
    let options = FollowOptions::new([topic.as_str()]).record_filter(filter);
    let running = start(&client, options, &model, MemoryStore::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    kit::produce(&topic, &orders(1));
    caught_up(&model, &topic).await;
    let (result, _) = running.stop().await;
    result.unwrap();
    let open: BTreeMap<Vec<u8>, Vec<u8>> =
        rebuilt(&topic).into_iter().filter(|(_, v)| v.starts_with(br#"{"status":"open""#)).collect();
    model.with(|m| {
        assert!(!open.is_empty() && open.len() < 50);
        assert!(!m.streamed.is_empty(), "changes followed the snapshot");
        assert_eq!(m.state, open, "B's model holds exactly the open orders");
    });
}

/// A handler that takes 20 ms per batch.
struct Slow(Shared);

impl Handler for Slow {
    async fn reset(&mut self) -> Result<(), BoxError> {
        self.0.reset().await
    }

    async fn apply(&mut self, changes: &[Change], position: Option<&Position>) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.apply(changes, position).await
    }
}

/// With `conflate`, a handler slower than A gets the latest value of each key, not every one,
/// and ends at A's exact state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_following_with_conflate_gets_the_latest_values_and_the_exact_state() {
    let topic = kit::unique_topic("client-conflate");
    kit::create_topic(&topic, 1).await;
    kit::produce(&topic, &[Out::kv("k0", Some("first"))]);
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;
    let model = Shared::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = {
        let (client, mut handler, mut store) = (client.clone(), Slow(model.clone()), MemoryStore::default());
        let options = FollowOptions::new([topic.as_str()]).conflate();
        tokio::spawn(async move { follow(&client, options, &mut handler, &mut store, stopped).await })
    };
    while model.with(|m| m.resets) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = 5_000;
    let rewrites: Vec<Out> = (0..written).map(|i| Out::kv(&format!("k{}", i % 10), Some(&format!("v{i}")))).collect();
    kit::produce(&topic, &rewrites);
    let ends = kit::ends(&topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.with(|m| {
        m.state != rebuilt(&topic) || m.position.as_ref().and_then(|p| p.get(&topic, 0)) < ends.values().next().copied()
    }) {
        assert!(Instant::now() < deadline, "the follow did not reach {ends:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    model.with(|m| {
        assert_eq!(m.state, rebuilt(&topic), "B's state equals a raw rebuild");
        assert!(m.streamed.len() < written / 2, "{} of {written} rewrites applied: conflated", m.streamed.len());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_after_a_gateway_restart_losing_and_repeating_nothing() {
    let topic = kit::unique_topic("client-restart");
    kit::create_topic(&topic, 2).await;
    kit::produce(&topic, &records("one", 200, 40));
    let config = kit::config(&[&topic], Default::default());
    let gateway = Gateway::start_with(config.clone()).await;
    let addr = gateway.addr;
    let client = connect(&gateway).await;
    let model = Shared::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let mut options = FollowOptions::new([topic.as_str()]);
    options.backoff.max = Duration::from_millis(500);
    let counter = retries.clone();
    options.on_error = Some(Arc::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let running = start(&client, options, &model, MemoryStore::default());
    caught_up(&model, &topic).await;

    gateway.stop().await;
    kit::produce(&topic, &records("two", 300, 40));
    let gateway = Gateway::start_on(config, addr).await;
    kit::produce(&topic, &records("three", 300, 40));
    caught_up(&model, &topic).await;
    running.stop().await.0.unwrap();
    drop(gateway);

    assert!(retries.load(Ordering::Relaxed) > 0, "the follow saw the gateway go away");
    model.with(|m| {
        assert_eq!(m.resets, 1, "the restart did not cause a new snapshot");
        assert_eq!(m.duplicates, 0);
        assert_eq!(m.state, rebuilt(&topic));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_kafka_retains_is_replaced_by_a_new_snapshot() {
    let topic = kit::unique_topic("client-too-old");
    kit::create_topic(&topic, 1).await;
    kit::produce(&topic, &records("old", 100, 30));
    kit::delete_records(&topic, 0, 60).await;
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;

    // The error itself, decoded: OUT_OF_RANGE with the earliest offsets.
    let mut stub = client.gateway.clone();
    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 10 }];
    let error = match stub.subscribe(pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await {
        Ok(mut s) => s.get_mut().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    let error = tributary_client::Error::from(error.expect_err("offset 10 is gone"));
    assert_eq!(error.code, Code::OutOfRange);
    assert_eq!(error.reason(), "OFFSET_TOO_OLD");
    let offsets = error.offsets.expect("the earliest offsets");
    assert_eq!(offsets.kind, OffsetsKind::Earliest);
    assert_eq!(offsets.position.get(&topic, 0), Some(60));

    // The follow helper recovers: it forgets the position and takes a new snapshot.
    let mut saved = Position::default();
    saved.set(&topic, 0, 10);
    let model = Shared::default();
    let running = start(&client, FollowOptions::new([topic.as_str()]), &model, MemoryStore(Some(saved)));
    kit::produce(&topic, &records("new", 50, 30));
    caught_up(&model, &topic).await;
    running.stop().await.0.unwrap();
    model.with(|m| {
        assert_eq!(m.resets, 1, "a new snapshot replaced the state");
        assert_eq!(m.state, rebuilt(&topic));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translator_shapes_snapshot_and_changes_and_bad_requests_come_back_decoded() {
    let topic = kit::unique_topic("client-translator");
    kit::create_topic(&topic, 1).await;
    kit::produce(&topic, &records("a", 40, 10));
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;
    let component = std::fs::read(kit::repo_root().join("translators/dist/identity.wasm"))
        .expect("translators/dist/identity.wasm (scripts/build-translators.sh)");
    let version = client.upload_translator("client-identity", &component).await.unwrap();
    assert_eq!(version.digest.len(), 64);

    let model = Shared::default();
    let options = FollowOptions::new([topic.as_str()]).translator("client-identity", "");
    let running = start(&client, options, &model, MemoryStore::default());
    kit::produce(&topic, &records("b", 40, 10));
    caught_up(&model, &topic).await;
    running.stop().await.0.unwrap();
    model.with(|m| assert_eq!(m.state, rebuilt(&topic), "the identity translator keeps A's records"));

    // An unknown translator stops the follow with its decoded reason.
    let options = FollowOptions::new([topic.as_str()]).translator("no-such-translator", "");
    let mut store = MemoryStore::default();
    let error = follow(&client, options, &mut Shared::default(), &mut store, std::future::pending::<()>()).await;
    match error {
        Err(FollowError::Gateway(e)) => {
            assert_eq!((e.code, e.reason()), (Code::NotFound, "UNKNOWN_TRANSLATOR"));
            assert_eq!(e.metadata.get("translator").map(String::as_str), Some("no-such-translator"));
        }
        other => panic!("expected UNKNOWN_TRANSLATOR, got {other:?}"),
    }
    // So does a topic the gateway does not expose.
    let error = follow(
        &client,
        FollowOptions::new(["not-exposed"]),
        &mut Shared::default(),
        &mut MemoryStore::default(),
        std::future::pending::<()>(),
    )
    .await;
    assert!(
        matches!(&error, Err(FollowError::Gateway(e)) if e.code == Code::NotFound && e.reason() == "UNKNOWN_TOPIC"),
        "{error:?}"
    );
    // A negative offset names its field.
    let mut stub = client.gateway.clone();
    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: -5 }];
    let status = match stub.subscribe(pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await {
        Ok(mut s) => s.get_mut().message().await.expect_err("a negative offset is refused"),
        Err(status) => status,
    };
    let error = tributary_client::Error::from(status);
    assert_eq!(error.code, Code::InvalidArgument);
    assert!(error.field_violations.iter().any(|v| v.field.contains("offset")), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_gateway_with_tokens_is_followed_with_a_ca_and_a_bearer_token() {
    let topic = kit::unique_topic("client-tls");
    kit::create_topic(&topic, 1).await;
    kit::produce(&topic, &records("x", 30, 10));
    let pki = kit::scratch_dir("client-pki");
    let out = std::process::Command::new(kit::repo_root().join("scripts/certs.sh")).arg(&pki).output().unwrap();
    assert!(out.status.success(), "certs.sh: {}", String::from_utf8_lossy(&out.stderr));
    let token = "b-client-token";
    let tokens = pki.join("tokens.toml");
    let sha = tributary_server::sha256_hex(token.as_bytes());
    std::fs::write(&tokens, format!("[[token]]\nidentity = \"b\"\nsha256 = \"{sha}\"\n")).unwrap();
    let mut config = kit::config(&[&topic], Default::default());
    config.tls.cert_file = Some(pki.join("server.pem"));
    config.tls.key_file = Some(pki.join("server.key"));
    config.auth.tokens_file = Some(tokens);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tributary_server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let builder = |token: &str| {
        Client::builder(format!("https://{addr}")).ca_pem(ca.clone()).server_name("localhost").token(token).lazy()
    };

    let model = Shared::default();
    let mut options = FollowOptions::new([topic.as_str()]);
    options.backoff.max = Duration::from_millis(200);
    let running = start(&builder(token).connect().await.unwrap(), options, &model, MemoryStore::default());
    caught_up(&model, &topic).await;
    running.stop().await.0.unwrap();
    model.with(|m| assert_eq!(m.state, rebuilt(&topic)));

    let wrong = builder("not-the-token").connect().await.unwrap();
    let error = follow(
        &wrong,
        FollowOptions::new([topic.as_str()]),
        &mut Shared::default(),
        &mut MemoryStore::default(),
        std::future::pending::<()>(),
    )
    .await;
    assert!(matches!(&error, Err(FollowError::Gateway(e)) if e.code == Code::Unauthenticated), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_subscription_resumes_from_its_committed_position_with_an_empty_store() {
    let topic = kit::unique_topic("client-durable");
    kit::create_topic(&topic, 2).await;
    kit::produce(&topic, &records("first", 100, 20));
    let gateway = Gateway::start(&[&topic]).await;
    let client = connect(&gateway).await;
    let name = kit::unique_topic("client-sub");
    let options = FollowOptions::new([topic.as_str()]).subscription(&name);

    let first = Shared::default();
    let running = start(&client, options.clone(), &first, MemoryStore::default());
    caught_up(&first, &topic).await;
    running.stop().await.0.unwrap();
    let committed_at = kit::ends(&topic);

    kit::produce(&topic, &records("second", 60, 20));
    let second = Shared::default();
    let running = start(&client, options, &second, MemoryStore::default());
    caught_up(&second, &topic).await;
    running.stop().await.0.unwrap();
    second.with(|m| {
        assert_eq!(m.resets, 0, "no snapshot: the name's committed position was resumed");
        assert_eq!(m.streamed.len(), 60, "exactly the records after the committed position");
        for (partition, offset) in &m.streamed {
            assert!(*offset >= committed_at[&(topic.clone(), *partition)], "offset {offset} was applied before");
        }
    });
}
