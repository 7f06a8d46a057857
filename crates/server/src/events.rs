//! The server's named events: accepting connections, TLS handshakes and reloads, auth file
//! reloads, plain text on the network, the metrics listener and the shutdown's drain. Only the
//! server emits them, so they are declared here, with the core's machinery: [`emit`] counts each
//! in `tributary_events_total{event}` and logs it rate-limited, exactly as the core's events.
//!
//! The catalogue ([`ALL`]) is in `docs/operations.md`'s table of events with the core's; a unit
//! test keeps them in step.

pub use tributary_core::events::emit;

tributary_core::declare_events! {
    /// Accepting a TCP connection failed (e.g. out of file descriptors); retried after a pause.
    AcceptFailed = "accept_failed", WARN, "accepting a connection failed; retrying after a pause" { error: String }
    /// A client's TLS handshake failed or timed out (untrusted certificate, plain text on the TLS port).
    TlsHandshakeFailed = "tls_handshake_failed", WARN, "a TLS handshake failed" { error: String }
    /// `TCP_NODELAY` could not be set on an accepted connection.
    TcpNodelayFailed = "tcp_nodelay_failed", WARN, "cannot set TCP_NODELAY on a connection" { error: String }
    /// Plain TCP on a non-loopback address (`allow_plaintext`).
    PlaintextOnNetwork = "plaintext_on_network", WARN, "serving PLAIN TCP on a non-loopback address (allow_plaintext): anyone who reaches this port can read every exposed topic" { listen: String }
    /// Shutdown's drain deadline passed with calls or stream tasks still open.
    DrainTimeout = "drain_timeout", WARN, "still running at the drain deadline; stopping anyway" { what: &'static str, open: usize }
    /// A changed tokens, policy or JWT key file could not be read; the previous one stays in use.
    AuthReloadFailed = "auth_reload_failed", WARN, "an auth file was not reloaded; the previous one stays in use" { file: &'static str, error: String }
    /// Changed TLS certificates could not be loaded; the previous ones stay in use.
    TlsReloadFailed = "tls_reload_failed", WARN, "TLS certificates not reloaded; the previous ones stay in use" { error: String }
    /// `[metrics] listen` names another address than the exporter this process already runs.
    MetricsListenerConflict = "metrics_listener_conflict", WARN, "metrics are already served by this process elsewhere" { listen: String, already: String }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_server_event_logs_as_the_core_events_do() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            emit(&TlsReloadFailed { error: "a-test-only-error".into() });
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(" WARN tributary_core::events: "), "{text}");
        assert!(text.contains("TLS certificates not reloaded; the previous ones stay in use"), "{text}");
        assert!(text.contains("event=\"tls_reload_failed\" error=a-test-only-error repeated=0"), "{text}");
    }

    #[test]
    fn names_are_new_snake_case_and_the_docs_list_every_one() {
        let docs = include_str!("../../../docs/operations.md");
        let core: Vec<_> = tributary_core::events::ALL.iter().map(|(name, ..)| *name).collect();
        let mut seen = std::collections::HashSet::new();
        for (name, level, message, _) in ALL {
            assert!(seen.insert(name) && !core.contains(name), "{name} twice");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(matches!(*level, "WARN" | "ERROR"));
            assert!(!message.is_empty());
            assert!(docs.contains(&format!("| `{name}` |")), "docs/operations.md's event table lacks {name}");
        }
    }
}
