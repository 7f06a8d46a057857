//! Partition sharding through a Kafka consumer group: [`Membership`] joins the group that splits
//! the exposed partitions between replicas and reports what this replica gains and loses;
//! [`Topology`] is who owns which partition, read back from the group coordinator. The coordinator
//! is the engine that assigns and rebalances: the gateway writes no consensus of its own.
//!
//! The server joins the group when `[sharding] group` is set; ingest follows the [`Change`]s
//! (see `docs/sharding.md`).
//!
//! What librdkafka and rdkafka do here, and what this module relies on:
//!
//! - **Cooperative rebalancing** (`partition.assignment.strategy=cooperative-sticky`, KIP-429): a
//!   rebalance revokes only the partitions that move, and assigns them to their new owner in a
//!   second rebalance once the old owner gave them up. librdkafka then requires
//!   `incremental_assign`/`incremental_unassign` instead of `assign` (an `assign` fails with
//!   "Changes to the current assignment must be made using incremental_assign()",
//!   fede1024/rust-rdkafka#363). rdkafka's default `ConsumerContext::rebalance` asks librdkafka
//!   for the protocol in use and calls the incremental forms under COOPERATIVE (since
//!   rust-rdkafka#364); `Rebalance::Revoke` carries the partitions revoked (#398/#409), not
//!   "everything". So [`MemberContext`] keeps the default and only observes, in `pre_rebalance`
//!   (revocations, before they happen) and `post_rebalance` (assignments, once made).
//! - **Static membership** (`group.instance.id`, KIP-345): a member that comes back with the same
//!   instance id within `session.timeout.ms` takes its old place and its partitions without a
//!   rebalance. A static member never sends LeaveGroup on close (librdkafka `rdkafka_cgrp.c`:
//!   "KIP-345: Static group members must not send a LeaveGroupRequest on termination"), so a
//!   closed or crashed replica's partitions move only once the session times out: the session
//!   timeout is the trade between riding out a restart and how long a dead replica's partitions go
//!   unserved. Two live members with one instance id fence each other: the older one gets a
//!   fatal error (reported as [`Change::Error`] with `fatal`, and its membership ends).
//! - **A static member's client id is the one it first joined with**: the coordinator replaces
//!   a rejoining static member's id and "keeps everything else unchanged" (Kafka's
//!   `replaceStaticMember`), client id included, for as long as the instance stays in the group.
//!   A replica restarted on a new address under the same instance id would go on advertising the
//!   old one. So the address is part of the identity: `group.instance.id` is the configured id
//!   followed by a hash of the address ([`group_instance_id`]); a restart on the same address
//!   keeps its partitions, one on a new address is a new member and the old one times out.
//! - **The classic group protocol** (`group.protocol=classic`): under KIP-848's `consumer`
//!   protocol the broker assigns, `partition.assignment.strategy` and `session.timeout.ms` are not
//!   client settings, and DescribeGroups (what [`Topology`] reads) does not describe such groups.
//! - **Who owns what** comes from ListGroups + DescribeGroups (`fetch_group_list`): each member's
//!   `client_id` and its assignment as the coordinator stores it (the consumer protocol's bytes,
//!   decoded by `assignment`). The advertised address rides in the client id (`tributary|<addr>`):
//!   librdkafka passes `client.id` through as any string (only `client.software.name` is
//!   restricted), and the Kafka protocol carries it as a string up to 32767 bytes; the address is
//!   percent-escaped so a `|` or `%` in it cannot be misread, and limited to [`MAX_ADDRESS_LEN`].

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use rdkafka::{
    client::ClientContext,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    TopicPartitionList,
};
use tokio::sync::mpsc;
use tributary_core::{source::Partition, Error};

use crate::{
    assignment,
    metadata::REQUEST_TIMEOUT,
    settings::{consumer_config, kafka_error, metadata_tuning, KafkaConfig},
};

