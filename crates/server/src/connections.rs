//! Accepted connections within budgets: at most `limits.max_connections` open at once (at the cap
//! the gateway stops accepting, so new connections wait in the kernel's backlog instead of using
//! file descriptors), a connection that has not sent the HTTP/2 preface within
//! `limits.handshake_timeout_ms` is closed, and so is one without a call for
//! `limits.idle_timeout_ms` (the [`calls`](crate::calls) layer counts each connection's calls
//! through [`ConnectionInfo::open_call`]; gRPC clients reconnect by themselves on their next
//! call). Accept errors (e.g. the process is out of file descriptors) back off instead of spinning.
//!
//! What a call learns of its connection ([`ConnectionInfo`]: peer, client certificate) is
//! defined here, below the layers that read it (authentication, the call metrics).

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

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use tributary_core::limits::all_positive;

use crate::{
    events,
    tls::{certificate_identity, Tls},
};

/// The bounds of the gRPC port, set in the `[limits]` section with the core's
/// [`Limits`](tributary_core::Limits).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// Largest request message the server accepts, in bytes.
    pub max_request_bytes: usize,
    /// Open client connections. At the cap the gateway stops accepting; new connections wait
    /// in the kernel's listen backlog until one closes (keep it under the open-file limit).
    pub max_connections: usize,
    /// Time a new connection has to send the HTTP/2 preface, in milliseconds; then it is closed.
    pub handshake_timeout_ms: u64,
    /// Time a connection may stay without any call, in milliseconds; then it is closed (gRPC
    /// clients reconnect on their next call). Open streams keep their connection.
    pub idle_timeout_ms: u64,
    /// Concurrent calls (HTTP/2 streams) on one connection; the client queues beyond it.
    pub max_streams_per_connection: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 << 20,
            // An idle connection costs ~10 KB; 10k stay well under a 20k-60k file limit.
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            // Long enough that a client between bursts keeps its connection warm.
            idle_timeout_ms: 300_000,
            max_streams_per_connection: 1_024,
        }
    }
}

