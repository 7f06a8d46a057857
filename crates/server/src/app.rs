//! The application: [`App::build`] makes everything a gateway needs and fails, with a message
//! naming what to fix, before anything runs: the Kafka clients, the translator registry, auth,
//! TLS, the services, health, reflection, the router and the metrics exporter. [`App::serve`]
//! only starts the tasks (ingest, watermarks, gauges, file watches, health updaters), serves the
//! gRPC services, health and reflection on one port until shutdown, and drains.
//!
//! # Shutdown protocol
//!
//! 1. The caller's `shutdown` future resolves: `App::shutdown` (a [`CancellationToken`]) is
//!    cancelled.
//! 2. The server stops accepting connections. Ingest stops. Every subscription sees the token and
//!    ends with `UNAVAILABLE` and the offsets to resume from; snapshots run to their end.
//! 3. Every stream task is tracked by `App::tasks` (a [`TaskTracker`]): the drain ends when the
//!    last one has finished and the server has closed its connections, or after [`DRAIN`],
//!    whichever comes first.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tracing::{info, Instrument};
use tributary_checkpoint::{Checkpointer, Store};
use tributary_core::{
    buffer::Budget, durable::Durable, positions::Positions, subscribe::Shared, view::View, watermarks::WatermarkCache,
    Error,
};
use tributary_kafka::{group::Membership, ingest::Ingest, GroupPositions, Kafka};
use tributary_wasm::{Host, Registry};

use crate::{
    api::{lag::StreamLags, routes::GatewayRoutes, GatewayService, SubscriptionsService, TranslatorsService},
    auth::Auth,
    calls,
    config::Config,
    connections, events, pb,
    sharding::Topology,
    telemetry,
    tls::Tls,
};

/// The health service name whose status is whether Kafka answered the gateway's last request.
pub const KAFKA_HEALTH_SERVICE: &str = "tributary.kafka";

/// The health service that is `NOT_SERVING` while ingest is not keeping up with Kafka (some
/// partition's lag grew with its newest record over 5 s old: the `view_falling_behind` event).
pub const INGEST_HEALTH_SERVICE: &str = "tributary.ingest";

/// Keeps health service `service` `SERVING` while `up` is true and `NOT_SERVING` while it is
/// false, until `token` is cancelled.
async fn health_of(
    health: HealthReporter,
    service: &'static str,
    mut up: tokio::sync::watch::Receiver<bool>,
    token: CancellationToken,
) {
    loop {
        let status = match *up.borrow_and_update() {
            true => tonic_health::ServingStatus::Serving,
            false => tonic_health::ServingStatus::NotServing,
        };
        health.set_service_status(service, status).await;
        tokio::select! {
            changed = up.changed() => if changed.is_err() { return },
            _ = token.cancelled() => return,
        }
    }
}

/// Longest wait for in-flight streams after shutdown starts.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The router of every service, behind the call-admission layer.
type Router = tonic::transport::server::Router<Stack<calls::CallsLayer, Identity>>;

/// A gateway, built and ready to serve.
pub struct App {
    config: Config,
    view: Arc<View>,
    ingest: Ingest,
    /// Writes the view to `[checkpoint] dir` (none without one).
    checkpointer: Option<Checkpointer>,
    /// What the streams share: serve runs its watermark refresh and samples its catch-up pool.
    shared: Shared,
    auth: Arc<Auth>,
    /// `None` when serving plain TCP.
    tls: Option<Arc<Tls>>,
    /// The gateway's health, `NOT_SERVING` until the view is ready.
    health: HealthReporter,
    /// Named subscriptions, whose committed lag [`telemetry::lags`] samples.
    durable: Arc<Durable>,
    lags: StreamLags,
    /// What all streams' buffers share (`limits.stream_buffer_total_bytes`).
    buffers: Budget,
    router: Router,
    /// Cancelled when shutdown starts; ingest and every subscription watch it.
    shutdown: CancellationToken,
    /// Every stream task and ingest: "drained" is when the last one has ended.
    tasks: TaskTracker,
    /// Who holds which partition; started in [`App::serve`], once the address is known.
    topology: Arc<Topology>,
    /// The HTTP log, when `[http] listen` is set.
    http: Option<Arc<crate::web::log::HttpLog>>,
}

