//! The operator's files: the gateway's TOML configuration, the static tokens file and the
//! policy, read as the gateway reads them at start and on reload. Any text is refused with a
//! message naming what is wrong, or loaded; a loaded policy answers every caller and permission,
//! and any `Authorization` header is a caller or UNAUTHENTICATED, never a panic.
#![no_main]

use std::path::PathBuf;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tributary_core::Error;
use tributary_server::{
    auth::{Auth, AuthConfig, Caller, Permission},
    config::{Config, Overrides},
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config: &'a str,
    tokens: &'a str,
    policy: &'a str,
    identity: Option<String>,
    groups: Vec<String>,
    permission: u8,
    resource: &'a str,
    authorization: &'a [u8],
}

/// A file of this process's own for `name`, holding `text`.
fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tributary-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("the temporary directory is writable");
    path
}

fuzz_target!(|input: Input<'_>| {
    if let Err(e) = Config::load(Some(&file("config.toml", input.config)), &Overrides::default()) {
        assert!(!e.0.is_empty());
    }
    let config = AuthConfig {
        tokens_file: Some(file("tokens.toml", input.tokens)),
        policy_file: Some(file("policy.toml", input.policy)),
        ..AuthConfig::default()
    };
    let auth = match Auth::load(&config) {
        Ok(auth) => auth,
        Err(message) => {
            assert!(message.starts_with("auth."), "names the file: {message}");
            return;
        }
    };
    let caller = Caller { identity: input.identity, groups: input.groups };
    let permission = match input.permission % 4 {
        0 => Permission::ReadTopic(input.resource),
        1 => Permission::UseTranslator(input.resource),
        2 => Permission::ManageTranslator(input.resource),
        _ => Permission::OwnSubscription(input.resource),
    };
    assert_eq!(auth.check(&caller, permission).is_ok(), auth.allows(&caller, permission));
    if let Ok(header) = http::HeaderValue::from_bytes(input.authorization) {
        match auth.authenticate_http(Some(&header), None) {
            Ok(_) | Err(Error::Unauthenticated(_)) => {}
            Err(other) => panic!("an Authorization header answered {other:?}"),
        }
    }
});
