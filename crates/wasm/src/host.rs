//! The wasmtime engine with the gateway's safe defaults, so no caller can forget a limit:
//! component model, epoch interruption (a deadline per call), a pooling allocator whose memory
//! cap is the translator memory limit, and an empty linker (translators import nothing).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use tributary_core::TranslatorFailure;
use wasmtime::{
    component::{Component, Linker},
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
};

use crate::{
    bindings,
    config::TranslatorsConfig,
    translator::{Live, Translator},
};

/// How often the engine's epoch advances; deadlines are whole ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

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
pub(crate) struct Sandbox {
    pub(crate) memory_bytes: usize,
    pub(crate) hit_memory: bool,
    /// For the message when the pool is full.
    pub(crate) max_instances: u32,
}

impl ResourceLimiter for Sandbox {
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

/// The idle instances of one translator.
pub(crate) type IdlePool = Mutex<Vec<Live>>;

/// The wasmtime engine with the gateway's safe defaults. One per gateway.
pub struct Host {
    pub(crate) engine: Engine,
    linker: Linker<Sandbox>,
    pub(crate) limits: TranslatorsConfig,
    stop_ticker: Arc<AtomicBool>,
    /// Every translator's idle instances: when the instance pool is full, a call takes the slots
    /// of idle instances (of any translator) before it fails, so idle streams cannot starve
    /// others.
    idle_pools: Mutex<Vec<Weak<IdlePool>>>,
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
        Ok(Arc::new(Self { engine, linker, limits: limits.clone(), stop_ticker, idle_pools: Mutex::new(Vec::new()) }))
    }

    pub fn limits(&self) -> &TranslatorsConfig {
        &self.limits
    }

    /// Registers a translator's idle instances, for [`Host::reclaim_idle`].
    pub(crate) fn register_idle_pool(&self, pool: &Arc<IdlePool>) {
        let mut pools = self.idle_pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// Drops every idle instance of every translator, freeing their slots of the instance pool.
    /// Returns how many were dropped. Their translators instantiate again on their next call.
    pub(crate) fn reclaim_idle(&self) -> usize {
        let pools: Vec<Arc<IdlePool>> =
            self.idle_pools.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        let mut dropped = Vec::new();
        for pool in pools {
            dropped.append(&mut pool.lock().unwrap_or_else(|e| e.into_inner()));
        }
        dropped.len()
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
    pub fn translator(
        self: &Arc<Self>,
        component: &Component,
        config: String,
    ) -> Result<Translator, TranslatorFailure> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| TranslatorFailure::Trap(format!("{e:#}")))?;
        let pre = bindings::TranslatorPre::new(pre).map_err(|e| TranslatorFailure::Trap(format!("{e:#}")))?;
        Translator::new(self.clone(), pre, config)
    }
}
