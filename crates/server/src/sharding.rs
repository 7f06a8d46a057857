//! Partition sharding as the server sees it: the `[sharding]` section, the replica's membership
//! in its group, and [`Topology`]: who holds which partition, as `GetTopology` and the details of
//! a call on a partition held elsewhere report it (see `docs/sharding.md`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tributary_core::{source::Partition, Error};
use tributary_kafka::group::{self, MemberConfig, Membership};

/// The `[sharding]` section. Without `group` every replica holds every partition (no sharding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingConfig {
    /// The Kafka consumer group the fleet's replicas share; each holds only the partitions the
    /// group assigns it. Unset: no sharding.
    pub group: Option<String>,
    /// This replica's stable id in the group (a StatefulSet pod name, say): a restart with the
    /// same id and address within the session timeout keeps its partitions. Required with
    /// `group`; unique per live replica; `A-Za-z0-9._-`.
    pub instance_id: Option<String>,
    /// The `host:port` clients reach this replica at, as the topology reports it. Default: the
    /// address the gateway listens on (refused when that is unspecified, `0.0.0.0` or `[::]`).
    pub advertise: Option<String>,
    /// How long the group waits for a silent replica (crashed, or stopped: a static member never
    /// leaves) before its partitions move to the others, in milliseconds.
    pub session_timeout_ms: u64,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self {
            group: None,
            instance_id: None,
            advertise: None,
            session_timeout_ms: group::DEFAULT_SESSION_TIMEOUT.as_millis() as u64,
        }
    }
}

/// Kafka's bounds of a session timeout are the broker's (`group.min.session.timeout.ms`, 6 s,
/// and `group.max.session.timeout.ms`, 30 min, by default); these only catch values no broker
/// takes.
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

impl ShardingConfig {
    /// Whether this gateway is one replica of a sharded fleet.
    pub fn enabled(&self) -> bool {
        self.group.is_some()
    }

    /// What serde cannot check, with the address the gateway listens on; the message names the
    /// key.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), String> {
        let Some(group) = &self.group else {
            for (key, set) in [("instance_id", self.instance_id.is_some()), ("advertise", self.advertise.is_some())] {
                if set {
                    return Err(format!("`sharding.{key}` is set but `sharding.group` is not: set the group to shard, or remove the key"));
                }
            }
            return Ok(());
        };
        if group.trim().is_empty() {
            return Err("`sharding.group` is empty: name the consumer group the replicas share, or leave it unset for no sharding".into());
        }
        let Some(instance_id) = &self.instance_id else {
            return Err("`sharding.instance_id` is required with `sharding.group`: a stable id for this replica (a pod name, say)".into());
        };
        if self.advertise.is_none() && listen.ip().is_unspecified() {
            return Err(format!(
                "`sharding.advertise` is required when `listen` is {listen}: clients cannot reach an unspecified address; set the host:port they reach this replica at"
            ));
        }
        if !SESSION_TIMEOUT_MS.contains(&self.session_timeout_ms) {
            return Err(format!(
                "`sharding.session_timeout_ms` is {}; it must lie within {}..={} (and within the broker's group.min.session.timeout.ms and group.max.session.timeout.ms)",
                self.session_timeout_ms,
                SESSION_TIMEOUT_MS.start(),
                SESSION_TIMEOUT_MS.end()
            ));
        }
        group::check_member(instance_id, &self.advertised(listen)).map_err(|e| match e {
            Error::InvalidArgument { field, message } => format!("`{field}` {message}"),
            other => other.to_string(),
        })
    }

    /// The address clients reach this replica at: `advertise`, else `listening` (the bound
    /// address, so a port 0 is the port picked).
    pub fn advertised(&self, listening: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| listening.to_string())
    }

    /// How this replica joins its group, advertising `address`; `None` without sharding.
    pub fn member(&self, address: String) -> Option<MemberConfig> {
        Some(MemberConfig {
            group: self.group.clone()?,
            instance_id: self.instance_id.clone().unwrap_or_default(),
            address,
            session_timeout: Duration::from_millis(self.session_timeout_ms),
        })
    }
}

