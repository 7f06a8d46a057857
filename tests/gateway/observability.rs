//! Issue 11 (first part): the Prometheus endpoint, scraped from a running gateway process while
//! it works against real Kafka.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_server::pb;

use crate::harness::*;

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The sum of every series of `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn eventually(addr: std::net::SocketAddr, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            text.lines().filter(|l| l.starts_with("tributary")).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records applied equal what was produced, lag returns to zero, streams-open follows opens and
/// closes, delivered records count, and a failed call counts under its method and code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_the_gateway_does() {
    let topic = unique_topic("metrics");
    create_topic(&topic, 2).await;
    produce(&topic, &(0..500).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = metrics_addr.to_string();
    let env = [("TRIBUTARY__METRICS__LISTEN", listen.as_str()), ("TRIBUTARY__KAFKA__METADATA_REFRESH_MS", "300")];
    let gateway = Process::spawn(&[&topic], &env).await;

    let t = topic.as_str();
    eventually(metrics_addr, "ingest counts every record, lag is 0, Kafka reachable, view ready", |m| {
        metric(m, "tributary_ingest_records_total", &[("topic", t)]) == 500.0
            && metric(m, "tributary_kafka_latest_offset", &[("topic", t)]) == 500.0
            && metric(m, "tributary_view_lag_records", &[("topic", t)]) == 0.0
            && metric(m, "tributary_kafka_reachable", &[]) == 1.0
            && metric(m, "tributary_view_ready", &[]) == 1.0
    })
    .await;

    let mut client = connect(gateway.addr).await;
    let from = vec![
        pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 },
        pb::PartitionOffset { topic: topic.clone(), partition: 1, offset: 0 },
    ];
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    eventually(metrics_addr, "one open stream that delivered 500 records", |m| {
        metric(m, "tributary_streams_open", &[("kind", "subscribe")]) == 1.0
            && metric(m, "tributary_records_delivered_total", &[("kind", "subscribe")]) == 500.0
            // 500 keys k0..k499 (2-4 bytes: 1890 in all) with values of 1 byte.
            && metric(m, "tributary_bytes_delivered_total", &[("kind", "subscribe")]) == 2390.0
    })
    .await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("n{i}"), Some("w"))).collect::<Vec<_>>());
    eventually(metrics_addr, "live records are counted too", |m| {
        metric(m, "tributary_ingest_records_total", &[("topic", t)]) == 600.0
    })
    .await;
    drop(follower);
    eventually(metrics_addr, "the stream closed", |m| {
        metric(m, "tributary_streams_open", &[("kind", "subscribe")]) == 0.0
    })
    .await;

    let status =
        client.describe_topics(pb::DescribeTopicsRequest { topics: vec!["no-such-topic".into()] }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    eventually(metrics_addr, "the failed call counted under its method and code", |m| {
        metric(
            m,
            "tributary_grpc_requests_total",
            &[("method", "tributary.v1.Gateway/DescribeTopics"), ("code", "NotFound")],
        ) == 1.0
            && metric(
                m,
                "tributary_grpc_requests_total",
                &[("method", "tributary.v1.Gateway/Subscribe"), ("code", "Cancelled")],
            ) == 1.0
            && metric(
                m,
                "tributary_grpc_request_duration_seconds_count",
                &[("method", "tributary.v1.Gateway/DescribeTopics")],
            ) >= 1.0
    })
    .await;

    // A stalled subscriber: it never reads, so its lag grows as A writes.
    let behind = |m: &str| {
        metric(m, "tributary_stream_lag_records_bucket", &[("le", "+Inf")])
            - metric(m, "tributary_stream_lag_records_bucket", &[("le", "100")])
    };
    let before = behind(&scrape(metrics_addr).await);
    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
    let stalled = client.subscribe(pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    // More than HTTP/2 flow control and the socket buffers hold for a client that reads nothing.
    let big = "x".repeat(10_000);
    let records: Vec<Out> =
        (0..2000).map(|i| Out { partition: Some(0), ..Out::kv(&format!("big{i}"), Some(&big)) }).collect();
    produce(&topic, &records);
    eventually(metrics_addr, "the stalled stream is sampled more than 100 records behind", |m| {
        behind(m) >= before + 2.0
    })
    .await;
    drop(stalled);

    // A durable subscription started at offset 0: its committed lag is the whole topic, until
    // it commits the end.
    let name = unique_topic("metrics-sub");
    let from: Vec<_> = (0..2).map(|p| pb::PartitionOffset { topic: topic.clone(), partition: p, offset: 0 }).collect();
    let named = pb::SubscribeRequest { from_offsets: from, subscription_name: name.clone(), ..Default::default() };
    let named = client.subscribe(named).await.unwrap();
    let lag = [("subscription", name.as_str())];
    let total: i64 = ends(&topic).values().sum();
    eventually(metrics_addr, "the committed lag is every record", |m| {
        metric(m, "tributary_subscription_committed_lag_records", &lag) == total as f64
    })
    .await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let mut subscriptions = pb::subscriptions_client::SubscriptionsClient::new(channel.clone());
    let end =
        ends(&topic).into_iter().map(|((topic, partition), offset)| pb::PartitionOffset { topic, partition, offset });
    subscriptions.commit(pb::CommitRequest { name: name.clone(), offsets: end.collect() }).await.unwrap();
    eventually(metrics_addr, "the committed lag is 0 after committing the end", |m| {
        metric(m, "tributary_subscription_committed_lag_records", &lag) == 0.0
    })
    .await;
    drop(named);

    // A failing translator counts under its reason.
    let mut translators = pb::translators_client::TranslatorsClient::new(channel);
    let panic = std::fs::read(repo_root().join("translators/dist/panic.wasm")).expect("scripts/build-translators.sh");
    crate::translators::upload_bytes(&mut translators, "metrics-panic", &panic).await.unwrap();
    let translator = Some(pb::TranslatorRef { name: "metrics-panic".into(), ..Default::default() });
    let request = pb::GetSnapshotRequest { topics: vec![topic.clone()], translator, ..Default::default() };
    let status = match client.get_snapshot(request).await {
        Ok(mut s) => loop {
            match s.get_mut().message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a panicking translator produced a snapshot"),
                Err(status) => break status,
            }
        },
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    eventually(metrics_addr, "the trap counted under its translator and reason", |m| {
        metric(m, "tributary_translator_errors_total", &[("translator", "metrics-panic"), ("reason", "trap")]) >= 1.0
    })
    .await;

    // The state, load and translator gauges.
    eventually(metrics_addr, "state and tail bytes, load, lag seconds, uploads and compile time", |m| {
        metric(m, "tributary_view_bytes", &[("topic", t)]) > 2000.0 * 10_000.0
            && metric(m, "tributary_tail_bytes", &[("topic", t)]) >= 16.0 * 2_500.0
            && m.contains("tributary_tail_pool_lent_bytes ")
            && metric(m, "tributary_view_load_percent", &[]) == 100.0
            && metric(m, "tributary_view_lag_seconds", &[("topic", t)]) == 0.0
            && metric(m, "tributary_translator_uploads_total", &[("result", "stored")]) == 1.0
            && metric(m, "tributary_translator_compile_duration_seconds_count", &[]) == 1.0
            && m.contains("tributary_translator_instances ")
    })
    .await;

    // Every metric the shipped Grafana dashboard and alert rules query exists on this gateway.
    let text = scrape(metrics_addr).await;
    let exported: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let dashboard = std::fs::read_to_string(repo_root().join("ops/grafana/tributary.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has panels with queries");
    let alerts = std::fs::read_to_string(repo_root().join("ops/prometheus/alerts.yml")).unwrap();
    let rules: Vec<String> =
        alerts.lines().filter_map(|l| l.trim().strip_prefix("expr:")).map(str::to_string).collect();
    assert!(rules.len() >= 5 && rules.iter().all(|r| r.contains("tributary_")), "one-line rule expressions");
    exprs.extend(rules);
    let mut missing = std::collections::BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            if !exported.contains(name.as_str()) {
                missing.insert(name);
            }
        }
    }
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}

/// Every `expr` string in a Grafana dashboard.
fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `tributary_*` series names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tributary_"))
        .map(str::to_string)
        .collect()
}

/// Named events count every time and log once per quiet period, as JSON lines with their event
/// name; calls log in their span with the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_count_every_time_and_log_once_as_json() {
    let topic = unique_topic("events");
    create_topic(&topic, 1).await;
    let dir = scratch_dir("events");
    let tokens = dir.join("tokens.toml");
    let sha = tributary_server::sha256_hex(b"a-token");
    std::fs::write(&tokens, format!("[[token]]\nidentity = \"b\"\nsha256 = \"{sha}\"\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (listen, tokens_file) = (metrics_addr.to_string(), tokens.display().to_string());
    let env = [
        ("TRIBUTARY__METRICS__LISTEN", listen.as_str()),
        ("TRIBUTARY__AUTH__TOKENS_FILE", tokens_file.as_str()),
        ("TRIBUTARY__AUTH__RELOAD_INTERVAL_MS", "100"),
        ("TRIBUTARY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,tributary_server::connections=debug"),
    ];
    let log = dir.join("gateway.log");
    let gateway = Process::spawn_logging_to(&[&topic], &env, std::fs::File::create(&log).unwrap().into()).await;
    let mut client = connect(gateway.addr).await;
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();

    // Three broken versions of the tokens file, each read and refused within the quiet period.
    for attempt in 1..=3 {
        std::fs::write(&tokens, format!("this is not TOML {attempt} [[[")).unwrap();
        eventually(metrics_addr, "the failed reload counted", |m| {
            metric(m, "tributary_events_total", &[("event", "auth_reload_failed")]) == attempt as f64
        })
        .await;
    }
    drop(gateway);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let field = |l: &serde_json::Value, f: &str| l["fields"][f].as_str().map(str::to_string);
    let reloads: Vec<_> = lines.iter().filter(|l| field(l, "event").as_deref() == Some("auth_reload_failed")).collect();
    assert_eq!(reloads.len(), 1, "logged once in its quiet period: {reloads:?}");
    assert_eq!(field(reloads[0], "file").as_deref(), Some("auth.tokens_file"));
    assert_eq!(reloads[0]["level"], "WARN");
    let call = lines
        .iter()
        .find(|l| {
            field(l, "message").as_deref() == Some("call ended")
                && l["span"]["name"] == "call"
                && l["span"]["method"] == "tributary.v1.Gateway/DescribeTopics"
        })
        .expect("the DescribeTopics call's end is logged in its span");
    assert_eq!(field(call, "code").as_deref(), Some("Ok"));
}

/// With `[tracing] otlp_endpoint`, the gateway exports its spans to an OpenTelemetry collector:
/// here a real OTLP/gRPC trace service that keeps what it receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_otlp_collector() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    type Spans = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<(String, String)>)>>>;
    struct Collector(Spans);
    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.0.lock().unwrap();
            for resource in &request.get_ref().resource_spans {
                let of_resource = resource.resource.iter().flat_map(|r| &r.attributes);
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        let attributes = span
                            .attributes
                            .iter()
                            .chain(of_resource.clone())
                            .map(|a| (a.key.clone(), format!("{:?}", a.value)))
                            .collect();
                        spans.push((span.name.clone(), attributes));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let received = Spans::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(received.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let topic = unique_topic("otlp");
    create_topic(&topic, 1).await;
    let endpoint = format!("http://{collector}");
    let env = [("TRIBUTARY__TRACING__OTLP_ENDPOINT", endpoint.as_str()), ("TRIBUTARY__TRACING__SERVICE_NAME", "gw")];
    let gateway = Process::spawn(&[&topic], &env).await;
    let mut client = connect(gateway.addr).await;
    client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.clone()] }).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = received.lock().unwrap().clone();
        let has = |attributes: &[(String, String)], key: &str, value: &str| {
            attributes.iter().any(|(k, v)| k == key && v.contains(&format!("{value:?}")))
        };
        let call = spans.iter().find(|(name, attributes)| {
            name == "call"
                && has(attributes, "method", "tributary.v1.Gateway/DescribeTopics")
                && has(attributes, "service.name", "gw")
        });
        if call.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "spans exported so far: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Subscriptions at the same records with the same translator and configuration share its
/// outcomes (issue 7): the second one translates nothing and receives the same records; another
/// configuration is another translator and translates anew. Counted by the translator metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_with_one_translator_translate_each_record_once() {
    let topic = unique_topic("shared-outcomes");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..300).map(|i| Out::kv(&format!("k{i}"), Some(&format!("v{i}")))).collect::<Vec<_>>());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = metrics_addr.to_string();
    let gateway = Process::spawn(&[&topic], &[("TRIBUTARY__METRICS__LISTEN", listen.as_str())]).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let mut registry = pb::translators_client::TranslatorsClient::new(channel);
    crate::translators::upload_bytes(&mut registry, "identity", &crate::translators::artifact("identity.wasm"))
        .await
        .unwrap();

    let mut client = connect(gateway.addr).await;
    let request = |config: &str| pb::SubscribeRequest {
        from_offsets: vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }],
        translator: Some(pb::TranslatorRef { name: "identity".into(), config: config.into(), ..Default::default() }),
        ..Default::default()
    };
    let counts = |m: &str| {
        let translator = [("translator", "identity")];
        (
            metric(m, "tributary_translator_records_total", &translator),
            metric(m, "tributary_translator_reused_records_total", &translator),
        )
    };
    let ends = ends(&topic);
    let mut first = Follower::start(&mut client, request("a")).await.unwrap();
    first.until(&ends, Duration::from_secs(30)).await.unwrap();
    eventually(metrics_addr, "the first subscription translated every record", |m| counts(m) == (300.0, 0.0)).await;

    let mut second = Follower::start(&mut client, request("a")).await.unwrap();
    second.until(&ends, Duration::from_secs(30)).await.unwrap();
    eventually(metrics_addr, "the second one reused every outcome", |m| counts(m) == (300.0, 300.0)).await;
    assert_eq!(first.records.len(), 300);
    assert_eq!(first.records, second.records, "shared outcomes are the same records");

    let mut other = Follower::start(&mut client, request("b")).await.unwrap();
    other.until(&ends, Duration::from_secs(30)).await.unwrap();
    eventually(metrics_addr, "another configuration translates anew", |m| counts(m) == (600.0, 300.0)).await;
    assert_eq!(other.records, first.records);
}
