//! Every bound of the gateway's data path, with what happens at it. Loaded from the `[limits]`
//! section of the configuration, which the server shares with its connection limits (the server
//! reads the section and refuses unknown keys).

use std::time::Duration;

/// The largest `head_linger_ms`: a linger trades latency for fewer messages, and past this the
/// latency is the larger cost (a client or a stop is also noticed at most this late).
pub const MAX_HEAD_LINGER_MS: u64 = 100;

/// Bounds, each with what happens at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Records the tail buffer of one partition keeps in memory. Older records are evicted;
    /// subscribers behind them read from Kafka with a catch-up reader.
    pub tail_max_records: usize,
    /// Bytes of memory the tail buffer of one partition alone keeps alive, same eviction: its
    /// entries, the records they replaced in the state, and tombstones and keyless records
    /// (records the state holds count once, as state).
    pub tail_max_bytes: usize,
    /// Bytes that the tails of all partitions together may keep beyond their own bounds,
    /// borrowed as they grow past them (first come, first served) and given back as they
    /// shrink or once their partition is quiet ([`crate::view::POOL_IDLE`]): a busy partition's
    /// tail keeps seconds of records for followers that fall behind, at no cost to idle ones.
    /// At the bound a tail evicts at its own bounds as before. 0: no pool.
    pub tail_pool_bytes: usize,
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
    /// How long a subscription at the head waits after it is told of new records before it
    /// reads them, in milliseconds (at most [`MAX_HEAD_LINGER_MS`]): records written meanwhile go
    /// out in the same message. 0 sends every append at once; a few ms cut the messages (and
    /// the gateway's CPU) when many subscribers follow a busy topic, at that much latency.
    /// Subscriptions catching up never wait.
    pub head_linger_ms: u64,
    /// How long a snapshot waits for a loading view when the call has no deadline, in ms.
    pub ready_wait_ms: u64,
    /// Bytes of record data a conflating subscription (`Subscribe` with `conflate`) holds, the
    /// latest record per key, while its client has not taken what it was sent. At the bound it
    /// stops reading and waits for its client, as any subscription does: nothing is lost.
    pub conflate_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 4 MiB or 131,072 records per partition (16 bytes each for new keys) keeps
            // near-head subscribers off Kafka for about a second of a partition written flat out
            // while 100 partitions cost at most 400 MiB.
            tail_max_records: 131_072,
            tail_max_bytes: 4 << 20,
            // 1 M records of new keys or ~85 k updates of 100-byte values, wherever they are
            // written: ten followers seconds behind a producer writing flat out stay in memory
            // (scripts/bench.sh head) for at most 16 MiB more than the tails' own bounds, a
            // small share of a gateway's memory. (With 64 MiB, 60 MB of 1 KiB updates with a
            // stalled follower grew the gateway by over 100 MiB: tests/gateway/follow.rs.)
            tail_pool_bytes: 16 << 20,
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
            // librdkafka defaults to 64 MiB per consumer; a thousand lagging clients must not. With
            // 1 MiB a reader fetched, drained and fetched again in turn (the machine idle half the
            // time): Subscribe from 0 read 1 KiB records at 0.36x a raw consumer; with 4 MiB,
            // fetches overlap the draining: 0.86x (16 MiB: no faster). 16 readers hold 64 MiB.
            catchup_prefetch_kbytes: 4_096,
            progress_interval_ms: 1_000,
            head_linger_ms: 0,
            // 100 k keys of ~100 B: a slow client's view of a busy topic of that many keys
            // stays current; 1000 conflating streams at the bound would hold 8 GiB, so a
            // fleet of slow clients wants it lower.
            conflate_max_bytes: 8 << 20,
            ready_wait_ms: 30_000,
        }
    }
}

impl Limits {
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    /// The linger at the head; `None` when it is 0.
    pub fn head_linger(&self) -> Option<Duration> {
        (self.head_linger_ms > 0).then(|| Duration::from_millis(self.head_linger_ms))
    }

    /// Checks what serde cannot: every bound but `ready_wait_ms`, `head_linger_ms` and
    /// `tail_pool_bytes` (0: no pool) is
    /// positive, and the linger is at most [`MAX_HEAD_LINGER_MS`]. An error names the key
    /// (`limits.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        if self.head_linger_ms > MAX_HEAD_LINGER_MS {
            return Err(format!(
                "`limits.head_linger_ms` is {}; at most {MAX_HEAD_LINGER_MS} (a linger is a few milliseconds)",
                self.head_linger_ms
            ));
        }
        all_positive(&[
            ("limits.tail_max_records", self.tail_max_records as u64),
            ("limits.tail_max_bytes", self.tail_max_bytes as u64),
            ("limits.max_chunk_bytes", self.max_chunk_bytes as u64),
            ("limits.max_batch_records", self.max_batch_records as u64),
            ("limits.max_batch_bytes", self.max_batch_bytes as u64),
            ("limits.stream_buffer_messages", self.stream_buffer_messages as u64),
            ("limits.stream_buffer_bytes", self.stream_buffer_bytes as u64),
            ("limits.max_streams", self.max_streams as u64),
            ("limits.max_catchup_readers", self.max_catchup_readers as u64),
            ("limits.catchup_prefetch_kbytes", self.catchup_prefetch_kbytes as u64),
            ("limits.stream_buffer_total_bytes", self.stream_buffer_total_bytes as u64),
            ("limits.progress_interval_ms", self.progress_interval_ms),
            ("limits.conflate_max_bytes", self.conflate_max_bytes as u64),
        ])
    }
}

/// The first of `bounds` (configuration key, value) that is 0, as the configuration reports it:
/// "`key` must be greater than 0". Every section's validation uses it, so the message is one.
pub fn all_positive(bounds: &[(&str, u64)]) -> Result<(), String> {
    match bounds.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(format!("`{key}` must be greater than 0")),
        None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_bound_is_named() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let limits = Limits { max_streams: 0, progress_interval_ms: 0, ..Limits::default() };
        assert_eq!(limits.validate(), Err("`limits.max_streams` must be greater than 0".into()));
        let limits = Limits { progress_interval_ms: 0, ..Limits::default() };
        assert_eq!(limits.validate(), Err("`limits.progress_interval_ms` must be greater than 0".into()));
        let limits = Limits { conflate_max_bytes: 0, ..Limits::default() };
        assert_eq!(limits.validate(), Err("`limits.conflate_max_bytes` must be greater than 0".into()));
        let limits = Limits { head_linger_ms: 101, ..Limits::default() };
        assert!(limits.validate().unwrap_err().contains("`limits.head_linger_ms` is 101; at most 100"));
        assert_eq!(Limits { head_linger_ms: 100, ..Limits::default() }.validate(), Ok(()));
        assert_eq!(Limits::default().head_linger(), None);
        assert_eq!(Limits { ready_wait_ms: 0, ..Limits::default() }.validate(), Ok(()));
    }
}
