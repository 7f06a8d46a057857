//! Durable named subscriptions: [`Durable`] resolves where a named `Subscribe` starts, records
//! that start, hands the name over between streams, and commits, describes, lists and deletes
//! subscriptions for the gRPC layer, which only maps messages.
//!
//! Positions live in Kafka (the [`Positions`] port; consumer groups in production), never on the
//! gateway's disk: any gateway on the same Kafka resumes any subscription. A commit is what B
//! says it has applied; the gateway itself only records the start position a named stream was
//! opened with (B named it), and, with `auto_commit`, what it delivered.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use crate::{
    error::{Error, SubscriptionProblem},
    events,
    positions::{check_subscription_name, Committed, Positions, Stamp},
    record::PartitionOffset,
    source::Partition,
    subscribe::{self, start::WATERMARK_WAIT, Cursor, Stop},
    view::View,
    watermarks::{now_ms, Answer, WatermarkCache},
};

#[cfg(test)]
mod tests;

/// Subscriptions whose committed lag one gateway reports.
const LAG_SERIES: usize = 1000;

/// Named subscriptions of this gateway: their positions (the port) and the streams holding them.
pub struct Durable {
    positions: Arc<dyn Positions>,
    view: Arc<View>,
    watermarks: Arc<WatermarkCache>,
    /// Name → the stream that holds it on this gateway (its id and its stop signal).
    active: Mutex<HashMap<String, (u64, Stop)>>,
    next_id: AtomicU64,
    /// Name → the position last committed through this gateway, for the committed-lag metric
    /// (at most `LAG_SERIES` names, so the metric's series stay bounded).
    committed_here: Mutex<HashMap<String, Vec<PartitionOffset>>>,
}

/// A stream's hold on its subscription's name, released when the stream ends (unless a newer
/// stream has taken the name since).
pub struct Hold {
    durable: Arc<Durable>,
    name: String,
    id: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut active = lock(&self.durable.active);
        if active.get(&self.name).is_some_and(|(id, _)| *id == self.id) {
            active.remove(&self.name);
        }
    }
}

/// A subscription as Describe and List show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub name: String,
    /// Where its positions are kept ([`Positions::group`]), for operators.
    pub group: String,
    /// Whether a stream holds it on this gateway.
    pub active_here: bool,
    /// What its position was last committed with (topics, translator, when).
    pub stamp: Stamp,
    /// Every partition of its topics.
    pub partitions: Vec<PartitionPosition>,
}

/// A partition of a described subscription: its committed position and how far Kafka is ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    /// The next offset to deliver on resume; `None` when nothing is committed for the partition
    /// (one added since: it starts at its earliest offset).
    pub committed: Option<i64>,
    /// Kafka's latest offset (the offset after its last record).
    pub latest: i64,
    /// Offsets between where a resume starts and `latest`.
    pub lag: i64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
            active: Mutex::default(),
            next_id: AtomicU64::new(1),
            committed_here: Mutex::default(),
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
        check_subscription_name(name, "subscription_name")?;
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
        let older = lock(&self.active).insert(name.to_string(), (id, stop.clone()));
        if let Some((_, older)) = older {
            older.stop(name, "was opened by a newer stream");
        }
        Ok((stop, Hold { durable: self.clone(), name: name.to_string(), id }))
    }

    async fn commit_stamped(&self, name: &str, offsets: Vec<PartitionOffset>, stamp: Stamp) -> Result<(), Error> {
        let stamp = Stamp { committed_at_ms: now_ms(), ..stamp };
        let (owned, kept) = (name.to_string(), offsets.clone());
        self.call(move |p| p.commit(&owned, &offsets, &stamp)).await?;
        let mut committed_here = lock(&self.committed_here);
        if committed_here.len() < LAG_SERIES || committed_here.contains_key(name) {
            committed_here.insert(name.to_string(), kept);
        }
        Ok(())
    }

    /// Sets `tributary_subscription_committed_lag_records` for every subscription committed
    /// through this gateway: records between its committed position and the view's head.
    pub fn record_committed_lag(&self) {
        for (name, offsets) in lock(&self.committed_here).iter() {
            let lag: i64 = offsets
                .iter()
                .filter_map(|o| Some(self.view.topic(&o.topic).ok()?.shard(o.partition)?.lag(o.offset)))
                .sum();
            metrics::gauge!("tributary_subscription_committed_lag_records", "subscription" => name.clone())
                .set(lag as f64);
        }
    }

    /// Commits what B applied: offsets of the subscription's topics, within the retained range.
    pub async fn commit(&self, name: &str, offsets: Vec<PartitionOffset>) -> Result<(), Error> {
        check_subscription_name(name, "name")?;
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
        busy: &Arc<AtomicBool>,
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

    /// The subscription `name`: its stamp and, per partition of its topics, its committed
    /// position and lag behind Kafka's latest offset.
    pub async fn describe(&self, name: &str) -> Result<Described, Error> {
        check_subscription_name(name, "name")?;
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
                // Uncommitted partitions start at their earliest offset.
                let from = at.map_or(m.earliest, |o| o.offset.max(m.earliest));
                PartitionPosition {
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    committed: at.map(|o| o.offset),
                    latest: m.latest,
                    lag: (m.latest - from).max(0),
                }
            })
            .collect();
        Ok(Described {
            name: name.to_string(),
            group: self.positions.group(name),
            active_here: lock(&self.active).contains_key(name),
            stamp: committed.stamp,
            partitions,
        })
    }

    /// Every subscription whose name `visible` accepts (the caller's own, in the gRPC layer).
    pub async fn list(&self, visible: impl Fn(&str) -> bool + Send) -> Result<Vec<Described>, Error> {
        let names: Vec<String> = self.call(|p| p.names()).await?.into_iter().filter(|n| visible(n)).collect();
        let mut subscriptions = Vec::new();
        for name in names {
            match self.describe(&name).await {
                Ok(d) => subscriptions.push(d),
                // A group of the prefix with no offset of an exposed topic is not one of ours.
                Err(Error::Subscription { .. } | Error::InvalidArgument { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(subscriptions)
    }

    /// Deletes `name`'s positions; a stream holding it on this gateway ends ABORTED.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        check_subscription_name(name, "name")?;
        let active = lock(&self.active).remove(name);
        if let Some((_, stop)) = active {
            stop.stop(name, "was deleted");
        }
        if lock(&self.committed_here).remove(name).is_some() {
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