/// Longest age of the topology a call is answered from: at most one coordinator request pair per
/// second per replica, however many calls ask.
const FRESH: Duration = Duration::from_secs(1);

/// Who holds which partition, as this replica answers: read from the group's coordinator (at
/// most once a [`FRESH`], off the async threads), or this replica for every partition without
/// sharding. Started by the application once it knows the address it serves on.
#[derive(Default)]
pub struct Topology {
    started: OnceLock<Started>,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Owners>)>>,
}

struct Started {
    address: String,
    membership: Option<Arc<Membership>>,
}

/// The owners of the partitions at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    /// This replica's advertised address.
    pub address: String,
    /// The group's state (`Stable`, `PreparingRebalance`...); empty without sharding.
    pub state: String,
    /// Each assigned partition's owner; `None`: no sharding, this replica holds every partition.
    pub owners: Option<BTreeMap<Partition, String>>,
}

impl Owners {
    /// The address of the replica that holds `partition`; `None` while no replica does.
    pub fn owner(&self, topic: &Arc<str>, partition: i32) -> Option<&str> {
        match &self.owners {
            None => Some(&self.address),
            Some(owners) => owners.get(&(topic.clone(), partition)).map(String::as_str),
        }
    }
}

impl Topology {
    /// Starts answering: this replica serves at `address`; `membership` is its place in its group
    /// (`None`: no sharding). Once only; later calls change nothing.
    pub fn start(&self, address: String, membership: Option<Membership>) {
        let _ = self.started.set(Started { address, membership: membership.map(Arc::new) });
    }