impl ConnectionLimits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks that every bound is positive; an error names the key (`limits.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        all_positive(&[
            ("limits.max_request_bytes", self.max_request_bytes as u64),
            ("limits.max_connections", self.max_connections as u64),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
            ("limits.max_streams_per_connection", u64::from(self.max_streams_per_connection)),
        ])
    }
}

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
pub struct CallGuard(Arc<Calls>);

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

impl ConnectionInfo {
    /// Counts a call on this connection until the guard is dropped: a connection with an open
    /// call is never idle.
    pub fn open_call(&self) -> CallGuard {
        CallGuard::open(self.calls.clone())
    }
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

/// Connections accepted on `listener`, at most `limits.max_connections` open at once, with
/// Nagle's algorithm off: a stream's small messages (the first progress, a record at the head)
/// would otherwise wait for the client's delayed ACK (~40 ms on Linux). With `tls`, each
/// connection's TLS handshake runs on its own task within the handshake timeout, so a slow or
/// silent client delays no other.
pub fn incoming(
    listener: TcpListener,
    limits: &ConnectionLimits,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
    let (handshake_timeout, idle_timeout) = (limits.handshake_timeout(), limits.idle_timeout());
    let max = limits.max_connections;
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

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Instant};

    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PREFACE: &[u8; PREFACE_BYTES] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const LONG: Duration = Duration::from_secs(5);

    type Incoming = Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>;

    async fn listen(limits: ConnectionLimits) -> (SocketAddr, Incoming, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        (addr, Box::pin(incoming(listener, &limits, None, shutdown.clone())), shutdown)
    }

    async fn next(incoming: &mut Incoming) -> Connection {
        tokio::time::timeout(LONG, incoming.next()).await.expect("accepted").expect("open").expect("no error")
    }

    /// A client that has sent `sent`, and the gateway's side of its connection.
    async fn connect(addr: SocketAddr, incoming: &mut Incoming, sent: &[u8]) -> (TcpStream, Connection) {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(sent).await.unwrap();
        let mut connection = next(incoming).await;
        let mut received = vec![0; sent.len()];
        connection.read_exact(&mut received).await.unwrap();
        assert_eq!(received, sent);
        (client, connection)
    }

    /// Reads until the gateway's side ends the connection with an error.
    async fn closed(connection: &mut Connection) -> io::Error {
        let mut buf = [0u8; 64];
        let read = async {
            loop {
                match connection.read(&mut buf).await {
                    Ok(0) => panic!("the client closed first"),
                    Ok(_) => continue,
                    Err(e) => return e,
                }
            }
        };
        tokio::time::timeout(LONG, read).await.expect("the gateway closes the connection")
    }

    async fn still_open(connection: &mut Connection, wait: Duration) -> bool {
        tokio::time::timeout(wait, connection.read(&mut [0u8; 64])).await.is_err()
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_waits_in_the_backlog_until_one_closes() {
        let (addr, mut incoming, _shutdown) =
            listen(ConnectionLimits { max_connections: 1, ..Default::default() }).await;
        let (_first_client, first) = connect(addr, &mut incoming, b"").await;
        // The kernel completes the connection; the gateway does not accept it.
        let second_client = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), incoming.next()).await.is_err(),
            "a second connection is accepted at the cap"
        );
        drop(first);
        let second = next(&mut incoming).await;
        assert_eq!(second.tcp.remote_addr(), Some(second_client.local_addr().unwrap()));
    }

    #[tokio::test]
    async fn a_connection_without_the_http2_preface_is_closed_after_the_handshake_timeout() {
        let timeout = Duration::from_millis(200);
        let (addr, mut incoming, _shutdown) =
            listen(ConnectionLimits { handshake_timeout_ms: 200, ..Default::default() }).await;
        let started = Instant::now();
        // Part of the preface is not enough.
        let (_client, mut silent) = connect(addr, &mut incoming, &PREFACE[..10]).await;
        let error = closed(&mut silent).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("limits.handshake_timeout_ms"), "{error}");
        assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());

        let (_client, mut speaking) = connect(addr, &mut incoming, PREFACE).await;
        assert!(still_open(&mut speaking, timeout * 3).await, "a connection that sent the preface is kept");
    }

    #[tokio::test]
    async fn a_connection_without_a_call_is_closed_after_the_idle_timeout_and_one_with_a_call_is_not() {
        let timeout = Duration::from_millis(300);
        let (addr, mut incoming, _shutdown) =
            listen(ConnectionLimits { idle_timeout_ms: 300, ..Default::default() }).await;
        let started = Instant::now();
        let (_client, mut quiet) = connect(addr, &mut incoming, PREFACE).await;
        let error = closed(&mut quiet).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("limits.idle_timeout_ms"), "{error}");
        assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());

        let (_client, mut busy) = connect(addr, &mut incoming, PREFACE).await;
        let call = busy.connect_info().open_call();
        assert!(still_open(&mut busy, timeout * 3).await, "a connection with an open call is idle");
        let ended = Instant::now();
        drop(call);
        assert_eq!(closed(&mut busy).await.kind(), io::ErrorKind::TimedOut);
        assert!(ended.elapsed() >= timeout, "closed {:?} after its call ended", ended.elapsed());
    }

    #[tokio::test]
    async fn at_shutdown_a_connection_without_a_call_is_closed_after_a_grace() {
        let (addr, mut incoming, shutdown) = listen(ConnectionLimits::default()).await;
        let (_client, mut quiet) = connect(addr, &mut incoming, PREFACE).await;
        let (_client, mut busy) = connect(addr, &mut incoming, PREFACE).await;
        let _call = busy.connect_info().open_call();
        assert!(still_open(&mut quiet, SHUTDOWN_GRACE).await, "closed before the shutdown");
        let started = Instant::now();
        shutdown.cancel();
        assert_eq!(closed(&mut quiet).await.kind(), io::ErrorKind::ConnectionAborted);
        assert!(started.elapsed() >= SHUTDOWN_GRACE, "closed after {:?}", started.elapsed());
        assert!(still_open(&mut busy, SHUTDOWN_GRACE * 2).await, "a connection with an open call is cut");
    }
}
