//! A translator: one component with one configuration, and its pool of initialized instances,
//! shared by every call that uses the same (digest, configuration). Implements the core's
//! [`Translate`] port: a deadline per call, a memory cap per instance, an output cap per batch.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tributary_core::{
    translate::{Counted, Outcome, Outcomes, SharedOutcomes, Translate},
    Payload, Record, TranslatorFailure,
};
use wasmtime::{Store, Trap};

use crate::{
    bindings::{self, HeaderParam, OutputRecord, SourceRecord},
    engine::{Idle, Pre, Runtime, Sandbox, EPOCH_TICK},
    frames,
};

/// Idle instances kept per translator; more are dropped after use.
const MAX_IDLE: usize = 4;
/// How long a call waits for an instance slot when every one is in use by a call.
const INSTANCE_WAIT: Duration = Duration::from_secs(1);
const INSTANCE_POLL: Duration = Duration::from_millis(2);

/// An instance with its store.
pub(crate) struct Live {
    store: Store<Sandbox>,
    bound: Bound,
    _counted: InstanceGauge,
}

/// An instance's exports, in the version of the contract its component implements.
enum Bound {
    V1(bindings::Translator),
    /// With the buffer its input frames are written into, reused by every call.
    V2(bindings::v2::BatchTranslator, Vec<u8>),
}

/// Input buffers larger than this are not kept between calls (a batch of large records).
const KEPT_INPUT_BYTES: usize = 4 << 20;

/// The idle instances of one translator.
#[derive(Default)]
struct IdlePool(Mutex<Vec<Live>>);

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Idle for IdlePool {
    fn drop_all(&self) -> usize {
        // Taken under the lock, dropped after it: dropping an instance frees its pool slots.
        let dropped = std::mem::take(&mut *self.lock());
        dropped.len()
    }
}

/// Counts an instance in `tributary_translator_instances` while it lives.
struct InstanceGauge;

impl InstanceGauge {
    fn new() -> Self {
        metrics::gauge!("tributary_translator_instances").increment(1.0);
        InstanceGauge
    }
}

impl Drop for InstanceGauge {
    fn drop(&mut self) {
        metrics::gauge!("tributary_translator_instances").decrement(1.0);
    }
}

/// A translator with one configuration; shared by every subscriber that uses the same
/// (component, configuration), which share its initialized instances.
pub struct Translator {
    runtime: Arc<Runtime>,
    pre: Pre,
    config: String,
    idle: Arc<IdlePool>,
    /// Outcomes of the newest records, for every subscription that uses this translator.
    shared: SharedOutcomes,
}

impl Translator {
    pub(crate) fn new(runtime: Arc<Runtime>, pre: Pre, config: String) -> Result<Self, TranslatorFailure> {
        let idle = Arc::new(IdlePool::default());
        let registered: Arc<dyn Idle> = idle.clone();
        runtime.register_idle(Arc::downgrade(&registered));
        let translator = Translator { runtime, pre, config, idle, shared: SharedOutcomes::default() };
        let live = translator.instantiate()?;
        translator.idle.lock().push(live);
        Ok(translator)
    }

