//! Compiling components under a budget. Cranelift cannot be interrupted and a hostile component
//! can make it run for minutes and grow by gigabytes (one huge function with many locals live
//! across many loops), so compiling runs in a child process — `tributary compile-translator IN
//! OUT`, the same executable — that the gateway can bound and kill:
//!
//! - **time**: killed at `translators.compile_timeout_ms` (wall clock);
//! - **memory**: `RLIMIT_DATA` of `translators.compile_memory_bytes` (writable private memory:
//!   heap and thread stacks), so an allocation past it fails and the child ends;
//! - **cancellation**: killed within [`POLL`] of its [`Cancel`] being set — when the uploading
//!   client leaves or the gateway stops — and sent SIGKILL by the kernel if the gateway dies;
//! - **priority**: it runs at nice 10, so serving stays responsive while it compiles.
//!
//! The child writes wasmtime's serialized form, which the gateway loads (cheaply) into its own
//! engine: the child's engine has the same code-generation settings, without the instance pool.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    config::TranslatorsConfig,
    engine::{self, Engine, Invalid},
};

/// The subcommand of the `tributary` executable that compiles one component.
pub const SUBCOMMAND: &str = "compile-translator";

/// How often a running compile is checked for its deadline and cancellation.
const POLL: Duration = Duration::from_millis(10);

/// Exit status of the child when the component is invalid (its reason is in the output file).
const EXIT_INVALID: i32 = 3;

/// Bytes of the child's error output kept for the message.
const STDERR_KEPT: usize = 2048;

/// Set to stop a compile; the [`CancelGuard`] of a request sets it when the request is dropped.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag nobody sets (compiles at start-up).
    pub fn never() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Cancels when dropped: hold it in the future that waits for the compile.
    pub fn guard(&self) -> CancelGuard {
        CancelGuard(self.clone())
    }
}

pub struct CancelGuard(Cancel);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Why a compile produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(Invalid),
    #[error(
        "compiling the component took longer than {0:?} (translators.compile_timeout_ms) and was stopped; \
         a component whose functions are smaller compiles faster"
    )]
    TimedOut(Duration),
    #[error(
        "compiling the component needed more than {} MiB (translators.compile_memory_bytes) and was stopped; \
         a component whose functions are smaller needs less",
        .0 >> 20
    )]
    OutOfMemory(u64),
    #[error("the compile was cancelled")]
    Cancelled,
    #[error("the compiler process failed: {0}")]
    Failed(String),
}

/// Where and under which limits compiles run.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The `tributary` executable.
    pub program: PathBuf,
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// Scratch directory for the child's input and output files.
    pub scratch: PathBuf,
}

impl Budget {
    /// The budget of `[translators]`: its compiler (by default this executable), deadline,
    /// memory limit, and its data directory as scratch space.
    pub fn from_config(limits: &TranslatorsConfig) -> Result<Self, String> {
        let program = match &limits.compiler {
            Some(path) => path.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot locate this executable to compile with: {e}"))?
            }
        };
        Ok(Self {
            program,
            timeout: Duration::from_millis(limits.compile_timeout_ms),
            memory_bytes: limits.compile_memory_bytes,
            scratch: limits.data_dir.clone(),
        })
    }
}

