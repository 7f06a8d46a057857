//! The `tributary.v1.Translators` gRPC service: upload (client-streaming), list, describe, delete.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tributary_core::Error;
use tributary_wasm::{registry, Cancel, Registry};

use crate::{
    api::{convert, status::status},
    auth::{audit, Auth, Caller, Permission},
    pb,
};

#[derive(Clone)]
pub struct TranslatorsService {
    registry: Arc<Registry>,
    /// Uploads being received or compiled (`translators.max_concurrent_uploads`).
    uploads: Arc<Semaphore>,
    /// Cancelled when the gateway starts to stop: uploads end at once, their compiles killed.
    shutdown: CancellationToken,
    /// Who may upload, delete and see which translators.
    auth: Arc<Auth>,
}

impl TranslatorsService {
    pub fn new(registry: Arc<Registry>, shutdown: CancellationToken, auth: Arc<Auth>) -> Self {
        let uploads = Arc::new(Semaphore::new(registry.config().max_concurrent_uploads));
        Self { registry, uploads, shutdown, auth }
    }

    /// Receives an upload within `translators.upload_timeout_ms`.
    async fn receive_in_time(
        &self,
        caller: &Caller,
        stream: Streaming<pb::UploadTranslatorRequest>,
    ) -> Result<(pb::UploadHeader, Vec<u8>), Error> {
        let limit = Duration::from_millis(self.registry.config().upload_timeout_ms);
        tokio::time::timeout(limit, self.receive(caller, stream)).await.map_err(|_| {
            Error::ResourceExhausted(format!(
                "the upload did not finish within {limit:?} (translators.upload_timeout_ms); send the whole component, then close the stream"
            ))
        })?
    }

    /// Reads the header and every chunk, within the size limit.
    async fn receive(
        &self,
        caller: &Caller,
        mut stream: Streaming<pb::UploadTranslatorRequest>,
    ) -> Result<(pb::UploadHeader, Vec<u8>), Error> {
        use pb::upload_translator_request::Part;
        let max = self.registry.max_component_bytes();
        let header = match stream.message().await.map_err(|s| Error::invalid("header", s.message().to_string()))? {
            Some(pb::UploadTranslatorRequest { part: Some(Part::Header(h)) }) => h,
            _ => {
                return Err(Error::invalid(
                    "header",
                    "the first message of an upload must be the header (name, size, sha256)",
                ))
            }
        };
        registry::check_translator_name(&header.name).map_err(|m| Error::invalid("header.name", m))?;
        // Before any byte of the component is received.
        self.auth.check(caller, Permission::ManageTranslator(&header.name))?;
        let too_large = |size: u64| {
            Error::ResourceExhausted(format!(
                "the component is {size} bytes; this gateway accepts at most {max} (translators.max_component_bytes)"
            ))
        };
        if header.size > max as u64 {
            return Err(too_large(header.size));
        }
        let mut bytes = Vec::with_capacity(header.size as usize);
        while let Some(message) =
            stream.message().await.map_err(|s| Error::invalid("chunk", s.message().to_string()))?
        {
            match message.part {
                Some(Part::Chunk(chunk)) => {
                    if bytes.len() + chunk.len() > max {
                        return Err(too_large((bytes.len() + chunk.len()) as u64));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                _ => return Err(Error::invalid("header", "only the first message of an upload may be the header")),
            }
        }
        if bytes.is_empty() {
            return Err(Error::invalid("chunk", "no bytes were uploaded"));
        }
        if header.size != 0 && header.size != bytes.len() as u64 {
            return Err(Error::invalid(
                "header.size",
                format!("header says {} bytes but {} arrived", header.size, bytes.len()),
            ));
        }
        if !header.sha256.is_empty() {
            let digest = registry::sha256_hex(&bytes);
            if !digest.eq_ignore_ascii_case(&header.sha256) {
                return Err(Error::invalid(
                    "header.sha256",
                    format!("header says {} but the bytes hash to {digest}", header.sha256),
                ));
            }
        }
        Ok((header, bytes))
    }
}

/// Runs blocking registry work (compiling, file I/O) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(e.to_string()))?
}

#[tonic::async_trait]
impl pb::translators_server::Translators for TranslatorsService {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadTranslatorRequest>>,
    ) -> Result<Response<pb::TranslatorVersion>, Status> {
        let _slot = self.uploads.clone().try_acquire_owned().map_err(|_| {
            status(Error::ResourceExhausted(format!(
                "{} uploads are already in progress (translators.max_concurrent_uploads); retry when one has finished",
                self.registry.config().max_concurrent_uploads
            )))
        })?;
        let caller = Caller::of(&request);
        let (header, bytes) = self.receive_in_time(&caller, request.into_inner()).await.map_err(status)?;
        let registry = self.registry.clone();
        // The compile is killed when this call ends early: the client left (the call is
        // dropped, and the guard with it) or the gateway stops.
        let cancel = Cancel::default();
        let _cancel_on_drop = cancel.guard();
        let compiled = blocking(move || registry.upload(&header.name, &bytes, &cancel));
        let version = tokio::select! {
            version = compiled => version,
            _ = self.shutdown.cancelled() => Err(Error::ShuttingDown { resume: Vec::new() }),
        };
        let result = if version.is_ok() { "stored" } else { "refused" };
        metrics::counter!("tributary_translator_uploads_total", "result" => result).increment(1);
        let version = version.map_err(status)?;
        audit(&caller, "upload translator", &format!("{} {}", version.name, version.digest));
        Ok(Response::new(convert::version(version)))
    }

    async fn list(
        &self,
        request: Request<pb::ListTranslatorsRequest>,
    ) -> Result<Response<pb::ListTranslatorsResponse>, Status> {
        let caller = Caller::of(&request);
        // Only the translators the caller may use (or manage).
        let translators = self
            .registry
            .list()
            .into_iter()
            .filter(|t| self.auth.allows(&caller, Permission::UseTranslator(&t.name)))
            .map(convert::translator_info)
            .collect();
        Ok(Response::new(pb::ListTranslatorsResponse { translators }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeTranslatorRequest>,
    ) -> Result<Response<pb::TranslatorInfo>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        registry::check_translator_name(&name).map_err(|m| status(Error::invalid("name", m)))?;
        self.auth.check(&caller, Permission::UseTranslator(&name)).map_err(status)?;
        let info = self.registry.describe(&name).map_err(status)?;
        Ok(Response::new(convert::translator_info(info)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteTranslatorRequest>,
    ) -> Result<Response<pb::DeleteTranslatorResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        registry::check_translator_name(&request.name).map_err(|m| status(Error::invalid("name", m)))?;
        registry::check_digest(&request.digest).map_err(|m| status(Error::invalid("digest", m)))?;
        self.auth.check(&caller, Permission::ManageTranslator(&request.name)).map_err(status)?;
        let what = format!("{} {}", request.name, request.digest);
        let registry = self.registry.clone();
        let deleted = blocking(move || registry.delete(&request.name, &request.digest)).await.map_err(status)?;
        audit(&caller, "delete translator", what.trim_end());
        Ok(Response::new(pb::DeleteTranslatorResponse { deleted: deleted.into_iter().map(convert::version).collect() }))
    }
}
