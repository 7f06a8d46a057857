//! The instance pool's limits, and the check of what a component declares against them. The pool
//! is configured from the same numbers, so a component that could never be instantiated here is
//! refused at upload, before it is compiled, naming the limit and both numbers, instead of
//! failing later inside wasmtime.

use std::fmt;

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, ComponentTypeRef, Instance,
    Parser, Payload,
};

use crate::config::TranslatorsConfig;

/// Elements a table may have or grow to (the pool's table slots and the sandbox's limiter).
pub(crate) const TABLE_ELEMENTS: u64 = 1 << 20;

/// A limit of the instance pool that a component can declare more of than it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Limit {
    /// The initial size of a linear memory: `translators.memory_bytes`.
    InitialMemory,
    MemoriesPerModule,
    TablesPerModule,
    /// The initial size of a table.
    TableElements,
    MemoriesPerComponent,
    TablesPerComponent,
    CoreInstancesPerComponent,
    /// The runtime state (`VMContext`) of one core instance: grows with its globals, functions
    /// and tables.
    CoreInstanceBytes,
    /// The runtime state of the whole component: its own and all its core instances'.
    ComponentInstanceBytes,
}

impl Limit {
    /// The stable name clients see: the configuration key for the configurable one; the others
    /// are fixed by this gateway's instance pool.
    pub fn name(self) -> &'static str {
        match self {
            Limit::InitialMemory => "translators.memory_bytes",
            Limit::MemoriesPerModule => "memories_per_core_module",
            Limit::TablesPerModule => "tables_per_core_module",
            Limit::TableElements => "table_elements",
            Limit::MemoriesPerComponent => "memories_per_component",
            Limit::TablesPerComponent => "tables_per_component",
            Limit::CoreInstancesPerComponent => "core_instances_per_component",
            Limit::CoreInstanceBytes => "core_instance_bytes",
            Limit::ComponentInstanceBytes => "component_instance_bytes",
        }
    }

    /// What the component declares, with its number.
    fn declared(self, n: u64) -> String {
        match self {
            Limit::InitialMemory => format!("a linear memory of {n} bytes initially"),
            Limit::MemoriesPerModule => format!("a core module with {n} linear memories"),
            Limit::TablesPerModule => format!("a core module with {n} tables"),
            Limit::TableElements => format!("a table of {n} elements initially"),
            Limit::MemoriesPerComponent => format!("{n} linear memories in all its core instances"),
            Limit::TablesPerComponent => format!("{n} tables in all its core instances"),
            Limit::CoreInstancesPerComponent => format!("{n} core module instances"),
            Limit::CoreInstanceBytes => {
                format!("a core instance whose runtime state takes {n} bytes (it grows with globals and functions)")
            }
            Limit::ComponentInstanceBytes => format!("instances whose runtime state takes {n} bytes in all"),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Limit::InitialMemory | Limit::CoreInstanceBytes | Limit::ComponentInstanceBytes => " bytes",
            Limit::TableElements => " elements",
            Limit::MemoriesPerModule | Limit::TablesPerModule => " per core module",
            _ => "",
        }
    }
}

/// A component declares more of `limit` than this gateway allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exceeded {
    pub limit: Limit,
    /// What the component declares.
    pub requested: u64,
    /// What this gateway allows.
    pub allowed: u64,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Exceeded { limit, requested, allowed } = *self;
        let (declared, unit, name) = (limit.declared(requested), limit.unit(), limit.name());
        write!(f, "the component declares {declared}; this gateway allows at most {allowed}{unit} (")?;
        match limit {
            Limit::InitialMemory => write!(f, "{name}"),
            _ => write!(f, "{name}, a fixed limit of its instance pool"),
        }?;
        write!(f, "), so it could never be instantiated here")
    }
}

/// The instance pool's limits: the pool is built from them and components are checked against
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Translator instances alive at once (`translators.max_instances`).
    pub(crate) instances: u32,
    pub(crate) memory_bytes: u64,
    pub(crate) memories_per_module: u32,
    pub(crate) tables_per_module: u32,
    pub(crate) table_elements: u64,
    pub(crate) memories_per_component: u32,
    pub(crate) tables_per_component: u32,
    pub(crate) core_instances_per_component: u32,
    pub(crate) core_instance_bytes: usize,
    pub(crate) component_instance_bytes: usize,
}