impl App {
    /// Creates the Kafka clients, opens the translator registry, loads auth and TLS, builds the
    /// services and installs the metrics exporter. Fails (with a message naming what to fix) on a
    /// configuration Kafka's client rejects, a registry that cannot be read, or auth or TLS files
    /// that do not load; nothing runs yet. Kafka itself need not be up: ingest keeps trying to
    /// reach it once serving starts.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let limits = &config.limits.core;
        let view = Arc::new(View::new(&config.kafka.topics));
        let mut log = Kafka::new(&config.kafka)?;
        let mut ingest = Ingest::new(&config.kafka, limits, view.clone())?;
        if config.schemas.enabled() {
            let decode = Arc::new(tributary_schema::Registry::new(&config.schemas));
            log = log.decoding(decode.clone());
            ingest = ingest.decoding(decode, Duration::from_millis(config.schemas.retry_ms));
        }
        let log = Arc::new(log);
        let mut checkpointer = None;
        if let Some(dir) = config.checkpoint.dir.clone() {
            // Reading back a large checkpoint takes a while: off the async threads.
            let topics: Vec<Arc<str>> = view.topic_names().iter().map(|t| Arc::from(t.as_str())).collect();
            let (store, images) = tokio::task::spawn_blocking(move || Store::open(&dir, &topics))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::invalid("checkpoint.dir", e.to_string()))?;
            info!(partitions = images.len(), "checkpoint read");
            let read = images.keys().cloned().collect();
            ingest = ingest.resume_from(images);
            checkpointer = Some(Checkpointer::new(store, read, view.clone(), &config.checkpoint));
        }
        let host = Host::new(&config.translators).map_err(Error::Internal)?;
        let registry = Arc::new(Registry::open(&config.translators.data_dir, host)?);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let watermarks = WatermarkCache::new(log.clone(), view.clone());
        let shared = Shared {
            limits: limits.clone(),
            log,
            watermarks,
            catchup_pool: Arc::new(tokio::sync::Semaphore::new(limits.max_catchup_readers)),
            shutdown: shutdown.clone(),
            wire: Some(Arc::new(crate::api::encode::RecordEncoder)),
        };
        let positions: Arc<dyn Positions> = Arc::new(GroupPositions::new(&config.kafka)?);
        let auth = Auth::load(&config.auth).map_err(|e| Error::invalid("auth", e))?;
        let tls = match config.tls.enabled() {
            true => Some(Tls::load(&config.tls).map_err(|e| Error::invalid("tls", e))?),
            false => None,
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_not_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(|e| Error::Internal(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| Error::Internal(e.to_string()))?;

        let buffers = Budget::new(limits.stream_buffer_total_bytes);
        let durable = Durable::new(positions, view.clone(), shared.watermarks.clone());
        let lags = StreamLags::default();
        let topology = Arc::new(Topology::default());
        let max_request_bytes = config.limits.connections.max_request_bytes;
        let service = GatewayService::new(
            view.clone(),
            shared.clone(),
            registry.clone(),
            tasks.clone(),
            durable.clone(),
            auth.clone(),
            buffers.clone(),
        )
        .with_lags(lags.clone())
        .with_topology(topology.clone());
        let http =
            config.http.listen.map(|_| Arc::new(crate::web::log::HttpLog::new(service.clone(), config.http.clone())));
        let gateway = GatewayRoutes::new(service, max_request_bytes);
        let subscriptions = pb::subscriptions_server::SubscriptionsServer::new(SubscriptionsService::new(
            durable.clone(),
            auth.clone(),
        ))
        .max_decoding_message_size(max_request_bytes);
        let translators = pb::translators_server::TranslatorsServer::new(TranslatorsService::new(
            registry,
            shutdown.clone(),
            auth.clone(),
        ))
        .max_decoding_message_size(max_request_bytes);
        let router = tonic::transport::Server::builder()
            // A peer that stops answering pings is closed within 40 s, freeing its slot.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(config.limits.connections.max_streams_per_connection))
            .layer(calls::CallsLayer(auth.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(gateway)
            .add_service(translators)
            .add_service(subscriptions);

        // Last, once everything else has been checked: it starts the metrics listener. It comes
        // before serving, since counts made before it is installed are lost (a small topic loads
        // in milliseconds).
        if let Some(listen) = config.metrics.listen {
            telemetry::install(listen).map_err(|e| Error::invalid("metrics.listen", e))?;
        }
        Ok(Self {
            config,
            view,
            ingest,
            checkpointer,
            shared,
            auth,
            tls,
            health,
            durable,
            lags,
            buffers,
            router,
            shutdown,
            tasks,
            topology,
            http,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the module docs).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Self {
            config,
            view,
            ingest,
            checkpointer,
            shared,
            auth,
            tls,
            health,
            durable,
            lags,
            buffers,
            router,
            shutdown: token,
            tasks,
            topology,
            http,
        } = self;
        // The address clients reach this replica at: known once bound (a port 0 is picked then).
        let address = config.sharding.advertised(listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?);
        let ingest = match config.sharding.member(address.clone()) {
            None => {
                topology.start(address, None);
                ingest
            }
            Some(member) => {
                let (membership, changes) = Membership::join(&config.kafka, &member)?;
                info!(group = %member.group, instance_id = %member.instance_id, address = %address, "joined the sharding group");
                topology.start(address, Some(membership));
                ingest.sharded(changes)
            }
        };
        tasks.spawn(ingest.run(token.clone()).instrument(tracing::info_span!("ingest")));
        if let Some(checkpointer) = checkpointer {
            tasks.spawn(checkpointer.run(token.clone()).instrument(tracing::info_span!("checkpoint")));
        }
        let period = Duration::from_millis(config.kafka.metadata_refresh_ms);
        tasks.spawn(shared.watermarks.clone().run(period, token.clone()).instrument(tracing::info_span!("watermarks")));
        tokio::spawn(telemetry::gauges(
            view.clone(),
            shared.catchup_pool.clone(),
            config.limits.core.max_catchup_readers,
            buffers,
            token.clone(),
        ));
        tokio::spawn(auth.watch(token.clone()).instrument(tracing::info_span!("auth")));
        match &tls {
            Some(tls) => {
                tokio::spawn(tls.clone().watch(token.clone()).instrument(tracing::info_span!("tls")));
                info!(mutual = config.tls.client_ca_file.is_some(), "serving TLS");
            }
            None if !config.listen.ip().is_loopback() => {
                events::emit(&events::PlaintextOnNetwork { listen: config.listen.to_string() });
            }
            None => {}
        }
        {
            let health = health.clone();
            tokio::spawn(async move {
                let mut ready = view.ready_watch();
                // Ready once the view has loaded; not ready again only when a sharded replica
                // leaves its group (fenced).
                loop {
                    if ready.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    health.set_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
                    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                    if ready.wait_for(|r| !*r).await.is_err() {
                        return;
                    }
                    health.set_not_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
                    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                }
            });
        }
        // Kafka's reachability, and whether ingest keeps up with Kafka, as health services of
        // their own, for load balancers and alerts: the gateway ("" above) keeps serving its view
        // while Kafka is away or ahead.
        tokio::spawn(health_of(health.clone(), KAFKA_HEALTH_SERVICE, shared.watermarks.reachable(), token.clone()));
        tokio::spawn(health_of(health, INGEST_HEALTH_SERVICE, shared.watermarks.keeping_up(), token.clone()));
        tokio::spawn(telemetry::lags(durable, lags, token.clone()));
        if let (Some(http), Some(listen)) = (http, config.http.listen) {
            let listener =
                TcpListener::bind(listen).await.map_err(|e| Error::invalid("http.listen", format!("{listen}: {e}")))?;
            let max = config.http.max_connections;
            tokio::spawn(crate::web::serve(listener, http, max, tls.clone(), token.clone()));
        }

        let signal = {
            let token = token.clone();
            async move {
                tokio::select! {
                    _ = shutdown => info!("shutting down"),
                    _ = token.cancelled() => {},
                }
                token.cancel();
            }
        };
        let server = router.serve_with_incoming_shutdown(
            connections::incoming(listener, &config.limits.connections, tls, token.clone()),
            signal,
        );
        tokio::pin!(server);
        let mut deadline = None;
        let result = tokio::select! {
            r = &mut server => r.map_err(|e| Error::Internal(format!("grpc server: {e}"))),
            _ = token.cancelled() => {
                let at = Instant::now() + DRAIN;
                deadline = Some(at);
                match tokio::time::timeout_at(at, &mut server).await {
                    Ok(r) => r.map_err(|e| Error::Internal(format!("grpc server: {e}"))),
                    Err(_) => {
                        events::emit(&events::DrainTimeout { what: "in-flight calls", open: 0 });
                        Ok(())
                    }
                }
            }
        };
        // The server has stopped: wait for stream tasks still writing their last message, within
        // what is left of the drain deadline.
        token.cancel();
        tasks.close();
        let deadline = deadline.unwrap_or_else(|| Instant::now() + DRAIN);
        if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
            events::emit(&events::DrainTimeout { what: "stream tasks", open: tasks.len() });
        }
        result
    }
}

/// Builds the gateway from `config` and serves it on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    App::build(config).await?.serve(listener, shutdown).await
}
