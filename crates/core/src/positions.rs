//! Durable named subscriptions: the port where their committed positions are kept, and the
//! stamp each commit carries. `tributary-kafka` keeps them as consumer-group offsets (one group
//! per name), so any gateway on the same Kafka resumes any subscription.

use serde::{Deserialize, Serialize};

use crate::{error::Error, record::PartitionOffset, source::Partition};

/// What a position was committed with, stored beside it: the subscription's topics and its
/// translator, so a resume follows the same topics and refuses another translator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub topics: Vec<String>,
    #[serde(default)]
    pub translator_name: String,
    /// The translator version's digest; empty for an untranslated subscription.
    #[serde(default)]
    pub translator_digest: String,
    /// SHA-256 (hex) of the translator's configuration.
    #[serde(default)]
    pub config_sha256: String,
    #[serde(default)]
    pub committed_at_ms: i64,
}

impl Stamp {
    /// Whether a position taken with `self` may be resumed with `other`'s translator.
    pub fn same_translator(&self, other: &Stamp) -> bool {
        self.translator_digest == other.translator_digest && self.config_sha256 == other.config_sha256
    }
}

/// A subscription's committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The committed partitions (others have no committed offset).
    pub offsets: Vec<PartitionOffset>,
    pub stamp: Stamp,
}

/// Where committed positions are kept. Every method is blocking (network requests): call them
/// from a blocking thread.
pub trait Positions: Send + Sync + 'static {
    /// The storage name of `name` (the Kafka consumer group), for operators.
    fn group(&self, name: &str) -> String;

    /// The position committed under `name` for any of `partitions`; `None` when nothing is.
    fn committed(&self, name: &str, partitions: &[Partition]) -> Result<Option<Committed>, Error>;

    /// Commits `offsets` under `name`, with `stamp`.
    fn commit(&self, name: &str, offsets: &[PartitionOffset], stamp: &Stamp) -> Result<(), Error>;

    /// The names that have positions.
    fn names(&self) -> Result<Vec<String>, Error>;

    /// Deletes `name`'s positions; false when there were none.
    fn delete(&self, name: &str) -> Result<bool, Error>;
}

/// Checks a subscription name: 1-128 of [A-Za-z0-9._-] (a Kafka group id's safe characters).
pub fn check_subscription_name(name: &str, field: &str) -> Result<(), Error> {
    let ok =
        !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(64).collect();
    Err(Error::invalid(field, format!("subscription name {shown:?} must be 1-128 characters of [A-Za-z0-9._-]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_subscription_name("orders-by-station.v1", "n").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(129)] {
            let e = check_subscription_name(bad, "subscription_name").unwrap_err();
            assert!(matches!(&e, Error::InvalidArgument { field, .. } if field == "subscription_name"), "{e:?}");
            assert!(e.to_string().len() < 200);
        }
    }

    #[test]
    fn translator_change_is_digest_or_configuration() {
        let a = Stamp { translator_digest: "d".into(), config_sha256: "c".into(), ..Default::default() };
        assert!(a.same_translator(&Stamp { topics: vec!["t".into()], ..a.clone() }));
        assert!(!a.same_translator(&Stamp { config_sha256: "c2".into(), ..a.clone() }));
        assert!(!a.same_translator(&Stamp::default()));
    }
}
