//! The ingest consumer's queue read in batches with librdkafka's `rd_kafka_consume_batch_queue`:
//! one queue lock and one wake-up per batch, where `BaseConsumer::poll` takes an event, a clock
//! reading and the queue lock for every message (most of the ingest thread's time in profiles).
//!
//! The only unsafe code of the gateway's Kafka side lives here: the messages librdkafka hands
//! out are borrowed as [`RawMessage`]s, which implement rdkafka's [`Message`] (so records are made
//! by the same code as everywhere else), and destroyed when the batch is dropped.

use std::{ffi::CStr, marker::PhantomData, ptr, slice, sync::Arc, time::Duration};

use rdkafka::{
    bindings as rd,
    consumer::{Consumer, ConsumerContext},
    message::{Header, Headers, Message, Timestamp},
};

/// The consumer queue of a consumer (its main queue is forwarded there: logs and errors come
/// through it too).
pub(crate) struct ConsumerQueue<'c> {
    queue: *mut rd::rd_kafka_queue_t,
    _consumer: PhantomData<&'c ()>,
}

impl<'c> ConsumerQueue<'c> {
    /// `None` when the consumer has no consumer queue (every consumer of the gateway has: they
    /// set a group id).
    pub(crate) fn of<K: Consumer<X>, X: ConsumerContext>(consumer: &'c K) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives, which outlives the queue
        // reference (its lifetime is tied to it); the reference is released in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        (!queue.is_null()).then_some(Self { queue, _consumer: PhantomData })
    }

    /// Takes at most `max` messages, waiting up to `wait` for that many (so callers that care
    /// about latency pass zero and wait elsewhere).
    pub(crate) fn consume(&self, wait: Duration, max: usize) -> Taken<'_> {
        let mut messages = vec![ptr::null_mut(); max];
        let timeout = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `messages` has room for `max` pointers; librdkafka fills the first `n` with
        // messages the caller owns (destroyed by `Taken`).
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, timeout, messages.as_mut_ptr(), max) };
        messages.truncate(usize::try_from(n).unwrap_or(0));
        Taken { messages, _queue: PhantomData }
    }
}

impl Drop for ConsumerQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: the queue reference was taken in `of` and is released once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) }
    }
}

/// An error librdkafka delivered in place of a message.
pub(crate) struct ConsumeError {
    /// The position is not (or no longer) in the partition.
    pub(crate) out_of_range: bool,
    pub(crate) message: String,
}

/// Messages taken from the queue, destroyed on drop.
pub(crate) struct Taken<'q> {
    messages: Vec<*mut rd::rd_kafka_message_t>,
    _queue: PhantomData<&'q ()>,
}

impl Taken<'_> {
    /// Each message in order: a record's message, or the error librdkafka reported in its place.
    /// Operations that are neither (no topic, no error) are skipped.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Result<RawMessage<'_>, ConsumeError>> + '_ {
        // SAFETY: every pointer is a live message owned by `self`.
        self.messages.iter().filter_map(|&m| unsafe { read(m) })
    }

    /// The messages, held past the queue's borrow for as long as anything lent from them is,
    /// with `client` (the consumer they came from) kept alive until they are destroyed: librdkafka
    /// wants a client's messages destroyed before the client.
    pub(crate) fn hold<C>(mut self, client: Arc<C>) -> Held<C> {
        Held { messages: std::mem::take(&mut self.messages), _client: client }
    }
}

/// A message as a record's message, or the error librdkafka reported in its place; `None` for
/// an operation that is neither (no topic, no error).
///
/// # Safety
/// `m` must be a live message that outlives `'a`.
unsafe fn read<'a>(m: *mut rd::rd_kafka_message_t) -> Option<Result<RawMessage<'a>, ConsumeError>> {
    // SAFETY: the caller vouches for `m`.
    let message = unsafe { &*m };
    if message.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: as above; librdkafka returns a static or message-owned C string.
        let text = unsafe { CStr::from_ptr(rd::rd_kafka_message_errstr(m)) };
        // With `auto.offset.reset=error`, an out-of-range position comes as
        // `_AUTO_OFFSET_RESET` (the broker's error is only in the text).
        let out_of_range = matches!(
            message.err,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE
                | rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET
        );
        return Some(Err(ConsumeError { out_of_range, message: text.to_string_lossy().into_owned() }));
    }
    if message.rkt.is_null() {
        return None;
    }
    Some(Ok(RawMessage::new(message)))
}

/// Destroys messages a batch owns.
fn destroy(messages: &[*mut rd::rd_kafka_message_t]) {
    for &m in messages {
        // SAFETY: each message is owned by the batch and destroyed once, when it is dropped.
        unsafe { rd::rd_kafka_message_destroy(m) }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        destroy(&self.messages);
    }
}

