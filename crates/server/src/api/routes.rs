//! Which code answers each `tributary.v1.Gateway` method. tonic's generated server encodes its
//! own response structs, so `Subscribe` and `GetSnapshot` are taken here and served with a
//! [`WireCodec`] (their responses written by [`super::encode`] and [`super::chunker`]); every other
//! method goes to the generated server.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use futures::{future::BoxFuture, stream::BoxStream};
use tonic::{
    body::Body,
    server::{Grpc, NamedService, ServerStreamingService},
    Status,
};

use crate::{
    api::{chunker::Chunk, codec::WireCodec, encode::SubscribeWire, gateway::GatewayService},
    pb,
};

/// The `tributary.v1.Gateway` service with `Subscribe` and `GetSnapshot` served from
/// hand-encoded responses.
#[derive(Clone)]
pub struct GatewayRoutes {
    generated: pb::gateway_server::GatewayServer<GatewayService>,
    service: GatewayService,
    max_request_bytes: usize,
}

impl GatewayRoutes {
    pub fn new(service: GatewayService, max_request_bytes: usize) -> Self {
        let generated =
            pb::gateway_server::GatewayServer::new(service.clone()).max_decoding_message_size(max_request_bytes);
        Self { generated, service, max_request_bytes }
    }
}

const SUBSCRIBE_PATH: &str = "/tributary.v1.Gateway/Subscribe";
const SNAPSHOT_PATH: &str = "/tributary.v1.Gateway/GetSnapshot";

impl NamedService for GatewayRoutes {
    const NAME: &'static str = pb::gateway_server::SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for GatewayRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (service, max) = (self.service.clone(), Some(self.max_request_bytes));
        match request.uri().path() {
            SUBSCRIBE_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(WireCodec::<SubscribeWire, pb::SubscribeRequest>::default())
                    .apply_max_message_size_config(max, None);
                Ok(grpc.server_streaming(SubscribeMethod(service), request).await)
            }),
            SNAPSHOT_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(WireCodec::<Chunk, pb::GetSnapshotRequest>::default())
                    .apply_max_message_size_config(max, None);
                Ok(grpc.server_streaming(SnapshotMethod(service), request).await)
            }),
            _ => self.generated.call(request),
        }
    }
}

struct SubscribeMethod(GatewayService);

impl ServerStreamingService<pb::SubscribeRequest> for SubscribeMethod {
    type Response = SubscribeWire;
    type ResponseStream = BoxStream<'static, Result<SubscribeWire, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::SubscribeRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.subscribe_wire(request).await })
    }
}

struct SnapshotMethod(GatewayService);

impl ServerStreamingService<pb::GetSnapshotRequest> for SnapshotMethod {
    type Response = Chunk;
    type ResponseStream = BoxStream<'static, Result<Chunk, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::GetSnapshotRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.snapshot_wire(request).await })
    }
}
