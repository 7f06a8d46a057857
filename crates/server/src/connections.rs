//! Accepted connections within budgets: at most `limits.max_connections` open at once (at the cap
//! the gateway stops accepting, so new connections wait in the kernel's backlog instead of using
//! file descriptors), a connection that has not sent the HTTP/2 preface within
//! `limits.handshake_timeout_ms` is closed, and so is one without a call for
//! `limits.idle_timeout_ms` ([`CallsLayer`] counts each connection's calls; gRPC clients
//! reconnect by themselves on their next call). Accept errors (e.g. the process is out of file
//! descriptors) back off instead of spinning.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt, Stream};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::Instrument;

use crate::{
    auth::Auth,
    tls::{certificate_identity, Tls},
};
use tributary_core::events;

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_BYTES: usize = 24;
/// Wait after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Once the gateway shuts down, how long a connection without a call may stay open. HTTP/2's
/// graceful close waits for the client to answer a PING; some clients (gRPC's C core, as Python
/// uses it) only read their socket during a call, so an idle one held the shutdown for seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The calls of one connection: how many are open, and when the last one ended.
#[derive(Debug)]
pub struct Calls {
    open: AtomicUsize,
    last_ended: Mutex<Instant>,
}

impl Calls {
    fn new() -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), last_ended: Mutex::new(Instant::now()) })
    }

    /// When the connection becomes idle for good, or `None` while a call is open.
    fn idle_since(&self) -> Option<Instant> {
        match self.open.load(Ordering::Acquire) {
            0 => Some(*self.last_ended.lock().unwrap_or_else(|e| e.into_inner())),
            _ => None,
        }
    }
}

/// One open call; it ends when dropped (with its response body, or its handler if cancelled).
struct CallGuard(Arc<Calls>);

impl CallGuard {
    fn open(calls: Arc<Calls>) -> Self {
        calls.open.fetch_add(1, Ordering::AcqRel);
        Self(calls)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self.0.last_ended.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a call learns of its connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    /// With mutual TLS: the identity in the client's verified certificate.
    pub certificate: Option<Arc<str>>,
    calls: Arc<Calls>,
}

/// The bytes of a connection: plain TCP or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection: it holds its slot of the connection budget until dropped.
pub struct Connection {
    stream: Io,
    tcp: TcpConnectInfo,
    certificate: Option<Arc<str>>,
    _slot: OwnedSemaphorePermit,
    /// Until the preface has arrived: the deadline, and the bytes still to come.
    handshake: Option<(Pin<Box<Sleep>>, usize)>,
    calls: Arc<Calls>,
    idle_timeout: Duration,
    /// When to check next whether the connection has been idle for `idle_timeout`.
    idle_check: Pin<Box<Sleep>>,
    /// Resolves when the gateway starts shutting down.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Since the shutdown started: when a connection without a call is closed.
    close_at: Option<Pin<Box<Sleep>>>,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo { tcp: self.tcp.clone(), certificate: self.certificate.clone(), calls: self.calls.clone() }
    }
}

fn timed_out(message: &'static str) -> Poll<io::Result<()>> {
    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
}

impl Connection {
    /// Whether the connection has had no call for `idle_timeout`; otherwise re-arms the check
    /// (its timer wakes this connection's task, which reads again).
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle_check.as_mut().poll(cx).is_ready() {
            let next = match self.calls.idle_since() {
                Some(since) if since.elapsed() >= self.idle_timeout => return true,
                Some(since) => since + self.idle_timeout,
                None => Instant::now() + self.idle_timeout,
            };
            self.idle_check.as_mut().reset(next);
        }
        false
    }

    /// Whether the gateway is shutting down and this connection has had no call for
    /// [`SHUTDOWN_GRACE`] since; the timers wake this connection's task, which reads again.
    fn closing(&mut self, cx: &mut Context<'_>) -> bool {
        if self.close_at.is_none() {
            if self.shutdown.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.close_at = Some(Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)));
        }
        let grace_over = self.close_at.as_mut().is_some_and(|at| at.as_mut().poll(cx).is_ready());
        grace_over && self.calls.idle_since().is_some()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some((deadline, missing)) = &mut this.handshake {
            match &read {
                Poll::Ready(Ok(())) => {
                    *missing = missing.saturating_sub(buf.filled().len() - before);
                    if *missing == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return timed_out("no HTTP/2 preface within limits.handshake_timeout_ms");
                }
                _ => {}
            }
        } else if read.is_pending() && this.idle(cx) {
            return timed_out("no call within limits.idle_timeout_ms");
        } else if read.is_pending() && this.closing(cx) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the gateway is shutting down")));
        }
        read
    }
}