/// Changes queued for the owner of a [`Membership`]. A rebalance adds at most two (what is
/// revoked, then what is assigned); when the owner falls this far behind, the membership's thread
/// waits for it (and librdkafka's `max.poll.interval.ms`, 300 s by default, eventually takes the
/// member out of the group), so no assignment change is ever dropped.
pub const CHANGES_CAPACITY: usize = 16;
/// The default session timeout: long enough for a replica restarted with a checkpoint (seconds)
/// to take its partitions back without a rebalance, short enough that a crashed replica's
/// partitions are served elsewhere within a quarter of a minute. Must lie within the broker's
/// `group.min.session.timeout.ms` (6 s by default) and `group.max.session.timeout.ms` (30 min).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest advertised address, in bytes before escaping (a host name is at most 253).
pub const MAX_ADDRESS_LEN: usize = 255;
/// Longest instance id: Kafka's 249 for `group.instance.id`, less the address hash's 17.
pub const MAX_INSTANCE_ID_LEN: usize = 249 - 17;
/// How long one poll of the membership's consumer waits: bounds how late a close is noticed.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often a change waiting for room in a full channel looks again (and at a close).
const FULL_RETRY: Duration = Duration::from_millis(10);
/// The client id of every replica starts with this; the escaped address follows.
const CLIENT_ID_PREFIX: &str = "tributary|";

/// How this replica joins the sharding group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// The consumer group every replica of the fleet joins (`sharding.group`).
    pub group: String,
    /// This replica's stable identity in the group: a restart with the same id and address
    /// within the session timeout keeps its partitions. Unique per live replica; at most
    /// [`MAX_INSTANCE_ID_LEN`] of `A-Za-z0-9._-` (Kafka's rule for `group.instance.id`, which is
    /// this id, a `.` and 16 hex digits of the address).
    pub instance_id: String,
    /// The gRPC address clients reach this replica at, as the topology reports it.
    pub address: String,
    /// How long the coordinator waits for a silent member (crashed, or closed: static members
    /// never leave explicitly) before giving its partitions to the others.
    pub session_timeout: Duration,
}

/// What changed in this replica's share of the partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Partitions now assigned to this replica, in addition to those it holds (incremental under
    /// cooperative rebalancing). Empty after a rebalance that gave this replica nothing new.
    Assigned(Vec<Partition>),
    /// Partitions taken from this replica, reported before librdkafka gives them up. `lost`: the
    /// group went on without this member (session timed out, fenced), so another replica may
    /// already own them.
    Revoked { partitions: Vec<Partition>, lost: bool },
    /// Kafka reported an error. Not fatal: librdkafka retries by itself; dropped when the channel
    /// is full (the next change or error says more). Fatal (e.g. fenced by another replica with
    /// the same instance id and address): the membership has ended; always delivered.
    Error { message: String, fatal: bool },
}

