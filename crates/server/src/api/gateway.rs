//! The `tributary.v1.Gateway` service: checks each request, asks the core for the work, and
//! streams the core's events out as protobuf. Every stream's task is tracked, so shutdown can
//! wait for the last one.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tonic::{metadata::MetadataMap, Request, Response, Status};
use tracing::Instrument;
use tributary_core::{
    buffer,
    durable::Durable,
    limits::requested_or_max,
    positions::{check_subscription_name, Stamp},
    snapshot::{self, SnapshotEvent},
    subscribe::{self, start, Shared, Stop, Subscription},
    translate::Translation,
    view::{TopicView, View},
    watermarks::Answer,
    Error,
};
use tributary_wasm::{registry, Registry};

use crate::{
    api::{
        chunker::{Chunk, Chunker},
        convert,
        encode::SubscribeWire,
        lag::StreamLags,
        status::status,
        subscriptions,
    },
    auth::{Auth, Caller, Permission},
    pb,
    sharding::Topology,
};

/// How long DescribeTopics waits for Kafka before it answers with the last known watermarks.
const DESCRIBE_WAIT: Duration = Duration::from_secs(1);

/// The gateway service; cheap to clone.
#[derive(Clone)]
pub struct GatewayService {
    pub(crate) view: Arc<View>,
    pub(crate) shared: Shared,
    pub(crate) registry: Arc<Registry>,
    /// Open `Subscribe` and `GetSnapshot` streams.
    pub(crate) streams: Arc<Semaphore>,
    /// Bytes every stream's buffer shares (`limits.stream_buffer_total_bytes`).
    pub(crate) buffers: buffer::Budget,
    /// Every stream's task, so that shutdown knows when the last one ended.
    pub(crate) tasks: TaskTracker,
    /// Named subscriptions.
    pub(crate) durable: Arc<Durable>,
    /// Who may read which topics and use which translators.
    pub(crate) auth: Arc<Auth>,
    /// Where each open Subscribe stream's client stands.
    pub(crate) lags: StreamLags,
    /// Who holds which partition (sharding): GetTopology, and where a call on a partition held
    /// elsewhere should go.
    pub(crate) topology: Arc<Topology>,
}

impl GatewayService {
    pub fn new(
        view: Arc<View>,
        shared: Shared,
        registry: Arc<Registry>,
        tasks: TaskTracker,
        durable: Arc<Durable>,
        auth: Arc<Auth>,
        buffers: buffer::Budget,
    ) -> Self {
        let streams = Arc::new(Semaphore::new(shared.limits.max_streams));
        Self {
            view,
            shared,
            registry,
            streams,
            buffers,
            tasks,
            durable,
            auth,
            lags: StreamLags::default(),
            topology: Arc::default(),
        }
    }

    /// Answers GetTopology, and locates partitions held elsewhere, from `topology`.
    pub fn with_topology(mut self, topology: Arc<Topology>) -> Self {
        self.topology = topology;
        self
    }

    /// Registers every Subscribe stream's delivered position in `lags` (sampled into metrics).
    pub fn with_lags(mut self, lags: StreamLags) -> Self {
        self.lags = lags;
        self
    }

    /// Resolves the request's translator, instantiating it (and calling `init`) if no other
    /// call uses the same (digest, configuration).
    pub(crate) async fn translation(
        &self,
        caller: &Caller,
        reference: Option<pb::TranslatorRef>,
        field: &str,
    ) -> Result<Option<Translation>, Error> {
        let Some(reference) = reference else { return Ok(None) };
        if reference.name.is_empty() {
            return Err(Error::invalid(
                format!("{field}.name"),
                "name the translator to use (Translators/List shows them)",
            ));
        }
        registry::check_translator_name(&reference.name).map_err(|m| Error::invalid(format!("{field}.name"), m))?;
        registry::check_digest(&reference.digest).map_err(|m| Error::invalid(format!("{field}.digest"), m))?;
        self.auth.check(caller, Permission::UseTranslator(&reference.name))?;
        let (registry, reference) = (self.registry.clone(), convert::translator_ref(reference));
        let translation = tokio::task::spawn_blocking(move || registry.resolve(&reference))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(Some(translation))
    }

