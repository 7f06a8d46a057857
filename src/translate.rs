//! The one module that knows wasmtime: runs B's translators (WebAssembly components of the
//! `tributary:translator` world) sandboxed, with a deadline per call, a memory cap per instance,
//! an output cap per batch, and instances from a pooling allocator.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use wasmtime::{
    component::{Component, Linker},
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

use crate::{config::TranslatorsConfig, view::Rec};

mod bindings {
    wasmtime::component::bindgen!({ path: "translators/wit", world: "translator" });
}

pub use bindings::{Header, Outcome, OutputRecord, SourceRecord};

/// How often the engine's epoch advances; deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a translator call failed. Each one ends only the calls that use that translator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The guest trapped (e.g. a panic, an out-of-bounds access).
    Trap(String),
    /// The call ran past `call_deadline_ms` and was interrupted.
    Deadline,
    /// The instance tried to grow its memory past `memory_bytes`.
    Memory,
    /// The call returned more than `output_bytes`, or not one outcome per input.
    Output(String),
    /// The guest returned an error value (for `init`: it rejected the configuration).
    Error(String),
    /// Every instance slot of the pooling allocator is in use (`max_instances`).
    Instances(u32),
}

impl Failure {
    /// The stable word used in statuses and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trap",
            Failure::Deadline => "deadline",
            Failure::Memory => "memory",
            Failure::Output(_) => "output",
            Failure::Error(_) => "error",
            Failure::Instances(_) => "instances",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Trap(m) => write!(f, "trapped: {m}"),
            Failure::Deadline => write!(f, "ran past its deadline and was interrupted"),
            Failure::Memory => write!(f, "tried to grow its memory past the cap"),
            Failure::Output(m) => write!(f, "output rejected: {m}"),
            Failure::Error(m) => write!(f, "returned an error: {m}"),
            Failure::Instances(n) => {
                write!(f, "could not be instantiated: all {n} translator instances are in use (translators.max_instances); retry later")
            }
        }
    }
}

/// Why bytes are not an acceptable translator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the bytes are not WebAssembly (no \\0asm header)")]
    NotWasm,
    #[error("this is a core WebAssembly module, not a component; wrap it with `wasm-tools component new`")]
    CoreModule,
    #[error("the component is invalid: {0}")]
    Malformed(String),
    #[error("the component imports {0}; translators must import nothing (no WASI, no host functions)")]
    Imports(String),
    #[error("the component does not implement the world tributary:translator/translator: {0}")]
    WrongWorld(String),
}

/// Per-store state: the memory cap and whether the guest hit it.
struct Limits {
    memory_bytes: usize,
    hit_memory: bool,
    /// For the message when the pool is full.
    max_instances: u32,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit_memory = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The wasmtime engine with the gateway's safe defaults. One per gateway.
pub struct Host {
    engine: Engine,
    linker: Linker<Limits>,
    limits: TranslatorsConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Host {
    pub fn new(limits: &TranslatorsConfig) -> Result<Arc<Self>, String> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .max_memory_size(limits.memory_bytes)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(1 << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e}"))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), stop_ticker.clone());
            std::thread::Builder::new()
                .name("tributary-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("epoch thread: {e}"))?;
        }
        // Translators import nothing: the linker is empty on purpose.
        let linker = Linker::new(&engine);
        Ok(Arc::new(Self { engine, linker, limits: limits.clone(), stop_ticker }))
    }

    pub fn limits(&self) -> &TranslatorsConfig {
        &self.limits
    }

    /// Validates and compiles bytes into a component that implements the translator world.
    /// Slow (Cranelift): call it at upload, off the async threads.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, Invalid> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(Invalid::NotWasm);
        }
        // Bytes 4..8: version 1 and layer 0 is a core module; components use layer 1.
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(Invalid::CoreModule);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| Invalid::Malformed(format!("{e:#}")))?;
        self.check(&component)?;
        Ok(component)
    }

    /// The compiled form, to store next to the component.
    pub fn serialize(&self, component: &Component) -> Result<Vec<u8>, String> {
        component.serialize().map_err(|e| e.to_string())
    }

    /// Loads a compiled form written by [`Host::serialize`] of this same build; `None` when it
    /// was written by an incompatible engine (the caller recompiles).
    pub fn deserialize(&self, compiled: &[u8]) -> Option<Component> {
        // SAFETY: the gateway only deserializes artifacts it serialized itself into its own data
        // directory; wasmtime checks the engine version and configuration and refuses others.
        let component = unsafe { Component::deserialize(&self.engine, compiled) }.ok()?;
        self.check(&component).ok()?;
        Some(component)
    }

    fn check(&self, component: &Component) -> Result<(), Invalid> {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        if !imports.is_empty() {
            return Err(Invalid::Imports(imports.join(", ")));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| Invalid::Imports(format!("{e:#}")))?;
        bindings::TranslatorPre::new(pre).map_err(|e| Invalid::WrongWorld(format!("{e:#}")))?;
        Ok(())
    }

    /// A translator of `component` with `config`, whose instances are pooled for reuse.
    /// Instantiates one instance and calls `init` now, so a bad configuration fails here.
    pub fn translator(self: &Arc<Self>, component: &Component, config: String) -> Result<Translator, Failure> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| Failure::Trap(format!("{e:#}")))?;
        let pre = bindings::TranslatorPre::new(pre).map_err(|e| Failure::Trap(format!("{e:#}")))?;
        let translator = Translator { host: self.clone(), pre, config, idle: Mutex::new(Vec::new()) };
        let live = translator.instantiate()?;
        translator.idle.lock().unwrap_or_else(|e| e.into_inner()).push(live);
        Ok(translator)
    }
}

