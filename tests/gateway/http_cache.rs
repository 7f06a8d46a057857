//! Issue 22: the HTTP log behind a real HTTP cache (nginx `proxy_cache`, from Debian's
//! nginx-light): many clients following the same topic cost the gateway about one request per
//! chunk and per live answer, counted at the gateway (`tributary_http_requests_total`).

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use tributary_testkit::web::*;

use crate::{
    harness::*,
    http::changes,
    observability::{metric, scrape},
};

/// The gateway's count of HTTP log requests answered.
async fn upstream(metrics: SocketAddr) -> f64 {
    metric(&scrape(metrics).await, "tributary_http_requests_total", &[])
}

fn end_offsets(topic: &str) -> Vec<i64> {
    ends(topic).values().copied().collect()
}

/// Sixteen clients catch up through nginx from the start of a topic (chunks), then follow it
/// live (long-polls) while it is written: each URL they walk reaches the gateway about once,
/// and every client's state equals a raw rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_behind_a_cache_cost_one_upstream_request_per_url() {
    const CLIENTS: usize = 16;
    let topic = unique_topic("http-cache");
    create_topic(&topic, 2).await;
    produce(&topic, &changes(0, 2_000, 2));
    let (http, metrics) = (free_addr(), free_addr());
    let (http_s, metrics_s) = (http.to_string(), metrics.to_string());
    let env = [
        ("TRIBUTARY__HTTP__LISTEN", http_s.as_str()),
        ("TRIBUTARY__HTTP__CHUNK_OFFSETS", "100"),
        ("TRIBUTARY__HTTP__LONG_POLL_MS", "3000"),
        ("TRIBUTARY__METRICS__LISTEN", metrics_s.as_str()),
        // Chunks far behind the head come from Kafka through catch-up readers.
        ("TRIBUTARY__LIMITS__TAIL_MAX_RECORDS", "200"),
    ];
    let _gateway = Process::spawn(&[&topic], &env).await;
    snapshot_when_ready(http, &topic).await;
    let nginx = Nginx::start(http).await;

    let expected = |topic: &str| rebuild(&read_all(topic));

    // Catch-up: every client from the start of the log, at once.
    let ends = end_offsets(&topic);
    let before = upstream(metrics).await;
    let (states, urls, heads) = together(CLIENTS, nginx.addr, &topic, "1_0.0", &ends, State::new()).await;
    let asked = upstream(metrics).await - before;
    let want = expected(&topic);
    assert!(states.iter().all(|s| *s == want), "every client's state is the raw rebuild");
    let distinct: BTreeSet<&String> = urls.iter().flatten().collect();
    let requests: usize = urls.iter().map(Vec::len).sum();
    println!(
        "catch-up: {CLIENTS} clients made {requests} requests over {} URLs; the gateway answered {asked}",
        distinct.len()
    );
    assert!(distinct.len() >= 10, "1000 records a partition on a grid of 100: at least 10 chunks");
    assert!(asked <= distinct.len() as f64 + 2.0, "{asked} upstream requests for {} URLs", distinct.len());

    // Live: every client waits at the head; the topic is written in five bursts.
    assert!(heads.iter().all(|h| *h == heads[0]), "every client walked to the same position");
    let before = upstream(metrics).await;
    let writer = bursts(&topic, 2_000);
    let target = vec![ends[0] + 50, ends[1] + 50];
    let (states, urls, _) = together(CLIENTS, nginx.addr, &topic, &heads[0], &target, states[0].clone()).await;
    writer.await.unwrap();
    let asked = upstream(metrics).await - before;
    let distinct: BTreeSet<&String> = urls.iter().flatten().collect();
    let requests: usize = urls.iter().map(Vec::len).sum();
    println!(
        "live: {CLIENTS} clients made {requests} requests over {} URLs; the gateway answered {asked}",
        distinct.len()
    );
    let want = expected(&topic);
    let last_write: State = states[0].clone();
    assert!(states.iter().all(|s| *s == last_write), "every client has the same state");
    assert_eq!(last_write, want, "and it is the raw rebuild");
    assert!(requests >= CLIENTS * 2);
    assert!(
        asked <= distinct.len() as f64 + 3.0,
        "{asked} upstream requests for {} URLs: the cache did not collapse the long-polls",
        distinct.len()
    );
    let log = nginx.log();
    let hits = log.iter().filter(|l| l.starts_with("HIT")).count();
    assert!(hits >= requests / 2, "most requests are served by the cache: {hits} hits of {}", log.len());

    // Without the cache, the gateway collapses clients waiting at the same position itself: every
    // request is answered, but each answer is read and encoded once.
    let made = |text: &str| metric(text, "tributary_http_answers_made_total", &[]);
    let (before_requests, before_made) = {
        let text = scrape(metrics).await;
        (metric(&text, "tributary_http_requests_total", &[]), made(&text))
    };
    let writer = bursts(&topic, 3_000);
    let target = vec![ends[0] + 100, ends[1] + 100];
    // From where the catch-up ended: the first answer holds the live phase's records too.
    let (direct, urls, _) = together(CLIENTS, http, &topic, &heads[0], &target, states[0].clone()).await;
    writer.await.unwrap();
    let text = scrape(metrics).await;
    let (requests, answers) =
        (metric(&text, "tributary_http_requests_total", &[]) - before_requests, made(&text) - before_made);
    let distinct: BTreeSet<&String> = urls.iter().flatten().collect();
    println!(
        "direct: {CLIENTS} clients made {requests} requests over {} URLs; the gateway made {answers} answers",
        distinct.len()
    );
    assert_eq!(direct[0], expected(&topic));
    assert!(requests >= (CLIENTS * 2) as f64, "every request reached the gateway");
    assert!(
        answers <= distinct.len() as f64 + 3.0,
        "{answers} answers made for {} URLs: the gateway did not share them",
        distinct.len()
    );
}

/// Five bursts of 20 records over two partitions, 700 ms apart, numbered from `first`.
fn bursts(topic: &str, first: usize) -> tokio::task::JoinHandle<()> {
    let topic = topic.to_string();
    tokio::spawn(async move {
        for burst in 0..5 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            produce(&topic, &changes(first + burst * 20, 20, 2));
        }
    })
}

/// `clients` followers through `addr`, started together from `from` with `state`; their states,
/// URLs and positions reached.
async fn together(
    clients: usize,
    addr: SocketAddr,
    topic: &str,
    from: &str,
    ends: &[i64],
    state: State,
) -> (Vec<State>, Vec<Vec<String>>, Vec<String>) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (topic, from, ends, mut state) = (topic.to_string(), from.to_string(), ends.to_vec(), state.clone());
            tokio::spawn(async move {
                let (urls, next) = follow(addr, &topic, &from, &ends, &mut state).await;
                (state, urls, next)
            })
        })
        .collect();
    let (mut states, mut urls, mut nexts) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (s, u, n) = task.await.unwrap();
        states.push(s);
        urls.push(u);
        nexts.push(n);
    }
    (states, urls, nexts)
}