/// Compiles `bytes` in a child process under `budget`; returns the serialized form.
/// Blocking: polls the child until it ends, its deadline passes or `cancel` is set.
pub fn compile_in_child(budget: &Budget, bytes: &[u8], cancel: &Cancel) -> Result<Vec<u8>, CompileError> {
    let failed = |what: &str, e: std::io::Error| CompileError::Failed(format!("{what}: {e}"));
    let dir = tempfile::Builder::new()
        .prefix(".compile-")
        .tempdir_in(&budget.scratch)
        .map_err(|e| failed("scratch directory", e))?;
    let (input, output, errors) = (dir.path().join("in.wasm"), dir.path().join("out.cwasm"), dir.path().join("stderr"));
    std::fs::write(&input, bytes).map_err(|e| failed("write the component", e))?;
    let stderr = std::fs::File::create(&errors).map_err(|e| failed("stderr file", e))?;
    let mut command = Command::new(&budget.program);
    command
        .arg(SUBCOMMAND)
        .arg(&input)
        .arg(&output)
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    limit_child(&mut command, budget);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| CompileError::Failed(format!("cannot start {} {SUBCOMMAND}: {e}", budget.program.display())))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(failed("wait for the compiler", e)),
        }
        let stop = if cancel.is_cancelled() {
            Some(CompileError::Cancelled)
        } else if started.elapsed() >= budget.timeout {
            Some(CompileError::TimedOut(budget.timeout))
        } else {
            None
        };
        if let Some(error) = stop {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        std::thread::sleep(POLL);
    };
    let stderr = read_start(&errors);
    outcome(status, &output, &stderr, budget)
}

/// What the child's exit means.
fn outcome(status: ExitStatus, output: &Path, stderr: &str, budget: &Budget) -> Result<Vec<u8>, CompileError> {
    match status.code() {
        Some(0) => std::fs::read(output).map_err(|e| CompileError::Failed(format!("no compiled output: {e}"))),
        Some(EXIT_INVALID) => {
            let json = std::fs::read(output).unwrap_or_default();
            Err(serde_json::from_slice(&json)
                .map(CompileError::Invalid)
                .unwrap_or_else(|e| CompileError::Failed(format!("unreadable reason from the compiler: {e}"))))
        }
        _ if out_of_memory(stderr) => Err(CompileError::OutOfMemory(budget.memory_bytes)),
        // The CPU-time backstop (several compiler threads can spend it before the deadline).
        None if cpu_limit(status) => Err(CompileError::TimedOut(budget.timeout)),
        _ => {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            Err(CompileError::Failed(format!("{status}: {last}")))
        }
    }
}

/// Whether the child's error output says an allocation failed (Rust's handler aborts with
/// "memory allocation of N bytes failed"; an mmap refused by the limit gives ENOMEM).
fn out_of_memory(stderr: &str) -> bool {
    ["memory allocation of", "Cannot allocate memory", "out of memory"].iter().any(|s| stderr.contains(s))
}

/// Whether the child was stopped by `RLIMIT_CPU`.
fn cpu_limit(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGXCPU)
}

fn read_start(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(STDERR_KEPT)]).into_owned()
}