    /// Checks that `caller` may read every topic of `topics`.
    fn check_read<'a>(&self, caller: &Caller, topics: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
        topics.into_iter().try_for_each(|t| self.auth.check(caller, Permission::ReadTopic(t)))
    }

    pub(crate) fn stream_permit(&self, kind: &'static str) -> Result<StreamSlot, Error> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this gateway serves at most {} streams at once (limits.max_streams); retry later or use another replica",
                self.shared.limits.max_streams
            ))
        })?;
        metrics::gauge!("tributary_streams_open", "kind" => kind).increment(1.0);
        Ok(StreamSlot { _permit: permit, kind })
    }

    /// The topics a describing call names, or every exposed topic the caller may read.
    fn described(&self, caller: &Caller, names: &[String]) -> Result<Vec<Arc<TopicView>>, Error> {
        if names.is_empty() {
            return Ok(self
                .view
                .topics()
                .filter(|t| self.auth.allows(caller, Permission::ReadTopic(&t.name)))
                .cloned()
                .collect());
        }
        let topics = self.view.requested(names, "topics")?;
        self.check_read(caller, topics.iter().map(|t| &*t.name))?;
        Ok(topics)
    }

    async fn describe(
        &self,
        caller: &Caller,
        request: pb::DescribeTopicsRequest,
    ) -> Result<pb::DescribeTopicsResponse, Error> {
        let topics = self.described(caller, &request.topics)?;
        self.view.check_assigned()?;
        let shards: Vec<_> = topics.iter().flat_map(|t| t.shards()).collect();
        let partitions: Vec<_> = shards.iter().map(|s| (s.topic.clone(), s.partition)).collect();
        let Answer { marks, stale } = self.shared.watermarks.get(&partitions, DESCRIBE_WAIT).await?;
        let mut out: Vec<pb::TopicDescription> =
            topics.iter().map(|t| pb::TopicDescription { name: t.name.to_string(), partitions: Vec::new() }).collect();
        for (shard, m) in shards.iter().zip(marks) {
            let topic = out.iter_mut().find(|t| *t.name == *shard.topic).expect("shard of a listed topic");
            topic.partitions.push(pb::PartitionDescription {
                partition: shard.partition,
                earliest_offset: m.earliest,
                latest_offset: m.latest,
                view_offset: shard.next_offset(),
                keys: shard.keys() as u64,
            });
        }
        Ok(pb::DescribeTopicsResponse {
            topics: out,
            ready: self.view.is_ready(),
            kafka_reachable: stale.is_none(),
            watermarks_age_ms: stale.map_or(0, |age| age.as_millis().max(1) as i64),
        })
    }

    async fn topology(
        &self,
        caller: &Caller,
        request: pb::GetTopologyRequest,
    ) -> Result<pb::GetTopologyResponse, Error> {
        let topics = self.described(caller, &request.topics)?;
        self.view.check_assigned()?;
        let owners = self.topology.owners().await?;
        let mut partitions = Vec::new();
        for topic in &topics {
            for partition in 0..topic.partitions() {
                let owner = owners.owner(&topic.name, partition);
                partitions.push(pb::PartitionOwner {
                    topic: topic.name.to_string(),
                    partition,
                    owner: owner.unwrap_or_default().to_string(),
                    moving: owner.is_none(),
                });
            }
        }
        Ok(pb::GetTopologyResponse {
            partitions,
            sharded: owners.owners.is_some(),
            address: owners.address.clone(),
            group_state: owners.state.clone(),
        })
    }

    async fn snapshot(
        &self,
        caller: &Caller,
        request: pb::GetSnapshotRequest,
        wait: Duration,
    ) -> Result<BoxStream<'static, Result<Chunk, Status>>, Error> {
        if request.topics.is_empty() && request.as_of_offsets.is_empty() {
            return Err(Error::invalid("topics", "name at least one topic to snapshot"));
        }
        let as_of: Vec<_> = request.as_of_offsets.into_iter().map(convert::from_partition_offset).collect();
        // With offsets, they are checked as a Subscribe's are (which needs the partitions known).
        let plan = match as_of.is_empty() {
            true => None,
            false => Some(start::plan_offsets(&self.view, &request.topics, &as_of, "as_of_offsets")?),
        };
        let topics = match &plan {
            None => self.view.requested(&request.topics, "topics")?,
            Some(plan) => plan.topics.clone(),
        };
        self.check_read(caller, topics.iter().map(|t| &*t.name))?;
        let filter = convert::filter(request.key_filter, request.record_filter)?;
        let limits = &self.shared.limits;
        let max_chunk_bytes = requested_or_max(request.max_chunk_bytes as usize, limits.max_chunk_bytes);
        let translation = self.translation(caller, request.translator, "translator").await?;
        let permit = self.stream_permit("snapshot")?;
        snapshot::wait_ready(&self.view, wait).await?;
        let taken = match &plan {
            None => snapshot::take(&self.view, &topics)?,
            Some(plan) => {
                snapshot::take_as_of(&self.view, &topics, plan.offsets(), &self.shared.watermarks, wait).await?
            }
        };
        let offsets = convert::offsets(&taken.offsets);
        let (tx, rx) = buffer::channel(limits.stream_buffer_messages, limits.stream_buffer_bytes, &self.buffers);
        self.tasks.spawn(
            async move {
                let _permit = permit;
                snapshot::stream(taken, filter, translation, max_chunk_bytes, tx).await;
            }
            .in_current_span(),
        );
        Ok(chunks(rx, Chunker::new(max_chunk_bytes, offsets)))
    }

    async fn subscribe(
        &self,
        caller: &Caller,
        request: pb::SubscribeRequest,
    ) -> Result<BoxStream<'static, Result<SubscribeWire, Status>>, Error> {
        let name = request.subscription_name;
        if !name.is_empty() {
            check_subscription_name(&name, "subscription_name")?;
            self.auth.check(caller, Permission::OwnSubscription(&name))?;
        }
        // Checked before anything is recorded under the name: bad input changes nothing.
        let filter = convert::filter(request.key_filter, request.record_filter)?;
        if request.auto_commit && name.is_empty() {
            return Err(Error::invalid("auto_commit", "automatic commits need a `subscription_name` to commit under"));
        }
        let from: Vec<_> = request.from_offsets.into_iter().map(convert::from_partition_offset).collect();
        let reference = request.translator.clone();
        let translation = self.translation(caller, request.translator, "translator").await?;
        let request_stamp = subscriptions::stamp(Vec::new(), reference.as_ref(), translation.as_ref());
        let (topics, from) = match name.is_empty() {
            true => (request.topics, from),
            false => {
                self.durable
                    .start(&name, request.topics, from, &request_stamp, request.accept_translator_change)
                    .await?
            }
        };
        let plan = subscribe::plan(&self.view, &topics, &from)?;
        self.check_read(caller, plan.topics.iter().map(|t| &*t.name))?;
        let limits = &self.shared.limits;
        let max_batch_records = requested_or_max(request.max_batch_records as usize, limits.max_batch_records);
        let cursors = plan.cursors(&self.shared.watermarks).await?;
        let permit = self.stream_permit("subscribe")?;
        let stamp = Stamp { topics: plan.topics.iter().map(|t| t.name.to_string()).collect(), ..request_stamp };
        let (stop, hold) = match name.is_empty() {
            true => (Stop::default(), None),
            false => {
                let (stop, hold) = self.durable.begin(&name, &cursors, stamp.clone()).await?;
                (stop, Some(hold))
            }
        };
        let registration = self.lags.register(&cursors);
        let subscription = Subscription {
            topics: plan.topics,
            cursors,
            filter,
            max_batch_records,
            translation,
            conflate: request.conflate,
            stop,
        };
        let (tx, rx) = buffer::channel(limits.stream_buffer_messages, limits.stream_buffer_bytes, &self.buffers);
        let shared = self.shared.clone();
        self.tasks.spawn(
            async move {
                let _permit = permit;
                let _hold = hold;
                subscribe::run(subscription, shared, tx).await;
            }
            .in_current_span(),
        );
        let auto = (request.auto_commit && !name.is_empty())
            .then(|| (self.durable.clone(), name, stamp, Arc::new(std::sync::atomic::AtomicBool::new(false))));
        // Looked up once per stream, not per response.
        let records_delivered = metrics::counter!("tributary_records_delivered_total", "kind" => "subscribe");
        let bytes_delivered = metrics::counter!("tributary_bytes_delivered_total", "kind" => "subscribe");
        Ok(rx
            .into_stream()
            .map(move |event| {
                if let Ok(subscribe::Event::Progress(p)) = &event {
                    registration.delivered.progressed(&p.offsets);
                }
                if let (Some((durable, name, stamp, busy)), Ok(subscribe::Event::Progress(p))) = (&auto, &event) {
                    // Everything before this progress has been handed to the client.
                    durable.auto_commit(name, p.offsets.clone(), stamp, busy);
                }
                match event {
                    Ok(subscribe::Event::Records(outputs)) => {
                        let bytes: usize = outputs.iter().map(tributary_core::Output::data_bytes).sum();
                        records_delivered.increment(outputs.len() as u64);
                        bytes_delivered.increment(bytes as u64);
                        // Encoded as tonic writes the response (encode::SubscribeWire).
                        Ok(SubscribeWire::Records(outputs))
                    }
                    Ok(subscribe::Event::Encoded(records)) => {
                        let bytes: usize = records.iter().map(|r| r.data_bytes).sum();
                        records_delivered.increment(records.iter().map(|r| r.records() as u64).sum());
                        bytes_delivered.increment(bytes as u64);
                        Ok(SubscribeWire::Encoded(records))
                    }
                    Ok(subscribe::Event::Progress(p)) => Ok(SubscribeWire::Message(convert::progress(p))),
                    Err(e) => Err(status(e)),
                }
            })
            .boxed())
    }

    /// `GetSnapshot` as `GatewayRoutes` serves it: its chunks written as they are packed.
    pub async fn snapshot_wire(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<BoxStream<'static, Result<Chunk, Status>>>, Status> {
        let wait = deadline(request.metadata())
            // Answer UNAVAILABLE a little before the client gives up, so it learns why.
            .map(|d| d.mul_f64(0.9))
            .unwrap_or(Duration::from_millis(self.shared.limits.ready_wait_ms));
        let caller = Caller::of(&request);
        match self.snapshot(&caller, request.into_inner(), wait).await {
            Ok(stream) => Ok(Response::new(stream)),
            Err(e) => Err(status(self.topology.locate(e).await)),
        }
    }

    /// `Subscribe` as `GatewayRoutes` serves it: its responses written from pre-encoded records.
    pub async fn subscribe_wire(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<BoxStream<'static, Result<SubscribeWire, Status>>>, Status> {
        let caller = Caller::of(&request);
        match self.subscribe(&caller, request.into_inner()).await {
            Ok(stream) => Ok(Response::new(stream)),
            Err(e) => Err(status(self.topology.locate(e).await)),
        }
    }
}

