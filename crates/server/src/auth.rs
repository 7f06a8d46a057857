//! Who is calling, and what they may do.
//!
//! **Authentication** ([`Auth::admit`], run for every call by the [`calls`](crate::calls) layer): a call's identity
//! is the bearer token's (`authorization: Bearer <token>`, looked up by SHA-256 in
//! `auth.tokens_file`) or else the verified client certificate's (mutual TLS). A token that is
//! present but unknown or malformed is `UNAUTHENTICATED`, whatever the policy. With a policy, a
//! call without an identity is `UNAUTHENTICATED` too; health and reflection are always open.
//!
//! **Authorization** ([`Auth::check`], where the resource is known): `auth.policy_file` grants
//! identities and groups reading topics, using translators, managing translators and owning
//! subscription names, each by name pattern (`*` at the end matches a prefix). Without a policy
//! file every caller may do everything (local development). Denials are `PERMISSION_DENIED`
//! naming the missing permission and only the caller's own resource; lists show only what the
//! caller may see.
//!
//! Both files are read again when they change (every `auth.reload_interval_ms`); a file that does
//! not parse keeps the previous version and is logged. Every upload, delete, commit and denied
//! call is logged on the `audit` target with the caller's identity.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::Error;

use crate::{
    connections::ConnectionInfo,
    events,
    tls::{file_stamp, FileStamp},
};

/// The `[auth]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static bearer tokens: `[[token]]` tables of `identity`, `sha256` (hex of the token) and
    /// optional `groups`.
    pub tokens_file: Option<PathBuf>,
    /// Who may do what; without it every caller may do everything.
    pub policy_file: Option<PathBuf>,
    /// JWT bearer tokens.
    pub jwt: JwtConfig,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { tokens_file: None, policy_file: None, jwt: JwtConfig::default(), reload_interval_ms: 2_000 }
    }
}

/// The `[auth.jwt]` configuration: JWTs are accepted when a key source is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// A JSON Web Key Set (the issuer's `jwks_uri` document, saved): keys chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Or one public key (PEM: RSA, EC or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// The claim that names the identity.
    pub identity_claim: String,
    /// The claim that lists the identity's groups (an array of strings), if present.
    pub groups_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            identity_claim: "sub".into(),
            groups_claim: "groups".into(),
            leeway_s: 30,
        }
    }
}

/// The keys JWTs are verified with.
enum JwtKeys {
    None,
    Set(jsonwebtoken::jwk::JwkSet),
    One(jsonwebtoken::DecodingKey),
}

fn load_jwt_keys(config: &JwtConfig) -> Result<JwtKeys, String> {
    if let Some(path) = &config.jwks_file {
        let bytes = std::fs::read(path).map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?;
        let set = serde_json::from_slice(&bytes).map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?;
        return Ok(JwtKeys::Set(set));
    }
    if let Some(path) = &config.public_key_file {
        let pem = std::fs::read(path).map_err(|e| format!("auth.jwt.public_key_file {}: {e}", path.display()))?;
        use jsonwebtoken::DecodingKey;
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
            .map_err(|e| {
                format!("auth.jwt.public_key_file {}: not an RSA, EC or Ed25519 public key: {e}", path.display())
            })?;
        return Ok(JwtKeys::One(key));
    }
    Ok(JwtKeys::None)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    identity: String,
    sha256: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// One grant of the policy: who, and what.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    /// Identities (certificate CN or token identity); `*` is every authenticated caller.
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Topics to describe, snapshot and subscribe to.
    #[serde(default)]
    read_topics: Vec<String>,
    /// Translators to use in snapshots and subscriptions.
    #[serde(default)]
    use_translators: Vec<String>,
    /// Translators to upload and delete (and use).
    #[serde(default)]
    manage_translators: Vec<String>,
    /// Subscription names to subscribe under, commit, describe and delete.
    #[serde(default)]
    own_subscriptions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(default)]
    grant: Vec<Grant>,
}

/// Who is calling: set by [`Auth::admit`] on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// `None` for an anonymous caller.
    pub identity: Option<String>,
    pub groups: Vec<String>,
}

