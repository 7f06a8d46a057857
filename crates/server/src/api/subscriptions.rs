//! Durable named subscriptions: [`Durable`] resolves where a named `Subscribe` starts, records
//! that start, and hands the name over between streams; [`SubscriptionsService`] is the
//! `tributary.v1.Subscriptions` service (Commit, List, Describe, Delete).
//!
//! Positions live in Kafka (the core's [`Positions`] port; consumer groups in production), never
//! on the gateway's disk: any gateway on the same Kafka resumes any subscription. A commit is
//! what B says it has applied; the gateway itself only records the start position a named stream
//! was opened with (B named it), and, with `auto_commit`, what it delivered.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use dashmap::DashMap;
use tonic::{Request, Response, Status};
use tributary_core::{
    events,
    positions::{check_name, Committed, Positions, Stamp},
    source::Partition,
    subscribe::{self, Cursor, Stop},
    translate::Translation,
    view::View,
    watermarks::{Answer, WatermarkCache},
    Error, PartitionOffset, SubscriptionProblem,
};

use crate::{
    api::{convert, status::status},
    auth::{audit, Auth, Caller, Permission},
    pb,
};

/// How long Describe and List wait for Kafka's watermarks before they use the last known ones.
const WATERMARK_WAIT: Duration = Duration::from_secs(1);

/// Named subscriptions of this gateway: their positions in Kafka and the streams holding them.
pub struct Durable {
    positions: Arc<dyn Positions>,
    view: Arc<View>,
    watermarks: Arc<WatermarkCache>,
    /// Name → the stream that holds it on this gateway (its id and its stop signal).
    active: DashMap<String, (u64, Stop)>,
    next_id: AtomicU64,
    /// Name → the position last committed through this gateway, for the committed-lag metric
    /// (at most `LAG_SERIES` names, so the metric's series stay bounded).
    committed_here: DashMap<String, Vec<PartitionOffset>>,
}

/// Subscriptions whose committed lag one gateway reports.
const LAG_SERIES: usize = 1000;

/// A stream's hold on its subscription's name, released when the stream ends (unless a newer
/// stream has taken the name since).
pub struct Hold {
    durable: Arc<Durable>,
    name: String,
    id: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.durable.active.remove_if(&self.name, |_, (id, _)| *id == self.id);
    }
}

/// A subscription as Describe and List show it.
struct Described {
    name: String,
    committed: Committed,
    partitions: Vec<pb::PartitionPosition>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The stamp of a request: its topics and its translator (digest and configuration).
pub fn stamp(topics: Vec<String>, reference: Option<&pb::TranslatorRef>, translation: Option<&Translation>) -> Stamp {
    let (translator_name, translator_digest, config_sha256) = match (reference, translation) {
        (Some(r), Some(t)) => (t.name.clone(), t.digest.clone(), tributary_wasm::sha256_hex(r.config.as_bytes())),
        _ => Default::default(),
    };
    Stamp { topics, translator_name, translator_digest, config_sha256, committed_at_ms: 0 }
}

fn describe_translator(stamp: &Stamp) -> String {
    match stamp.translator_digest.is_empty() {
        true => "no translator".into(),
        false => format!(
            "translator '{}' (digest {}, configuration sha256 {})",
            stamp.translator_name, stamp.translator_digest, stamp.config_sha256
        ),
    }
}

impl Durable {
    pub fn new(positions: Arc<dyn Positions>, view: Arc<View>, watermarks: Arc<WatermarkCache>) -> Arc<Self> {
        Arc::new(Self {
            positions,
            view,
            watermarks,
            active: DashMap::new(),
            next_id: AtomicU64::new(1),
            committed_here: DashMap::new(),
        })
    }

    /// Runs a blocking call of the positions port off the async threads.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Positions) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let positions = self.positions.clone();
        tokio::task::spawn_blocking(move || f(positions.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("positions task: {e}")))?
    }

    /// Every partition of the exposed topics (a subscription follows some of them).
    fn exposed_partitions(&self) -> Vec<Partition> {
        self.view.topics().flat_map(|t| t.shards()).map(|s| (s.topic.clone(), s.partition)).collect()
    }

    /// The position committed under `name`, or NOT_FOUND / `problem` when there is none.
    async fn committed(&self, name: &str, problem: SubscriptionProblem) -> Result<Committed, Error> {
        self.view.check_assigned()?;
        let (owned, partitions) = (name.to_string(), self.exposed_partitions());
        let committed = self.call(move |p| p.committed(&owned, &partitions)).await?;
        committed.ok_or_else(|| {
            let message = match problem {
                SubscriptionProblem::NoPosition => "nothing is committed under this name: take a snapshot, then subscribe with its offsets and this name to start the subscription",
                _ => "no such subscription (Subscriptions/List shows them)",
            };
            Error::subscription(name, problem, message)
        })
    }

