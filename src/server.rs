//! Wires the gateway together: ingest, the gRPC services (gateway, health, reflection) on one
//! port, and shutdown.
//!
//! Shutdown protocol: the caller's `shutdown` future resolves; the `stop` watch flips to true;
//! ingest stops, every subscription ends with UNAVAILABLE and its resume offsets, and the server
//! drains in-flight calls for at most `DRAIN` before returning.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::{
    api::GatewayService, config::Config, error::Error, ingest, kafka, pb, registry::Registry, subscribe::Shared,
    translate, translators_api::TranslatorsService, view::View,
};

/// Longest wait for in-flight calls after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let view = Arc::new(View::new(&config.kafka.topics));
    let (stop_tx, stop) = watch::channel(false);
    let metadata = Arc::new(kafka::metadata_client(&config.kafka)?);
    let ingest = ingest::start(&config, view.clone(), stop.clone()).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    {
        let view = view.clone();
        tokio::spawn(async move {
            let mut ready = view.ready_watch();
            if ready.wait_for(|r| *r).await.is_ok() {
                health.set_serving::<pb::gateway_server::GatewayServer<GatewayService>>().await;
                health.set_service_status("", tonic_health::ServingStatus::Serving).await;
            }
        });
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Internal(e.to_string()))?;

    let shared = Shared {
        catchup_pool: Arc::new(tokio::sync::Semaphore::new(config.limits.max_catchup_readers)),
        limits: config.limits.clone(),
        kafka: config.kafka.clone(),
        metadata,
        shutdown: stop.clone(),
    };
    let host = translate::Host::new(&config.translators).map_err(Error::Internal)?;
    let registry = Arc::new(Registry::open(&config.translators.data_dir, host)?);
    let gateway = pb::gateway_server::GatewayServer::new(GatewayService::new(
        view,
        shared,
        registry.clone(),
        config.translators.batch_records,
    ))
    .max_decoding_message_size(config.limits.max_request_bytes);
    let translators = pb::translators_server::TranslatorsServer::new(TranslatorsService::new(registry))
        .max_decoding_message_size(config.limits.max_request_bytes);

    let mut drained = stop.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        // Keep the sender alive until the server is done, so receivers see `true`, not a close.
        std::mem::forget(stop_tx);
    };
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(gateway)
        .add_service(translators)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async { let _ = drained.wait_for(|s| *s).await; tokio::time::sleep(DRAIN).await } => {
            warn!("in-flight calls did not finish within {DRAIN:?}; stopping anyway");
            Ok(())
        }
    };
    let _ = ingest.await;
    result.map_err(|e| Error::Internal(format!("grpc server: {e}")))
}