/// A stream's slot of `limits.max_streams`, counted in `tributary_streams_open`.
pub(crate) struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    kind: &'static str,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!("tributary_streams_open", "kind" => self.kind).decrement(1.0);
    }
}

/// The snapshot's events packed into chunks; the stream ends after the last chunk or an error.
fn chunks(
    rx: buffer::Receiver<Result<SnapshotEvent, Error>>,
    chunker: Chunker,
) -> BoxStream<'static, Result<Chunk, Status>> {
    let state = (rx, Some(chunker), VecDeque::new());
    futures::stream::unfold(state, |(mut rx, mut chunker, mut ready)| async move {
        loop {
            if let Some(item) = ready.pop_front() {
                return Some((item, (rx, chunker, ready)));
            }
            let packing = chunker.as_mut()?;
            match rx.recv().await {
                Some(Ok(SnapshotEvent::Entries(outputs))) => {
                    metrics::counter!("tributary_records_delivered_total", "kind" => "snapshot")
                        .increment(outputs.len() as u64);
                    metrics::counter!("tributary_bytes_delivered_total", "kind" => "snapshot")
                        .increment(outputs.iter().map(|o| o.data_bytes() as u64).sum());
                    ready.extend(outputs.into_iter().filter_map(|o| packing.push(o)).map(Ok))
                }
                Some(Ok(SnapshotEvent::End { skipped })) => {
                    ready.push_back(Ok(chunker.take().expect("packing").finish(skipped)))
                }
                Some(Err(e)) => {
                    chunker = None;
                    ready.push_back(Err(status(e)));
                }
                None => {
                    chunker = None;
                    ready.push_back(Err(status(Error::Internal("the snapshot ended without its last chunk".into()))));
                }
            }
        }
    })
    .boxed()
}