/// This replica's place in the sharding group: a consumer subscribed to the exposed topics under
/// the group, polled by a thread of its own that reports each [`Change`]. It reads no records:
/// every partition is paused as soon as it is assigned (ingest reads them; see `docs/sharding.md`).
/// Dropping it (or [`Membership::close`]) closes the consumer; as a static member it stays in the
/// group until the session times out, so a restart with the same instance id and address takes
/// its place back.
pub struct Membership {
    consumer: Arc<BaseConsumer<MemberContext>>,
    group: String,
    stopping: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl Membership {
    /// Joins `member.group`, subscribed to `kafka.topics`, and returns the receiver of this
    /// replica's changes (at most [`CHANGES_CAPACITY`] queued). Fails on a configuration
    /// librdkafka rejects or an address that cannot be advertised; reaching Kafka happens in the
    /// background (librdkafka retries; errors arrive as [`Change::Error`]).
    pub fn join(kafka: &KafkaConfig, member: &MemberConfig) -> Result<(Self, mpsc::Receiver<Change>), Error> {
        let client_id = client_id(&member.address)?;
        if member.group.trim().is_empty() {
            return Err(invalid("sharding.group", "must name the consumer group the replicas share"));
        }
        let instance_id = group_instance_id(&member.instance_id, &member.address)?;
        let (changes, receiver) = mpsc::channel(CHANGES_CAPACITY);
        let stopping = Arc::new(AtomicBool::new(false));
        let context = MemberContext { changes, stopping: stopping.clone() };
        let mut tuning = metadata_tuning();
        tuning.extend([
            ("group.protocol", "classic".into()),
            ("partition.assignment.strategy", "cooperative-sticky".into()),
            ("session.timeout.ms", member.session_timeout.as_millis().to_string()),
            // Kafka's advice: a third of the session, so two heartbeats may be lost.
            ("heartbeat.interval.ms", (member.session_timeout.as_millis() / 3).max(1).to_string()),
            // This consumer reads no records (its partitions are paused when assigned), so where a
            // partition without a committed offset would start does not matter; "error" (the
            // shared setting) would only report an error for every partition it is assigned.
            ("auto.offset.reset", "latest".into()),
        ]);
        let mut config = consumer_config(kafka, "sharding", &tuning);
        // Identity comes after the operator's passthrough properties: another client id would
        // advertise a wrong address, another group or instance id would join another group.
        config.set("client.id", client_id).set("group.id", &member.group).set("group.instance.id", instance_id);
        let consumer: Arc<BaseConsumer<MemberContext>> =
            Arc::new(config.create_with_context(context).map_err(kafka_error)?);
        let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka_error)?;
        let poller = {
            let (consumer, stopping) = (consumer.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("tributary-sharding".into())
                .spawn(move || poll_loop(&consumer, &stopping))
                .map_err(|e| Error::Internal(format!("cannot start the sharding membership's thread: {e}")))?
        };
        Ok((Self { consumer, group: member.group.clone(), stopping, poller: Some(poller) }, receiver))
    }

    /// The partitions librdkafka has assigned this replica now.
    pub fn assignment(&self) -> Result<Vec<Partition>, Error> {
        self.consumer.assignment().map(|list| partitions_of(&list)).map_err(kafka_error)
    }

    /// The group's topology as the coordinator has it. Blocking (up to two request timeouts).
    pub fn topology(&self) -> Result<Topology, Error> {
        topology(&*self.consumer, &self.group)
    }

    /// Stops polling and closes the consumer. Blocking: it waits for the membership's thread
    /// (at most [`POLL_WAIT`] plus a change waiting for room) and for librdkafka's close.
    pub fn close(self) {}
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // The last reference to the consumer goes here: its drop closes it, serving the final
        // revocation through the context (reported only if the channel has room).
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("group", &self.group).finish()
    }
}

/// Polls the consumer (which serves the rebalance callbacks) until asked to stop or fenced.
fn poll_loop(consumer: &BaseConsumer<MemberContext>, stopping: &AtomicBool) {
    while !stopping.load(Ordering::Acquire) {
        match consumer.poll(POLL_WAIT) {
            // A record fetched before its partition was paused: ingest reads it, not this consumer.
            None | Some(Ok(_)) => {}
            Some(Err(e)) => {
                let fatal = consumer.client().fatal_error();
                let message = match &fatal {
                    Some((_, reason)) => reason.clone(),
                    None => e.to_string(),
                };
                if fatal.is_some() {
                    // The membership ends here: its owner must hear of it, so it waits for room.
                    consumer.context().report(Change::Error { message, fatal: true });
                    return;
                }
                let _ = consumer.context().changes.try_send(Change::Error { message, fatal: false });
            }
        }
    }
}

/// Reports each rebalance to the membership's owner; the rebalance itself is rdkafka's default
/// (incremental under the cooperative protocol).
struct MemberContext {
    changes: mpsc::Sender<Change>,
    stopping: Arc<AtomicBool>,
}

