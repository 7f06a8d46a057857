//! The translator registry: components stored durably by SHA-256 digest in the data directory,
//! their compiled artifacts cached beside them, names with versions in an index file, and the
//! shared translators of every (digest, configuration) in use.
//!
//! On disk (`translators.data_dir`):
//! - `components/<digest>.wasm`: the uploaded bytes;
//! - `compiled/<digest>.cwasm`: the SHA-256 of wasmtime's compiled form, then the form itself
//!   (recompiled if the engine changed);
//! - `index.json`: name → versions.
//!
//! Every file is written to a temporary name, synced, then renamed, so a crash leaves either the
//! old or the new file. Nothing read back is trusted: a component must hash to its digest, a
//! compiled form to its checksum (native code is never loaded from bytes that fail it), names and
//! digests in the index must be valid. A stored version that fails is disabled with the reason
//! (its calls end DATA_LOSS until it is uploaded again); the gateway and every other translator
//! keep serving.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;
use wasmtime::component::Component;

use tributary_core::{events, translate::Translation, Error, TranslatorFailure};

use crate::{
    compile::{Cancel, CompileError},
    engine::{Invalid, Unloadable},
    host::Host,
    translator::Translator,
};

/// One version of a translator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub digest: String,
    pub size: u64,
    pub uploaded_at_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Name → versions, oldest first.
    names: BTreeMap<String, Vec<Version>>,
}

pub struct Registry {
    dir: PathBuf,
    host: Arc<Host>,
    /// Name → versions; written through to `index.json` under `write`.
    names: DashMap<String, Vec<Version>>,
    /// Digest → compiled component.
    components: DashMap<String, Component>,
    /// Digest → why its stored files could not be loaded (the version is disabled).
    broken: DashMap<String, String>,
    /// (digest, configuration) → the translator subscribers share while any holds it.
    live: DashMap<(String, String), Weak<Translator>>,
    /// Serializes changes of the index (uploads and deletes).
    write: Mutex<()>,
}

/// Which translator a call uses, with its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslatorRef {
    pub name: String,
    /// A version's digest to pin; empty takes the latest version.
    pub digest: String,
    pub config: String,
    pub skip_errors: bool,
}

/// One version of a translator as clients see it: numbered from 1, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub name: String,
    pub version: u32,
    pub digest: String,
    pub size: u64,
    pub uploaded_at_ms: i64,
}

/// A translator and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatorInfo {
    pub name: String,
    pub versions: Vec<VersionInfo>,
}

/// The lowercase hex SHA-256 digest of `bytes`: a component's identity.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a translator name: 1-64 of [a-z0-9._-], starting with a letter or digit. The message
/// quotes at most the first 64 characters of a bad name, so errors stay small.
pub fn check_translator_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(64).collect();
    let more = if shown.len() < name.len() { format!("... ({} bytes)", name.len()) } else { String::new() };
    Err(format!(
        "translator name {shown:?}{more} must be 1-64 characters of [a-z0-9._-], starting with a letter or digit"
    ))
}

