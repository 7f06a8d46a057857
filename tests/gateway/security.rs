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

/// A request with a bearer token, if any.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token.parse().unwrap());
    }
    request
}

/// Identities from client certificates and bearer tokens, and the policy's answer to each of
/// them for every kind of call, with the exact code; the policy is reloaded without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_get_exactly_what_the_policy_grants() {
    use pb::{subscriptions_client::SubscriptionsClient, translators_client::TranslatorsClient};
    use tonic::Code;
    let (mine, theirs) = (unique_topic("authz-mine"), unique_topic("authz-theirs"));
    create_topic(&mine, 1).await;
    create_topic(&theirs, 1).await;
    produce(&mine, &[Out::kv("k", Some("v"))]);
    let pki = certs("pki-authz", &["alice"]);
    let dir = scratch_dir("auth");
    let bob_token = "bob-s3cret-token";
    std::fs::write(
        dir.join("tokens.toml"),
        format!(
            "[[token]]\nidentity = \"bob\"\nsha256 = \"{}\"\ngroups = [\"uploaders\"]\n",
            tributary_server::sha256_hex(bob_token.as_bytes())
        ),
    )
    .unwrap();
    let policy = |alice_topics: &str| {
        format!(
            "[[grant]]\nidentities = [\"alice\"]\nread_topics = [{alice_topics}]\nuse_translators = [\"bob-*\"]\nown_subscriptions = [\"alice-*\"]\n\n\
             [[grant]]\ngroups = [\"uploaders\"]\nread_topics = [\"{mine}\", \"{theirs}\"]\nmanage_translators = [\"bob-*\"]\n"
        )
    };
    std::fs::write(dir.join("policy.toml"), policy(&format!("\"{mine}\""))).unwrap();

    let mut config = config(&[&mine, &theirs], Limits::default());
    config.tls.cert_file = Some(pki.join("server.pem"));
    config.tls.key_file = Some(pki.join("server.key"));
    config.tls.client_ca_file = Some(pki.join("ca.pem"));
    config.tls.client_auth = ClientAuth::Optional;
    config.auth.tokens_file = Some(dir.join("tokens.toml"));
    config.auth.policy_file = Some(dir.join("policy.toml"));
    config.auth.reload_interval_ms = 200;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tributary_server::serve(config, listener, async {
        let _ = stopped.await;
    }));

    let channel = |cert: bool| {
        let pki = pki.clone();
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&pki.join("ca.pem"))))
                .domain_name("localhost");
            if cert {
                tls = tls.identity(Identity::from_pem(read(&pki.join("alice.pem")), read(&pki.join("alice.key"))));
            }
            let endpoint = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
            loop {
                if let Ok(c) = endpoint.connect().await {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (alice, nobody) = (channel(true).await, channel(false).await);
    let bob = Some(format!("Bearer {bob_token}"));
    let bob = bob.as_deref();

    // Health and reflection are open to everyone.
    let mut health = tonic_health::pb::health_client::HealthClient::new(nobody.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        if status.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let describe = |channel: &Channel, token: Option<&str>, topics: Vec<String>| {
        let mut client = GatewayClient::new(channel.clone());
        let request = with_token(pb::DescribeTopicsRequest { topics }, token);
        async move { client.describe_topics(request).await.map(|r| r.into_inner()) }
    };
    let code = |r: Result<pb::DescribeTopicsResponse, tonic::Status>| r.map(|_| Code::Ok).unwrap_or_else(|s| s.code());

    // Authentication: none, malformed, unknown → UNAUTHENTICATED.
    for (token, what) in [
        (None, "no identity"),
        (Some("Basic Ym9iOmJvYg=="), "not a bearer token"),
        (Some("Bearer wrong"), "unknown token"),
    ] {
        let status = describe(&nobody, token, vec![mine.clone()]).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let status = describe(&alice, Some("Bearer wrong"), vec![mine.clone()]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "a bad token is refused even with a good certificate");

    // Reading topics.
    assert_eq!(code(describe(&alice, None, vec![mine.clone()]).await), Code::Ok);
    let status = describe(&alice, None, vec![theirs.clone()]).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&format!("read_topics for topic '{theirs}'")), "{}", status.message());
    let all = describe(&alice, None, Vec::new()).await.unwrap();
    assert_eq!(
        all.topics.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        vec![mine.clone()],
        "only what alice may read"
    );
    assert_eq!(code(describe(&nobody, bob, vec![mine.clone(), theirs.clone()]).await), Code::Ok);
    let mut gateway = GatewayClient::new(alice.clone());
    let snapshot_of = |topic: &str, translator: Option<&str>| pb::GetSnapshotRequest {
        translator: translator.map(|name| pb::TranslatorRef { name: name.into(), ..Default::default() }),
        ..topic_snapshot(topic)
    };
    let snapshot_code = |r: Result<Snapshot, tonic::Status>| r.map(|_| Code::Ok).unwrap_or_else(|s| s.code());
    assert_eq!(snapshot_code(snapshot(&mut gateway, snapshot_of(&mine, None)).await), Code::Ok);
    assert_eq!(snapshot_code(snapshot(&mut gateway, snapshot_of(&theirs, None)).await), Code::PermissionDenied);

    // Translators: bob (group uploaders) manages bob-*; alice uses them.
    let mut bob_translators = TranslatorsClient::new(nobody.clone());
    let upload = |name: &str| {
        let header = pb::UploadTranslatorRequest {
            part: Some(pb::upload_translator_request::Part::Header(pb::UploadHeader {
                name: name.into(),
                ..Default::default()
            })),
        };
        let chunk = pb::UploadTranslatorRequest {
            part: Some(pb::upload_translator_request::Part::Chunk(
                crate::translators::artifact("identity.wasm").into(),
            )),
        };
        tokio_stream::iter(vec![header, chunk])
    };
    bob_translators.upload(with_token(upload("bob-ident"), bob)).await.expect("bob manages bob-*");
    let status = bob_translators.upload(with_token(upload("ident"), bob)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut alice_translators = TranslatorsClient::new(alice.clone());
    let status = alice_translators.upload(upload("bob-other")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "alice may use, not upload: {status:?}");
    assert!(status.message().contains("manage_translators for translator 'bob-other'"), "{}", status.message());
    assert_eq!(snapshot_code(snapshot(&mut gateway, snapshot_of(&mine, Some("bob-ident"))).await), Code::Ok);
    assert_eq!(snapshot_code(snapshot(&mut gateway, snapshot_of(&mine, Some("ident"))).await), Code::PermissionDenied);
    let listed = alice_translators.list(pb::ListTranslatorsRequest {}).await.unwrap().into_inner();
    assert!(listed.translators.iter().all(|t| t.name.starts_with("bob-")), "only usable translators are listed");
    let status = alice_translators
        .delete(pb::DeleteTranslatorRequest { name: "bob-ident".into(), digest: String::new() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Subscription names: alice owns alice-*.
    let start = vec![pb::PartitionOffset { topic: mine.clone(), partition: 0, offset: 0 }];
    let named = |name: String| pb::SubscribeRequest {
        subscription_name: name,
        from_offsets: start.clone(),
        ..Default::default()
    };
    let own = format!("alice-{}", unique_topic("s"));
    Follower::start(&mut gateway, named(own.clone())).await.unwrap().next().await.unwrap().unwrap();
    let status = Follower::start(&mut gateway, named(unique_topic("bob-s"))).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut alice_subs = SubscriptionsClient::new(alice.clone());
    alice_subs.describe(pb::DescribeSubscriptionRequest { name: own.clone() }).await.expect("alice's own");
    let mut bob_subs = SubscriptionsClient::new(nobody.clone());
    let status =
        bob_subs.describe(with_token(pb::DescribeSubscriptionRequest { name: own.clone() }, bob)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let bobs = bob_subs.list(with_token(pb::ListSubscriptionsRequest {}, bob)).await.unwrap().into_inner();
    assert!(!bobs.subscriptions.iter().any(|s| s.name == own), "other callers' names are not listed");
    let status = bob_subs
        .commit(with_token(pb::CommitRequest { name: own.clone(), offsets: start.clone() }, bob))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The policy is reloaded: alice may now read the other topic too.
    std::fs::write(dir.join("policy.toml"), policy(&format!("\"{mine}\", \"{theirs}\""))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while code(describe(&alice, None, vec![theirs.clone()]).await) != Code::Ok {
        assert!(std::time::Instant::now() < deadline, "the new policy was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// JWT bearer tokens: verified against the issuer's public key or a key set, with expiry,
/// audience and issuer enforced; the `sub` claim is the identity and `groups` its groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_tokens_are_verified() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use tonic::Code;
    let topic = unique_topic("jwt");
    create_topic(&topic, 1).await;
    let dir = scratch_dir("jwt");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for name in ["issuer", "forger"] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ]);
        openssl(&["pkey", "-in", &format!("{name}.key"), "-pubout", "-out", &format!("{name}.pub")]);
    }
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[grant]]\nidentities = [\"carol\"]\nread_topics = [\"{topic}\"]\n\n[[grant]]\ngroups = [\"readers\"]\nread_topics = [\"{topic}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("jwks.json"),
        r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0LWtleS1mb3ItdGVzdHMtMzItYnl0ZXMtbG9uZw"}]}"#,
    )
    .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |sub: &str, exp: i64, aud: &str| serde_json::json!({"sub": sub, "exp": exp, "iss": "test-issuer", "aud": aud, "groups": if sub == "dave" { vec!["readers"] } else { vec![] }});
    let es256 = |key: &str, claims: serde_json::Value| {
        let pem = read(&dir.join(format!("{key}.key")));
        encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
    };
    let hs256 = |kid: &str, claims: serde_json::Value| {
        let header = Header { kid: Some(kid.into()), ..Header::new(Algorithm::HS256) };
        encode(&header, &claims, &EncodingKey::from_secret(b"secret-key-for-tests-32-bytes-long")).unwrap()
    };

    let start = |jwks: bool| {
        let mut config = config(&[&topic], Limits::default());
        config.auth.policy_file = Some(dir.join("policy.toml"));
        config.auth.jwt.issuer = Some("test-issuer".into());
        config.auth.jwt.audience = Some("tributary".into());
        match jwks {
            true => config.auth.jwt.jwks_file = Some(dir.join("jwks.json")),
            false => config.auth.jwt.public_key_file = Some(dir.join("issuer.pub")),
        }
        Gateway::start_with(config)
    };
    let describe = |gateway_addr: SocketAddr, token: String| {
        let topic = topic.clone();
        async move {
            let mut client = connect(gateway_addr).await;
            let request =
                with_token(pb::DescribeTopicsRequest { topics: vec![topic] }, Some(&format!("Bearer {token}")));
            client.describe_topics(request).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_string()))
        }
    };

    let gateway = start(false).await;
    describe(gateway.addr, es256("issuer", claims("carol", now + 600, "tributary")))
        .await
        .expect("a valid JWT is served");
    describe(gateway.addr, es256("issuer", claims("dave", now + 600, "tributary")))
        .await
        .expect("granted through its group");
    for (token, why) in [
        (es256("issuer", claims("carol", now - 600, "tributary")), "ExpiredSignature"),
        (es256("forger", claims("carol", now + 600, "tributary")), "InvalidSignature"),
        (es256("issuer", claims("carol", now + 600, "someone-else")), "InvalidAudience"),
        ("e30.e30.c2ln".to_string(), "refused"),
        (hs256("k1", claims("carol", now + 600, "tributary")), "InvalidAlgorithm"),
    ] {
        let (code, message) = describe(gateway.addr, token).await.unwrap_err();
        assert_eq!(code, Code::Unauthenticated, "{why}: {message}");
        assert!(message.contains(why), "{why}: {message}");
    }
    let (code, _) = describe(gateway.addr, es256("issuer", claims("eve", now + 600, "tributary"))).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "authenticated, but granted nothing");
    gateway.stop().await;

    let gateway = start(true).await;
    describe(gateway.addr, hs256("k1", claims("carol", now + 600, "tributary"))).await.expect("a key of the set");
    let (code, message) =
        describe(gateway.addr, hs256("k2", claims("carol", now + 600, "tributary"))).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("no key 'k2'"), "{message}");
}