impl MemberContext {
    /// Sends `change`, waiting while the channel is full unless the membership is closing (then
    /// the owner asked for the end and knows every partition goes). Gives up when the owner has
    /// dropped the receiver.
    fn report(&self, mut change: Change) {
        loop {
            match self.changes.try_send(change) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(c)) => {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    change = c;
                    std::thread::sleep(FULL_RETRY);
                }
            }
        }
    }
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) if list.count() > 0 => {
                self.report(Change::Revoked { partitions: partitions_of(list), lost: consumer.assignment_lost() })
            }
            Rebalance::Error(e) => {
                let _ = self.changes.try_send(Change::Error { message: e.to_string(), fatal: false });
            }
            _ => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // An empty assignment is reported too: a replica given nothing (more replicas than
            // partitions, or its share still held by others until the next generation) has
            // loaded all it holds and is ready; unreported, it stayed NOT_SERVING, and a rollout
            // that waits for readiness would never finish.
            if list.count() == 0 {
                self.report(Change::Assigned(Vec::new()));
                return;
            }
            // Coordination only: fetching the partitions' records here would read them twice.
            if let Err(e) = consumer.pause(list) {
                let _ = self.changes.try_send(Change::Error { message: format!("pausing {e}"), fatal: false });
            }
            self.report(Change::Assigned(partitions_of(list)));
        }
    }
}

/// The partitions of a list, sorted.
fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    let mut partitions: Vec<Partition> =
        list.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
    partitions.sort();
    partitions
}

/// A replica of the sharding group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The coordinator's id of the member (changes when it rejoins).
    pub member_id: String,
    /// The member's client id, as it joined.
    pub client_id: String,
    /// The gRPC address it advertises; `None` for a member that is not a Tributary replica.
    pub address: Option<String>,
    /// The partitions the coordinator assigned it, sorted (empty while a rebalance is under way).
    pub partitions: Vec<Partition>,
}

/// Who owns which partition in a sharding group, as its coordinator last assigned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The group's state as the coordinator names it: `Stable`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Empty` or `Dead` (no such group).
    pub state: String,
    pub members: Vec<Member>,
}

impl Topology {
    /// Whether no rebalance is under way: in any other state, assignments are about to change.
    pub fn is_stable(&self) -> bool {
        self.state == "Stable"
    }

    /// Each assigned partition and the address of the replica that owns it (members that
    /// advertise no address are left out: no client could reach them).
    pub fn owners(&self) -> BTreeMap<Partition, &str> {
        let mut owners = BTreeMap::new();
        for member in &self.members {
            let Some(address) = &member.address else { continue };
            for partition in &member.partitions {
                owners.insert(partition.clone(), address.as_str());
            }
        }
        owners
    }
}

/// Reads `group`'s members and their assignments from its coordinator (ListGroups, then
/// DescribeGroups: each bounded by the request timeout). A group that does not exist is `Dead`
/// with no members. An assignment that does not decode, or a group that is not a consumer group,
/// is an error: the topology would be a guess.
pub(crate) fn topology<C: Consumer<X>, X: ConsumerContext>(client: &C, group: &str) -> Result<Topology, Error> {
    let list = client.fetch_group_list(Some(group), REQUEST_TIMEOUT).map_err(kafka_error)?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(Topology { state: "Dead".into(), members: Vec::new() });
    };
    // Kafka strings are UTF-8 on the wire, so rdkafka's UTF-8 expectations on these hold.
    if !info.protocol_type().is_empty() && info.protocol_type() != "consumer" {
        return Err(Error::kafka(format!(
            "group {group} is a {:?} group, not a consumer group: it cannot be a sharding group",
            info.protocol_type()
        )));
    }
    let mut members = Vec::with_capacity(info.members().len());
    for m in info.members() {
        let mut partitions = Vec::new();
        // No assignment bytes: the member joined and the coordinator has not assigned it yet.
        if let Some(bytes) = m.assignment().filter(|b| !b.is_empty()) {
            let decoded = assignment::decode(bytes)
                .map_err(|e| Error::kafka(format!("member {} of group {group}: {e}", m.client_id())))?;
            for (topic, ps) in decoded {
                let topic: Arc<str> = Arc::from(topic);
                partitions.extend(ps.into_iter().map(|p| (topic.clone(), p)));
            }
        }
        partitions.sort();
        partitions.dedup();
        members.push(Member {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            address: address_of(m.client_id()),
            partitions,
        });
    }
    members.sort_by(|a, b| (&a.address, &a.member_id).cmp(&(&b.address, &b.member_id)));
    Ok(Topology { state: info.state().to_string(), members })
}