/// Checks a digest reference: empty (the latest version) or 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    if digest.is_empty()
        || (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Ok(());
    }
    let shown: String = digest.chars().take(64).collect();
    Err(format!("digest {shown:?} must be empty (the latest version) or a SHA-256 of 64 lowercase hex digits"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().unwrap().to_string_lossy(), std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Bytes of the checksum in front of a compiled form.
const CHECKSUM_BYTES: usize = 32;

/// A compiled form as stored: its SHA-256, then its bytes.
fn seal(compiled: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(CHECKSUM_BYTES + compiled.len());
    sealed.extend_from_slice(&Sha256::digest(compiled));
    sealed.extend_from_slice(compiled);
    sealed
}

/// The compiled form in a stored file, if its checksum holds (no flipped or missing byte).
fn unseal(file: &[u8]) -> Option<&[u8]> {
    let (sum, compiled) = file.split_at_checked(CHECKSUM_BYTES)?;
    (Sha256::digest(compiled).as_slice() == sum).then_some(compiled)
}

/// What an upload's caller sees of a failed compile.
fn compile_error(e: CompileError) -> Error {
    match e {
        CompileError::Invalid(Invalid::Limit(exceeded)) => Error::ComponentLimit {
            limit: exceeded.limit.name().into(),
            requested: exceeded.requested,
            allowed: exceeded.allowed,
            message: exceeded.to_string(),
        },
        CompileError::Invalid(invalid) => Error::invalid("chunk", invalid.to_string()),
        CompileError::TimedOut(_) | CompileError::OutOfMemory(_) => Error::ResourceExhausted(e.to_string()),
        CompileError::Cancelled => Error::ResourceExhausted("the upload was cancelled while compiling".into()),
        CompileError::Failed(message) => Error::Internal(format!("compiling: {message}")),
    }
}

fn storage(e: std::io::Error, what: &str) -> Error {
    Error::Internal(format!("translator storage: {what}: {e}"))
}

impl Registry {
    /// Opens (or creates) the registry in `dir` and loads every stored component, recompiling
    /// those whose compiled artifact is missing or from another engine.
    pub fn open(dir: &Path, host: Arc<Host>) -> Result<Self, Error> {
        for sub in ["components", "compiled"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| storage(e, &format!("create {}", dir.display())))?;
        }
        let index_path = dir.join("index.json");
        let index: Index = match std::fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("translator index {} is corrupt: {e}", index_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(storage(e, "read index")),
        };
        let registry = Self {
            dir: dir.to_path_buf(),
            host,
            names: DashMap::new(),
            components: DashMap::new(),
            broken: DashMap::new(),
            live: DashMap::new(),
            write: Mutex::new(()),
        };
        for (name, versions) in index.names {
            if let Err(problem) = check_translator_name(&name) {
                events::emit(&events::TranslatorIndexInvalid { detail: format!("invalid name: {problem}") });
                continue;
            }
            let mut kept = Vec::with_capacity(versions.len());
            for v in versions {
                if v.digest.is_empty() || check_digest(&v.digest).is_err() {
                    let digest: String = v.digest.chars().take(80).collect();
                    events::emit(&events::TranslatorIndexInvalid {
                        detail: format!("{name}: invalid digest {digest:?}"),
                    });
                    continue;
                }
                if !registry.components.contains_key(&v.digest) && !registry.broken.contains_key(&v.digest) {
                    match registry.load(&v.digest) {
                        Ok(component) => {
                            registry.components.insert(v.digest.clone(), component);
                        }
                        Err(reason) => {
                            events::emit(&events::TranslatorVersionDisabled {
                                name: name.clone(),
                                digest: v.digest.clone(),
                                reason: reason.clone(),
                            });
                            registry.broken.insert(v.digest.clone(), reason);
                        }
                    }
                }
                kept.push(v);
            }
            if !kept.is_empty() {
                registry.names.insert(name, kept);
            }
        }
        info!(translators = registry.names.len(), components = registry.components.len(), disabled = registry.broken.len(), dir = %dir.display(), "translator registry open");
        Ok(registry)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    fn compiled_path(&self, digest: &str) -> PathBuf {
        self.dir.join("compiled").join(format!("{digest}.cwasm"))
    }

    /// Loads a stored component: its compiled form if that passes its checksum and was written by
    /// this engine, else compiled again from the component, which must hash to `digest`. The
    /// error is why the version cannot be served.
    fn load(&self, digest: &str) -> Result<Component, String> {
        let compiled_path = self.compiled_path(digest);
        match std::fs::read(&compiled_path) {
            Ok(file) => match unseal(&file) {
                Some(compiled) => match self.host.load(compiled) {
                    Ok(component) => return Ok(component),
                    // Compiling again would be refused the same way (e.g. the limits changed).
                    Err(Unloadable::Invalid(invalid)) => {
                        return Err(format!("the stored component is refused: {invalid}"))
                    }
                    Err(Unloadable::OtherBuild(why)) => {
                        recompiled(digest, format!("written by another wasmtime build: {why}"))
                    }
                },
                None => {
                    recompiled(digest, format!("{} fails its checksum (corrupt or truncated)", compiled_path.display()))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => recompiled(digest, format!("unreadable: {e}")),
        }
        let path = self.component_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if sha256_hex(&bytes) != digest {
            return Err(format!("{} does not hash to its digest (corrupt or replaced)", path.display()));
        }
        let (component, compiled) = self
            .host
            .compile(&bytes, &Cancel::never())
            .map_err(|e| format!("the stored component does not compile: {e}"))?;
        if let Err(e) = write_atomic(&compiled_path, &seal(&compiled)) {
            events::emit(&events::TranslatorArtifactNotStored { digest: digest.to_string(), error: e.to_string() });
        }
        Ok(component)
    }

    pub fn max_component_bytes(&self) -> usize {
        self.host.limits().max_component_bytes
    }

    /// The `[translators]` configuration the registry runs with.
    pub fn config(&self) -> &crate::TranslatorsConfig {
        self.host.limits()
    }

    /// Validates, compiles (under the compile budget, stopped when `cancel` is set) and stores a
    /// component under `name`. Blocking (compiles).
    pub fn upload(&self, name: &str, bytes: &[u8], cancel: &Cancel) -> Result<VersionInfo, Error> {
        check_translator_name(name).map_err(|m| Error::invalid("header.name", m))?;
        let digest = sha256_hex(bytes);
        let (component, compiled) = match self.components.get(&digest) {
            Some(c) => (c.clone(), None),
            None => {
                let started = std::time::Instant::now();
                let compiled = self.host.compile(bytes, cancel);
                metrics::histogram!("tributary_translator_compile_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                let (component, compiled) = compiled.map_err(compile_error)?;
                (component, Some(compiled))
            }
        };
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // A disabled version's files are rewritten from the verified upload: that repairs it.
        let repair = self.broken.contains_key(&digest);
        let path = self.component_path(&digest);
        if repair || !path.exists() {
            write_atomic(&path, bytes).map_err(|e| storage(e, "write component"))?;
        }
        if repair || !self.compiled_path(&digest).exists() {
            let compiled = match compiled {
                Some(compiled) => compiled,
                None => component.serialize().map_err(|e| Error::Internal(format!("serialize: {e}")))?,
            };
            write_atomic(&self.compiled_path(&digest), &seal(&compiled)).map_err(|e| storage(e, "write compiled"))?;
        }
        self.components.insert(digest.clone(), component);
        if self.broken.remove(&digest).is_some() {
            info!(digest, "disabled translator version repaired by an upload of the same bytes");
        }
        let version = Version { digest: digest.clone(), size: bytes.len() as u64, uploaded_at_ms: now_ms() };
        let number = {
            let mut versions = self.names.entry(name.to_string()).or_default();
            // Uploading the latest digest again is a no-op; an older one becomes the latest.
            if versions.last().is_some_and(|v| v.digest == digest) {
                let n = versions.len() as u32;
                return Ok(version_info(name, n, versions.last().unwrap()));
            }
            versions.retain(|v| v.digest != digest);
            versions.push(version.clone());
            versions.len() as u32
        };
        self.save_index()?;
        info!(name, digest, size = bytes.len(), "translator uploaded");
        Ok(version_info(name, number, &version))
    }

    fn save_index(&self) -> Result<(), Error> {
        let index = Index { names: self.names.iter().map(|e| (e.key().clone(), e.value().clone())).collect() };
        let json = serde_json::to_vec_pretty(&index).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.dir.join("index.json"), &json).map_err(|e| storage(e, "write index"))
    }

    pub fn list(&self) -> Vec<TranslatorInfo> {
        let mut all: Vec<_> = self.names.iter().map(|e| info_of(e.key(), e.value())).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn describe(&self, name: &str) -> Result<TranslatorInfo, Error> {
        let versions = self.names.get(name).ok_or_else(|| self.unknown(name))?;
        Ok(info_of(name, &versions))
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownTranslator { name: name.to_string(), digest: None, versions: 0 }
    }

    /// Deletes a translator, or one version of it. Components no name uses any more are removed.
    pub fn delete(&self, name: &str, digest: &str) -> Result<Vec<VersionInfo>, Error> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let deleted = {
            let mut versions = self.names.get_mut(name).ok_or_else(|| self.unknown(name))?;
            let numbered: Vec<(u32, Version)> =
                versions.iter().cloned().enumerate().map(|(i, v)| (i as u32 + 1, v)).collect();
            let deleted: Vec<(u32, Version)> = if digest.is_empty() {
                numbered
            } else {
                let one: Vec<_> = numbered.into_iter().filter(|(_, v)| v.digest == digest).collect();
                if one.is_empty() {
                    return Err(Error::UnknownTranslator {
                        name: name.to_string(),
                        digest: Some(digest.to_string()),
                        versions: versions.len(),
                    });
                }
                one
            };
            versions.retain(|v| !deleted.iter().any(|(_, d)| d.digest == v.digest));
            deleted
        };
        self.names.retain(|_, v| !v.is_empty());
        self.save_index()?;
        for (_, v) in &deleted {
            let used = self.names.iter().any(|e| e.value().iter().any(|x| x.digest == v.digest));
            if !used {
                self.components.remove(&v.digest);
                self.broken.remove(&v.digest);
                let _ = std::fs::remove_file(self.component_path(&v.digest));
                let _ = std::fs::remove_file(self.compiled_path(&v.digest));
            }
        }
        info!(name, digest, "translator deleted");
        Ok(deleted.into_iter().map(|(n, v)| version_info(name, n, &v)).collect())
    }

    /// Resolves a reference to a shared translator, instantiating and initializing it if no
    /// subscriber uses the same (digest, configuration) yet. Blocking (instantiates).
    pub fn resolve(&self, reference: &TranslatorRef) -> Result<Translation, Error> {
        let versions = self.names.get(&reference.name).ok_or_else(|| self.unknown(&reference.name))?;
        let version = if reference.digest.is_empty() {
            versions.last().cloned()
        } else {
            versions.iter().find(|v| v.digest == reference.digest).cloned()
        }
        .ok_or_else(|| Error::UnknownTranslator {
            name: reference.name.clone(),
            digest: Some(reference.digest.clone()),
            versions: versions.len(),
        })?;
        drop(versions);
        let key = (version.digest.clone(), reference.config.clone());
        let translator = match self.live.get(&key).and_then(|w| w.upgrade()) {
            Some(t) => t,
            None => {
                let component = self.components.get(&version.digest).map(|c| c.clone()).ok_or_else(|| {
                    match self.broken.contains_key(&version.digest) {
                        true => Error::TranslatorUnavailable {
                            name: reference.name.clone(),
                            digest: version.digest.clone(),
                        },
                        false => Error::Internal(format!("component {} is not loaded", version.digest)),
                    }
                })?;
                let translator =
                    self.host.translator(&component, reference.config.clone()).map_err(|failure| match failure {
                        TranslatorFailure::Error(message) => Error::TranslatorConfig {
                            name: reference.name.clone(),
                            digest: version.digest.clone(),
                            message,
                        },
                        failure => Error::Translator {
                            name: reference.name.clone(),
                            digest: version.digest.clone(),
                            failure,
                            at: None,
                            resume: Vec::new(),
                        },
                    })?;
                let translator = Arc::new(translator);
                self.live.retain(|_, w| w.strong_count() > 0);
                self.live.insert(key, Arc::downgrade(&translator));
                translator
            }
        };
        Ok(Translation {
            name: reference.name.clone(),
            digest: version.digest,
            translator,
            skip_errors: reference.skip_errors,
            batch_records: self.host.limits().batch_records,
        })
    }
}

fn version_info(name: &str, number: u32, v: &Version) -> VersionInfo {
    VersionInfo {
        name: name.to_string(),
        version: number,
        digest: v.digest.clone(),
        size: v.size,
        uploaded_at_ms: v.uploaded_at_ms,
    }
}

fn info_of(name: &str, versions: &[Version]) -> TranslatorInfo {
    TranslatorInfo {
        name: name.to_string(),
        versions: versions.iter().enumerate().map(|(i, v)| version_info(name, i as u32 + 1, v)).collect(),
    }
}

/// A compiled artifact that cannot be used: it is compiled again from the component.
fn recompiled(digest: &str, reason: String) {
    events::emit(&events::TranslatorRecompiled { digest: digest.to_string(), reason });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_translator_name("field-mapper.v2").is_ok());
        assert!(check_translator_name("").is_err());
        assert!(check_translator_name("-x").is_err());
        assert!(check_translator_name("Upper").is_err());
        assert!(check_translator_name(&"a".repeat(65)).is_err());
        assert!(check_translator_name(&"x".repeat(10_000)).unwrap_err().len() < 300, "a bad name is not echoed whole");
        assert!(check_digest("").is_ok() && check_digest(&sha256_hex(b"x")).is_ok());
        assert!(check_digest("ABC").is_err() && check_digest(&"f".repeat(65)).is_err());
    }

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