impl PoolLimits {
    pub(crate) fn new(config: &TranslatorsConfig) -> Self {
        Self {
            instances: config.max_instances,
            memory_bytes: config.memory_bytes as u64,
            // wasmtime's defaults: what the toolchains emit (one memory, one function table per
            // module); translators made by wit-component have a few modules at most.
            memories_per_module: 1,
            tables_per_module: 1,
            table_elements: TABLE_ELEMENTS,
            memories_per_component: 4,
            tables_per_component: 8,
            // componentize-py's components (CPython and its stand-ins for WASI) have 38.
            core_instances_per_component: 64,
            core_instance_bytes: 1 << 20,
            component_instance_bytes: 1 << 20,
        }
    }

    /// The instance-size limit that a refusal of the pool names, with what the component needs;
    /// `None` for a refusal of another kind. wasmtime reports these only in its message (the
    /// sizes depend on its private instance layout), so that message is read here, and only
    /// after the pool, not the compiled form, was found to be what refused the component.
    pub(crate) fn instance_size_refusal(&self, message: &str) -> Option<Exceeded> {
        let (limit, allowed) = if message.contains("component instance size does not fit") {
            (Limit::ComponentInstanceBytes, self.component_instance_bytes)
        } else if message.contains("module instance size does not fit") {
            (Limit::CoreInstanceBytes, self.core_instance_bytes)
        } else {
            return None;
        };
        let after = &message[message.find(" requires ")? + " requires ".len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        Some(Exceeded { limit, requested: digits.parse().ok()?, allowed: allowed as u64 })
    }

    /// Checks what a component declares against these limits, as the pool will when it loads
    /// the compiled component: per core module instantiated, its memories and tables; over the
    /// whole component (nested components counted once per instantiation), its core instances,
    /// memories and tables. What cannot be known before compiling (instance sizes, modules
    /// imported or taken from an instance's exports) is left to the pool. Bytes that do not
    /// parse pass: the compiler says what is wrong with them.
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<(), Exceeded> {
        let Ok(declared) = Declared::of(bytes) else { return Ok(()) };
        for module in &declared.instantiated {
            let memories = module.memories.len() as u64;
            exceeds(Limit::MemoriesPerModule, memories, self.memories_per_module.into())?;
            exceeds(Limit::TablesPerModule, module.tables.len() as u64, self.tables_per_module.into())?;
            for &initial in &module.memories {
                exceeds(Limit::InitialMemory, initial, self.memory_bytes)?;
            }
            for &initial in &module.tables {
                exceeds(Limit::TableElements, initial, self.table_elements)?;
            }
        }
        let total = declared.cost;
        exceeds(Limit::CoreInstancesPerComponent, total.core_instances, self.core_instances_per_component.into())?;
        exceeds(Limit::MemoriesPerComponent, total.memories, self.memories_per_component.into())?;
        exceeds(Limit::TablesPerComponent, total.tables, self.tables_per_component.into())
    }
}

fn exceeds(limit: Limit, requested: u64, allowed: u64) -> Result<(), Exceeded> {
    match requested > allowed {
        true => Err(Exceeded { limit, requested, allowed }),
        false => Ok(()),
    }
}

/// What a core module defines that the pool has slots for (imported ones belong to another).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Module {
    /// Initial size of each memory, in bytes.
    memories: Vec<u64>,
    /// Initial size of each table, in elements.
    tables: Vec<u64>,
}

/// What one instantiation of a component costs the pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Cost {
    core_instances: u64,
    memories: u64,
    tables: u64,
}

impl Cost {
    fn add(&mut self, other: Cost, times: u64) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances.saturating_mul(times));
        self.memories = self.memories.saturating_add(other.memories.saturating_mul(times));
        self.tables = self.tables.saturating_add(other.tables.saturating_mul(times));
    }
}

