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
    compile::{self, Budget, Cancel, CompileError},
    config::TranslatorsConfig,
    translator::{Live, Translator},
};

/// How often the engine's epoch advances; deadlines are whole ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why bytes are not an acceptable translator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    budget: Budget,
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
        let mut config = codegen_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
        let program = match &limits.compiler {
            Some(path) => path.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot locate this executable to compile with: {e}"))?
            }
        };
        let budget = Budget {
            program,
            timeout: Duration::from_millis(limits.compile_timeout_ms),
            memory_bytes: limits.compile_memory_bytes,
            scratch: limits.data_dir.clone(),
        };
        Ok(Arc::new(Self {
            engine,
            linker,
            limits: limits.clone(),
            budget,
            stop_ticker,
            idle_pools: Mutex::new(Vec::new()),
        }))
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

    /// Validates and compiles bytes into a component that implements the translator world, in a
    /// child process under the compile budget (see [`crate::compile`]). Returns the component
    /// and its serialized form, to store. Blocking: call it off the async threads.
    pub fn compile(&self, bytes: &[u8], cancel: &Cancel) -> Result<(Component, Vec<u8>), CompileError> {
        precheck(bytes).map_err(CompileError::Invalid)?;
        let compiled = compile::compile_in_child(&self.budget, bytes, cancel)?;
        let component = self.deserialize(&compiled).ok_or_else(|| {
            CompileError::Failed(format!(
                "{} wrote a compiled form this gateway cannot load: is it the same build?",
                self.budget.program.display()
            ))
        })?;
        Ok((component, compiled))
    }

    /// Loads a compiled form written by this same build; `None` when it was written by an
    /// incompatible engine (the caller recompiles) or is not a translator.
    pub fn deserialize(&self, compiled: &[u8]) -> Option<Component> {
        // SAFETY: the gateway only deserializes forms its own build wrote (checksummed in its
        // data directory, or just written by its compiler child); wasmtime checks the engine
        // version and configuration and refuses others.
        let component = unsafe { Component::deserialize(&self.engine, compiled) }.ok()?;
        check(&self.engine, &self.linker, &component).ok()?;
        Some(component)
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

/// The engine settings that decide the compiled code; the gateway's engine adds its instance pool.
/// The compiler child uses exactly these, so the gateway can load what it writes.
fn codegen_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// The checks that need no compiling: the bytes are a component, not a core module.
fn precheck(bytes: &[u8]) -> Result<(), Invalid> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Invalid::NotWasm);
    }
    // Bytes 4..8: version 1 and layer 0 is a core module; components use layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(Invalid::CoreModule);
    }
    Ok(())
}

/// Checks that a component imports nothing and implements the translator world.
fn check(engine: &Engine, linker: &Linker<Sandbox>, component: &Component) -> Result<(), Invalid> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
    if !imports.is_empty() {
        return Err(Invalid::Imports(imports.join(", ")));
    }
    let pre = linker.instantiate_pre(component).map_err(|e| Invalid::Imports(format!("{e:#}")))?;
    bindings::TranslatorPre::new(pre).map_err(|e| Invalid::WrongWorld(format!("{e:#}")))?;
    Ok(())
}

/// Compiles and checks a component in this process and serializes it: the compiler child's work
/// (see [`crate::compile::child_main`]). The outer error is a failure of the compiler itself.
pub(crate) fn compile_standalone(bytes: &[u8]) -> Result<Result<Vec<u8>, Invalid>, String> {
    let engine = Engine::new(&codegen_config()).map_err(|e| format!("wasmtime engine: {e}"))?;
    let linker = Linker::new(&engine);
    if let Err(invalid) = precheck(bytes) {
        return Ok(Err(invalid));
    }
    let component = match Component::new(&engine, bytes) {
        Ok(component) => component,
        // Memory refused by the compile budget is the compiler's failure, not the component's.
        Err(e) if compile::out_of_memory(&format!("{e:#}")) => return Err(format!("{e:#}")),
        Err(e) => return Ok(Err(Invalid::Malformed(format!("{e:#}")))),
    };
    if let Err(invalid) = check(&engine, &linker, &component) {
        return Ok(Err(invalid));
    }
    component.serialize().map(Ok).map_err(|e| format!("serialize: {e:#}"))
}
