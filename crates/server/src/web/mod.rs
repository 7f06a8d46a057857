//! The HTTP log: A's state and its changes over plain HTTP, for browsers and for HTTP caches and
//! CDNs in front of them (`docs/http.md`). The same contract as gRPC: a snapshot exact at its
//! offsets, then every record after them, with no gap and no duplicate.
//!
//! - [`position`]: the position token and the chunk grid.
//! - [`log`]: `GET /v1/topics/{topic}/log`: snapshot, immutable chunks, live long-polls and SSE.
//! - [`reply`]: response bodies (JSON, NDJSON, SSE events) and error responses.
//!
//! It listens on its own address (`[http] listen`, off by default) with its own connection cap,
//! TLS when the gateway has it, and the same authentication, policy, translators and key filters
//! as the gRPC services.

pub mod log;
pub mod position;
pub mod reply;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{events, tls::Tls};

/// The `[http]` section: the HTTP log's listener, its chunk grid and its cache headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP log (off when unset). Plain HTTP off loopback needs TLS or
    /// `allow_plaintext`, as the gRPC port does.
    pub listen: Option<SocketAddr>,
    /// Part of every position. Change it when a topic is recreated (its offsets start again),
    /// so that no cache serves a chunk of the old topic for a URL of the new one: old positions
    /// are then answered 409 and clients start again from a snapshot.
    pub epoch: String,
    /// Width of the chunk grid, in offsets: partition `p`'s chunks end at multiples of it. A
    /// complete cell is an immutable, cacheable chunk.
    pub chunk_offsets: u64,
    /// Record bytes (keys, values, headers of A's records) after which a chunk or live answer is
    /// cut, at a record: bounds the memory a response holds. The cut depends only on the records,
    /// so it is the same for every reader.
    pub max_chunk_bytes: usize,
    /// How long a `live=1` request waits for new records before it answers empty.
    pub long_poll_ms: u64,
    /// `max-age` of a live answer: how long a cache may hand it to clients that ask for the same
    /// position (they then ask for its `next`).
    pub live_max_age_s: u64,
    /// `max-age` of a snapshot (`from=-1`): a cache may serve the same snapshot for this long;
    /// clients then follow from its offsets, so nothing is missed.
    pub snapshot_max_age_s: u64,
    /// Origins allowed to read the log from a browser (CORS): `["*"]` for any, empty for none.
    pub cors_origins: Vec<String>,
    /// Whether shared caches may keep answers to authenticated requests (`public` with
    /// `Vary: Authorization`). Off, they are `private`: a CDN cannot hand one caller's data to
    /// another, and so cannot collapse their requests either.
    pub authenticated_cache: bool,
    /// Open HTTP connections; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests waiting at once in a long-poll or SSE stream; beyond it they get 503 with
    /// Retry-After.
    pub max_waiting: usize,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            epoch: "1".into(),
            chunk_offsets: 4_096,
            max_chunk_bytes: 4 << 20,
            long_poll_ms: 20_000,
            live_max_age_s: 1,
            snapshot_max_age_s: 5,
            cors_origins: Vec::new(),
            authenticated_cache: false,
            max_connections: 10_000,
            max_waiting: 10_000,
            sse_keepalive_s: 15,
        }
    }
}

impl HttpConfig {
    /// Checks what serde cannot; an error names the key (`http.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        position::check_epoch(&self.epoch).map_err(|e| format!("http.epoch: {e}"))?;
        tributary_core::limits::all_positive(&[
            ("http.chunk_offsets", self.chunk_offsets),
            ("http.max_chunk_bytes", self.max_chunk_bytes as u64),
            ("http.long_poll_ms", self.long_poll_ms),
            ("http.max_connections", self.max_connections as u64),
            ("http.max_waiting", self.max_waiting as u64),
            ("http.sse_keepalive_s", self.sse_keepalive_s),
        ])?;
        if let Some(bad) = self.cors_origins.iter().find(|o| *o != "*" && !o.contains("://")) {
            return Err(format!(
                "http.cors_origins: '{bad}' is not an origin; write it as scheme://host[:port], or \"*\""
            ));
        }
        Ok(())
    }
}

/// Longest wait for HTTP connections to finish their request once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the HTTP log on `listener` until `shutdown`: at most `max_connections` connections,
/// each HTTP/1.1 or h2, over TLS when `tls` is set.
pub async fn serve(
    listener: TcpListener,
    log: Arc<log::HttpLog>,
    max_connections: usize,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, tls = tls.is_some(), "serving the HTTP log");
    }
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    events::emit(&events::AcceptFailed { error: e.to_string() });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let (log, tls, shutdown) = (log.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(TokioIo::new(stream), log, None, shutdown).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| crate::tls::certificate_identity(leaf));
                        connection(TokioIo::new(stream), log, certificate, shutdown).await
                    }
                    Ok(Err(e)) => events::emit(&events::TlsHandshakeFailed { error: e.to_string() }),
                    Err(_) => debug!(%peer, "no TLS handshake in time"),
                },
            }
        });
    }
}

/// Serves one connection's requests until it closes, or shutdown (then finishes the request in
/// flight, within [`DRAIN`]).
async fn connection<I>(io: I, log: Arc<log::HttpLog>, certificate: Option<String>, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let certificate: Option<Arc<str>> = certificate.map(Arc::from);
    let service = hyper::service::service_fn(move |request| {
        let (log, certificate) = (log.clone(), certificate.clone());
        async move { Ok::<_, std::convert::Infallible>(log.handle(request, certificate.as_deref()).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder.http2().max_concurrent_streams(256);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, served).await;
        }
    }
}
