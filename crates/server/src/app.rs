//! The application: [`App::build`] connects to Kafka, starts loading the view and opens the
//! translator registry; [`App::serve`] serves the gRPC services, health and reflection on one
//! port until shutdown.
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
use tracing::{info, Instrument};
use tributary_core::{events, positions::Positions, subscribe::Shared, view::View, watermarks::WatermarkCache, Error};
use tributary_kafka::{ingest::Ingest, GroupPositions, Kafka};
use tributary_wasm::{Host, Registry};

use crate::{
    api::{
        lag::StreamLags, subscriptions::Durable, wire::GatewayRoutes, GatewayService, SubscriptionsService,
        TranslatorsService,
    },
    auth::Auth,
    config::Config,
    connections, pb, telemetry,
    tls::Tls,
};

/// The health service name whose status is whether Kafka answered the gateway's last request.
pub const KAFKA_HEALTH_SERVICE: &str = "tributary.kafka";

/// Longest wait for in-flight streams after shutdown starts.
pub const DRAIN: Duration = Duration::from_secs(10);

/// A gateway, built and ready to serve.
pub struct App {
    config: Config,
    view: Arc<View>,
    ingest: Ingest,
    shared: Shared,
    registry: Arc<Registry>,
    /// Where named subscriptions' positions are kept (consumer groups).
    positions: Arc<dyn Positions>,
    /// Cancelled when shutdown starts; ingest and every subscription watch it.
    shutdown: CancellationToken,
    /// Every stream task and ingest: "drained" is when the last one has ended.
    tasks: TaskTracker,
}

impl App {
    /// Creates the Kafka clients and opens the translator registry. Fails (with a message naming
    /// what to fix) on a configuration Kafka's client rejects or a registry that cannot be read.
    /// Kafka itself need not be up: ingest keeps trying to reach it once serving starts.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let view = Arc::new(View::new(&config.kafka.topics));
        let log = Arc::new(Kafka::new(&config.kafka)?);
        let ingest = Ingest::new(&config.kafka, &config.limits, view.clone())?;
        let host = Host::new(&config.translators).map_err(Error::Internal)?;
        let registry = Arc::new(Registry::open(&config.translators.data_dir, host)?);
        let shutdown = CancellationToken::new();
        let watermarks = WatermarkCache::new(log.clone(), view.clone());
        let shared = Shared {
            limits: config.limits.clone(),
            log,
            watermarks,
            catchup_pool: Arc::new(tokio::sync::Semaphore::new(config.limits.max_catchup_readers)),
            shutdown: shutdown.clone(),
            wire: Some(Arc::new(crate::api::wire::encode_record)),
        };
        let positions = Arc::new(GroupPositions::new(&config.kafka)?);
        Ok(Self { config, view, ingest, shared, registry, positions, shutdown, tasks: TaskTracker::new() })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the module docs).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Self { config, view, ingest, shared, registry, positions, shutdown: token, tasks } = self;
        // The recorder first: counts made before it is installed are lost (a small topic loads
        // in milliseconds).
        if let Some(listen) = config.metrics.listen {
            telemetry::install(listen).map_err(|e| Error::invalid("metrics.listen", e))?;
        }
        tasks.spawn(ingest.run(token.clone()).instrument(tracing::info_span!("ingest")));
        let period = Duration::from_millis(config.kafka.metadata_refresh_ms);
        tasks.spawn(shared.watermarks.clone().run(period, token.clone()).instrument(tracing::info_span!("watermarks")));

        let buffers = tributary_core::buffer::Budget::new(config.limits.stream_buffer_total_bytes);
        tokio::spawn(telemetry::gauges(
            view.clone(),
            shared.catchup_pool.clone(),
            config.limits.max_catchup_readers,
            buffers.clone(),
            token.clone(),
        ));
        let auth = Auth::load(&config.auth).map_err(|e| Error::invalid("auth", e))?;
        tokio::spawn(auth.clone().watch(token.clone()).instrument(tracing::info_span!("auth")));
        let tls = match config.tls.enabled() {
            true => {
                let tls = Tls::load(&config.tls).map_err(|e| Error::invalid("tls", e))?;
                tokio::spawn(tls.clone().watch(token.clone()).instrument(tracing::info_span!("tls")));
                info!(mutual = config.tls.client_ca_file.is_some(), "serving TLS");
                Some(tls)
            }
            false if !config.listen.ip().is_loopback() => {
                events::emit(&events::PlaintextOnNetwork { listen: config.listen.to_string() });
                None
            }
            false => None,
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_not_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        {
            let (view, health) = (view.clone(), health.clone());
            tokio::spawn(async move {
                let mut ready = view.ready_watch();
                if ready.wait_for(|r| *r).await.is_ok() {
                    health.set_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
                    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                }
            });
        }
        {
            // Kafka's reachability as its own health service, for load balancers and alerts: the
            // gateway ("" above) keeps serving its view while Kafka is away.
            let mut reachable = shared.watermarks.reachable();
            let token = token.clone();
            tokio::spawn(async move {
                loop {
                    let status = match *reachable.borrow_and_update() {
                        true => tonic_health::ServingStatus::Serving,
                        false => tonic_health::ServingStatus::NotServing,
                    };
                    health.set_service_status(KAFKA_HEALTH_SERVICE, status).await;
                    tokio::select! {
                        changed = reachable.changed() => if changed.is_err() { return },
                        _ = token.cancelled() => return,
                    }
                }
            });
        }
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(|e| Error::Internal(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| Error::Internal(e.to_string()))?;

        let durable = Durable::new(positions, view.clone(), shared.watermarks.clone());
        let lags = StreamLags::default();
        tokio::spawn(telemetry::lags(durable.clone(), lags.clone(), token.clone()));
        let gateway = GatewayRoutes::new(
            GatewayService::new(view, shared, registry.clone(), tasks.clone(), durable.clone(), auth.clone(), buffers)
                .with_lags(lags),
            config.limits.max_request_bytes,
        );
        let subscriptions =
            pb::subscriptions_server::SubscriptionsServer::new(SubscriptionsService::new(durable, auth.clone()))
                .max_decoding_message_size(config.limits.max_request_bytes);
        let translators = pb::translators_server::TranslatorsServer::new(TranslatorsService::new(
            registry,
            token.clone(),
            auth.clone(),
        ))
        .max_decoding_message_size(config.limits.max_request_bytes);

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
        let server = tonic::transport::Server::builder()
            // A peer that stops answering pings is closed within 40 s, freeing its slot.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
            .layer(connections::CallsLayer(auth))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(gateway)
            .add_service(translators)
            .add_service(subscriptions)
            .serve_with_incoming_shutdown(
                connections::incoming(
                    listener,
                    config.limits.max_connections,
                    config.limits.handshake_timeout(),
                    config.limits.idle_timeout(),
                    tls,
                    token.clone(),
                ),
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