impl Caller {
    /// The caller of `request` (anonymous if the layer did not run, as in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request.extensions().get::<Caller>().cloned().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.identity.as_deref().unwrap_or("anonymous")
    }
}

/// Something a call needs.
#[derive(Debug, Clone, Copy)]
pub enum Permission<'a> {
    ReadTopic(&'a str),
    UseTranslator(&'a str),
    ManageTranslator(&'a str),
    OwnSubscription(&'a str),
}

impl Permission<'_> {
    fn describe(&self) -> String {
        match self {
            Permission::ReadTopic(t) => format!("read_topics for topic '{t}'"),
            Permission::UseTranslator(n) => format!("use_translators for translator '{n}'"),
            Permission::ManageTranslator(n) => format!("manage_translators for translator '{n}'"),
            Permission::OwnSubscription(n) => format!("own_subscriptions for subscription '{n}'"),
        }
    }

    fn granted_by(&self, grant: &Grant) -> bool {
        let (patterns, name): (&[String], &str) = match self {
            Permission::ReadTopic(t) => (&grant.read_topics, t),
            Permission::UseTranslator(n) => {
                if matches(&grant.manage_translators, n) {
                    return true;
                }
                (&grant.use_translators, n)
            }
            Permission::ManageTranslator(n) => (&grant.manage_translators, n),
            Permission::OwnSubscription(n) => (&grant.own_subscriptions, n),
        };
        matches(patterns, name)
    }
}

/// Whether `name` matches one of `patterns`: exact, or a prefix ending in `*`.
fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

fn stamp(path: &Option<PathBuf>) -> FileStamp {
    file_stamp(path.as_ref()?)
}

fn stamps(config: &AuthConfig) -> [FileStamp; 3] {
    let jwt = config.jwt.jwks_file.as_ref().or(config.jwt.public_key_file.as_ref()).cloned();
    [stamp(&config.tokens_file), stamp(&config.policy_file), stamp(&jwt)]
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &PathBuf, key: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{key} {}: {e}", path.display()))
}

fn load_tokens(config: &AuthConfig) -> Result<HashMap<String, TokenEntry>, String> {
    let Some(path) = &config.tokens_file else { return Ok(HashMap::new()) };
    let file: TokensFile = read_toml(path, "auth.tokens_file")?;
    let mut tokens = HashMap::new();
    for t in file.token {
        let hash = t.sha256.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("auth.tokens_file: the sha256 of '{}' is not 64 hex digits", t.identity));
        }
        tokens.insert(hash, t);
    }
    Ok(tokens)
}

fn load_policy(config: &AuthConfig) -> Result<Option<Policy>, String> {
    config.policy_file.as_ref().map(|path| read_toml(path, "auth.policy_file")).transpose()
}

/// The gateway's authentication and authorization, reloaded when their files change.
pub struct Auth {
    config: AuthConfig,
    /// SHA-256 (hex) of a token → its entry.
    tokens: RwLock<HashMap<String, TokenEntry>>,
    policy: RwLock<Option<Policy>>,
    jwt_keys: RwLock<JwtKeys>,
    /// The tokens file, the policy file and the JWT key file as last loaded.
    loaded: Mutex<[FileStamp; 3]>,
}