    /// Where a named `Subscribe` starts: the request's own offsets, or the position committed
    /// under the name (with its topics, and only with its translator unless `accept_change`).
    /// Returns the topics and offsets to plan with.
    pub async fn start(
        &self,
        name: &str,
        topics: Vec<String>,
        from: Vec<PartitionOffset>,
        request: &Stamp,
        accept_change: bool,
    ) -> Result<(Vec<String>, Vec<PartitionOffset>), Error> {
        check_name(name, "subscription_name")?;
        if !from.is_empty() {
            return Ok((topics, from));
        }
        let committed = self.committed(name, SubscriptionProblem::NoPosition).await?;
        let stored = committed.stamp;
        let set = |t: &[String]| t.iter().cloned().collect::<BTreeSet<_>>();
        if !topics.is_empty() && set(&topics) != set(&stored.topics) {
            return Err(Error::subscription(
                name,
                SubscriptionProblem::TopicsChanged,
                format!(
                    "it follows {:?}, not {topics:?}: leave `topics` empty to resume it, or use another name to follow other topics",
                    stored.topics
                ),
            ));
        }
        if !accept_change && !stored.same_translator(request) {
            return Err(Error::subscription(
                name,
                SubscriptionProblem::TranslatorChanged,
                format!(
                    "its position was committed with {} but this request uses {}; set `accept_translator_change` to resume with it anyway, or take a new snapshot",
                    describe_translator(&stored),
                    describe_translator(request)
                ),
            ));
        }
        let offsets = committed.offsets.into_iter().filter(|o| stored.topics.contains(&o.topic)).collect();
        Ok((stored.topics, offsets))
    }

    /// Records the start position of a named stream and takes the name over: a stream holding
    /// it on this gateway ends ABORTED with its position.
    pub async fn begin(self: &Arc<Self>, name: &str, cursors: &[Cursor], stamp: Stamp) -> Result<(Stop, Hold), Error> {
        let offsets: Vec<PartitionOffset> = cursors.iter().map(|c| c.shard.at(c.pos)).collect();
        self.commit_stamped(name, offsets, stamp).await?;
        let (id, stop) = (self.next_id.fetch_add(1, Ordering::Relaxed), Stop::default());
        if let Some((_, old)) = self.active.insert(name.to_string(), (id, stop.clone())) {
            old.stop(name, "was opened by a newer stream");
        }
        Ok((stop, Hold { durable: self.clone(), name: name.to_string(), id }))
    }

    async fn commit_stamped(&self, name: &str, offsets: Vec<PartitionOffset>, stamp: Stamp) -> Result<(), Error> {
        let stamp = Stamp { committed_at_ms: now_ms(), ..stamp };
        let (owned, kept) = (name.to_string(), offsets.clone());
        self.call(move |p| p.commit(&owned, &offsets, &stamp)).await?;
        if self.committed_here.len() < LAG_SERIES || self.committed_here.contains_key(name) {
            self.committed_here.insert(name.to_string(), kept);
        }
        Ok(())
    }

    /// Sets `tributary_subscription_committed_lag_records` for every subscription committed
    /// through this gateway: records between its committed position and the view's head.
    pub fn record_committed_lag(&self) {
        for entry in self.committed_here.iter() {
            let lag: i64 = entry
                .value()
                .iter()
                .filter_map(|o| Some(self.view.topic(&o.topic).ok()?.shard(o.partition)?.lag(o.offset)))
                .sum();
            metrics::gauge!("tributary_subscription_committed_lag_records", "subscription" => entry.key().clone())
                .set(lag as f64);
        }
    }

    /// Commits what B applied: offsets of the subscription's topics, within the retained range.
    pub async fn commit(&self, name: &str, offsets: Vec<PartitionOffset>) -> Result<(), Error> {
        check_name(name, "name")?;
        if offsets.is_empty() {
            return Err(Error::invalid("offsets", "list the position to commit: the next offset per partition"));
        }
        let committed = self.committed(name, SubscriptionProblem::NoPosition).await?;
        let followed = &committed.stamp.topics;
        for (i, o) in offsets.iter().enumerate() {
            if !o.topic.is_empty() && self.view.topic(&o.topic).is_ok() && !followed.contains(&o.topic) {
                return Err(Error::invalid(
                    format!("offsets[{i}].topic"),
                    format!("subscription '{name}' follows {followed:?}, not '{}'", o.topic),
                ));
            }
        }
        // The same checks as a Subscribe's start: known partitions, no negative offset, none
        // listed twice, each within Kafka's retained range.
        let plan = subscribe::plan_offsets(&self.view, &[], &offsets, "offsets")?;
        plan.cursors(&self.watermarks).await?;
        self.commit_stamped(name, offsets, committed.stamp).await
    }

    /// A commit of a delivered position (`auto_commit`), in the background: at most one at a
    /// time per stream (a later progress commits a later position anyway).
    pub fn auto_commit(
        self: &Arc<Self>,
        name: &str,
        offsets: Vec<PartitionOffset>,
        stamp: &Stamp,
        busy: &Arc<std::sync::atomic::AtomicBool>,
    ) {
        if busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (durable, name, stamp, busy) = (self.clone(), name.to_string(), stamp.clone(), busy.clone());
        tokio::spawn(async move {
            if let Err(e) = durable.commit_stamped(&name, offsets, stamp).await {
                events::emit(&events::AutoCommitFailed { subscription: name.clone(), error: e.to_string() });
            }
            busy.store(false, Ordering::Release);
        });
    }

