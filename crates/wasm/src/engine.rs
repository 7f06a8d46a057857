//! The wasmtime engine with the gateway's safe defaults, so no caller can forget a limit:
//! component model, epoch interruption (a deadline per call), a pooling allocator whose memory
//! cap is the translator memory limit, an empty linker (translators import nothing), the sandbox
//! every store runs in, and the validation of components. The compiler, the host and the
//! translators build on it; it knows none of them.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use wasmtime::{
    component::{Component, Linker},
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};

use crate::{
    bindings,
    config::TranslatorsConfig,
    limits::{Exceeded, PoolLimits, TABLE_ELEMENTS},
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
    #[error(
        "the component does not implement the world tributary:translator/batch-translator@0.2.0 (an export \
         `tributary:translator/batch@0.2.0`) or tributary:translator/translator (exports `init` and `translate`): {0}"
    )]
    WrongWorld(String),
    /// It declares more than a limit of the instance pool allows.
    #[error("{0}")]
    Limit(Exceeded),
    /// The instance pool refuses it for a reason the gateway cannot name more precisely.
    #[error("the component does not fit this gateway's translator instance pool: {0}")]
    Pool(String),
}

/// Per-store state: the memory cap and whether the guest hit it.
pub(crate) struct Sandbox {
    memory_bytes: usize,
    hit_memory: bool,
    /// For the message when the pool is full.
    max_instances: u32,
}

impl Sandbox {
    pub(crate) fn new(limits: &TranslatorsConfig) -> Self {
        Self { memory_bytes: limits.memory_bytes, hit_memory: false, max_instances: limits.max_instances }
    }

    /// Whether the guest tried to grow its memory past the cap (since the last clear).
    pub(crate) fn hit_memory(&self) -> bool {
        self.hit_memory
    }

    pub(crate) fn clear_hit_memory(&mut self) {
        self.hit_memory = false;
    }

    pub(crate) fn max_instances(&self) -> u32 {
        self.max_instances
    }
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
        Ok(desired as u64 <= TABLE_ELEMENTS)
    }
}

/// The engine settings that decide the compiled code; the gateway's engine adds its instance pool.
/// The compiler child uses exactly these, so the gateway can load what it writes.
fn codegen_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// The instance pool: its memory cap is the translator memory limit, its size `max_instances`,
/// every other limit the one components are checked against at upload.
fn pool_config(limits: &PoolLimits) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    let instances = limits.instances;
    pool.total_component_instances(instances)
        // Python components take 38 core instances each: room for a pool of them.
        .total_core_instances(instances * 40)
        .total_memories(instances * 4)
        .total_tables(instances * 8)
        .max_memories_per_module(limits.memories_per_module)
        .max_tables_per_module(limits.tables_per_module)
        .max_memories_per_component(limits.memories_per_component)
        .max_tables_per_component(limits.tables_per_component)
        .max_core_instances_per_component(limits.core_instances_per_component)
        .max_memory_size(limits.memory_bytes as usize)
        .max_component_instance_size(limits.component_instance_bytes)
        .max_core_instance_size(limits.core_instance_bytes)
        .table_elements(limits.table_elements as usize);
    pool
}

/// A wasmtime engine with the gateway's settings and the linker translators are checked and
/// instantiated against: empty on purpose, translators import nothing.
pub(crate) struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<Sandbox>,
}

impl Engine {
    fn with(config: &Config) -> Result<Self, String> {
        let engine = wasmtime::Engine::new(config).map_err(|e| format!("wasmtime engine: {e}"))?;
        let linker = Linker::new(&engine);
        Ok(Self { engine, linker })
    }

    /// The compiler child's: code generation only, no instance pool.
    pub(crate) fn for_compiling() -> Result<Self, String> {
        Self::with(&codegen_config())
    }