impl Auth {
    /// Loads the files; an error names the file and what is wrong.
    pub fn load(config: &AuthConfig) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            config: config.clone(),
            tokens: RwLock::new(load_tokens(config)?),
            policy: RwLock::new(load_policy(config)?),
            jwt_keys: RwLock::new(load_jwt_keys(&config.jwt)?),
            loaded: Mutex::new(stamps(config)),
        }))
    }

    /// Everyone may do everything: no tokens, no policy.
    pub fn open() -> Arc<Self> {
        Self::load(&AuthConfig::default()).expect("no files to read")
    }

    fn reload(&self) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamps(&self.config);
        if now[2] != loaded[2] {
            match load_jwt_keys(&self.config.jwt) {
                Ok(keys) => {
                    *self.jwt_keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                    info!("auth.jwt keys reloaded");
                }
                Err(e) => events::emit(&events::AuthReloadFailed { file: "auth.jwt", error: e.to_string() }),
            }
        }
        if now[0] != loaded[0] {
            match load_tokens(&self.config) {
                Ok(tokens) => {
                    *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
                    info!("auth.tokens_file reloaded");
                }
                Err(e) => events::emit(&events::AuthReloadFailed { file: "auth.tokens_file", error: e.to_string() }),
            }
        }
        if now[1] != loaded[1] {
            match load_policy(&self.config) {
                Ok(policy) => {
                    *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
                    info!("auth.policy_file reloaded");
                }
                Err(e) => events::emit(&events::AuthReloadFailed { file: "auth.policy_file", error: e.to_string() }),
            }
        }
        *loaded = now;
    }

    /// Reloads the files when they change, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let period = Duration::from_millis(self.config.reload_interval_ms.max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {},
                _ = shutdown.cancelled() => return,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    fn has_policy(&self) -> bool {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Who is calling, from the request's token or connection; an error is UNAUTHENTICATED.
    fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        certificate: Option<&str>,
    ) -> Result<Caller, Error> {
        if let Some(value) = authorization {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
            if token.split('.').count() == 3
                && !matches!(*self.jwt_keys.read().unwrap_or_else(|e| e.into_inner()), JwtKeys::None)
            {
                return self.verify_jwt(token);
            }
            let hash = tributary_wasm::sha256_hex(token.as_bytes());
            let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
            let entry =
                tokens.get(&hash).ok_or_else(|| Error::Unauthenticated("the bearer token is not valid".into()))?;
            return Ok(Caller { identity: Some(entry.identity.clone()), groups: entry.groups.clone() });
        }
        let identity = certificate.map(str::to_string);
        if identity.is_none() && self.has_policy() {
            return Err(Error::Unauthenticated(
                "this gateway needs an identity: a bearer token (authorization: Bearer <token>) or a client certificate".into(),
            ));
        }
        Ok(Caller { identity, groups: Vec::new() })
    }

    /// The caller of a verified JWT: signature, `exp`, `nbf` and the configured `iss`/`aud`.
    fn verify_jwt(&self, token: &str) -> Result<Caller, Error> {
        use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
        let refused = |why: String| Error::Unauthenticated(format!("the bearer JWT was refused: {why}"));
        let header = decode_header(token).map_err(|e| refused(e.to_string()))?;
        let key = match &*self.jwt_keys.read().unwrap_or_else(|e| e.into_inner()) {
            JwtKeys::Set(set) => {
                let kid = header.kid.as_deref().ok_or_else(|| refused("it names no key (`kid`)".into()))?;
                let jwk = set.find(kid).ok_or_else(|| refused(format!("no key '{kid}' in the key set")))?;
                DecodingKey::from_jwk(jwk).map_err(|e| refused(e.to_string()))?
            }
            JwtKeys::One(key) => key.clone(),
            JwtKeys::None => return Err(refused("no JWT keys are configured".into())),
        };
        let jwt = &self.config.jwt;
        // The key's type must fit the token's algorithm (checked by decode): no algorithm confusion.
        let mut validation = Validation::new(header.alg);
        validation.leeway = jwt.leeway_s;
        validation.validate_nbf = true;
        match &jwt.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &jwt.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|e| refused(e.to_string()))?;
        let identity = data.claims[&jwt.identity_claim]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused(format!("no `{}` claim names the caller", jwt.identity_claim)))?;
        let groups = data.claims[&jwt.groups_claim]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(Caller { identity: Some(identity.to_string()), groups })
    }

    /// Who is calling an HTTP endpoint: its `Authorization` header, else its TLS client
    /// certificate's identity; an error is UNAUTHENTICATED (401).
    pub fn authenticate_http(
        &self,
        authorization: Option<&http::HeaderValue>,
        certificate: Option<&str>,
    ) -> Result<Caller, Error> {
        self.authenticate(authorization, certificate)
    }

    /// Whether the gateway has a policy (every call then needs an identity).
    pub fn enforced(&self) -> bool {
        self.has_policy()
    }

    /// Whether `caller` has `permission` (always, without a policy).
    pub fn allows(&self, caller: &Caller, permission: Permission<'_>) -> bool {
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        let Some(policy) = policy.as_ref() else { return true };
        let Some(identity) = &caller.identity else { return false };
        policy.grant.iter().any(|g| {
            let who = g.identities.iter().any(|i| i == "*" || i == identity)
                || g.groups.iter().any(|x| caller.groups.contains(x));
            who && permission.granted_by(g)
        })
    }

    /// [`Auth::allows`], or PERMISSION_DENIED naming the permission (logged for audit).
    pub fn check(&self, caller: &Caller, permission: Permission<'_>) -> Result<(), Error> {
        if self.allows(caller, permission) {
            return Ok(());
        }
        let missing = permission.describe();
        audit(caller, "denied", &missing);
        Err(Error::PermissionDenied(format!("'{}' lacks {missing}", caller.name())))
    }
}

