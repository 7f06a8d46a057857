//! The buffer between a stream's producer (a subscription or a snapshot) and the client: bounded
//! in messages *and* in bytes, so a client that stops reading holds at most
//! `limits.stream_buffer_bytes` (or one message, if a single one is larger) however large its
//! batches are. Bytes are freed when the server takes a message to encode it.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::{error::Error, record::Output, snapshot::SnapshotEvent, subscribe::Event};

/// How many bytes a message holds while it waits in the buffer.
pub trait Weighed {
    fn weight(&self) -> usize;
}

fn outputs_weight(outputs: &[Output]) -> usize {
    outputs.iter().map(Output::size).sum()
}

impl Weighed for Result<Event, Error> {
    fn weight(&self) -> usize {
        match self {
            Ok(Event::Records(outputs)) => outputs_weight(outputs),
            Ok(Event::Progress(p)) => 64 * p.offsets.len(),
            Err(_) => 0,
        }
    }
}

impl Weighed for Result<SnapshotEvent, Error> {
    fn weight(&self) -> usize {
        match self {
            Ok(SnapshotEvent::Entries(outputs)) => outputs_weight(outputs),
            _ => 0,
        }
    }
}

/// A buffer of at most `messages` messages and `bytes` bytes (a larger single message is let
/// through alone).
pub fn channel<T: Weighed>(messages: usize, bytes: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    (Sender { tx, bytes: Arc::new(Semaphore::new(bytes)), max: bytes }, Receiver { rx })
}

pub struct Sender<T> {
    tx: mpsc::Sender<(T, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    max: usize,
}

/// The receiver is gone.
#[derive(Debug)]
pub struct Closed;

impl<T: Weighed> Sender<T> {
    /// Waits for room (messages and bytes), then queues `item`.
    pub async fn send(&self, item: T) -> Result<(), Closed> {
        let weight = item.weight().min(self.max) as u32;
        let permit = tokio::select! {
            permit = self.bytes.clone().acquire_many_owned(weight) => permit.map_err(|_| Closed)?,
            _ = self.tx.closed() => return Err(Closed),
        };
        self.tx.send((item, permit)).await.map_err(|_| Closed)
    }

    /// Resolves when the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

pub struct Receiver<T> {
    rx: mpsc::Receiver<(T, OwnedSemaphorePermit)>,
}

impl<T> Receiver<T> {
    /// The next message; its bytes are freed now.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await.map(|(item, _freed)| item)
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
    use crate::{record::Record, subscribe::Progress};

    fn records(n: usize, value_bytes: usize) -> Result<Event, Error> {
        let record = Arc::new(Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(vec![b'x'; value_bytes].into()),
            headers: vec![],
        });
        Ok(Event::Records((0..n).map(|_| Output::untranslated(record.clone())).collect()))
    }

    #[tokio::test]
    async fn a_reader_that_stops_holds_at_most_the_byte_bound() {
        let (tx, mut rx) = channel::<Result<Event, Error>>(16, 10_000);
        // Each message weighs 10 × (1000 + 64) bytes > the bound: one at a time.
        tx.send(records(10, 1000)).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_millis(100), tx.send(records(10, 1000))).await;
        assert!(second.is_err(), "the second large message waits for the first to be taken");
        assert!(rx.recv().await.is_some());
        tx.send(records(10, 1000)).await.unwrap();
        // Small messages go by the message bound.
        let (tx, _rx) = channel::<Result<Event, Error>>(3, 1 << 20);
        for _ in 0..3 {
            tx.send(Ok(Event::Progress(Progress { offsets: vec![], skipped_records: 0 }))).await.unwrap();
        }
        let fourth = tokio::time::timeout(std::time::Duration::from_millis(100), tx.send(records(1, 10))).await;
        assert!(fourth.is_err(), "the message bound holds too");
    }

    #[tokio::test]
    async fn a_gone_reader_ends_a_waiting_sender() {
        let (tx, rx) = channel::<Result<Event, Error>>(16, 100);
        tx.send(records(1, 1000)).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(records(1, 1000)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(rx);
        assert!(waiting.await.unwrap().is_err());
    }
}
