//! Following a sharded fleet: each partition from the replica that holds it, merged into one
//! follow (`clients/FOLLOW.md`, "Sharded fleets").

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tonic::Code;

use crate::{
    follow::{record_change, retryable, Ended, Follow},
    pb::{self, subscribe_response::Message},
    Change, Client, ClientBuilder, Error, FollowError, FollowOptions, Handler, Position, Store,
};

/// A (topic, partition).
type Partition = (String, i32);

/// Follows `options.topics` through the fleet reached at `seeds` (`host:port` or whole targets;
/// `builder` gives every connection its TLS and token). A gateway without sharding is followed
/// exactly as [`crate::follow()`] does. On a sharded fleet: one snapshot per owner merged into one
/// reset and snapshot, then one stream per owner, applied one batch at a time with the whole
/// merged position; a partition that moves is followed to its new owner from its own offset.
pub async fn follow_fleet<H: Handler, S: Store>(
    builder: ClientBuilder,
    seeds: impl IntoIterator<Item = impl Into<String>>,
    options: FollowOptions,
    handler: &mut H,
    store: &mut S,
    stop: impl Future,
) -> Result<(), FollowError> {
    let mut fleet = Fleet { builder, seeds: seeds.into_iter().map(Into::into).collect(), clients: HashMap::new() };
    let first = fleet.seeds.first().cloned().ok_or_else(|| {
        FollowError::Gateway(Error::local(Code::InvalidArgument, "a fleet needs at least one seed address".into()))
    })?;
    let seed = fleet.client(&first).await?;
    let stop = std::pin::pin!(stop);
    let mut follow = Follow::new(seed, options, handler, store, stop).await?;
    let (address, topology) = loop {
        match fleet.topology(&follow.options.topics).await {
            Ok(found) => break found,
            Err(e) if retryable(&e) => {
                follow.report(&e);
                if follow.sleep().await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    follow.delay = follow.options.backoff.initial;
    if !topology.sharded {
        follow.client = fleet.client(&address).await?;
        return follow.run_to_end().await;
    }
    if follow.options.subscription_name.is_some() {
        // Each replica keeps the committed positions of the names opened on it.
        let message = "a named subscription cannot follow a sharded fleet: the store keeps the position".into();
        return Err(Error::local(Code::InvalidArgument, message).into());
    }
    follow.run_sharded(&mut fleet, Some(topology)).await
}

/// The replicas known so far and a connection to each.
struct Fleet {
    builder: ClientBuilder,
    seeds: Vec<String>,
    clients: HashMap<String, Client>,
}

impl Fleet {
    async fn client(&mut self, address: &str) -> Result<Client, Error> {
        if let Some(client) = self.clients.get(address) {
            return Ok(client.clone());
        }
        // Lazy: a replica that is down is an UNAVAILABLE call later, not a failed follow now.
        let client = self.builder.at(address).lazy().connect().await?;
        self.clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// The topology from the first seed or known replica that answers, with its address.
    async fn topology(&mut self, topics: &[String]) -> Result<(String, pb::GetTopologyResponse), Error> {
        let mut addresses = self.seeds.clone();
        addresses.extend(self.clients.keys().filter(|a| !self.seeds.contains(a)).cloned());
        let mut last = Error::local(Code::Unavailable, "no replica answered GetTopology".into());
        for address in addresses {
            let mut gateway = self.client(&address).await?.gateway;
            match gateway.get_topology(pb::GetTopologyRequest { topics: topics.to_vec() }).await {
                Ok(topology) => return Ok((address, topology.into_inner())),
                // A gateway older than sharding holds every partition.
                Err(s) if s.code() == Code::Unimplemented => return Ok((address, Default::default())),
                Err(s) => last = s.into(),
            }
        }
        Err(last)
    }
}

/// A stream open on one replica.
struct Stream {
    owner: String,
    /// The partitions it follows for the follow; the replica's others are ignored.
    partitions: BTreeSet<Partition>,
    abort: tokio::task::AbortHandle,
    /// Whether a message came: the replica is up and serves it.
    delivered: bool,
}

/// What a stream task tells the follow.
enum Event {
    Message(u64, pb::SubscribeResponse),
    /// The stream ended: without a status (`Ok`) or with one.
    End(u64, Result<(), Error>),
}

/// Groups `wanted` partitions by their owner in `topology`; the ones no replica holds (moving,
/// or unknown to the topology) come back apart.
pub(crate) fn by_owner(
    topology: &pb::GetTopologyResponse,
    wanted: &BTreeSet<Partition>,
) -> (BTreeMap<String, BTreeSet<Partition>>, BTreeSet<Partition>) {
    let mut owners: BTreeMap<String, BTreeSet<Partition>> = BTreeMap::new();
    let mut unowned = wanted.clone();
    for p in &topology.partitions {
        let key = (p.topic.clone(), p.partition);
        if !p.moving && !p.owner.is_empty() && unowned.remove(&key) {
            owners.entry(p.owner.clone()).or_default().insert(key);
        }
    }
    (owners, unowned)
}

/// Every partition the topology describes.
fn all_partitions(topology: &pb::GetTopologyResponse) -> BTreeSet<Partition> {
    topology.partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect()
}

/// Adds one owner's snapshot offsets to the merged position; a partition already there (two
/// replicas served it: it moved between their snapshots) is refused.
pub(crate) fn merge_disjoint(merged: &mut Position, part: &Position) -> Result<(), Partition> {
    if let Some((t, p, _)) = part.iter().find(|(t, p, _)| merged.get(t, *p).is_some()) {
        return Err((t.to_string(), p));
    }
    for (t, p, o) in part.iter() {
        merged.set(t, p, o);
    }
    Ok(())
}

/// The partitions of `position`.
fn partitions(position: &Position) -> BTreeSet<Partition> {
    position.iter().map(|(t, p, _)| (t.to_string(), p)).collect()
}

/// A stream that ended because its partitions are elsewhere now: follow them there.
fn moved(error: &Error) -> bool {
    error.code == Code::FailedPrecondition && error.reason() == "PARTITION_NOT_HELD"
}

impl<H: Handler, S: Store, F: Future> Follow<'_, H, S, F> {
    async fn run_sharded(
        &mut self,
        fleet: &mut Fleet,
        mut topology: Option<pb::GetTopologyResponse>,
    ) -> Result<(), FollowError> {
        loop {
            let error = match self.sharded_attempt(fleet, topology.take()).await {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Dropped) => continue,
                Err(FollowError::Gateway(e)) => e,
                Err(other) => return Err(other),
            };
            if error.code == Code::OutOfRange {
                // A partition's position cannot be continued: a new snapshot replaces the state.
                self.store.clear().await.map_err(FollowError::Store)?;
                self.position = None;
            } else if !retryable(&error) && !moved(&error) {
                return Err(FollowError::Gateway(error));
            }
            self.report(&error);
            if self.sleep().await {
                return Ok(());
            }
        }
    }

    async fn sharded_attempt(
        &mut self,
        fleet: &mut Fleet,
        topology: Option<pb::GetTopologyResponse>,
    ) -> Result<Ended, FollowError> {
        let topology = match topology {
            Some(t) => t,
            None => fleet.topology(&self.options.topics).await?.1,
        };
        if self.position.is_none() {
            if let Ended::Stopped = self.fleet_snapshot(fleet, &topology).await? {
                return Ok(Ended::Stopped);
            }
        }
        self.fleet_stream(fleet, topology).await
    }

    /// One snapshot per owner into one reset and snapshot; the position is the union of their
    /// offsets, which must be every partition exactly once.
    async fn fleet_snapshot(
        &mut self,
        fleet: &mut Fleet,
        topology: &pb::GetTopologyResponse,
    ) -> Result<Ended, FollowError> {
        let wanted = all_partitions(topology);
        let (owners, unowned) = by_owner(topology, &wanted);
        if !unowned.is_empty() {
            let message = format!("partitions {unowned:?} have no owner yet");
            return Err(Error::local(Code::Unavailable, message).into());
        }
        let mut merged = Position::default();
        for (i, owner) in owners.keys().enumerate() {
            let client = fleet.client(owner).await?;
            // One reset, before the first owner's first chunk: the owners' snapshots are one.
            let Some(offsets) = self.read_snapshot(&client, i == 0).await? else { return Ok(Ended::Stopped) };
            if let Err(p) = merge_disjoint(&mut merged, &offsets) {
                let message = format!("partition {p:?} moved during the snapshot");
                return Err(Error::local(Code::Unavailable, message).into());
            }
        }
        if partitions(&merged) != wanted {
            let message = "partitions moved during the snapshot: the owners' snapshots do not cover the topics".into();
            return Err(Error::local(Code::Unavailable, message).into());
        }
        self.store.save(&merged).await.map_err(FollowError::Store)?;
        self.position = Some(merged);
        Ok(Ended::Dropped)
    }

    /// One stream per owner from the position; the partitions of a stream that ends are routed
    /// again (after a backoff) to whoever holds them then.
    async fn fleet_stream(
        &mut self,
        fleet: &mut Fleet,
        topology: pb::GetTopologyResponse,
    ) -> Result<Ended, FollowError> {
        let (events, mut inbox) = mpsc::channel::<Event>(64);
        let mut tasks = JoinSet::new();
        // Each live stream: its replica, the partitions it speaks for, and how to end it.
        let mut live: HashMap<u64, Stream> = HashMap::new();
        let mut pending = partitions(self.position.as_ref().expect("a position after the snapshot"));
        let mut topology = Some(topology);
        let mut next_id = 0u64;
        let mut retry_at = Some(Instant::now());
        // The routing's own backoff: it grows until a stream it opened delivers (messages of the
        // other streams say nothing about a replica that is down).
        let backoff = self.options.backoff;
        let mut route_delay = backoff.initial;
        loop {
            let wake = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let event = tokio::select! {
                biased;
                _ = self.stop.as_mut() => return Ok(Ended::Stopped),
                event = inbox.recv() => event.expect("the follow holds a sender"),
                _ = tokio::time::sleep_until(wake), if retry_at.is_some() => {
                    retry_at = None;
                    let current = match topology.take() {
                        Some(t) => Ok(t),
                        None => fleet.topology(&self.options.topics).await.map(|(_, t)| t),
                    };
                    match current {
                        Ok(current) => {
                            let (owners, unowned) = by_owner(&current, &pending);
                            for (owner, mut group) in owners {
                                // One stream per replica: a Subscribe also reads the replica's
                                // partitions it does not list (from their start, rule 4), so a
                                // second stream there would read them twice. The one there now
                                // ends and the new one takes its partitions on at the position.
                                let there: Vec<u64> =
                                    live.iter().filter(|(_, s)| s.owner == owner).map(|(id, _)| *id).collect();
                                for id in there {
                                    let stream = live.remove(&id).expect("listed");
                                    stream.abort.abort();
                                    group.extend(stream.partitions);
                                }
                                let client = fleet.client(&owner).await?;
                                let position = self.position.as_ref().expect("a position");
                                let from = group
                                    .iter()
                                    .map(|(t, p)| pb::PartitionOffset {
                                        topic: t.clone(),
                                        partition: *p,
                                        offset: position.get(t, *p).unwrap_or(0),
                                    })
                                    .collect();
                                let request = pb::SubscribeRequest {
                                    from_offsets: from,
                                    key_filter: self.options.key_filter.clone(),
                                    record_filter: self.options.record_filter.clone(),
                                    conflate: self.options.conflate,
                                    max_batch_records: self.options.max_batch_records,
                                    translator: self.options.translator.clone(),
                                    ..Default::default()
                                };
                                let abort = tasks.spawn(stream_task(next_id, client, request, events.clone()));
                                live.insert(next_id, Stream { owner, partitions: group, abort, delivered: false });
                                next_id += 1;
                            }
                            pending = unowned;
                        }
                        Err(e) if retryable(&e) => self.report(&e),
                        Err(e) => return Err(e.into()),
                    }
                    if !pending.is_empty() {
                        retry_at = Some(Instant::now() + backoff.next_wait(&mut route_delay));
                    }
                    while tasks.try_join_next().is_some() {}
                    continue;
                }
            };
            match event {
                Event::Message(id, message) => {
                    // A stream ended meanwhile: what it sent last is read again by its successor.
                    let Some(Stream { partitions: held, delivered, .. }) = live.get_mut(&id) else { continue };
                    if !*delivered {
                        *delivered = true;
                        route_delay = backoff.initial;
                    }
                    let ours = |topic: &str, partition: i32| held.contains(&(topic.to_string(), partition));
                    self.delay = self.options.backoff.initial;
                    let mut next = self.position.clone().unwrap_or_default();
                    match message.message {
                        Some(Message::Records(batch)) => {
                            // Only this stream's partitions: the replica also sends the ones it
                            // holds that another stream follows (or that just moved to it).
                            let records: Vec<pb::Record> =
                                batch.records.into_iter().filter(|r| ours(&r.topic, r.partition)).collect();
                            if records.is_empty() {
                                continue;
                            }
                            for r in &records {
                                next.set(&r.topic, r.partition, r.offset + 1);
                            }
                            let changes: Vec<Change> = records.into_iter().map(record_change).collect();
                            self.handler.apply(&changes, Some(&next)).await.map_err(FollowError::Handler)?;
                        }
                        Some(Message::Progress(progress)) => {
                            for o in progress.offsets.iter().filter(|o| ours(&o.topic, o.partition)) {
                                next.set(&o.topic, o.partition, o.offset);
                            }
                        }
                        None => continue,
                    }
                    if self.position.as_ref() != Some(&next) {
                        self.store.save(&next).await.map_err(FollowError::Store)?;
                        self.position = Some(next);
                    }
                }
                Event::End(id, result) => {
                    let Some(Stream { partitions: held, .. }) = live.remove(&id) else { continue };
                    let error = match result {
                        Ok(()) => Error::local(Code::Unavailable, "a stream ended without a status".into()),
                        Err(e) => e,
                    };
                    if !(retryable(&error) || moved(&error)) {
                        // OUT_OF_RANGE (a new snapshot) or a refusal: the caller decides.
                        return Err(error.into());
                    }
                    self.report(&error);
                    pending.extend(held);
                    if retry_at.is_none() {
                        retry_at = Some(Instant::now() + backoff.next_wait(&mut route_delay));
                    }
                }
            }
        }
    }
}

/// Reads one stream into the follow's inbox, then says how it ended.
async fn stream_task(id: u64, client: Client, request: pb::SubscribeRequest, events: mpsc::Sender<Event>) {
    let read = async {
        let mut gateway = client.gateway;
        let mut stream = gateway.subscribe(request).await?.into_inner();
        while let Some(message) = stream.message().await? {
            if events.send(Event::Message(id, message)).await.is_err() {
                break;
            }
        }
        Ok::<(), tonic::Status>(())
    };
    let result = read.await.map_err(Error::from);
    let _ = events.send(Event::End(id, result)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(topic: &str, partition: i32, owner: &str, moving: bool) -> pb::PartitionOwner {
        pb::PartitionOwner { topic: topic.into(), partition, owner: owner.into(), moving }
    }

    fn set(parts: &[(&str, i32)]) -> BTreeSet<Partition> {
        parts.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn partitions_are_grouped_by_owner_and_the_unheld_kept_apart() {
        let topology = pb::GetTopologyResponse {
            partitions: vec![
                owner("t", 0, "a:1", false),
                owner("t", 1, "b:1", false),
                owner("t", 2, "a:1", false),
                owner("t", 3, "", true),
                owner("u", 0, "b:1", false),
            ],
            sharded: true,
            ..Default::default()
        };
        let wanted = set(&[("t", 0), ("t", 1), ("t", 2), ("t", 3), ("t", 9)]);
        let (owners, unowned) = by_owner(&topology, &wanted);
        assert_eq!(owners.len(), 2);
        assert_eq!(owners["a:1"], set(&[("t", 0), ("t", 2)]));
        assert_eq!(owners["b:1"], set(&[("t", 1)]), "only the partitions asked for");
        assert_eq!(unowned, set(&[("t", 3), ("t", 9)]), "moving, and unknown to the topology");
    }

    #[test]
    fn owners_snapshot_offsets_merge_into_one_position_each_partition_once() {
        let offsets = |parts: &[(i32, i64)]| {
            Position::from_offsets(
                &parts
                    .iter()
                    .map(|(p, o)| pb::PartitionOffset { topic: "t".into(), partition: *p, offset: *o })
                    .collect::<Vec<_>>(),
            )
        };
        let mut merged = Position::default();
        merge_disjoint(&mut merged, &offsets(&[(0, 10), (2, 30)])).unwrap();
        merge_disjoint(&mut merged, &offsets(&[(1, 20)])).unwrap();
        assert_eq!(merged, offsets(&[(0, 10), (1, 20), (2, 30)]));
        assert_eq!(partitions(&merged), set(&[("t", 0), ("t", 1), ("t", 2)]));
        // A partition two owners served (it moved between their snapshots) is refused, untouched.
        assert_eq!(merge_disjoint(&mut merged, &offsets(&[(3, 1), (1, 25)])), Err(("t".to_string(), 1)));
        assert_eq!(merged.get("t", 1), Some(20));
        assert_eq!(merged.get("t", 3), None);
    }

    #[test]
    fn a_partition_held_elsewhere_is_followed_there_and_other_refusals_are_not() {
        let mut e = Error::local(Code::FailedPrecondition, String::new());
        e.reason = Some("PARTITION_NOT_HELD".into());
        assert!(moved(&e));
        e.reason = Some("NO_COMMITTED_POSITION".into());
        assert!(!moved(&e));
    }
}