/// A component being read: its module and component index spaces (`None`: not known before
/// instantiation, e.g. imported) and what instantiating it once costs.
#[derive(Default)]
struct Scope {
    modules: Vec<Option<usize>>,
    components: Vec<Option<Cost>>,
    cost: Cost,
}

/// A nested module or component whose sections are being read.
enum Frame {
    Module(Module),
    Component(Scope),
}

/// What a component declares, read without compiling it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Declared {
    /// Every core module some component instantiates.
    instantiated: Vec<Module>,
    /// One instantiation of the whole component.
    cost: Cost,
}

impl Declared {
    fn of(bytes: &[u8]) -> wasmparser::Result<Self> {
        // Every module read, by number; scopes refer to them by it.
        let mut modules: Vec<Module> = Vec::new();
        let mut instantiated: Vec<usize> = Vec::new();
        let mut stack = vec![Frame::Component(Scope::default())];
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::ModuleSection { .. } => stack.push(Frame::Module(Module::default())),
                Payload::ComponentSection { .. } => stack.push(Frame::Component(Scope::default())),
                Payload::MemorySection(reader) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        for memory in reader {
                            let memory = memory?;
                            let bytes = u128::from(memory.initial) << memory.page_size_log2();
                            module.memories.push(u64::try_from(bytes).unwrap_or(u64::MAX));
                        }
                    }
                }
                Payload::TableSection(reader) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        for table in reader {
                            module.tables.push(table?.ty.initial);
                        }
                    }
                }
                Payload::InstanceSection(reader) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else { continue };
                    for instance in reader {
                        if let Instance::Instantiate { module_index, .. } = instance? {
                            scope.cost.core_instances = scope.cost.core_instances.saturating_add(1);
                            if let Some(Some(m)) = scope.modules.get(module_index as usize).copied() {
                                let module = &modules[m];
                                let cost = Cost {
                                    core_instances: 0,
                                    memories: module.memories.len() as u64,
                                    tables: module.tables.len() as u64,
                                };
                                scope.cost.add(cost, 1);
                                instantiated.push(m);
                            }
                        }
                    }
                }
                Payload::ComponentInstanceSection(reader) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else { continue };
                    for instance in reader {
                        if let ComponentInstance::Instantiate { component_index, .. } = instance? {
                            if let Some(Some(cost)) = scope.components.get(component_index as usize).copied() {
                                scope.cost.add(cost, 1);
                            }
                        }
                    }
                }
                Payload::ComponentImportSection(reader) => {
                    let Some(Frame::Component(scope)) = stack.last_mut() else { continue };
                    for import in reader {
                        match import?.ty {
                            ComponentTypeRef::Module(_) => scope.modules.push(None),
                            ComponentTypeRef::Component(_) => scope.components.push(None),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentExportSection(reader) => {
                    // An export of a module or component gives it a new index as well.
                    let Some(Frame::Component(scope)) = stack.last_mut() else { continue };
                    for export in reader {
                        let export = export?;
                        let index = export.index as usize;
                        match export.kind {
                            ComponentExternalKind::Module => {
                                scope.modules.push(scope.modules.get(index).copied().flatten())
                            }
                            ComponentExternalKind::Component => {
                                scope.components.push(scope.components.get(index).copied().flatten())
                            }
                            _ => {}
                        }
                    }
                }
                Payload::ComponentAliasSection(reader) => {
                    for alias in reader {
                        alias_into(&mut stack, alias?);
                    }
                }
                Payload::End(_) => {
                    let done = stack.pop();
                    match (done, stack.last_mut()) {
                        (Some(Frame::Module(module)), Some(Frame::Component(scope))) => {
                            scope.modules.push(Some(modules.len()));
                            modules.push(module);
                        }
                        (Some(Frame::Component(nested)), Some(Frame::Component(scope))) => {
                            scope.components.push(Some(nested.cost));
                        }
                        (Some(Frame::Component(root)), None) => {
                            let instantiated = instantiated.iter().map(|&m| modules[m].clone()).collect();
                            return Ok(Declared { instantiated, cost: root.cost });
                        }
                        // The end of a core module given alone: no component to check.
                        _ => return Ok(Declared::default()),
                    }
                }
                _ => {}
            }
        }
        Ok(Declared::default())
    }
}

