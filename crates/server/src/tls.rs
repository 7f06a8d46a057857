//! TLS on the gRPC port (rustls with ring): the server certificate, and with a client CA, mutual
//! TLS whose client certificates are `required` or `optional`. Protocol versions are TLS 1.3 and
//! 1.2 with rustls's default (modern, forward-secret, AEAD-only) suites.
//!
//! The files are read again when they change (checked every `tls.reload_interval_ms`) or on
//! SIGHUP: new connections use the new certificates, open connections and their streams go on
//! with the ones they were made with. A file that does not load keeps the previous certificates
//! and is logged; at start it is an error.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::{
    self,
    server::{ServerConfig, WebPkiClientVerifier},
    RootCertStore,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::events;

/// Whether a client must present a certificate (with `client_ca_file`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Connections without a certificate signed by the client CA are refused in the handshake.
    #[default]
    Required,
    /// A certificate is verified if one is presented; connections without one are accepted
    /// (they carry no certificate identity).
    Optional,
}

/// The `[tls]` configuration. TLS is on when `cert_file` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates: turns on mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (default) or `optional`.
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::Required,
            reload_interval_ms: 2_000,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks that the files make sense together (whether they load is [`Tls::load`]'s
    /// question); an error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("`tls.cert_file` and `tls.key_file` go together: set both to serve TLS".into());
        }
        if self.client_ca_file.is_some() && !self.enabled() {
            return Err("`tls.client_ca_file` needs `tls.cert_file` and `tls.key_file`: mutual TLS is TLS first".into());
        }
        Ok(())
    }

    fn files(&self) -> Vec<&Path> {
        [&self.cert_file, &self.key_file, &self.client_ca_file].into_iter().flatten().map(PathBuf::as_path).collect()
    }
}

/// What identifies a file as loaded: its modification time and length (`None`: unreadable).
pub(crate) type FileStamp = Option<(SystemTime, u64)>;

pub(crate) fn file_stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

type Stamps = Vec<FileStamp>;

fn stamps(files: &[&Path]) -> Stamps {
    files.iter().map(|f| file_stamp(f)).collect()
}

/// The TLS acceptor of the gateway, with its certificates reloaded when their files change.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    loaded: Mutex<Stamps>,
}

impl Tls {
    /// Loads the certificates; an error names the file and what is wrong with it.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, String> {
        let loaded = stamps(&config.files());
        let server = build(config)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            current: RwLock::new(Arc::new(server)),
            loaded: Mutex::new(loaded),
        }))
    }

    /// The acceptor for a new connection, with the current certificates.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Loads the files again if they changed (or `force`); keeps the current ones if they fail.
    pub fn reload(&self, force: bool) {
        let now = stamps(&self.config.files());
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if !force && now == *loaded {
            return;
        }
        match build(&self.config) {
            Ok(server) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(server);
                *loaded = now;
                info!("TLS certificates reloaded; new connections use them");
            }
            Err(e) => {
                // Retried at the next change only: a half-written file is common during rotation.
                *loaded = now;
                events::emit(&events::TlsReloadFailed { error: e.to_string() });
            }
        }
    }

    /// Reloads on change and on SIGHUP until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let period = Duration::from_millis(self.config.reload_interval_ms.max(100));
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let force = tokio::select! {
                _ = tokio::time::sleep(period) => false,
                _ = signalled => true,
                _ = shutdown.cancelled() => return,
            };
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload(force)).await;
        }
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn build(config: &TlsConfig) -> Result<ServerConfig, String> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err("tls.cert_file and tls.key_file go together".into());
    };
    let certs = read_certs(cert_file, "tls.cert_file")?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "tls.client_ca_file")? {
                roots.add(cert).map_err(|e| format!("tls.client_ca_file {}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("tls.client_ca_file: {e}"))?)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert_file and tls.key_file do not make a usable pair: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(server)
}

/// The identity in a client certificate: its subject's common name, else its first SAN.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(s)
        | x509_parser::extensions::GeneralName::URI(s)
        | x509_parser::extensions::GeneralName::RFC822Name(s) => Some(s.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls::{pki_types::ServerName, ClientConfig};

    use super::*;

    /// A CA, a server certificate (for localhost) and `clients` in a new directory, by
    /// `scripts/certs.sh` as an operator would make them.
    fn certs(clients: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/certs.sh");
        let out = std::process::Command::new(script).arg(dir.path()).args(clients).output().unwrap();
        assert!(out.status.success(), "certs.sh: {}", String::from_utf8_lossy(&out.stderr));
        dir
    }

    fn server_files(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: Some(dir.join("server.pem")),
            key_file: Some(dir.join("server.key")),
            ..TlsConfig::default()
        }
    }

    /// Whether a client that trusts `ca` completes a TLS handshake with `tls` as it is now.
    async fn handshake(tls: &Tls, ca: &Path) -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca, "ca").unwrap() {
            roots.add(cert).unwrap();
        }
        let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let result = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await;
        server.await.unwrap();
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn certificates_load_and_reload_when_their_files_change() {
        let (old, new) = (certs(&[]), certs(&[]));
        let config = server_files(old.path());
        let tls = Tls::load(&config).unwrap();
        handshake(&tls, &old.path().join("ca.pem")).await.unwrap();
        let err = handshake(&tls, &new.path().join("ca.pem")).await.unwrap_err();
        assert!(err.contains("certificate"), "{err}");

        for file in ["server.pem", "server.key"] {
            std::fs::copy(new.path().join(file), old.path().join(file)).unwrap();
        }
        tls.reload(false);
        handshake(&tls, &new.path().join("ca.pem")).await.expect("new connections use the new certificate");
        assert!(handshake(&tls, &old.path().join("ca.pem")).await.is_err());

        // A broken file (half written during a rotation) keeps the certificates in use.
        std::fs::write(old.path().join("server.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        tls.reload(false);
        handshake(&tls, &new.path().join("ca.pem")).await.expect("the previous certificate stays in use");
    }

    #[test]
    fn a_file_that_does_not_load_is_named_by_its_key() {
        let pki = certs(&["alice"]);
        let dir = pki.path();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all\n").unwrap();
        let load = |config: TlsConfig| Tls::load(&config).err().expect("refused");

        let err = load(TlsConfig { cert_file: Some(garbage.clone()), ..server_files(dir) });
        assert!(err.starts_with("tls.cert_file") && err.contains("garbage.pem"), "{err}");
        let err = load(TlsConfig { key_file: Some(dir.join("missing.key")), ..server_files(dir) });
        assert!(err.starts_with("tls.key_file") && err.contains("missing.key"), "{err}");
        let err = load(TlsConfig { client_ca_file: Some(garbage), ..server_files(dir) });
        assert!(err.starts_with("tls.client_ca_file"), "{err}");
        let err = load(TlsConfig { key_file: Some(dir.join("alice.key")), ..server_files(dir) });
        assert!(err.contains("do not make a usable pair"), "{err}");

        let mutual = TlsConfig { client_ca_file: Some(dir.join("ca.pem")), ..server_files(dir) };
        assert!(Tls::load(&mutual).is_ok());
    }

    #[test]
    fn a_client_certificate_is_identified_by_its_common_name() {
        let pki = certs(&["alice"]);
        let der = |file: &str| read_certs(&pki.path().join(file), "test").unwrap().remove(0);
        assert_eq!(certificate_identity(&der("alice.pem")), Some("alice".to_string()));
        assert_eq!(certificate_identity(&der("server.pem")), Some("server".to_string()));
        assert_eq!(certificate_identity(b"not a certificate"), None);
    }
}