/// The gateway reads A's topics, and keeps named subscriptions' positions, through a SASL_SSL
/// listener of a real broker (SCRAM-SHA-512 and PLAIN over TLS); a wrong password keeps it
/// unready and says Kafka is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reads_kafka_through_a_sasl_ssl_listener() {
    use tonic::Code;
    let data = scratch_dir("kafka-sasl-ssl");
    let (_broker, plain) = crate::hardening::OwnBroker::start_with_sasl_ssl(19592, data.clone());
    let topic = unique_topic("sasl");
    create_topic_at(&plain, &topic, 2).await;
    let writer = Writer::new_at(&plain, &topic);
    for i in 0..100 {
        writer.send(&Out::kv(&format!("k{i}"), Some("v")));
    }
    writer.flush();
    let secured = |mechanism: &str, password: &str| {
        let mut config = config(&[&topic], Limits::default());
        config.kafka.bootstrap_servers = "127.0.0.1:19594".into();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", mechanism),
            ("sasl.username", "gateway"),
            ("sasl.password", password),
            ("ssl.ca.location", data.join("tls/ca.pem").to_str().unwrap()),
        ] {
            config.kafka.properties.insert(k.into(), v.into());
        }
        config
    };
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let gateway = Gateway::start_with(secured(mechanism, "gateway-secret")).await;
        let mut client = gateway.client().await;
        let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
        assert_eq!(snap.entries.len(), 100, "{mechanism}");
        // Named subscriptions commit and read their positions through the same listener.
        let name = unique_topic("sasl-sub");
        let request = pb::SubscribeRequest {
            subscription_name: name.clone(),
            from_offsets: snap.offsets.clone(),
            ..Default::default()
        };
        let mut follower = Follower::start(&mut client, request).await.unwrap();
        follower.next().await.unwrap().unwrap();
        let channel = Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
        let mut subs = pb::subscriptions_client::SubscriptionsClient::new(channel);
        let info = subs.describe(pb::DescribeSubscriptionRequest { name }).await.unwrap().into_inner();
        assert_eq!(
            offset_map(
                &info
                    .partitions
                    .iter()
                    .map(|p| pb::PartitionOffset {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.committed_offset
                    })
                    .collect::<Vec<_>>()
            ),
            offset_map(&snap.offsets)
        );
        gateway.stop().await;
    }

    // A wrong password: not ready, and every call that needs Kafka says so at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tributary_server::serve(secured("SCRAM-SHA-512", "wrong"), listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = connect(addr).await;
    let status = client.describe_topics(pb::DescribeTopicsRequest { topics: vec![topic] }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