    async fn describe(&self, name: &str) -> Result<Described, Error> {
        check_name(name, "name")?;
        let committed = self.committed(name, SubscriptionProblem::Unknown).await?;
        let topics = self.view.requested(&committed.stamp.topics, "topics").unwrap_or_default();
        let shards: Vec<_> = topics.iter().flat_map(|t| t.shards()).collect();
        let partitions: Vec<Partition> = shards.iter().map(|s| (s.topic.clone(), s.partition)).collect();
        let Answer { marks, .. } = self.watermarks.get(&partitions, WATERMARK_WAIT).await?;
        let partitions = shards
            .iter()
            .zip(marks)
            .map(|(s, m)| {
                let at = committed.offsets.iter().find(|o| *o.topic == *s.topic && o.partition == s.partition);
                let committed_offset = at.map_or(-1, |o| o.offset);
                // Uncommitted partitions start at their earliest offset.
                let from = at.map_or(m.earliest, |o| o.offset.max(m.earliest));
                pb::PartitionPosition {
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    committed_offset,
                    latest_offset: m.latest,
                    lag: (m.latest - from).max(0),
                }
            })
            .collect();
        Ok(Described { name: name.to_string(), committed, partitions })
    }

    fn info(&self, d: Described) -> pb::SubscriptionInfo {
        let stamp = d.committed.stamp;
        pb::SubscriptionInfo {
            group: self.positions.group(&d.name),
            active_here: self.active.contains_key(&d.name),
            name: d.name,
            topics: stamp.topics,
            partitions: d.partitions,
            translator_name: stamp.translator_name,
            translator_digest: stamp.translator_digest,
            translator_config_sha256: stamp.config_sha256,
            committed_at_ms: stamp.committed_at_ms,
        }
    }

    async fn delete(&self, name: &str) -> Result<(), Error> {
        check_name(name, "name")?;
        if let Some((_, (_, stop))) = self.active.remove(name) {
            stop.stop(name, "was deleted");
        }
        if self.committed_here.remove(name).is_some() {
            metrics::gauge!("tributary_subscription_committed_lag_records", "subscription" => name.to_string())
                .set(0.0);
        }
        let owned = name.to_string();
        match self.call(move |p| p.delete(&owned)).await? {
            true => Ok(()),
            false => Err(Error::subscription(
                name,
                SubscriptionProblem::Unknown,
                "no such subscription (Subscriptions/List shows them)",
            )),
        }
    }
}

/// The `tributary.v1.Subscriptions` service.
#[derive(Clone)]
pub struct SubscriptionsService {
    durable: Arc<Durable>,
    /// Who owns which subscription names.
    auth: Arc<Auth>,
}

impl SubscriptionsService {
    pub fn new(durable: Arc<Durable>, auth: Arc<Auth>) -> Self {
        Self { durable, auth }
    }

    /// Checks the name, then that the caller owns it.
    fn owns(&self, caller: &Caller, name: &str) -> Result<(), Status> {
        check_name(name, "name").map_err(status)?;
        self.auth.check(caller, Permission::OwnSubscription(name)).map_err(status)
    }
}

#[tonic::async_trait]
impl pb::subscriptions_server::Subscriptions for SubscriptionsService {
    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::CommitResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        self.owns(&caller, &request.name)?;
        let offsets = request.offsets.into_iter().map(convert::from_partition_offset).collect();
        let what = format!("{} {offsets:?}", request.name);
        self.durable.commit(&request.name, offsets).await.map_err(status)?;
        audit(&caller, "commit subscription", &what);
        let described = self.durable.describe(&request.name).await.map_err(status)?;
        Ok(Response::new(pb::CommitResponse { subscription: Some(self.durable.info(described)) }))
    }

    async fn list(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = Caller::of(&request);
        let names = self.durable.call(|p| p.names()).await.map_err(status)?;
        let mut subscriptions = Vec::new();
        // Only the names the caller owns.
        for name in names.into_iter().filter(|n| self.auth.allows(&caller, Permission::OwnSubscription(n))) {
            match self.durable.describe(&name).await {
                Ok(d) => subscriptions.push(self.durable.info(d)),
                // A group of the prefix with no offset of an exposed topic is not one of ours.
                Err(Error::Subscription { .. } | Error::InvalidArgument { .. }) => {}
                Err(e) => return Err(status(e)),
            }
        }
        Ok(Response::new(pb::ListSubscriptionsResponse { subscriptions }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        self.owns(&caller, &name)?;
        let described = self.durable.describe(&name).await.map_err(status)?;
        Ok(Response::new(self.durable.info(described)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        self.owns(&caller, &name)?;
        self.durable.delete(&name).await.map_err(status)?;
        audit(&caller, "delete subscription", &name);
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }
}