/// Checks what [`Membership::join`] would refuse of a replica's identity: an instance id outside
/// Kafka's rule for `group.instance.id`, an address that cannot be advertised. Errors name the
/// `sharding.*` key.
pub fn check_member(instance_id: &str, address: &str) -> Result<(), Error> {
    client_id(address)?;
    group_instance_id(instance_id, address).map(|_| ())
}

/// The client id advertising `address`: [`CLIENT_ID_PREFIX`], then the address with every byte
/// outside `A-Za-z0-9.-_:[]` percent-escaped (host names, IPv4 and bracketed IPv6 addresses and
/// ports pass as they are).
fn client_id(address: &str) -> Result<String, Error> {
    const FIELD: &str = "sharding.advertise";
    if address.trim().is_empty() {
        return Err(invalid(FIELD, "must be the host:port clients reach this replica at"));
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(invalid(FIELD, &format!("is {} bytes long; at most {MAX_ADDRESS_LEN}", address.len())));
    }
    let mut id = String::with_capacity(CLIENT_ID_PREFIX.len() + address.len());
    id.push_str(CLIENT_ID_PREFIX);
    for b in address.bytes() {
        if b.is_ascii_alphanumeric() || b".-_:[]".contains(&b) {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(id)
}

/// The address a client id advertises, or `None` if it is not a replica's (another prefix, a bad
/// escape, not UTF-8 once unescaped).
fn address_of(client_id: &str) -> Option<String> {
    let escaped = client_id.strip_prefix(CLIENT_ID_PREFIX)?.as_bytes();
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'%' {
            let hex = std::str::from_utf8(escaped.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(escaped[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok().filter(|a| !a.is_empty())
}

/// The `group.instance.id` of a replica: its configured id, a `.`, and the FNV-1a hash of its
/// address in 16 hex digits, so that a replica that comes back on another address is another
/// member (see the module doc). The id must keep to Kafka's rule for instance ids.
fn group_instance_id(instance_id: &str, address: &str) -> Result<String, Error> {
    const FIELD: &str = "sharding.instance_id";
    if instance_id.is_empty() || instance_id == "." || instance_id == ".." {
        return Err(invalid(FIELD, "must name this replica (and be neither `.` nor `..`)"));
    }
    if instance_id.len() > MAX_INSTANCE_ID_LEN {
        return Err(invalid(FIELD, &format!("is {} bytes long; at most {MAX_INSTANCE_ID_LEN}", instance_id.len())));
    }
    if let Some(c) = instance_id.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-_".contains(*c))) {
        return Err(invalid(FIELD, &format!("contains {c:?}; only A-Z, a-z, 0-9, `.`, `_` and `-` are allowed")));
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash =
        address.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Ok(format!("{instance_id}.{hash:016x}"))
}

fn invalid(field: &str, message: &str) -> Error {
    Error::InvalidArgument { field: field.into(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_round_trips_through_the_client_id() {
        for address in ["10.0.0.7:50051", "[::1]:50051", "gw-3.tributary.svc.cluster.local:443", "a|b%c d/é"] {
            let id = client_id(address).unwrap();
            assert!(id.starts_with("tributary|"), "{id}");
            assert_eq!(id.matches('|').count(), 1, "{id}: the only `|` is the separator");
            assert_eq!(address_of(&id).as_deref(), Some(address), "{id}");
        }
        assert_eq!(client_id("10.0.0.7:50051").unwrap(), "tributary|10.0.0.7:50051", "readable as it is");
        assert_eq!(client_id("a|b%c").unwrap(), "tributary|a%7Cb%25c");
    }

    #[test]
    fn an_address_that_cannot_be_advertised_is_refused_by_name() {
        for address in ["", "  ", &"x".repeat(MAX_ADDRESS_LEN + 1)] {
            let err = client_id(address).unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument { field, .. } if field == "sharding.advertise"), "{err:?}");
        }
        assert!(client_id(&"x".repeat(MAX_ADDRESS_LEN)).is_ok());
    }

    #[test]
    fn the_instance_id_changes_with_the_address_and_keeps_to_kafkas_rule() {
        let id = group_instance_id("gw-0", "10.0.0.7:50051").unwrap();
        assert_eq!(id, group_instance_id("gw-0", "10.0.0.7:50051").unwrap(), "stable");
        assert!(id.starts_with("gw-0.") && id.len() == "gw-0.".len() + 16, "{id}");
        assert_ne!(id, group_instance_id("gw-0", "10.0.0.8:50051").unwrap(), "another address, another member");
        // FNV-1a of the empty string is its offset basis: the hash is the published one.
        assert_eq!(group_instance_id("x", "").unwrap(), "x.cbf29ce484222325");
        assert!(group_instance_id(&"a".repeat(MAX_INSTANCE_ID_LEN), "h:1").unwrap().len() <= 249);
        for bad in ["", ".", "..", "gw 0", "gw/0", "gw|0", "é", &"a".repeat(MAX_INSTANCE_ID_LEN + 1)] {
            let err = group_instance_id(bad, "h:1").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { field, .. } if field == "sharding.instance_id"),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_client_id_that_is_not_a_replicas_advertises_nothing() {
        for id in [
            "rdkafka",
            "tributary-ingest",
            "tributary|",
            "tributary|a%",
            "tributary|a%4",
            "tributary|%zz",
            "tributary|%FF",
        ] {
            assert_eq!(address_of(id), None, "{id}");
        }
    }

    #[test]
    fn owners_map_each_partition_to_its_members_address_and_skip_foreign_members() {
        let p = |t: &str, n: i32| (Arc::<str>::from(t), n);
        let member = |address: Option<&str>, partitions: Vec<Partition>| Member {
            member_id: "m".into(),
            client_id: "c".into(),
            address: address.map(str::to_string),
            partitions,
        };
        let topology = Topology {
            state: "Stable".into(),
            members: vec![
                member(Some("a:1"), vec![p("t", 0), p("t", 2)]),
                member(Some("b:1"), vec![p("t", 1), p("u", 0)]),
                member(None, vec![p("t", 3)]),
            ],
        };
        assert!(topology.is_stable());
        let owners: Vec<(Partition, &str)> = topology.owners().into_iter().collect();
        assert_eq!(owners, vec![(p("t", 0), "a:1"), (p("t", 1), "b:1"), (p("t", 2), "a:1"), (p("u", 0), "b:1")]);
        assert!(!Topology { state: "PreparingRebalance".into(), members: vec![] }.is_stable());
    }

    /// Tests against the real broker: two replicas in one group on a 4-partition topic.
    mod broker {
        use std::{
            collections::BTreeSet,
            time::{Duration, Instant},
        };

        use super::*;
        use crate::testing;

        /// How long a closed static member keeps its partitions. Above the broker's
        /// `group.min.session.timeout.ms` (6 s by Kafka's default) and long enough to tell a
        /// static rejoin (well under half of it) from a new member that waits for the old one's
        /// session to time out (at least two thirds of it: heartbeats come every third).
        const SESSION: Duration = Duration::from_secs(10);
        /// Longest wait for a rebalance to settle (a join, or a session timing out first).
        const SETTLE: Duration = Duration::from_secs(25);

        /// A membership and the partitions its changes say it holds.
        struct Replica {
            membership: Membership,
            changes: mpsc::Receiver<Change>,
            held: BTreeSet<Partition>,
            seen: Vec<Change>,
        }

        impl Replica {
            fn join(kafka: &KafkaConfig, group: &str, instance_id: &str, address: &str) -> Self {
                let member = MemberConfig {
                    group: group.into(),
                    instance_id: instance_id.into(),
                    address: address.into(),
                    session_timeout: SESSION,
                };
                let (membership, changes) = Membership::join(kafka, &member).expect("joined");
                Self { membership, changes, held: BTreeSet::new(), seen: Vec::new() }
            }

            /// Applies the changes received so far.
            fn drain(&mut self) {
                while let Ok(change) = self.changes.try_recv() {
                    match &change {
                        Change::Assigned(ps) => self.held.extend(ps.iter().cloned()),
                        Change::Revoked { partitions, .. } => partitions.iter().for_each(|p| {
                            self.held.remove(p);
                        }),
                        Change::Error { fatal: true, message } => panic!("fatal: {message}; seen {:?}", self.seen),
                        Change::Error { .. } => {}
                    }
                    self.seen.push(change);
                }
            }
        }

        /// Waits until `done` holds for the replicas' partitions, applying their changes.
        fn settle(replicas: &mut [&mut Replica], what: &str, done: impl Fn(&[&BTreeSet<Partition>]) -> bool) {
            let start = Instant::now();
            loop {
                replicas.iter_mut().for_each(|r| r.drain());
                let held: Vec<&BTreeSet<Partition>> = replicas.iter().map(|r| &r.held).collect();
                if done(&held) {
                    return;
                }
                if start.elapsed() > SETTLE {
                    let seen: Vec<&Vec<Change>> = replicas.iter().map(|r| &r.seen).collect();
                    panic!("{what}: not within {SETTLE:?}; held {held:?}, changes {seen:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// The topology once it is stable and `done` holds.
        fn topology_when(replica: &Replica, what: &str, done: impl Fn(&Topology) -> bool) -> Topology {
            let start = Instant::now();
            loop {
                let topology = replica.membership.topology().expect("a topology");
                if topology.is_stable() && done(&topology) {
                    return topology;
                }
                assert!(start.elapsed() < SETTLE, "{what}: not within {SETTLE:?}; last {topology:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        /// A new topic of `partitions` partitions, a new group, the configuration exposing the
        /// topic, and its partitions.
        fn fleet(prefix: &str, partitions: i32) -> (String, KafkaConfig, BTreeSet<Partition>) {
            let topic = testing::topic(prefix, partitions);
            let all = (0..partitions).map(|p| (Arc::from(topic.as_str()), p)).collect();
            (testing::unique(prefix), KafkaConfig { topics: vec![topic], ..testing::config() }, all)
        }

        fn owned_by<'a>(held: &BTreeSet<Partition>, address: &'a str) -> BTreeMap<Partition, &'a str> {
            held.iter().map(|p| (p.clone(), address)).collect()
        }

        #[test]
        fn replicas_split_the_partitions_a_closed_ones_move_and_a_restarted_one_takes_its_own_back() {
            let (group, kafka, all) = fleet("sharding", 4);
            let (address_a, address_b) = ("10.0.0.1:50051", "[::1]:50052");

            // One replica holds every partition.
            let mut a = Replica::join(&kafka, &group, "replica-a", address_a);
            settle(&mut [&mut a], "the first replica holds all", |held| held[0] == &all);
            assert_eq!(a.membership.assignment().unwrap().into_iter().collect::<BTreeSet<_>>(), all);

            // A second one takes half of them: no overlap, nothing left out.
            let mut b = Replica::join(&kafka, &group, "replica-b", address_b);
            settle(&mut [&mut a, &mut b], "two replicas split the partitions", |held| {
                held[0].len() == 2 && held[1].len() == 2
            });
            assert!(a.held.is_disjoint(&b.held), "{:?} and {:?}", a.held, b.held);
            assert_eq!(a.held.union(&b.held).cloned().collect::<BTreeSet<_>>(), all);
            assert!(
                a.seen.iter().all(|c| !matches!(c, Change::Revoked { lost: true, .. })),
                "a cooperative hand-over loses nothing: {:?}",
                a.seen
            );

            // The coordinator reports both addresses with exactly those partitions.
            let mut expected = owned_by(&a.held, address_a);
            expected.extend(owned_by(&b.held, address_b));
            let topology = topology_when(&a, "both replicas in the topology", |t| t.owners() == expected);
            assert_eq!(topology.members.len(), 2, "{topology:?}");
            assert_eq!(
                topology.members.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(),
                ["tributary|10.0.0.1:50051", "tributary|[::1]:50052"]
            );

            // A restart within the session: same instance id and address, same partitions, nothing moves.
            let (held_a, held_b) = (a.held.clone(), b.held.clone());
            b.membership.close();
            let restarted = Instant::now();
            let mut b = Replica::join(&kafka, &group, "replica-b", address_b);
            settle(&mut [&mut b], "the restarted replica holds its partitions again", |held| !held[0].is_empty());
            assert_eq!(b.held, held_b, "static membership: the restarted replica's own partitions");
            // A new member would have waited for the closed one's session to time out.
            assert!(restarted.elapsed() < SESSION / 2, "taken back without a rebalance ({:?})", restarted.elapsed());
            a.drain();
            assert_eq!(a.held, held_a, "the other replica kept its partitions: {:?}", a.seen);
            topology_when(&a, "the restarted replica in the topology", |t| t.owners() == expected);

            // Closed for good: once its session times out, its partitions move to the other.
            let closed = Instant::now();
            b.membership.close();
            settle(&mut [&mut a], "the remaining replica holds all", |held| held[0] == &all);
            assert!(closed.elapsed() >= SESSION / 2, "moved only once the session timed out ({:?})", closed.elapsed());
            let last = a.seen.iter().rev().find(|c| matches!(c, Change::Assigned(_)));
            assert_eq!(last, Some(&Change::Assigned(held_b.iter().cloned().collect())), "reported as assigned");
            let topology =
                topology_when(&a, "one replica in the topology", |t| t.owners() == owned_by(&all, address_a));
            assert_eq!(topology.members.len(), 1, "{topology:?}");
        }

        #[test]
        fn a_second_replica_with_the_same_instance_id_fences_the_first() {
            let (group, kafka, _) = fleet("fencing", 2);
            let mut first = Replica::join(&kafka, &group, "replica-x", "10.0.0.1:50051");
            settle(&mut [&mut first], "the first replica holds both partitions", |held| held[0].len() == 2);
            let mut second = Replica::join(&kafka, &group, "replica-x", "10.0.0.1:50051");
            settle(&mut [&mut second], "the second replica took its place", |held| held[0].len() == 2);
            let start = Instant::now();
            let fenced = loop {
                if let Ok(Change::Error { message, fatal: true }) = first.changes.try_recv() {
                    break message;
                }
                assert!(start.elapsed() < SETTLE, "the first replica was not fenced");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(fenced.contains("fenced"), "{fenced}");
            let topology = topology_when(&second, "the second replica alone", |t| t.members.len() == 1);
            assert_eq!(topology.members[0].address.as_deref(), Some("10.0.0.1:50051"));
        }

        #[test]
        fn a_replica_back_on_another_address_is_a_new_member_and_advertises_the_new_address() {
            // Under one group.instance.id the coordinator would keep the first address for good.
            let (group, kafka, all) = fleet("moved", 2);
            let mut old = Replica::join(&kafka, &group, "replica-m", "10.0.0.1:50051");
            settle(&mut [&mut old], "the replica holds both partitions", |held| held[0] == &all);
            old.membership.close();
            let closed = Instant::now();
            let mut new = Replica::join(&kafka, &group, "replica-m", "10.0.0.9:50051");
            settle(&mut [&mut new], "the replica on its new address holds both", |held| held[0] == &all);
            assert!(closed.elapsed() >= SESSION / 2, "a new member waits for the old one ({:?})", closed.elapsed());
            let topology =
                topology_when(&new, "the new address alone", |t| t.owners() == owned_by(&all, "10.0.0.9:50051"));
            assert_eq!(topology.members.len(), 1, "{topology:?}");
        }

        #[test]
        fn a_group_that_does_not_exist_is_dead_and_has_no_members() {
            let client: BaseConsumer = consumer_config(&testing::config(), "test", &[]).create().unwrap();
            let topology = topology(&client, &testing::unique("no-such-group")).unwrap();
            assert_eq!(topology, Topology { state: "Dead".into(), members: vec![] });
            assert!(topology.owners().is_empty() && !topology.is_stable());
        }
    }
}
