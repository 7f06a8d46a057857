//! Issue 10: TLS and mutual TLS on the gRPC port, with real handshakes and certificates made by
//! `scripts/certs.sh` (openssl).

use std::{net::SocketAddr, path::Path, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tributary_server::{
    config::{ClientAuth, Config, Limits},
    pb::{self, gateway_client::GatewayClient},
};

use crate::harness::*;

/// A CA, a server certificate and client certificates in a fresh directory.
fn certs(what: &str, clients: &[&str]) -> std::path::PathBuf {
    let dir = scratch_dir(what);
    let out =
        std::process::Command::new(repo_root().join("scripts/certs.sh")).arg(&dir).args(clients).output().unwrap();
    assert!(out.status.success(), "certs.sh: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A TLS client of the gateway at `addr` trusting `ca_dir`'s CA, with `client`'s certificate.
async fn tls_client(addr: SocketAddr, ca_dir: &Path, client: Option<(&Path, &str)>) -> Result<Client, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&ca_dir.join("ca.pem"))))
        .domain_name("localhost");
    if let Some((dir, name)) = client {
        tls = tls.identity(Identity::from_pem(
            read(&dir.join(format!("{name}.pem"))),
            read(&dir.join(format!("{name}.key"))),
        ));
    }
    let endpoint =
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).map_err(|e| e.to_string())?;
    let channel = endpoint.connect_timeout(Duration::from_secs(5)).connect().await.map_err(|e| format!("{e:?}"))?;
    Ok(GatewayClient::new(channel))
}

/// Whether a call through this client setup is served.
async fn served(addr: SocketAddr, topic: &str, ca_dir: &Path, client: Option<(&Path, &str)>) -> Result<(), String> {
    let mut client = tls_client(addr, ca_dir, client).await?;
    client
        .describe_topics(pb::DescribeTopicsRequest { topics: vec![topic.to_string()] })
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// Serves `config` in this process; returns once a trusted client is served.
async fn start(
    config: Config,
    topic: &str,
    ca_dir: &Path,
    client: Option<(&Path, &str)>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tributary_server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = served(addr, topic, ca_dir, client).await {
        assert!(std::time::Instant::now() < deadline, "the TLS gateway never served: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (addr, stop)
}

/// A client trusting the server's CA is served, one trusting another CA fails the handshake;
/// with mutual TLS required, a client without a certificate or with one of another CA is refused
/// in the handshake and one with a certificate of the client CA is served; plain HTTP/2 gets
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_accept_only_trusted_peers() {
    let topic = unique_topic("tls");
    create_topic(&topic, 1).await;
    let (ours, theirs) = (certs("pki", &["alice"]), certs("other-pki", &["mallory"]));
    let mut config = config(&[&topic], Limits::default());
    config.tls.cert_file = Some(ours.join("server.pem"));
    config.tls.key_file = Some(ours.join("server.key"));
    let (addr, _stop) = start(config.clone(), &topic, &ours, None).await;
    let err = served(addr, &topic, &theirs, None).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate") || err.contains("transport"), "{err}");
    let plain = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    if let Ok(channel) = plain {
        let call = GatewayClient::new(channel).describe_topics(pb::DescribeTopicsRequest::default()).await;
        assert!(call.is_err(), "plain HTTP/2 is not served on a TLS port");
    }

    config.tls.client_ca_file = Some(ours.join("ca.pem"));
    let (addr, _stop) = start(config.clone(), &topic, &ours, Some((&ours, "alice"))).await;
    assert!(served(addr, &topic, &ours, None).await.is_err(), "no client certificate: refused");
    assert!(served(addr, &topic, &ours, Some((&theirs, "mallory"))).await.is_err(), "untrusted client: refused");
    served(addr, &topic, &ours, Some((&ours, "alice"))).await.expect("a client certificate of the CA is served");
    // The CLI too, with the same files.
    let cli = |with_cert: bool| {
        let mut command = std::process::Command::new(binary());
        command.args(["translator", "--gateway", &format!("https://localhost:{}", addr.port())]);
        command.arg("--ca-cert").arg(ours.join("ca.pem"));
        if with_cert {
            command.arg("--cert").arg(ours.join("alice.pem")).arg("--key").arg(ours.join("alice.key"));
        }
        command.arg("list").output().unwrap()
    };
    let out = cli(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!cli(false).status.success(), "the CLI without a client certificate is refused");

    // Optional client certificates: both kinds are served.
    config.tls.client_auth = ClientAuth::Optional;
    let (addr, _stop) = start(config, &topic, &ours, None).await;
    served(addr, &topic, &ours, Some((&ours, "alice"))).await.unwrap();
    assert!(served(addr, &topic, &ours, Some((&theirs, "mallory"))).await.is_err(), "a certificate is still verified");
}

/// New certificates on disk are picked up without a restart; a stream opened before goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_used_by_new_connections_while_streams_go_on() {
    let topic = unique_topic("tls-rotate");
    create_topic(&topic, 1).await;
    let (old, new) = (certs("pki-old", &[]), certs("pki-new", &[]));
    let live = scratch_dir("pki-live");
    for f in ["server.pem", "server.key"] {
        std::fs::copy(old.join(f), live.join(f)).unwrap();
    }
    let mut config = config(&[&topic], Limits::default());
    config.tls.cert_file = Some(live.join("server.pem"));
    config.tls.key_file = Some(live.join("server.key"));
    config.tls.reload_interval_ms = 200;
    let (addr, _stop) = start(config, &topic, &old, None).await;
    let mut client = tls_client(addr, &old, None).await.unwrap();
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    follower.next().await.unwrap().unwrap();

    // Rotate: key first, then the certificate (a half-done rotation keeps the old pair).
    std::fs::copy(new.join("server.key"), live.join("server.key")).unwrap();
    std::fs::copy(new.join("server.pem"), live.join("server.pem")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served(addr, &topic, &new, None).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the new certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served(addr, &topic, &old, None).await.is_err(), "new connections no longer get the old certificate");

    produce(&topic, &(0..100).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    follower.until(&ends(&topic), Duration::from_secs(30)).await.expect("the open stream keeps flowing");
    assert_eq!(follower.records.len(), 100);
}