    /// The gateway's: the compiler's code generation with the instance pool of `limits`.
    fn pooled(limits: &PoolLimits) -> Result<Self, String> {
        let mut config = codegen_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(limits)));
        Self::with(&config)
    }

    /// Compiles (and validates) a component. Slow and unbounded: only the compiler child calls it.
    pub(crate) fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.engine, bytes)
    }

    /// Loads a compiled form (not checked: see [`Runtime::load`]).
    fn deserialize(&self, compiled: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: the gateway only deserializes forms its own build wrote (checksummed in its
        // data directory, or just written by its compiler child); wasmtime checks the engine
        // version and configuration and refuses others.
        unsafe { Component::deserialize(&self.engine, compiled) }
    }

    /// Checks that a component imports nothing and implements a translator world.
    pub(crate) fn check(&self, component: &Component) -> Result<(), Invalid> {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        if !imports.is_empty() {
            return Err(Invalid::Imports(imports.join(", ")));
        }
        self.instantiate_pre(component).map_err(|e| match e {
            PreError::Link(e) => Invalid::Imports(format!("{e:#}")),
            PreError::World(e) => Invalid::WrongWorld(format!("{e:#}")),
        })?;
        Ok(())
    }

    /// A component pre-linked against the empty linker, ready to instantiate, in the version of
    /// the contract it exports: version 2 when it exports the interface
    /// `tributary:translator/batch@0.2.0`, version 1 otherwise.
    pub(crate) fn instantiate_pre(&self, component: &Component) -> Result<Pre, PreError> {
        let batch = component.component_type().exports(&self.engine).any(|(name, _)| name == V2_EXPORT);
        let pre = self.linker.instantiate_pre(component).map_err(PreError::Link)?;
        if batch {
            // The generated bindings look the interface's functions up by name only (their types
            // would be checked at the first instantiation): check them here, at upload.
            check_v2_types(&self.engine, component).map_err(|e| PreError::World(wasmtime::Error::msg(e)))?;
            bindings::v2::BatchTranslatorPre::new(pre).map(Pre::V2).map_err(PreError::World)
        } else {
            bindings::TranslatorPre::new(pre).map(Pre::V1).map_err(PreError::World)
        }
    }

    /// A store that runs in `sandbox`: its limiter caps memory and tables.
    pub(crate) fn store(&self, sandbox: Sandbox) -> Store<Sandbox> {
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|l| l);
        store
    }
}

/// The export that makes a component a translator of version 2 (`batch-translator`).
pub(crate) const V2_EXPORT: &str = "tributary:translator/batch@0.2.0";

/// A translator component ready to instantiate, in the version of the contract it implements.
pub(crate) enum Pre {
    /// `translator`: records lowered and lifted one by one through the canonical ABI.
    V1(bindings::TranslatorPre<Sandbox>),
    /// `batch-translator`: one buffer of frames each way ([`crate::frames`]).
    V2(bindings::v2::BatchTranslatorPre<Sandbox>),
}

/// Why a component cannot be pre-linked as a translator.
pub(crate) enum PreError {
    /// It needs imports (the linker is empty).
    Link(wasmtime::Error),
    /// Its exports are not those of a translator world.
    World(wasmtime::Error),
}

impl PreError {
    pub(crate) fn into_error(self) -> wasmtime::Error {
        match self {
            PreError::Link(e) | PreError::World(e) => e,
        }
    }
}

/// Checks that the export `tributary:translator/batch@0.2.0` has the functions of `batch.wit`
/// with their types: `init: func(string) -> result<_, string>` and
/// `translate: func(list<u8>) -> result<list<u8>, string>`.
fn check_v2_types(engine: &wasmtime::Engine, component: &Component) -> Result<(), String> {
    use wasmtime::component::types::{ComponentItem, Type};
    let ty = component.component_type();
    let Some(ComponentItem::ComponentInstance(batch)) = ty.get_export(engine, V2_EXPORT).map(|e| e.ty) else {
        return Err(format!("`{V2_EXPORT}` is not an instance of the interface"));
    };
    // (function, its signature as WIT writes it, whether (params, results) are that signature)
    type Signature = fn(&[Type], &[Type]) -> bool;
    let expected: [(&str, &str, Signature); 2] = [
        ("init", "func(config: string) -> result<_, string>", |params, results| {
            matches!(params, [Type::String])
                && matches!(results, [Type::Result(r)] if r.ok().is_none() && r.err() == Some(Type::String))
        }),
        ("translate", "func(input: list<u8>) -> result<list<u8>, string>", |params, results| {
            let bytes = |t: &Type| matches!(t, Type::List(list) if list.ty() == Type::U8);
            matches!(params, [p] if bytes(p))
                && matches!(results, [Type::Result(r)] if r.ok().is_some_and(|ok| bytes(&ok)) && r.err() == Some(Type::String))
        }),
    ];
    for (name, signature, matches) in expected {
        let Some(ComponentItem::ComponentFunc(func)) = batch.get_export(engine, name).map(|e| e.ty) else {
            return Err(format!("`{V2_EXPORT}` has no function `{name}`"));
        };
        let params: Vec<Type> = func.params().map(|(_, t)| t).collect();
        let results: Vec<Type> = func.results().collect();
        if !matches(&params, &results) {
            return Err(format!("`{V2_EXPORT}`'s `{name}` is not `{signature}`"));
        }
    }
    Ok(())
}

