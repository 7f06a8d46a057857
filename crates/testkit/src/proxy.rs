//! A TCP proxy that misbehaves on demand, for network faults between the gateway and Kafka: it
//! forwards every connection to one upstream address and can add latency, stall (hold every
//! byte, connections open), reset every open connection (RST, as a crashed middlebox or a broker
//! restart does mid-fetch) and refuse new ones.
//!
//! Kafka clients connect to the address the broker advertises, not to the bootstrap address, so
//! a broker behind the proxy must advertise the proxy's port (`KAFKA_ADVERTISED_PORT` of
//! `scripts/kafka.sh`).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
};

/// What the proxy does to the bytes it forwards.
#[derive(Default)]
struct Faults {
    /// Added before each chunk is forwarded, in milliseconds.
    latency_ms: AtomicU64,
    /// Nothing is forwarded while set (connections stay open).
    stalled: AtomicBool,
    /// New connections are closed at once while set.
    refusing: AtomicBool,
    /// Woken when a stall ends.
    resumed: Notify,
}

/// The proxy; it stops (and drops its connections) when dropped.
pub struct FaultyProxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyProxy {
    /// Listens on `listener` (bound by the caller, so that its port can be advertised before
    /// anything connects) and forwards to `upstream`.
    pub fn start(listener: std::net::TcpListener, upstream: SocketAddr) -> Self {
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        let addr = listener.local_addr().expect("bound");
        let faults = Arc::new(Faults::default());
        let (resets, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (faults, resets, accepted) = (faults.clone(), resets.clone(), accepted.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    if faults.refusing.load(Ordering::SeqCst) {
                        let _ = client.set_zero_linger();
                        continue;
                    }
                    tokio::spawn(forward(client, upstream, faults.clone(), resets.subscribe()));
                }
            }
        });
        Self { addr, faults, resets, accepted, task }
    }

    /// Adds `latency` before every chunk forwarded, each way (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.faults.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Holds every byte, both ways, with the connections open, until [`FaultyProxy::resume`].
    pub fn stall(&self) {
        self.faults.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.faults.stalled.store(false, Ordering::SeqCst);
        self.faults.resumed.notify_waiters();
    }

    /// Closes new connections at once while `refusing`.
    pub fn refuse(&self, refusing: bool) {
        self.faults.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Resets every open connection (RST to both ends).
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, faults: Arc<Faults>, mut resets: watch::Receiver<u64>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    // A zero linger makes every close an RST: what a reset must send. The connections that end
    // by themselves (a peer closed) have forwarded everything by then.
    let _ = (client.set_zero_linger(), server.set_zero_linger());
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let pumps =
        async { tokio::try_join!(pump(client_read, server_write, &faults), pump(server_read, client_write, &faults)) };
    tokio::select! {
        _ = pumps => {}
        _ = resets.changed() => {} // dropping the sockets sends RST each way

    }
}

/// Copies `from` to `to` chunk by chunk, applying the faults to each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        loop {
            let resumed = faults.resumed.notified();
            if !faults.stalled.load(Ordering::SeqCst) {
                break;
            }
            resumed.await;
        }
        let latency = faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