/// One audit line: who did what to which resource.
pub fn audit(caller: &Caller, action: &str, resource: &str) {
    info!(target: "audit", identity = caller.name(), action, resource, "audit");
}

/// Paths served to everyone: health checks and reflection (they name no data).
fn open_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl Auth {
    /// Authenticates a call before any service sees it: puts its [`Caller`] in the request, or
    /// returns the UNAUTHENTICATED response to send instead (health and reflection always pass).
    pub fn admit<B>(&self, request: &mut http::Request<B>) -> Option<http::Response<tonic::body::Body>> {
        let caller = self.authenticate(
            request.headers().get(http::header::AUTHORIZATION),
            request.extensions().get::<ConnectionInfo>().and_then(|i| i.certificate.as_deref()),
        );
        match caller {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                None
            }
            Err(_) if open_path(request.uri().path()) => None,
            Err(e) => {
                audit(&Caller::default(), "unauthenticated", request.uri().path());
                Some(crate::api::status::status(e).into_http())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let p = vec!["orders".to_string(), "media-*".to_string()];
        assert!(matches(&p, "orders") && matches(&p, "media-x") && matches(&p, "media-"));
        assert!(!matches(&p, "orders2") && !matches(&p, "medi") && !matches(&[], "x"));
        assert!(matches(&["*".to_string()], "anything"));
    }

    #[test]
    fn bad_files_are_named_at_start_and_keep_the_previous_version_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, policy) = (dir.path().join("tokens.toml"), dir.path().join("policy.toml"));
        let config =
            AuthConfig { tokens_file: Some(tokens.clone()), policy_file: Some(policy.clone()), ..Default::default() };
        std::fs::write(&tokens, "[[token]]\nidentity = \"x\"\nsha256 = \"abc\"\n").unwrap();
        std::fs::write(&policy, "[[grant]]\nidentities = [\"x\"]\nread_topics = [\"t\"]\n").unwrap();
        let err = Auth::load(&config).err().unwrap();
        assert!(err.contains("auth.tokens_file") && err.contains("64 hex digits"), "{err}");
        std::fs::write(&tokens, "").unwrap();
        let auth = Auth::load(&config).unwrap();
        let x = Caller { identity: Some("x".into()), groups: vec![] };
        assert!(auth.allows(&x, Permission::ReadTopic("t")) && !auth.allows(&x, Permission::ReadTopic("u")));
        assert!(!auth.allows(&Caller::default(), Permission::ReadTopic("t")), "anonymous gets nothing");
        let denied = auth.check(&x, Permission::ManageTranslator("n")).unwrap_err();
        assert!(matches!(&denied, Error::PermissionDenied(m) if m.contains("manage_translators for translator 'n'")));

        std::fs::write(&policy, "[[grant]]\nidentities = [\"x\"\nnot toml").unwrap();
        auth.reload();
        assert!(auth.allows(&x, Permission::ReadTopic("t")), "a broken policy keeps the previous one");
        std::fs::write(&policy, "[[grant]]\nunknown_key = 1\n").unwrap();
        assert!(Auth::load(&config).err().unwrap().contains("unknown field"), "typos are errors, not silent denials");
    }
}
