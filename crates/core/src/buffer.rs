//! The buffer between a stream's producer (a subscription or a snapshot) and the client: bounded
//! in messages *and* in bytes, so a client that stops reading holds at most
//! `limits.stream_buffer_bytes` (or one message, if a single one is larger) however large its
//! batches are. Bytes are freed when the server takes a message to encode it.
//!
//! Every stream's buffer also draws on one [`Budget`] (`limits.stream_buffer_total_bytes`): a
//! message queued behind others takes its bytes from it, so many stalled clients together hold
//! at most the budget (plus one message each). A message for an empty buffer takes nothing from
//! it: a client that keeps reading never waits for the others, however many have stalled; at the
//! budget only streams whose clients have fallen behind wait.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

/// How many bytes a message holds while it waits in the buffer. Each buffer's user weighs its own
/// messages (`subscribe::Event`, `snapshot::SnapshotEvent`), so the buffer knows none of them.
pub trait Weighed {
    fn weight(&self) -> usize;
}

/// Bytes that every stream's queued messages share; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    max: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        let max = clamp_permits(bytes);
        Self { bytes: Arc::new(Semaphore::new(max)), max }
    }

    /// Bytes not held by any queued message now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Bytes held by queued messages now.
    pub fn used(&self) -> usize {
        self.max - self.available()
    }
}

fn clamp_permits(bytes: usize) -> usize {
    bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

/// A buffer of at most `messages` messages and `bytes` bytes (a larger single message is let
/// through alone), whose messages queued behind another also take their bytes from `budget`.
pub fn channel<T: Weighed>(messages: usize, bytes: usize, budget: &Budget) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let bytes = clamp_permits(bytes);
    let queue = Arc::new(Queue { queued: AtomicUsize::new(0), emptied: Notify::new() });
    let sender =
        Sender { tx, bytes: Arc::new(Semaphore::new(bytes)), max: bytes, budget: budget.clone(), queue: queue.clone() };
    (sender, Receiver { rx, queue })
}

/// The bytes a queued message holds, freed when it is taken.
type Held = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

/// A queued message, boxed: the channel allocates its slots in blocks of 32, and a slot of
/// `Result<Event, Error>` with its permits takes 144 bytes, 4.6 KiB per stream (a third of what an
/// idle subscriber costs) where a box per message costs one allocation per batch.
type Queued<T> = Box<(T, Held)>;

/// How many messages wait in one buffer; the receiver says when it has emptied it.
struct Queue {
    queued: AtomicUsize,
    emptied: Notify,
}

pub struct Sender<T> {
    tx: mpsc::Sender<Queued<T>>,
    bytes: Arc<Semaphore>,
    max: usize,
    budget: Budget,
    queue: Arc<Queue>,
}

/// The receiver is gone.
#[derive(Debug)]
pub struct Closed;

impl<T: Weighed> Sender<T> {
    /// Waits for room (messages and bytes, and the shared budget while the buffer is not empty),
    /// then queues `item`.
    pub async fn send(&self, item: T) -> Result<(), Closed> {
        let weight = item.weight();
        let own = tokio::select! {
            permit = self.bytes.clone().acquire_many_owned(weight.min(self.max) as u32) => permit.map_err(|_| Closed)?,
            _ = self.tx.closed() => return Err(Closed),
        };
        let shared = match weight {
            0 => None,
            _ => self.shared_bytes(weight).await?,
        };
        let slot = self.tx.reserve().await.map_err(|_| Closed)?;
        // Counted and queued at once: a cancelled send leaves the count right.
        self.queue.queued.fetch_add(1, Ordering::AcqRel);
        slot.send(Box::new((item, (own, shared))));
        Ok(())
    }

    /// Bytes from the shared budget for a message queued behind others; none once the buffer is
    /// empty (only this task sends, so an empty buffer stays empty until it queues).
    async fn shared_bytes(&self, weight: usize) -> Result<Option<OwnedSemaphorePermit>, Closed> {
        let weight = weight.min(self.budget.max) as u32;
        loop {
            if self.queue.queued.load(Ordering::Acquire) == 0 {
                return Ok(None);
            }
            tokio::select! {
                permit = self.budget.bytes.clone().acquire_many_owned(weight) => return permit.map(Some).map_err(|_| Closed),
                _ = self.queue.emptied.notified() => {}
                _ = self.tx.closed() => return Err(Closed),
            }
        }
    }

    /// Messages queued that the receiver has not taken.
    pub fn queued(&self) -> usize {
        self.queue.queued.load(Ordering::Acquire)
    }

    /// Resolves once the receiver has taken every queued message (at once when none is queued).
    /// Only this sender's task waits on the buffer: a wake-up is never lost to another waiter.
    pub async fn emptied(&self) {
        while self.queued() > 0 {
            // `notify_one` keeps a wake-up for the next waiter: an emptying between the check
            // and the wait is not missed.
            self.queue.emptied.notified().await;
        }
    }

