//! One connection to a gateway and its three services.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Request, Status,
};

use crate::{
    pb::{
        gateway_client::GatewayClient, subscriptions_client::SubscriptionsClient,
        translators_client::TranslatorsClient, upload_translator_request::Part, UploadHeader, UploadTranslatorRequest,
    },
    Error,
};

/// Largest message the client accepts: a snapshot chunk holds at least one whole entry.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Translator upload chunk: well under the gateway's 4 MiB request limit.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Attaches `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Service = InterceptedService<Channel, Token>;

/// A connection to a gateway. Cloning is cheap and shares the connection; the channel reconnects
/// by itself after the gateway restarts.
#[derive(Clone)]
pub struct Client {
    pub gateway: GatewayClient<Service>,
    pub translators: TranslatorsClient<Service>,
    pub subscriptions: SubscriptionsClient<Service>,
}

/// How to reach a gateway: its address (`http://` or `https://`), TLS roots, a client certificate
/// for mutual TLS, and a bearer token.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    target: String,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
    token: Option<String>,
    connect_timeout: Duration,
    lazy: bool,
}

impl Client {
    pub fn builder(target: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            target: target.into(),
            ca_pem: None,
            identity: None,
            server_name: None,
            token: None,
            connect_timeout: Duration::from_secs(5),
            lazy: false,
        }
    }

    /// Uploads a translator component as a new version of `name`.
    pub async fn upload_translator(&self, name: &str, component: &[u8]) -> Result<crate::pb::TranslatorVersion, Error> {
        let header = UploadTranslatorRequest {
            part: Some(Part::Header(UploadHeader {
                name: name.to_string(),
                size: component.len() as u64,
                sha256: hex(&Sha256::digest(component)),
            })),
        };
        let chunks = component
            .chunks(UPLOAD_CHUNK)
            .map(|c| UploadTranslatorRequest { part: Some(Part::Chunk(bytes::Bytes::copy_from_slice(c))) });
        let requests: Vec<_> = std::iter::once(header).chain(chunks).collect();
        let mut translators = self.translators.clone();
        Ok(translators.upload(tokio_stream::iter(requests)).await?.into_inner())
    }
}

impl ClientBuilder {
    /// Trust this CA (PEM) for an `https://` gateway; without it the target must be `http://`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate and key (PEM) for mutual TLS.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name to check the server's certificate against, when it differs from the target's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Send `authorization: Bearer <token>` on every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connect on the first call instead of now (a gateway that is not up yet is not an error).
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// The same settings for another replica of a fleet: `address` is `host:port` (as GetTopology
    /// reports owners, reached with this builder's scheme) or a whole `http(s)://` target.
    pub fn at(&self, address: &str) -> ClientBuilder {
        let target = if address.contains("://") {
            address.to_string()
        } else {
            let scheme = if self.target.starts_with("https://") { "https" } else { "http" };
            format!("{scheme}://{address}")
        };
        ClientBuilder { target, ..self.clone() }
    }

    pub async fn connect(self) -> Result<Client, Error> {
        let invalid = |what: String| Error::local(tonic::Code::InvalidArgument, what);
        let mut endpoint = Endpoint::from_shared(self.target.clone())
            .map_err(|e| invalid(format!("bad gateway address {:?}: {e}", self.target)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let tls = self.target.starts_with("https://");
        if tls || self.ca_pem.is_some() || self.identity.is_some() {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &self.server_name {
                config = config.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(config).map_err(|e| invalid(format!("TLS settings: {e}")))?;
        }
        let token = match &self.token {
            Some(t) => Token(Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| invalid("the token has characters a header cannot carry".into()))?,
            )),
            None => Token(None),
        };
        let channel = if self.lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.map_err(|e| {
                Error::local(tonic::Code::Unavailable, format!("cannot reach the gateway at {}: {e:?}", self.target))
            })?
        };
        Ok(Client {
            gateway: GatewayClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            translators: TranslatorsClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            subscriptions: SubscriptionsClient::with_interceptor(channel, token)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