    fn deadline_ticks(&self) -> u64 {
        (self.runtime.limits().call_deadline_ms as u128 / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A new instance. When the instance pool is full it takes the slots of idle instances (of
    /// any translator), or waits up to [`INSTANCE_WAIT`] for calls to end, then fails.
    /// Blocking: runs on the blocking thread of a call.
    fn instantiate(&self) -> Result<Live, TranslatorFailure> {
        let deadline = Instant::now() + INSTANCE_WAIT;
        loop {
            match self.try_instantiate() {
                Err(TranslatorFailure::Instances(n)) => {
                    if Instant::now() >= deadline {
                        return Err(TranslatorFailure::Instances(n));
                    }
                    if self.runtime.reclaim_idle() == 0 {
                        std::thread::sleep(INSTANCE_POLL);
                    }
                }
                result => return result,
            }
        }
    }

    fn try_instantiate(&self) -> Result<Live, TranslatorFailure> {
        let limits = self.runtime.limits();
        let mut store = self.runtime.engine().store(Sandbox::new(limits));
        // Bounds what the host copies out of the guest in one call (wasmtime's DoS guard), so
        // aliased output buffers cannot make the host allocate past the output cap before we
        // count; twice the cap leaves room for the records' own structure.
        store.set_hostcall_fuel(limits.output_bytes.saturating_mul(2));
        store.set_epoch_deadline(self.deadline_ticks());
        let bound = match &self.pre {
            Pre::V1(pre) => Bound::V1(pre.instantiate(&mut store).map_err(|e| classify(&store, e))?),
            Pre::V2(pre) => Bound::V2(pre.instantiate(&mut store).map_err(|e| classify(&store, e))?, Vec::new()),
        };
        store.set_epoch_deadline(self.deadline_ticks());
        let init = match &bound {
            Bound::V1(b) => b.call_init(&mut store, &self.config),
            Bound::V2(b, _) => b.tributary_translator_batch().call_init(&mut store, &self.config),
        };
        match init {
            Ok(Ok(())) => Ok(Live { store, bound, _counted: InstanceGauge::new() }),
            Ok(Err(message)) => Err(refused(&store, message)),
            Err(e) => Err(classify(&store, e)),
        }
    }

    /// An initialized instance for one call: an idle one, or a new one.
    fn take(&self) -> Result<Live, TranslatorFailure> {
        let pooled = self.idle.lock().pop();
        let mut live = match pooled {
            Some(live) => live,
            None => self.instantiate()?,
        };
        live.store.set_epoch_deadline(self.deadline_ticks());
        // A guest refused memory in an earlier call that recovered (it caught the refusal) is
        // judged on this call alone.
        live.store.data_mut().clear_hit_memory();
        Ok(live)
    }

    /// Checks what a call returned against the output caps.
    fn check_caps(&self, records: usize, bytes: usize) -> Result<(), TranslatorFailure> {
        let limits = self.runtime.limits();
        if records > limits.output_records {
            return Err(TranslatorFailure::Output(format!(
                "{records} output records returned; the cap is {} per call (translators.output_records)",
                limits.output_records
            )));
        }
        if bytes > limits.output_bytes {
            return Err(TranslatorFailure::Output(format!(
                "{bytes} bytes returned; the cap is {} (translators.output_bytes)",
                limits.output_bytes
            )));
        }
        Ok(())
    }

    /// Version 2: the batch as one buffer of frames in, one out. A failed call drops its
    /// instance; others are reused.
    fn call_v2(&self, mut live: Live, batch: &[Record]) -> Result<Outcomes, TranslatorFailure> {
        let Bound::V2(bound, input) = &mut live.bound else { unreachable!("a version 2 instance") };
        frames::write_input(batch, input);
        let output = match bound.tributary_translator_batch().call_translate(&mut live.store, input) {
            Ok(Ok(output)) => output,
            Ok(Err(message)) => return Err(self.refused(live, message)),
            Err(e) => return Err(classify(&live.store, e)),
        };
        if input.capacity() > KEPT_INPUT_BYTES {
            *input = Vec::new();
        }
        // A malformed output is the guest's (or its SDK's) bug, like a wrong number of outcomes
        // in version 1: an error of the call, and the instance is not trusted again.
        let checked = frames::check_output(output, batch.len()).map_err(|m| TranslatorFailure::Error(m.to_string()))?;
        self.check_caps(checked.counts.records, checked.counts.bytes)?;
        self.release(live);
        Ok(checked.outcomes())
    }

    /// Version 1: the records through the canonical ABI. A failed call drops its instance;
    /// others are reused.
    fn call_v1(&self, mut live: Live, batch: &[Record]) -> Result<Outcomes, TranslatorFailure> {
        let Bound::V1(bound) = &live.bound else { unreachable!("a version 1 instance") };
        // Records without headers (most) need no allocation here.
        let headers: Vec<Vec<HeaderParam>> =
            batch.iter().map(|r| r.headers().map(|(key, value)| HeaderParam { key, value }).collect()).collect();
        let sources: Vec<SourceRecord> = batch.iter().zip(&headers).map(|(r, h)| to_source(r, h)).collect();
        let outcomes = match bound.call_translate(&mut live.store, &sources) {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(message)) => return Err(self.refused(live, message)),
            Err(e) => return Err(classify(&live.store, e)),
        };
        let records: usize =
            outcomes.iter().map(|o| if let bindings::Outcome::Ok(outs) = o { outs.len() } else { 0 }).sum();
        let bytes: usize = outcomes
            .iter()
            .map(|o| match o {
                bindings::Outcome::Ok(outs) => outs.iter().map(output_size).sum(),
                bindings::Outcome::Err(m) => m.len(),
            })
            .sum();
        self.check_caps(records, bytes)?;
        self.release(live);
        Ok(outcomes.into_iter().map(from_outcome).collect::<Vec<_>>().into())
    }

    /// A call that returned an error value: the instance is reused, unless the error came from
    /// being refused memory (a guest that catches it, as CPython's `MemoryError` does, returns an
    /// error instead of trapping): that is the memory cap, and the instance is spent.
    fn refused(&self, live: Live, message: String) -> TranslatorFailure {
        let failure = refused(&live.store, message);
        if !matches!(failure, TranslatorFailure::Memory) {
            self.release(live);
        }
        failure
    }

    fn release(&self, live: Live) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(live);
        }
    }
}

