//! The gateway's translator host: compiles uploads under the compile budget (in a child process),
//! loads compiled forms into the pooled engine and makes translators of them. The one place the
//! registry goes to for wasmtime work.

use std::sync::Arc;

use tributary_core::TranslatorFailure;
use wasmtime::component::Component;

use crate::{
    compile::{self, Budget, Cancel, CompileError},
    config::TranslatorsConfig,
    engine::{self, Runtime, Unloadable},
    translator::Translator,
};

/// The wasmtime engine with the gateway's safe defaults and the compile budget. One per gateway.
pub struct Host {
    runtime: Arc<Runtime>,
    budget: Budget,
}

impl Host {
    pub fn new(limits: &TranslatorsConfig) -> Result<Arc<Self>, String> {
        let runtime = Runtime::new(limits)?;
        let budget = Budget::from_config(limits)?;
        Ok(Arc::new(Self { runtime, budget }))
    }

    pub fn limits(&self) -> &TranslatorsConfig {
        self.runtime.limits()
    }

    /// Validates and compiles bytes into a component that implements the translator world, in a
    /// child process under the compile budget (see [`crate::compile`]). Returns the component
    /// and its serialized form, to store. Blocking: call it off the async threads.
    pub fn compile(&self, bytes: &[u8], cancel: &Cancel) -> Result<(Component, Vec<u8>), CompileError> {
        engine::precheck(bytes).map_err(CompileError::Invalid)?;
        // Before compiling: a component the pool could never hold is not worth a compile.
        self.runtime.check_declared(bytes).map_err(CompileError::Invalid)?;
        let compiled = compile::compile_in_child(&self.budget, bytes, cancel)?;
        let component = self.load(&compiled).map_err(|unloadable| match unloadable {
            Unloadable::Invalid(invalid) => CompileError::Invalid(invalid),
            Unloadable::OtherBuild(why) => CompileError::Failed(format!(
                "{} wrote a compiled form this gateway cannot load: is it the same build? ({why})",
                self.budget.program.display()
            )),
        })?;
        Ok((component, compiled))
    }

    /// Loads a compiled form written by this same build, and checks it is a translator that
    /// fits the instance pool.
    pub fn load(&self, compiled: &[u8]) -> Result<Component, Unloadable> {
        self.runtime.load(compiled)
    }

    /// A translator of `component` with `config`, whose instances are pooled for reuse.
    /// Instantiates one instance and calls `init` now, so a bad configuration fails here.
    pub fn translator(&self, component: &Component, config: String) -> Result<Translator, TranslatorFailure> {
        let pre = self
            .runtime
            .engine()
            .instantiate_pre(component)
            .map_err(|e| TranslatorFailure::Trap(format!("{:#}", e.into_error())))?;
        Translator::new(self.runtime.clone(), pre, config)
    }
}