/// Why a compiled form does not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unloadable {
    /// Written by another build or engine configuration, or damaged: compile it again.
    OtherBuild(String),
    /// The component is refused: over a limit of the pool, or not a translator.
    Invalid(Invalid),
}

/// The checks that need no compiling: the bytes are a component, not a core module.
pub(crate) fn precheck(bytes: &[u8]) -> Result<(), Invalid> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Invalid::NotWasm);
    }
    // Bytes 4..8: version 1 and layer 0 is a core module; components use layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(Invalid::CoreModule);
    }
    Ok(())
}

/// Idle instances whose slots of the instance pool can be freed (a translator's pool of them).
pub(crate) trait Idle: Send + Sync {
    /// Drops every idle instance; returns how many were dropped.
    fn drop_all(&self) -> usize;
}

/// The gateway's engine at run time, shared by the host and every translator: the pooled engine,
/// the limits, the epoch ticker and every translator's idle instances.
pub(crate) struct Runtime {
    engine: Engine,
    /// The same code generation without the pool: tells a form the pool refuses from one that
    /// another build wrote.
    unpooled: Engine,
    limits: TranslatorsConfig,
    pool: PoolLimits,
    stop_ticker: Arc<AtomicBool>,
    /// When the instance pool is full, a call takes the slots of idle instances (of any
    /// translator) before it fails, so idle streams cannot starve others.
    idle: Mutex<Vec<Weak<dyn Idle>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// The pooled engine for `limits`, with its epoch advancing every [`EPOCH_TICK`].
    pub(crate) fn new(limits: &TranslatorsConfig) -> Result<Arc<Self>, String> {
        let pool = PoolLimits::new(limits);
        let engine = Engine::pooled(&pool)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("tributary-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(Arc::new(Self {
            engine,
            unpooled: Engine::for_compiling()?,
            limits: limits.clone(),
            pool,
            stop_ticker,
            idle: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn limits(&self) -> &TranslatorsConfig {
        &self.limits
    }

    /// Checks what a component declares against the pool's limits, before compiling it.
    pub(crate) fn check_declared(&self, bytes: &[u8]) -> Result<(), Invalid> {
        self.pool.check(bytes).map_err(Invalid::Limit)
    }

    /// Loads a compiled form into the pooled engine and checks that it is a translator. When the
    /// pool refuses it, says which limit if it can; a form that no engine of this build loads
    /// is [`Unloadable::OtherBuild`].
    pub(crate) fn load(&self, compiled: &[u8]) -> Result<Component, Unloadable> {
        let component = match self.engine.deserialize(compiled) {
            Ok(component) => component,
            Err(refused) => {
                // wasmtime checks the pool's limits while loading, after the engine's version and
                // settings: if the pool-less engine loads the form, the pool refused it.
                if let Err(e) = self.unpooled.deserialize(compiled) {
                    return Err(Unloadable::OtherBuild(format!("{e:#}")));
                }
                let refused = format!("{refused:#}");
                return Err(Unloadable::Invalid(match self.pool.instance_size_refusal(&refused) {
                    Some(exceeded) => Invalid::Limit(exceeded),
                    None => Invalid::Pool(refused),
                }));
            }
        };
        self.engine.check(&component).map_err(Unloadable::Invalid)?;
        Ok(component)
    }

    /// Registers a translator's idle instances, for [`Runtime::reclaim_idle`].
    pub(crate) fn register_idle(&self, pool: Weak<dyn Idle>) {
        let mut pools = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Drops every idle instance of every translator, freeing their slots of the instance pool.
    /// Returns how many were dropped. Their translators instantiate again on their next call.
    pub(crate) fn reclaim_idle(&self) -> usize {
        let pools: Vec<Arc<dyn Idle>> =
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        pools.iter().map(|pool| pool.drop_all()).sum()
    }
}