    /// Resolves when the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

pub struct Receiver<T> {
    rx: mpsc::Receiver<Queued<T>>,
    queue: Arc<Queue>,
}

impl<T> Receiver<T> {
    /// The next message; its bytes are freed now.
    pub async fn recv(&mut self) -> Option<T> {
        let (item, _freed) = *self.rx.recv().await?;
        if self.queue.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.queue.emptied.notify_one();
        }
        Some(item)
    }

    /// The messages as a stream (for the server's response).
    pub fn into_stream(self) -> impl futures::Stream<Item = T> + Send + 'static
    where
        T: Send + 'static,
    {
        futures::stream::unfold(self, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of the given weight in bytes.
    #[derive(Debug)]
    struct Message(usize);

    impl Weighed for Message {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[tokio::test]
    async fn a_reader_that_stops_holds_at_most_the_byte_bound() {
        let budget = Budget::new(usize::MAX);
        let (tx, mut rx) = channel::<Message>(16, 10_000, &budget);
        // Each message weighs more than the bound: one at a time.
        tx.send(Message(10_640)).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_millis(100), tx.send(Message(10_640))).await;
        assert!(second.is_err(), "the second large message waits for the first to be taken");
        assert!(rx.recv().await.is_some());
        tx.send(Message(10_640)).await.unwrap();
        // Small messages go by the message bound.
        let (tx, _rx) = channel::<Message>(3, 1 << 20, &budget);
        for _ in 0..3 {
            tx.send(Message(0)).await.unwrap();
        }
        let fourth = tokio::time::timeout(std::time::Duration::from_millis(100), tx.send(Message(74))).await;
        assert!(fourth.is_err(), "the message bound holds too");
    }

    #[tokio::test]
    async fn stalled_streams_share_one_budget_and_a_reading_stream_never_waits_for_them() {
        use std::time::Duration;
        let message = || Message(1000);
        let budget = Budget::new(3_000);
        // Two stalled streams: each first message is free, the next ones draw on the budget.
        let (stalled_a, _keep_a) = channel::<Message>(16, 1 << 20, &budget);
        let (stalled_b, _keep_b) = channel::<Message>(16, 1 << 20, &budget);
        for _ in 0..3 {
            stalled_a.send(message()).await.unwrap();
        }
        stalled_b.send(message()).await.unwrap();
        stalled_b.send(message()).await.unwrap();
        assert_eq!(budget.available(), 0, "2 + 1 queued-behind messages hold the 3000 bytes");
        let waits = tokio::time::timeout(Duration::from_millis(100), stalled_b.send(message())).await;
        assert!(waits.is_err(), "at the budget a stream with a queue waits");

        // A stream whose client reads never needs the budget.
        let (reading, mut client) = channel::<Message>(16, 1 << 20, &budget);
        for _ in 0..100 {
            tokio::time::timeout(Duration::from_millis(100), reading.send(message())).await.expect("not held").unwrap();
            assert!(client.recv().await.is_some());
        }

        // A reading stream that got ahead of its client waits at the budget only until the
        // client has taken what is queued.
        reading.send(message()).await.unwrap();
        let behind = tokio::spawn(async move {
            reading.send(message()).await.unwrap();
            reading
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!behind.is_finished(), "queued behind a message, at the budget: waits");
        assert!(client.recv().await.is_some());
        let _reading = tokio::time::timeout(Duration::from_millis(500), behind).await.expect("goes on").unwrap();
        assert!(client.recv().await.is_some());

        // Bytes come back when a stalled client reads (or leaves).
        drop(_keep_a);
        assert_eq!(budget.available(), 2_000);
        tokio::time::timeout(Duration::from_millis(100), stalled_b.send(message())).await.expect("room again").unwrap();
    }

    #[tokio::test]
    async fn a_sender_learns_when_its_receiver_has_taken_everything() {
        let (tx, mut rx) = channel::<Message>(16, 1 << 20, &Budget::new(usize::MAX));
        tokio::time::timeout(std::time::Duration::from_millis(100), tx.emptied()).await.expect("nothing queued");
        tx.send(Message(1)).await.unwrap();
        tx.send(Message(1)).await.unwrap();
        assert_eq!(tx.queued(), 2);
        let waiting = tokio::spawn(async move {
            tx.emptied().await;
            tx
        });
        assert!(rx.recv().await.is_some());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one message is still queued");
        assert!(rx.recv().await.is_some());
        let tx = tokio::time::timeout(std::time::Duration::from_millis(500), waiting).await.expect("emptied").unwrap();
        assert_eq!(tx.queued(), 0);
    }

    #[tokio::test]
    async fn a_gone_reader_ends_a_waiting_sender() {
        let (tx, rx) = channel::<Message>(16, 100, &Budget::new(usize::MAX));
        tx.send(Message(1064)).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(Message(1064)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(rx);
        assert!(waiting.await.unwrap().is_err());
    }
}
