//! The `tributary.v1.Gateway` gRPC service: request validation and the mapping to protobuf.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{metadata::MetadataMap, Request, Response, Status};

use crate::{
    error::Error,
    filter::KeyFilter,
    kafka, pb,
    registry::{Registry, Translation},
    snapshot::{self, SnapshotRequest},
    subscribe::{self, Cursor, Shared, Subscription},
    view::{TopicView, View},
};

/// The gateway service; cheap to clone.
#[derive(Clone)]
pub struct GatewayService {
    view: Arc<View>,
    shared: Shared,
    registry: Arc<Registry>,
    translator_batch: usize,
    /// Open `Subscribe` and `GetSnapshot` streams.
    streams: Arc<Semaphore>,
}

impl GatewayService {
    pub fn new(view: Arc<View>, shared: Shared, registry: Arc<Registry>, translator_batch: usize) -> Self {
        let streams = Arc::new(Semaphore::new(shared.limits.max_streams));
        Self { view, shared, streams, registry, translator_batch }
    }

    /// Resolves the request's translator, instantiating it (and calling `init`) if no other
    /// call uses the same (digest, configuration).
    async fn translation(
        &self,
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
        let registry = self.registry.clone();
        let resolved = tokio::task::spawn_blocking(move || registry.resolve(&reference))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(Some(Translation { resolved, batch_records: self.translator_batch }))
    }

