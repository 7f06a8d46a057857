//! The layer every call passes before any service sees it: it counts the call among its
//! connection's open calls (for the idle timeout), authenticates it ([`Auth::admit`]), and
//! measures it (`tributary_grpc_requests_total`, `tributary_grpc_request_duration_seconds`, the
//! call's span) until its response body ends.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{future::BoxFuture, FutureExt};
use tracing::Instrument;

use crate::{
    auth::Auth,
    connections::{CallGuard, ConnectionInfo},
};

/// A tower layer in front of every service that admits each call: counts it among its
/// connection's open calls (for the idle timeout) and authenticates it ([`Auth::admit`]).
#[derive(Clone)]
pub struct CallsLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for CallsLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit { inner, auth: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let guard = request.extensions().get::<ConnectionInfo>().map(ConnectionInfo::open_call);
        let mut record = CallRecord::new(request.uri().path());
        let peer = request.extensions().get::<ConnectionInfo>().and_then(|info| info.tcp.remote_addr());
        // Everything the call does is in its span: its log lines, its stream's task.
        let span = tracing::info_span!("call", method = record.method, peer = ?peer);
        record.span = span.clone();
        let _entered = span.enter();
        if let Some(refused) = self.auth.admit(&mut request) {
            record.code = grpc_status(refused.headers());
            return async move { Ok(refused) }.boxed();
        }
        let response = self.inner.call(request);
        drop(_entered);
        async move {
            let response = response.await?;
            // A status in the headers is a trailers-only response: the call failed at once.
            record.code = grpc_status(response.headers());
            // The call lasts as long as its response body: a stream ends when its body does.
            Ok(response.map(|body| tonic::body::Body::new(GuardedBody { body, _guard: guard, record })))
        }
        .instrument(span)
        .boxed()
    }
}

/// The target of the access log (one debug line per call): the operations docs tell operators to
/// turn it on with `RUST_LOG=info,tributary_server::connections=debug`, the module it was
/// written in before the call layer had its own.
const ACCESS_LOG: &str = "tributary_server::connections";

/// The `grpc-status` in headers or trailers, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call's method, start and status; counted in the gRPC metrics when it ends.
struct CallRecord {
    method: &'static str,
    started: std::time::Instant,
    code: Option<i32>,
    /// The call's span: its stream's work and its end are logged in it.
    span: tracing::Span,
}

impl CallRecord {
    fn new(path: &str) -> Self {
        Self { method: method_label(path), started: std::time::Instant::now(), code: None, span: tracing::Span::none() }
    }
}

/// The method label of a path: known methods only, so hostile paths cannot add label values.
fn method_label(path: &str) -> &'static str {
    const METHODS: &[&str] = &[
        "/tributary.v1.Gateway/DescribeTopics",
        "/tributary.v1.Gateway/GetSnapshot",
        "/tributary.v1.Gateway/Subscribe",
        "/tributary.v1.Gateway/GetTopology",
        "/tributary.v1.Translators/Upload",
        "/tributary.v1.Translators/List",
        "/tributary.v1.Translators/Describe",
        "/tributary.v1.Translators/Delete",
        "/tributary.v1.Subscriptions/Commit",
        "/tributary.v1.Subscriptions/List",
        "/tributary.v1.Subscriptions/Describe",
        "/tributary.v1.Subscriptions/Delete",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ];
    match METHODS.iter().find(|m| **m == path) {
        Some(m) => &m[1..],
        None if path.starts_with("/grpc.reflection.") => "reflection",
        None => "other",
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // No status at all: the client went away first.
        let code = self.code.map_or(tonic::Code::Cancelled, tonic::Code::from_i32);
        let _entered = self.span.enter();
        tracing::debug!(target: ACCESS_LOG, code = ?code, seconds = self.started.elapsed().as_secs_f64(), "call ended");
        metrics::counter!("tributary_grpc_requests_total", "method" => self.method, "code" => format!("{code:?}"))
            .increment(1);
        metrics::histogram!("tributary_grpc_request_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

struct GuardedBody {
    body: tonic::body::Body,
    _guard: Option<CallGuard>,
    record: CallRecord,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let _entered = this.record.span.enter();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(code) = f.trailers_ref().and_then(grpc_status) {
                this.record.code = Some(code);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