/// The call's deadline from the `grpc-timeout` header, if the client set one.
fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The generated server's entry. `GatewayRoutes` takes `GetSnapshot` and `Subscribe` before they
/// reach it; the generated trait needs them all the same, so they answer here with the same messages.
#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn describe_topics(
        &self,
        request: Request<pb::DescribeTopicsRequest>,
    ) -> Result<Response<pb::DescribeTopicsResponse>, Status> {
        let caller = Caller::of(&request);
        self.describe(&caller, request.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn get_topology(
        &self,
        request: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::GetTopologyResponse>, Status> {
        let caller = Caller::of(&request);
        self.topology(&caller, request.into_inner()).await.map(Response::new).map_err(status)
    }

    type GetSnapshotStream = BoxStream<'static, Result<pb::SnapshotChunk, Status>>;

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let stream = self.snapshot_wire(request).await?;
        Ok(stream.map(as_chunks))
    }

    type SubscribeStream = BoxStream<'static, Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let stream = self.subscribe_wire(request).await?;
        Ok(stream.map(as_messages))
    }
}

/// The hand-encoded responses as the generated server's stream.
fn as_messages(
    stream: BoxStream<'static, Result<SubscribeWire, Status>>,
) -> BoxStream<'static, Result<pb::SubscribeResponse, Status>> {
    stream.map(|item| item.and_then(SubscribeWire::into_message)).boxed()
}

/// The encoded chunks as the generated server's stream.
fn as_chunks(
    stream: BoxStream<'static, Result<Chunk, Status>>,
) -> BoxStream<'static, Result<pb::SnapshotChunk, Status>> {
    stream.map(|item| item.and_then(Chunk::into_message)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut m = MetadataMap::new();
        assert_eq!(deadline(&m), None);
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(deadline(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(deadline(&m), Some(Duration::from_secs(3)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(deadline(&m), None);
    }
}