/// A tower layer in front of every service that admits each call: counts it among its
/// connection's open calls (for the idle timeout) and authenticates it ([`Auth::admit`]).
#[derive(Clone)]
pub struct CallsLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for CallsLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit { inner, auth: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let guard = request.extensions().get::<ConnectionInfo>().map(|info| CallGuard::open(info.calls.clone()));
        let mut record = CallRecord::new(request.uri().path());
        let peer = request.extensions().get::<ConnectionInfo>().and_then(|info| info.tcp.remote_addr());
        // Everything the call does is in its span: its log lines, its stream's task.
        let span = tracing::info_span!("call", method = record.method, peer = ?peer);
        record.span = span.clone();
        let _entered = span.enter();
        if let Some(refused) = self.auth.admit(&mut request) {
            record.code = grpc_status(refused.headers());
            return async move { Ok(refused) }.boxed();
        }
        let response = self.inner.call(request);
        drop(_entered);
        async move {
            let response = response.await?;
            // A status in the headers is a trailers-only response: the call failed at once.
            record.code = grpc_status(response.headers());
            // The call lasts as long as its response body: a stream ends when its body does.
            Ok(response.map(|body| tonic::body::Body::new(GuardedBody { body, _guard: guard, record })))
        }
        .instrument(span)
        .boxed()
    }
}

/// The `grpc-status` in headers or trailers, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call's method, start and status; counted in the gRPC metrics when it ends.
struct CallRecord {
    method: &'static str,
    started: std::time::Instant,
    code: Option<i32>,
    /// The call's span: its stream's work and its end are logged in it.
    span: tracing::Span,
}

impl CallRecord {
    fn new(path: &str) -> Self {
        Self { method: method_label(path), started: std::time::Instant::now(), code: None, span: tracing::Span::none() }
    }
}

/// The method label of a path: known methods only, so hostile paths cannot add label values.
fn method_label(path: &str) -> &'static str {
    const METHODS: &[&str] = &[
        "/tributary.v1.Gateway/DescribeTopics",
        "/tributary.v1.Gateway/GetSnapshot",
        "/tributary.v1.Gateway/Subscribe",
        "/tributary.v1.Translators/Upload",
        "/tributary.v1.Translators/List",
        "/tributary.v1.Translators/Describe",
        "/tributary.v1.Translators/Delete",
        "/tributary.v1.Subscriptions/Commit",
        "/tributary.v1.Subscriptions/List",
        "/tributary.v1.Subscriptions/Describe",
        "/tributary.v1.Subscriptions/Delete",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ];
    match METHODS.iter().find(|m| **m == path) {
        Some(m) => &m[1..],
        None if path.starts_with("/grpc.reflection.") => "reflection",
        None => "other",
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // No status at all: the client went away first.
        let code = self.code.map_or(tonic::Code::Cancelled, tonic::Code::from_i32);
        let _entered = self.span.enter();
        tracing::debug!(code = ?code, seconds = self.started.elapsed().as_secs_f64(), "call ended");
        metrics::counter!("tributary_grpc_requests_total", "method" => self.method, "code" => format!("{code:?}"))
            .increment(1);
        metrics::histogram!("tributary_grpc_request_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

struct GuardedBody {
    body: tonic::body::Body,
    _guard: Option<CallGuard>,
    record: CallRecord,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let _entered = this.record.span.enter();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(code) = f.trailers_ref().and_then(grpc_status) {
                this.record.code = Some(code);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connections accepted on `listener`, at most `max` open at once, with Nagle's algorithm off: a
/// stream's small messages (the first progress, a record at the head) would otherwise wait for
/// the client's delayed ACK (~40 ms on Linux). With `tls`, each connection's TLS handshake runs on
/// its own task within `handshake_timeout`, so a slow or silent client delays no other.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Connection>(64);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(max));
        loop {
            // At the cap, wait here: the kernel's backlog holds new connections meanwhile.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                _ = tx.closed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    events::emit(&events::AcceptFailed { error: e.to_string() });
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                events::emit(&events::TcpNodelayFailed { error: e.to_string() });
            }
            let tcp = stream.connect_info();
            let shutdown = shutdown.clone();
            let connection = move |stream, certificate| Connection {
                stream,
                tcp,
                certificate,
                _slot: slot,
                handshake: Some((Box::pin(tokio::time::sleep(handshake_timeout)), PREFACE_BYTES)),
                calls: Calls::new(),
                idle_timeout,
                idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
                shutdown: Box::pin(shutdown.cancelled_owned()),
                close_at: None,
            };
            match &tls {
                None => {
                    if tx.send(connection(Io::Plain(stream), None)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (acceptor, tx) = (tls.acceptor(), tx.clone());
                    tokio::spawn(async move {
                        let failed = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let certificate = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(|leaf| certificate_identity(leaf))
                                    .map(Arc::from);
                                let _ = tx.send(connection(Io::Tls(Box::new(stream)), certificate)).await;
                                return;
                            }
                            Ok(Err(e)) => format!("TLS handshake failed: {e}"),
                            Err(_) => "no TLS handshake within limits.handshake_timeout_ms".to_string(),
                        };
                        events::emit(&events::TlsHandshakeFailed { error: failed });
                    });
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) })
}
