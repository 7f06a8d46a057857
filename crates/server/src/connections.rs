//! Accepted connections within budgets: at most `limits.max_connections` open at once (at the cap
//! the gateway stops accepting, so new connections wait in the kernel's backlog instead of using
//! file descriptors), and a connection that has not sent the HTTP/2 preface within
//! `limits.handshake_timeout_ms` is closed. Accept errors (e.g. the process is out of file
//! descriptors) back off instead of spinning.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;
use tributary_core::logging::ErrorLog;

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_BYTES: usize = 24;
/// Wait after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An accepted connection: it holds its slot of the connection budget until dropped.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface has arrived: the deadline, and the bytes still to come.
    handshake: Option<(Pin<Box<Sleep>>, usize)>,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
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
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within limits.handshake_timeout_ms",
                    )));
                }
                _ => {}
            }
        }
        read
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
/// the client's delayed ACK (~40 ms on Linux).
pub fn incoming(
    listener: TcpListener,
    max: usize,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max));
    let state = (listener, slots, ErrorLog::new("listener"));
    futures::stream::unfold(state, move |(listener, slots, mut errors)| async move {
        loop {
            // At the cap, wait here: the kernel's backlog holds new connections meanwhile.
            let slot = slots.clone().acquire_owned().await.ok()?;
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        warn!(error = %e, "cannot set TCP_NODELAY on a connection");
                    }
                    let deadline = Box::pin(tokio::time::sleep(handshake_timeout));
                    let connection = Connection { stream, _slot: slot, handshake: Some((deadline, PREFACE_BYTES)) };
                    return Some((Ok(connection), (listener, slots, errors)));
                }
                Err(e) => {
                    errors.log(&format!("accepting a connection failed (retrying in {ACCEPT_BACKOFF:?}): {e}"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}