    fn stream_permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this gateway serves at most {} streams at once (limits.max_streams); retry later or use another replica",
                self.shared.limits.max_streams
            ))
        })
    }

    /// Runs blocking Kafka requests off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rdkafka::consumer::BaseConsumer) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let meta = self.shared.metadata.clone();
        tokio::task::spawn_blocking(move || f(&meta)).await.map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Topics named in a request: known, exposed, each once.
    fn topics(&self, names: &[String], field: &str) -> Result<Vec<Arc<TopicView>>, Error> {
        let mut seen = HashSet::new();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if name.is_empty() {
                    return Err(Error::invalid(format!("{field}[{i}]"), "topic name is empty"));
                }
                if !seen.insert(name.as_str()) {
                    return Err(Error::invalid(format!("{field}[{i}]"), format!("topic '{name}' is listed twice")));
                }
                self.view.topic(name)
            })
            .collect()
    }

    /// Validates a subscribe request and resolves every partition's start position.
    async fn resolve(&self, request: pb::SubscribeRequest) -> Result<Subscription, Error> {
        if !request.subscription_name.is_empty() {
            return Err(Error::Unimplemented(
                "named durable subscriptions are not served by this version yet; leave `subscription_name` empty"
                    .into(),
            ));
        }
        let mut topics = self.topics(&request.topics, "topics")?;
        let mut explicit: HashMap<(String, i32), i64> = HashMap::new();
        for (i, po) in request.from_offsets.iter().enumerate() {
            let field = format!("from_offsets[{i}]");
            if po.topic.is_empty() {
                return Err(Error::invalid(format!("{field}.topic"), "topic name is empty"));
            }
            let topic = self.view.topic(&po.topic)?;
            if po.partition < 0 {
                return Err(Error::invalid(
                    format!("{field}.partition"),
                    format!("partition {} is negative", po.partition),
                ));
            }
            if topic.shard(po.partition).is_none() {
                return Err(Error::UnknownPartition {
                    topic: po.topic.clone(),
                    partition: po.partition,
                    partitions: topic.partitions(),
                });
            }
            if po.offset < 0 {
                return Err(Error::invalid(
                    format!("{field}.offset"),
                    format!("offset {} is negative; offsets name the next offset to read, from 0", po.offset),
                ));
            }
            if explicit.insert((po.topic.clone(), po.partition), po.offset).is_some() {
                return Err(Error::invalid(field, format!("{}/{} is listed twice", po.topic, po.partition)));
            }
            if !topics.iter().any(|t| *t.name == *po.topic) {
                topics.push(topic);
            }
        }
        if topics.is_empty() {
            return Err(Error::invalid("topics", "name at least one topic, in `topics` or in `from_offsets`"));
        }
        let filter = KeyFilter::from_proto(request.key_filter, "key_filter")?;
        let translation = self.translation(request.translator, "translator").await?;
        let max = self.shared.limits.max_batch_records;
        let max_batch_records = match request.max_batch_records as usize {
            0 => max,
            n => n.min(max),
        };

        // Positions: explicit ones are checked against what Kafka retains only when they fall
        // outside the view (behind the tail buffer or beyond the view's head); unlisted partitions
        // start at the earliest retained offset.
        let mut cursors = Vec::new();
        let mut to_check = Vec::new();
        for topic in &topics {
            for shard in topic.shards() {
                let pos = explicit.get(&(topic.name.to_string(), shard.partition)).copied();
                if pos.is_none_or(|p| p < shard.tail_start() || p > shard.next_offset()) {
                    to_check.push((cursors.len(), shard.topic.clone(), shard.partition, pos));
                }
                cursors.push(Cursor::new(shard.clone(), pos.unwrap_or(0)));
            }
        }
        if !to_check.is_empty() {
            // Rare path: fetch every partition's watermarks, so that an error's details list the
            // whole subscription.
            let keys: Vec<_> = cursors.iter().map(|c| (c.shard.topic.clone(), c.shard.partition)).collect();
            let marks = self
                .blocking(move |meta| {
                    keys.iter().map(|(t, p)| kafka::watermarks(meta, t, *p)).collect::<Result<Vec<_>, _>>()
                })
                .await?;
            let all = |pick: fn(&(i64, i64)) -> i64| {
                cursors
                    .iter()
                    .zip(&marks)
                    .map(|(c, m)| pb::PartitionOffset {
                        topic: c.shard.topic.to_string(),
                        partition: c.shard.partition,
                        offset: pick(m),
                    })
                    .collect::<Vec<_>>()
            };
            for (i, topic, partition, pos) in &to_check {
                let (low, high) = marks[*i];
                match *pos {
                    None => {}
                    Some(p) if p < low => {
                        return Err(Error::TooOld {
                            topic: topic.to_string(),
                            partition: *partition,
                            requested: p,
                            earliest: low,
                            earliest_offsets: all(|m| m.0),
                        })
                    }
                    Some(p) if p > high => {
                        return Err(Error::BeyondEnd {
                            topic: topic.to_string(),
                            partition: *partition,
                            requested: p,
                            latest: high,
                            latest_offsets: all(|m| m.1),
                        })
                    }
                    Some(_) => {}
                }
            }
            for (i, _, _, pos) in &to_check {
                if pos.is_none() {
                    cursors[*i].pos = marks[*i].0;
                }
            }
        }
        Ok(Subscription { topics, cursors, filter, max_batch_records, translation })
    }
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

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn describe_topics(
        &self,
        request: Request<pb::DescribeTopicsRequest>,
    ) -> Result<Response<pb::DescribeTopicsResponse>, Status> {
        let names = request.into_inner().topics;
        let topics =
            if names.is_empty() { self.view.topics().cloned().collect() } else { self.topics(&names, "topics")? };
        let shards: Vec<_> = topics.iter().flat_map(|t| t.shards()).collect();
        let keys: Vec<_> = shards.iter().map(|s| (s.topic.clone(), s.partition)).collect();
        let marks = self
            .blocking(move |meta| {
                keys.iter().map(|(t, p)| kafka::watermarks(meta, t, *p)).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut out: Vec<pb::TopicDescription> =
            topics.iter().map(|t| pb::TopicDescription { name: t.name.to_string(), partitions: Vec::new() }).collect();
        for (shard, (low, high)) in shards.iter().zip(marks) {
            let topic = out.iter_mut().find(|t| *t.name == *shard.topic).expect("shard of a listed topic");
            topic.partitions.push(pb::PartitionDescription {
                partition: shard.partition,
                earliest_offset: low,
                latest_offset: high,
                view_offset: shard.next_offset(),
                keys: shard.keys() as u64,
            });
        }
        Ok(Response::new(pb::DescribeTopicsResponse { topics: out, ready: self.view.is_ready() }))
    }

    type GetSnapshotStream = ReceiverStream<Result<pb::SnapshotChunk, Status>>;

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let wait = deadline(request.metadata())
            // Answer UNAVAILABLE a little before the client gives up, so it learns why.
            .map(|d| d.mul_f64(0.9))
            .unwrap_or(Duration::from_millis(self.shared.limits.ready_wait_ms));
        let request = request.into_inner();
        if request.topics.is_empty() {
            return Err(Error::invalid("topics", "name at least one topic to snapshot").into());
        }
        let topics = self.topics(&request.topics, "topics")?;
        let filter = KeyFilter::from_proto(request.key_filter, "key_filter")?;
        let max = self.shared.limits.max_chunk_bytes;
        let max_chunk_bytes = match request.max_chunk_bytes as usize {
            0 => max,
            n => n.min(max),
        };
        let translation = self.translation(request.translator, "translator").await?;
        let permit = self.stream_permit()?;
        snapshot::wait_ready(&self.view, wait).await?;
        let request =
            SnapshotRequest { topics: topics.iter().map(|t| t.name.to_string()).collect(), filter, max_chunk_bytes };
        let rx = snapshot::start(&self.view, request, translation, self.shared.limits.stream_buffer_messages, permit)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscription = self.resolve(request.into_inner()).await?;
        let permit = self.stream_permit()?;
        let (tx, rx) = mpsc::channel(self.shared.limits.stream_buffer_messages);
        tokio::spawn(subscribe::run(subscription, self.shared.clone(), tx, permit));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
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
