//! The HTTP log's client side for tests and benchmarks: a plain hyper HTTP/1.1 client, a
//! follower that applies answers to a [`State`], and nginx as a real HTTP cache in front.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::{scratch_dir, State};

/// An HTTP response, read to its end.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

/// GET `target` from the HTTP log at `addr`, with extra request headers.
pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", target, headers).await
}

pub async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let response = open(addr, method, target, headers).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

/// Sends a request on a new HTTP/1.1 connection to `addr`; the response's body is left to read
/// (a stream: SSE, or a snapshot's first bytes).
pub async fn open(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let mut builder = http::Request::builder().method(method).uri(target).header("host", "localhost");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    sender.send_request(builder.body(Empty::<Bytes>::new()).unwrap()).await.unwrap()
}

/// A free loopback port for a listener the gateway binds itself.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until the HTTP log answers a snapshot of `topic`.
pub async fn snapshot_when_ready(addr: SocketAddr, topic: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let reply = get(addr, &format!("/v1/topics/{topic}/log?from=-1"), &[]).await;
            if reply.status == 200 {
                return reply.json();
            }
        }
        assert!(Instant::now() < deadline, "the HTTP log never served a snapshot of {topic}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies the records of an answer to `state`.
pub fn apply_json(state: &mut State, answer: &Value) {
    for r in answer["records"].as_array().unwrap() {
        let key = r["key"].as_str().expect("test keys are text").as_bytes().to_vec();
        match r["value"].as_str() {
            Some(v) => state.insert(key, v.as_bytes().to_vec()),
            None => state.remove(&key),
        };
    }
}

pub fn offsets(answer: &Value) -> Vec<i64> {
    answer["offsets"].as_array().unwrap().iter().map(|o| o["offset"].as_i64().unwrap()).collect()
}

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
            r#"master_process off;
worker_processes 1;
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