/// Messages taken from a queue and kept, with the client they came from ([`Taken::hold`]): a
/// catch-up reader lends its records to the delivering layer, which encodes them straight from
/// librdkafka's buffers into its output.
pub(crate) struct Held<C> {
    messages: Vec<*mut rd::rd_kafka_message_t>,
    /// Dropped after the messages are destroyed (fields drop after `Drop::drop`).
    _client: Arc<C>,
}

// SAFETY: a message handed out by librdkafka is not changed by librdkafka any more, and may be
// read and destroyed from any thread. The one lazy part, a message's parsed headers, is parsed by
// `RawMessage::new` while the batch is read on the thread that took it, before it is shared; later
// calls only read what that parse kept.
unsafe impl<C: Send + Sync> Send for Held<C> {}
// SAFETY: as above.
unsafe impl<C: Send + Sync> Sync for Held<C> {}

impl<C> Held<C> {
    /// Each message with its index, as [`Taken::iter`] gives them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, Result<RawMessage<'_>, ConsumeError>)> + '_ {
        // SAFETY: every pointer is a live message owned by `self`.
        self.messages.iter().enumerate().filter_map(|(i, &m)| unsafe { read(m) }.map(|read| (i, read)))
    }

    /// Message `index`, which [`Held::iter`] gave as a record's message.
    pub(crate) fn message(&self, index: usize) -> RawMessage<'_> {
        // SAFETY: a live message owned by `self`.
        RawMessage::new(unsafe { &*self.messages[index] })
    }
}

impl<C> Drop for Held<C> {
    fn drop(&mut self) {
        destroy(&self.messages);
    }
}

/// A message of a batch, borrowed from it.
pub(crate) struct RawMessage<'a> {
    message: &'a rd::rd_kafka_message_t,
    headers: Option<RawHeaders<'a>>,
}

impl<'a> RawMessage<'a> {
    fn new(message: &'a rd::rd_kafka_message_t) -> Self {
        let mut headers = ptr::null_mut();
        // SAFETY: `message` is live; librdkafka parses its headers once and keeps them with it.
        let found = unsafe { rd::rd_kafka_message_headers(message, &mut headers) };
        let headers = (found == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
            .then_some(RawHeaders { headers, _message: PhantomData });
        Self { message, headers }
    }
}

/// `ptr`/`len` as a slice, `None` for a null pointer (a null key or a tombstone).
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes that live as long as `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    (!ptr.is_null()).then(|| unsafe { slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl<'a> Message for RawMessage<'a> {
    type Headers = RawHeaders<'a>;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the key lives with the message.
        unsafe { bytes(self.message.key, self.message.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: the payload lives with the message.
        unsafe { bytes(self.message.payload, self.message.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let (payload, len) = (self.message.payload.cast::<u8>(), self.message.len);
        // SAFETY: the caller vouches for exclusive access, as for rdkafka's own messages.
        (!payload.is_null()).then(|| unsafe { slice::from_raw_parts_mut(payload, len) })
    }

    fn topic(&self) -> &str {
        // SAFETY: a message with a topic handle; its name lives as long as the handle.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.message.rkt)) };
        name.to_str().unwrap_or_default()
    }

    fn partition(&self) -> i32 {
        self.message.partition
    }

    fn offset(&self) -> i64 {
        self.message.offset
    }

    fn timestamp(&self) -> Timestamp {
        use rd::rd_kafka_timestamp_type_t as Type;
        let mut kind = Type::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.message, &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            Type::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            Type::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            Type::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
        }
    }

    fn headers(&self) -> Option<&RawHeaders<'a>> {
        self.headers.as_ref()
    }
}

/// The headers of a [`RawMessage`].
pub(crate) struct RawHeaders<'a> {
    headers: *mut rd::rd_kafka_headers_t,
    _message: PhantomData<&'a ()>,
}

impl Headers for RawHeaders<'_> {
    fn count(&self) -> usize {
        // SAFETY: the headers live with their message.
        unsafe { rd::rd_kafka_header_cnt(self.headers) }
    }

    fn try_get(&self, index: usize) -> Option<Header<'_, &[u8]>> {
        let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0);
        // SAFETY: as above; librdkafka fills the name, value and size of header `index`.
        let err = unsafe { rd::rd_kafka_header_get_all(self.headers, index, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: the name is a C string and the value `size` bytes (or null), both kept with the
        // headers.
        let key = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or_default();
        Some(Header { key, value: unsafe { bytes(value, size) } })
    }
}