    /// The owners now, read again when the last read is older than [`FRESH`] (one read at a
    /// time: concurrent calls share it).
    pub async fn owners(&self) -> Result<Arc<Owners>, Error> {
        let Some(started) = self.started.get() else {
            return Err(Error::kafka("the gateway is starting; retry shortly"));
        };
        let Some(membership) = &started.membership else {
            return Ok(Arc::new(Owners { address: started.address.clone(), state: String::new(), owners: None }));
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, owners)) = cached.as_ref() {
            if at.elapsed() < FRESH {
                return Ok(owners.clone());
            }
        }
        let membership = membership.clone();
        let topology = tokio::task::spawn_blocking(move || membership.topology())
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let owners = topology.owners().into_iter().map(|(p, a)| (p, a.to_string())).collect();
        let owners = Arc::new(Owners { address: started.address.clone(), state: topology.state, owners: Some(owners) });
        *cached = Some((Instant::now(), owners.clone()));
        Ok(owners)
    }

    /// `error` with the owner of the partition it names filled in, when it is a call on a
    /// partition this replica does not hold and another replica does (FAILED_PRECONDITION: go
    /// there). While no other replica holds it, or the topology cannot be read, it stays a
    /// partition that moves (UNAVAILABLE: retry). A stream that ended because its partition was
    /// taken says so as it is: its new owner is not assigned yet.
    pub async fn locate(&self, error: Error) -> Error {
        let (topic, partition, resume) = match error {
            Error::PartitionNotHeld { topic, partition, owner: None, resume } => (topic, partition, resume),
            other => return other,
        };
        let owner = match self.owners().await {
            Ok(owners) if resume.is_empty() => {
                let name: Arc<str> = Arc::from(topic.as_str());
                owners.owner(&name, partition).filter(|o| *o != owners.address).map(str::to_string)
            }
            _ => None,
        };
        Error::PartitionNotHeld { topic, partition, owner, resume }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharded() -> ShardingConfig {
        ShardingConfig { group: Some("fleet".into()), instance_id: Some("gw-0".into()), ..Default::default() }
    }

    fn local() -> SocketAddr {
        "127.0.0.1:50051".parse().unwrap()
    }

    #[test]
    fn no_group_is_no_sharding_and_its_keys_alone_are_refused() {
        let none = ShardingConfig::default();
        assert!(!none.enabled() && none.validate("0.0.0.0:1".parse().unwrap()).is_ok());
        assert_eq!(none.member("a:1".into()), None);
        let err =
            ShardingConfig { instance_id: Some("gw-0".into()), ..Default::default() }.validate(local()).unwrap_err();
        assert!(err.contains("`sharding.instance_id`") && err.contains("`sharding.group`"), "{err}");
        let err = ShardingConfig { advertise: Some("h:1".into()), ..Default::default() }.validate(local()).unwrap_err();
        assert!(err.contains("`sharding.advertise`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        assert!(sharded().validate(local()).is_ok());
        let err = |config: ShardingConfig, listen: &str| config.validate(listen.parse().unwrap()).unwrap_err();
        let e = err(ShardingConfig { group: Some(" ".into()), ..sharded() }, "127.0.0.1:1");
        assert!(e.contains("`sharding.group` is empty"), "{e}");
        let e = err(ShardingConfig { instance_id: None, ..sharded() }, "127.0.0.1:1");
        assert!(e.contains("`sharding.instance_id` is required"), "{e}");
        let e = err(ShardingConfig { instance_id: Some("gw 0".into()), ..sharded() }, "127.0.0.1:1");
        assert!(e.starts_with("`sharding.instance_id`") && e.contains("' '"), "{e}");
        let e = err(sharded(), "0.0.0.0:50051");
        assert!(e.contains("`sharding.advertise` is required") && e.contains("0.0.0.0:50051"), "{e}");
        let e = err(sharded(), "[::]:50051");
        assert!(e.contains("`sharding.advertise` is required"), "{e}");
        let e = err(ShardingConfig { advertise: Some("x".repeat(300)), ..sharded() }, "0.0.0.0:1");
        assert!(e.starts_with("`sharding.advertise`"), "{e}");
        let e = err(ShardingConfig { session_timeout_ms: 10, ..sharded() }, "127.0.0.1:1");
        assert!(e.contains("`sharding.session_timeout_ms` is 10"), "{e}");
        let advertised = ShardingConfig { advertise: Some("gw-0.gw:50051".into()), ..sharded() };
        assert!(advertised.validate("0.0.0.0:50051".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_member_advertises_the_configured_address_else_the_bound_one() {
        let bound: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        assert_eq!(sharded().advertised(bound), "127.0.0.1:40123");
        let config = ShardingConfig { advertise: Some("gw-0.gw:50051".into()), session_timeout_ms: 7_000, ..sharded() };
        let member = config.member(config.advertised(bound)).unwrap();
        assert_eq!(
            member,
            MemberConfig {
                group: "fleet".into(),
                instance_id: "gw-0".into(),
                address: "gw-0.gw:50051".into(),
                session_timeout: Duration::from_secs(7),
            }
        );
    }

    #[tokio::test]
    async fn without_sharding_this_replica_owns_everything_and_errors_stay_as_they_are() {
        let topology = Topology::default();
        assert!(topology.owners().await.is_err(), "not started");
        topology.start("10.0.0.1:50051".into(), None);
        let owners = topology.owners().await.unwrap();
        assert_eq!(owners.owner(&Arc::from("t"), 7), Some("10.0.0.1:50051"));
        assert_eq!(owners.state, "");
        let error = topology.locate(Error::not_held("t", 7)).await;
        assert!(matches!(error, Error::PartitionNotHeld { owner: None, .. }), "{error:?}");
        assert!(matches!(topology.locate(Error::kafka("x")).await, Error::Kafka { .. }));
    }

    #[test]
    fn owners_of_a_sharded_fleet_name_the_holder_or_none() {
        let owners = Owners {
            address: "a:1".into(),
            state: "Stable".into(),
            owners: Some([((Arc::from("t"), 0), "a:1".to_string()), ((Arc::from("t"), 1), "b:1".to_string())].into()),
        };
        assert_eq!(owners.owner(&Arc::from("t"), 1), Some("b:1"));
        assert_eq!(owners.owner(&Arc::from("t"), 2), None, "moving");
    }
}