/// Adds an alias to the index spaces of the innermost component: an outer module or component
/// is known, one exported by an instance is not.
fn alias_into(stack: &mut [Frame], alias: ComponentAlias<'_>) {
    let scopes: Vec<usize> = (0..stack.len()).filter(|&i| matches!(stack[i], Frame::Component(_))).collect();
    let Some(&innermost) = scopes.last() else { return };
    let (module, component) = match alias {
        ComponentAlias::Outer { kind, count, index } => {
            let outer = scopes.len().checked_sub(1 + count as usize).map(|i| scopes[i]);
            let Some(Frame::Component(outer)) = outer.map(|i| &stack[i]) else { return };
            match kind {
                ComponentOuterAliasKind::CoreModule => {
                    (Some(outer.modules.get(index as usize).copied().flatten()), None)
                }
                ComponentOuterAliasKind::Component => {
                    (None, Some(outer.components.get(index as usize).copied().flatten()))
                }
                _ => (None, None),
            }
        }
        ComponentAlias::InstanceExport { kind: ComponentExternalKind::Module, .. } => (Some(None), None),
        ComponentAlias::InstanceExport { kind: ComponentExternalKind::Component, .. } => (None, Some(None)),
        _ => (None, None),
    };
    let Frame::Component(scope) = &mut stack[innermost] else { return };
    if let Some(module) = module {
        scope.modules.push(module);
    }
    if let Some(component) = component {
        scope.components.push(component);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PoolLimits {
        PoolLimits::new(&TranslatorsConfig::default())
    }

    #[test]
    fn a_memory_over_the_cap_is_named_with_both_numbers() {
        let over = Exceeded { limit: Limit::InitialMemory, requested: 3000 << 16, allowed: 128 << 20 };
        let message = over.to_string();
        assert!(message.contains("196608000 bytes") && message.contains("134217728 bytes"), "{message}");
        assert!(message.contains("(translators.memory_bytes)"), "{message}");
        let fixed = Exceeded { limit: Limit::TablesPerModule, requested: 2, allowed: 1 }.to_string();
        assert!(fixed.contains("tables_per_core_module, a fixed limit"), "{fixed}");
    }

    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }

    fn section(id: u8, items: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        leb(items.len() as u64, &mut body);
        items.iter().for_each(|i| body.extend(i));
        let mut out = vec![id];
        leb(body.len() as u64, &mut out);
        out.extend(body);
        out
    }

    /// A core module binary with memories and tables of these initial sizes (pages, elements).
    fn module(memories: &[u64], tables: &[u64]) -> Vec<u8> {
        let limits = |n: u64| {
            let mut l = vec![0];
            leb(n, &mut l);
            l
        };
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let tables: Vec<Vec<u8>> = tables.iter().map(|&n| [vec![0x70], limits(n)].concat()).collect();
        m.extend(section(4, &tables));
        m.extend(section(5, &memories.iter().map(|&n| limits(n)).collect::<Vec<_>>()));
        m
    }

    /// A component binary: nested modules and components (each an item of its section, in that
    /// order), then core instances of `instantiate_modules`, then instances of
    /// `instantiate_components`.
    fn component(
        modules: &[Vec<u8>],
        components: &[Vec<u8>],
        instantiate_modules: &[u64],
        instantiate_components: &[u64],
    ) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        for m in modules {
            // A module section holds one module, not a vector: no count.
            c.push(1);
            leb(m.len() as u64, &mut c);
            c.extend(m);
        }
        for nested in components {
            c.push(4);
            leb(nested.len() as u64, &mut c);
            c.extend(nested);
        }
        let instantiate = |&i: &u64| {
            let mut item = vec![0];
            leb(i, &mut item);
            item.push(0);
            item
        };
        if !instantiate_modules.is_empty() {
            c.extend(section(2, &instantiate_modules.iter().map(instantiate).collect::<Vec<_>>()));
        }
        if !instantiate_components.is_empty() {
            c.extend(section(5, &instantiate_components.iter().map(instantiate).collect::<Vec<_>>()));
        }
        c
    }

    #[test]
    fn declared_memories_and_tables_are_checked_per_module() {
        let check = |module: Vec<u8>| limits().check(&component(&[module], &[], &[0], &[]));
        assert_eq!(check(module(&[2048], &[1 << 20])), Ok(()), "exactly at the limits");
        assert_eq!(
            check(module(&[3000], &[1])),
            Err(Exceeded { limit: Limit::InitialMemory, requested: 3000 << 16, allowed: 128 << 20 })
        );
        assert_eq!(
            check(module(&[1], &[(1 << 20) + 1])),
            Err(Exceeded { limit: Limit::TableElements, requested: (1 << 20) + 1, allowed: 1 << 20 })
        );
        assert_eq!(check(module(&[1, 1], &[])).map_err(|e| e.limit), Err(Limit::MemoriesPerModule));
        assert_eq!(check(module(&[], &[1, 1])).map_err(|e| e.limit), Err(Limit::TablesPerModule));
        let never_instantiated = component(&[module(&[3000], &[])], &[], &[], &[]);
        assert_eq!(limits().check(&never_instantiated), Ok(()), "the pool only holds instances");
    }

    #[test]
    fn totals_count_every_instantiation_of_nested_components() {
        let with_memory = module(&[1], &[1]);
        let four = component(std::slice::from_ref(&with_memory), &[], &[0, 0, 0, 0], &[]);
        assert_eq!(limits().check(&four), Ok(()));
        let five = component(&[with_memory], &[], &[0; 5], &[]);
        assert_eq!(
            limits().check(&five),
            Err(Exceeded { limit: Limit::MemoriesPerComponent, requested: 5, allowed: 4 })
        );
        // A nested component of 5 instances of a module without memory, instantiated 13 times.
        let nested = component(&[module(&[], &[])], &[], &[0; 5], &[]);
        let outer = component(&[], &[nested], &[], &[0; 13]);
        assert_eq!(
            limits().check(&outer),
            Err(Exceeded { limit: Limit::CoreInstancesPerComponent, requested: 65, allowed: 64 })
        );
        let nested = component(&[module(&[], &[1])], &[], &[0, 0, 0], &[]);
        let outer = component(&[], &[nested], &[], &[0, 0, 0]);
        assert_eq!(
            limits().check(&outer),
            Err(Exceeded { limit: Limit::TablesPerComponent, requested: 9, allowed: 8 })
        );
    }

    #[test]
    fn bytes_that_do_not_parse_are_left_to_the_compiler() {
        assert_eq!(limits().check(b"\0asm\x0d\0\x01\0garbage"), Ok(()));
        assert_eq!(limits().check(b""), Ok(()));
    }

    #[test]
    fn instance_size_refusals_of_the_pool_are_read() {
        // wasmtime 48's messages, as `{:#}` prints the error chain.
        let module = "module instance size does not fit in pooling allocator requirements: instance allocation \
                      for this module requires 1120240 bytes which exceeds the configured maximum of 1048576 bytes; \
                      breakdown of allocation requirement:\n\n * 99.98% - 1120000 bytes - defined globals\n";
        assert_eq!(
            limits().instance_size_refusal(module),
            Some(Exceeded { limit: Limit::CoreInstanceBytes, requested: 1_120_240, allowed: 1 << 20 })
        );
        let component = "component instance size does not fit in pooling allocator requirements: instance \
                         allocation for this component requires 1300000 bytes of `VMComponentContext` and \
                         aggregated core instance runtime space which exceeds the configured maximum of 1048576 bytes.";
        assert_eq!(
            limits().instance_size_refusal(component).map(|e| (e.limit, e.requested)),
            Some((Limit::ComponentInstanceBytes, 1_300_000))
        );
        assert_eq!(limits().instance_size_refusal("defined memories count of 2 exceeds the limit"), None);
    }
}