impl Translate for Translator {
    /// Blocking (runs guest code): call it from a blocking thread.
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
        let Outcomes { payloads, records } = self.translate_flat(batch)?;
        let mut payloads = payloads.into_iter();
        Ok(records
            .into_iter()
            .map(|counted| match counted {
                Counted::Ok(n) => Outcome::Ok(payloads.by_ref().take(n as usize).collect()),
                Counted::Err(message) => Outcome::Err(message),
            })
            .collect())
    }

    /// Blocking (runs guest code): call it from a blocking thread.
    fn translate_flat(&self, batch: &[Record]) -> Result<Outcomes, TranslatorFailure> {
        let live = self.take()?;
        match live.bound {
            Bound::V1(_) => self.call_v1(live, batch),
            Bound::V2(..) => self.call_v2(live, batch),
        }
    }

    fn shared_outcomes(&self) -> Option<&SharedOutcomes> {
        Some(&self.shared)
    }
}

fn output_size(o: &OutputRecord) -> usize {
    o.key.as_ref().map_or(0, |k| k.len())
        + o.value.as_ref().map_or(0, |v| v.len())
        + o.headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len())).sum::<usize>()
}

/// An error value of the guest, or the memory cap when the guest was refused memory.
fn refused(store: &Store<Sandbox>, message: String) -> TranslatorFailure {
    if store.data().hit_memory() {
        return TranslatorFailure::Memory;
    }
    TranslatorFailure::Error(message)
}

/// Names what went wrong in a call that returned a wasmtime error.
fn classify(store: &Store<Sandbox>, error: wasmtime::Error) -> TranslatorFailure {
    if store.data().hit_memory() {
        return TranslatorFailure::Memory;
    }
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return TranslatorFailure::Instances(store.data().max_instances());
    }
    // wasmtime's hostcall-fuel error type is private; its message is stable.
    if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return TranslatorFailure::Output(
            "the call returned more than twice the cap (translators.output_bytes)".into(),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TranslatorFailure::Deadline,
        Some(trap) => TranslatorFailure::Trap(trap.to_string()),
        None => TranslatorFailure::Trap(format!("{error:#}")),
    }
}

/// The guest's view of a record, lent from the view (lowering copies it into the guest).
fn to_source<'a>(record: &'a Record, headers: &'a [HeaderParam<'a>]) -> SourceRecord<'a> {
    SourceRecord {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key(),
        value: record.value(),
        headers,
    }
}

/// The core's outcome of the guest's (no copy: the guest's buffers become `Bytes`).
fn from_outcome(outcome: bindings::Outcome) -> Outcome {
    match outcome {
        bindings::Outcome::Ok(outputs) => Outcome::Ok(
            outputs
                .into_iter()
                .map(|o| Payload {
                    key: o.key.map(Bytes::from),
                    value: o.value.map(Bytes::from),
                    headers: o.headers.into_iter().map(|h| (h.key, h.value.map(Bytes::from))).collect(),
                })
                .collect(),
        ),
        bindings::Outcome::Err(message) => Outcome::Err(message),
    }
}
