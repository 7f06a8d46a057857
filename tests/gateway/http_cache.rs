//! Issue 22: the HTTP log behind a real HTTP cache (nginx `proxy_cache`, from Debian's
//! nginx-light): many clients following the same topic cost the gateway about one request per
//! chunk and per live answer, counted at the gateway (`tributary_http_requests_total`).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    harness::*,
    http::{apply_json, changes, free_addr, get, offsets},
    observability::{metric, scrape},
};

/// nginx caching the HTTP log at `upstream`, killed on drop. Its access log records each
/// request's cache status.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with a cache that collapses concurrent misses (`proxy_cache_lock`) for longer
    /// than a long-poll lasts, so waiting clients share one upstream request.
    pub async fn start(upstream: SocketAddr) -> Self {
        let dir = scratch_dir("nginx");
        // Workers run as nobody when nginx starts as root: they must write the cache.
        let _ = Command::new("chmod").args(["-R", "777"]).arg(&dir).status();
        let addr = free_addr();
        let d = dir.display();
        let conf = format!(
            r#"worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format cache '$upstream_cache_status $status $request_uri';
  access_log {d}/access.log cache;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=log:10m max_size=256m inactive=10m use_temp_path=off;
  server {{
    listen {addr};
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache log;
      proxy_cache_key $scheme$proxy_host$request_uri;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 30s;
      proxy_cache_lock_age 30s;
      proxy_read_timeout 60s;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light; scripts/setup.sh installs it)");
        let nginx = Nginx { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx did not start: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    /// The access log's lines: `cache-status status uri`.
    pub fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows `topic` at `addr` from `from` with long-polls until every partition reaches `ends`;
/// the URLs asked and the position reached.
pub async fn follow(
    addr: SocketAddr,
    topic: &str,
    from: &str,
    ends: &[i64],
    state: &mut State,
) -> (Vec<String>, String) {
    let (mut next, mut urls) = (from.to_string(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let url = format!("/v1/topics/{topic}/log?from={next}&live=1");
        let reply = get(addr, &url, &[]).await;
        assert_eq!(reply.status, 200, "{url}: {}", String::from_utf8_lossy(&reply.body));
        let answer = reply.json();
        assert_eq!(answer["from"], next.as_str(), "the cache answered another position");
        apply_json(state, &answer);
        urls.push(url);
        next = answer["next"].as_str().unwrap().to_string();
        if offsets(&answer).iter().zip(ends).all(|(o, e)| o >= e) {
            return (urls, next);
        }
        assert!(Instant::now() < deadline, "never reached {ends:?}; at {next}");
    }
}

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
    crate::http::snapshot_when_ready(http, &topic).await;
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
    let writer = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for burst in 0..5 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                produce(&topic, &changes(2_000 + burst * 20, 20, 2));
            }
        })
    };
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