/// An instance with its store.
struct Live {
    store: Store<Limits>,
    bindings: bindings::Translator,
}

/// A translator with one configuration; shared by every subscriber that uses the same
/// (component, configuration), which share its initialized instances.
pub struct Translator {
    host: Arc<Host>,
    pre: bindings::TranslatorPre<Limits>,
    config: String,
    idle: Mutex<Vec<Live>>,
}

/// Idle instances kept per translator; more are dropped after use.
const MAX_IDLE: usize = 4;

impl Translator {
    fn deadline_ticks(&self) -> u64 {
        (self.host.limits.call_deadline_ms as u128 / EPOCH_TICK.as_millis()).max(1) as u64
    }

    fn instantiate(&self) -> Result<Live, Failure> {
        let limits = Limits {
            memory_bytes: self.host.limits.memory_bytes,
            hit_memory: false,
            max_instances: self.host.limits.max_instances,
        };
        let mut store = Store::new(&self.host.engine, limits);
        store.limiter(|l| l);
        // Bounds what the host copies out of the guest in one call (wasmtime's DoS guard), so
        // aliased output buffers cannot make the host allocate past the output cap before we
        // count; twice the cap leaves room for the records' own structure.
        store.set_hostcall_fuel(self.host.limits.output_bytes.saturating_mul(2));
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self.pre.instantiate(&mut store).map_err(|e| classify(&store, e))?;
        store.set_epoch_deadline(self.deadline_ticks());
        match bindings.call_init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(message)) => Err(Failure::Error(message)),
            Err(e) => Err(classify(&store, e)),
        }
    }

    /// Translates a batch: one outcome per input. Blocking (runs guest code): call it from a
    /// blocking thread. A failed call drops its instance; others are reused.
    pub fn translate(&self, batch: &[SourceRecord]) -> Result<Vec<Outcome>, Failure> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut live = match pooled {
            Some(live) => live,
            None => self.instantiate()?,
        };
        live.store.set_epoch_deadline(self.deadline_ticks());
        let outcomes = match live.bindings.call_translate(&mut live.store, batch) {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(message)) => {
                self.release(live);
                return Err(Failure::Error(message));
            }
            Err(e) => return Err(classify(&live.store, e)),
        };
        if outcomes.len() != batch.len() {
            return Err(Failure::Output(format!(
                "{} outcomes for {} records; one per record is required",
                outcomes.len(),
                batch.len()
            )));
        }
        let bytes: usize = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Ok(outs) => outs.iter().map(output_size).sum(),
                Outcome::Err(m) => m.len(),
            })
            .sum();
        if bytes > self.host.limits.output_bytes {
            return Err(Failure::Output(format!(
                "{bytes} bytes returned; the cap is {} (translators.output_bytes)",
                self.host.limits.output_bytes
            )));
        }
        self.release(live);
        Ok(outcomes)
    }

    fn release(&self, live: Live) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(live);
        }
    }

    /// Measures instantiation plus `init`, for benchmarks.
    pub fn time_instantiate(&self) -> Result<Duration, Failure> {
        let started = Instant::now();
        self.instantiate()?;
        Ok(started.elapsed())
    }
}

fn output_size(o: &OutputRecord) -> usize {
    o.key.as_ref().map_or(0, |k| k.len())
        + o.value.as_ref().map_or(0, |v| v.len())
        + o.headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len())).sum::<usize>()
}

/// Names what went wrong in a call that returned a wasmtime error.
fn classify(store: &Store<Limits>, error: wasmtime::Error) -> Failure {
    if store.data().hit_memory {
        return Failure::Memory;
    }
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return Failure::Instances(store.data().max_instances);
    }
    // wasmtime's hostcall-fuel error type is private; its message is stable.
    if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return Failure::Output("the call returned more than twice the cap (translators.output_bytes)".into());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Deadline,
        Some(trap) => Failure::Trap(trap.to_string()),
        None => Failure::Trap(format!("{error:#}")),
    }
}

/// The guest's view of a record.
pub fn to_source(rec: &Rec) -> SourceRecord {
    SourceRecord {
        topic: rec.topic.to_string(),
        partition: rec.partition,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
        key: rec.key.as_ref().map(|k| k.to_vec()),
        value: rec.value.as_ref().map(|v| v.to_vec()),
        headers: rec
            .headers
            .iter()
            .map(|(k, v)| Header { key: k.clone(), value: v.as_ref().map(|v| v.to_vec()) })
            .collect(),
    }
}
