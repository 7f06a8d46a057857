//! Every bound of the gateway's data path, with what happens at it. Loaded as the `[limits]`
//! section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds, each with what happens at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Records the tail buffer of one partition keeps in memory. Older records are evicted;
    /// subscribers behind them read from Kafka with a catch-up reader.
    pub tail_max_records: usize,
    /// Bytes (keys, values, headers) the tail buffer of one partition keeps, same eviction.
    pub tail_max_bytes: usize,
    /// Default and maximum encoded size of one snapshot chunk. A single entry larger than this is
    /// sent alone in its chunk.
    pub max_chunk_bytes: usize,
    /// Default and maximum records in one subscription batch.
    pub max_batch_records: usize,
    /// Maximum bytes of record data in one subscription batch (a larger single record goes alone).
    pub max_batch_bytes: usize,
    /// Messages buffered per stream between the gateway and a slow client. When full, that
    /// stream's producer waits; ingest and other clients never do.
    pub stream_buffer_messages: usize,
    /// Bytes of record data buffered per stream for a slow client (a larger single batch goes
    /// alone). With `max_streams`, it bounds what clients that stop reading can hold in total.
    pub stream_buffer_bytes: usize,
    /// Bytes that all streams' buffers share: a message queued behind another takes its bytes
    /// from here, so clients that stop reading hold at most this much together (plus one
    /// message each). A stream whose client keeps up never waits for it.
    pub stream_buffer_total_bytes: usize,
    /// Concurrent `Subscribe` and `GetSnapshot` streams. Beyond it calls fail RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Kafka consumers that catch-up readers may use at once. A subscriber behind the tail buffer
    /// waits for one (its progress messages keep flowing).
    pub max_catchup_readers: usize,
    /// Prefetch of one catch-up reader, in KiB (librdkafka's `queued.max.messages.kbytes`).
    pub catchup_prefetch_kbytes: usize,
    /// Interval between progress messages on a subscription, in milliseconds.
    pub progress_interval_ms: u64,
    /// How long a snapshot waits for a loading view when the call has no deadline, in ms.
    pub ready_wait_ms: u64,
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

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 4 MiB or 16k records per partition keeps near-head subscribers off Kafka for a few
            // seconds of a busy partition while 100 partitions cost at most 400 MiB.
            tail_max_records: 16_384,
            tail_max_bytes: 4 << 20,
            // 1 MiB stays well under the 4 MiB default receive limit of every gRPC client.
            max_chunk_bytes: 1 << 20,
            max_batch_records: 1_000,
            // 256 KiB is ~250 records of 1 KiB: the per-message overhead is already negligible,
            // and a stalled stream holds one batch in hand.
            max_batch_bytes: 256 << 10,
            stream_buffer_messages: 16,
            // With the batch in hand, a stream whose client stops reading holds under 1 MiB.
            stream_buffer_bytes: 512 << 10,
            stream_buffer_total_bytes: 128 << 20,
            max_streams: 1_024,
            // Each reader is a librdkafka client with its own threads and prefetch.
            max_catchup_readers: 16,
            // librdkafka defaults to 64 MiB per consumer; a thousand lagging clients must not.
            catchup_prefetch_kbytes: 1_024,
            progress_interval_ms: 1_000,
            ready_wait_ms: 30_000,
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

impl Limits {
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// A size a client asked for, where 0 takes the server's maximum and larger values are lowered
/// to it.
pub fn requested_or_max(requested: usize, max: usize) -> usize {
    match requested {
        0 => max,
        n => n.min(max),
    }
}