#[cfg(target_os = "linux")]
fn limit_child(command: &mut Command, budget: &Budget) {
    use std::os::unix::process::CommandExt;
    let memory = budget.memory_bytes as libc::rlim_t;
    // A backstop should the gateway stop polling: CPU seconds past the wall-clock budget.
    let cpu = budget.timeout.as_secs() as libc::rlim_t + 5;
    // SAFETY: between fork and exec only async-signal-safe calls are made (setrlimit, prctl,
    // setpriority), with no allocation and no lock.
    unsafe {
        command.pre_exec(move || {
            let set = |resource, value: libc::rlim_t| {
                let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
                match libc::setrlimit(resource, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            };
            set(libc::RLIMIT_DATA, memory)?;
            set(libc::RLIMIT_CPU, cpu)?;
            set(libc::RLIMIT_CORE, 0)?;
            // Killed by the kernel if the gateway dies without stopping it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn limit_child(_: &mut Command, _: &Budget) {}

/// The child's side: compiles `input` with an engine of the gateway's code-generation settings and
/// writes the serialized form to `output`. Returns the process exit status: 0 compiled,
/// [`EXIT_INVALID`] with the reason as JSON in `output`, 1 on any other failure (on stderr).
pub fn child_main(input: &Path, output: &Path) -> i32 {
    let run = || -> Result<i32, String> {
        let bytes = std::fs::read(input).map_err(|e| format!("read {}: {e}", input.display()))?;
        let (status, written) = match compile_standalone(&bytes)? {
            Ok(compiled) => (0, compiled),
            Err(invalid) => (EXIT_INVALID, serde_json::to_vec(&invalid).map_err(|e| e.to_string())?),
        };
        std::fs::write(output, written).map_err(|e| format!("write {}: {e}", output.display()))?;
        Ok(status)
    };
    run().unwrap_or_else(|message| {
        eprintln!("compile-translator: {message}");
        1
    })
}

/// Compiles and checks a component in this process and serializes it: the child's work. The
/// outer error is a failure of the compiler itself.
fn compile_standalone(bytes: &[u8]) -> Result<Result<Vec<u8>, Invalid>, String> {
    let engine = Engine::for_compiling()?;
    if let Err(invalid) = engine::precheck(bytes) {
        return Ok(Err(invalid));
    }
    let component = match engine.compile(bytes) {
        Ok(component) => component,
        // Memory refused by the compile budget is the compiler's failure, not the component's.
        Err(e) if out_of_memory(&format!("{e:#}")) => return Err(format!("{e:#}")),
        Err(e) => return Ok(Err(Invalid::Malformed(format!("{e:#}")))),
    };
    if let Err(invalid) = engine.check(&component) {
        return Ok(Err(invalid));
    }
    component.serialize().map(Ok).map_err(|e| format!("serialize: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            program: "/bin/sh".into(),
            timeout: Duration::from_secs(5),
            memory_bytes: 1 << 30,
            scratch: "/tmp".into(),
        }
    }

    #[test]
    fn exit_statuses_are_classified() {
        use std::os::unix::process::ExitStatusExt;
        let missing = Path::new("/nonexistent/out");
        let abort = ExitStatus::from_raw(libc::SIGABRT);
        let oom = outcome(abort, missing, "memory allocation of 1048576 bytes failed\n", &budget());
        assert_eq!(oom, Err(CompileError::OutOfMemory(1 << 30)));
        let crash = outcome(abort, missing, "thread panicked\nsomething else\n", &budget()).unwrap_err();
        assert!(matches!(&crash, CompileError::Failed(m) if m.contains("something else")), "{crash:?}");
        let cpu = outcome(ExitStatus::from_raw(libc::SIGXCPU), missing, "", &budget());
        assert_eq!(cpu, Err(CompileError::TimedOut(budget().timeout)), "the CPU backstop is the time budget");
        let no_output = outcome(ExitStatus::from_raw(0), missing, "", &budget()).unwrap_err();
        assert!(matches!(no_output, CompileError::Failed(_)));
    }

    #[test]
    fn a_child_past_its_deadline_or_cancelled_is_killed() {
        let scratch = tempfile::tempdir().unwrap();
        // A "compiler" that ignores its arguments and never finishes.
        let sleeper = scratch.path().join("sleeper");
        std::fs::write(&sleeper, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&sleeper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let budget = Budget {
            program: sleeper,
            timeout: Duration::from_millis(300),
            memory_bytes: 1 << 30,
            scratch: scratch.path().into(),
        };
        let started = Instant::now();
        assert_eq!(compile_in_child(&budget, b"x", &Cancel::never()), Err(CompileError::TimedOut(budget.timeout)));
        assert!(started.elapsed() < Duration::from_secs(5), "killed at the deadline: {:?}", started.elapsed());

        let cancel = Cancel::default();
        let flag = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(flag.guard());
        });
        let long = Budget { timeout: Duration::from_secs(60), ..budget };
        let started = Instant::now();
        assert_eq!(compile_in_child(&long, b"x", &cancel), Err(CompileError::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(5), "killed when cancelled: {:?}", started.elapsed());
        let left: Vec<_> =
            std::fs::read_dir(scratch.path()).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("sleeper")], "scratch files are removed");
    }
}
