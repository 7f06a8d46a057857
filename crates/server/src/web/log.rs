//! `GET /v1/topics/{topic}/log?from=…`: the topic's log over HTTP (`docs/http.md`).
//!
//! - `from=-1`: the snapshot, with the position it is exact at as `next` (rule 3).
//! - `from=<position>`: the records after it. When a partition's grid cell at its position is
//!   complete (the view's head has passed the cell's end), the answer is a **chunk**: every such
//!   partition advances to its cell's end, in partition order. A chunk never changes, so it is
//!   `immutable` with an ETag, and every client walks the same chunk URLs. Otherwise the answer
//!   is the **live** part, up to the head, cacheable for `live_max_age_s`; with `live=1` it
//!   waits up to `long_poll_ms` for a record first.
//! - `live=sse`: Server-Sent Events from the position, one event per answer, keep-alive
//!   comments in between; `Last-Event-ID` resumes.
//!
//! A chunk or live answer is cut after the record at which the source records' bytes reach
//! `max_chunk_bytes`, so a response's memory is bounded and the cut is the same for everyone.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use dashmap::DashMap;
use futures::{
    future::{BoxFuture, Shared},
    FutureExt, StreamExt,
};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tributary_core::{
    buffer,
    filter::KeyFilter,
    range::{CatchUp, RangeReader},
    record::{Output, PartitionOffset, Record},
    snapshot::{self, SnapshotEvent},
    subscribe,
    translate::Translation,
    view::{Shard, TopicView},
    Error,
};

use super::{
    position::{cell_end, Position},
    reply::{self, Body, Format},
    HttpConfig,
};
use crate::{
    api::GatewayService,
    auth::{Caller, Permission},
    pb,
};

/// The HTTP log of a gateway: what it reads through, and its bounds.
pub struct HttpLog {
    gateway: GatewayService,
    config: HttpConfig,
    /// Long-polls and SSE streams waiting now (`http.max_waiting`).
    waiting: Arc<Semaphore>,
    /// Answers being made, by position and query: requests for the same one wait for it and
    /// share its bytes (as a collapsing cache would), so a thousand clients at the head cost
    /// one read and one encoding per answer.
    inflight: DashMap<String, SharedAnswer>,
    /// Catch-up readers parked between chunks (each one a Kafka consumer, which costs more to
    /// open than a chunk does to read): at most [`IDLE_READERS`], each for [`IDLE_FOR`].
    idle: Arc<Mutex<Vec<(CatchUp, Instant)>>>,
    /// Bytes of made answers kept for `live_max_age_s` (at most [`KEPT_BYTES`]).
    kept: AtomicUsize,
}

/// Bytes of made answers the gateway keeps for `live_max_age_s` (beyond it, answers are dropped
/// once sent).
const KEPT_BYTES: usize = 64 << 20;

/// Catch-up readers kept parked between chunk reads; they hold permits of
/// `limits.max_catchup_readers` meanwhile.
const IDLE_READERS: usize = 2;
/// How long a parked catch-up reader is kept.
const IDLE_FOR: Duration = Duration::from_secs(5);

/// An answer being made, which every request for it awaits.
type SharedAnswer = Shared<BoxFuture<'static, Result<Arc<Encoded>, Problem>>>;

/// An answer encoded once, shared by every request for the same position and query.
struct Encoded {
    kind: Kind,
    next: Position,
    up_to_date: bool,
    /// A live answer with no record and no move: an SSE stream sends a keep-alive instead.
    empty: bool,
    body: Bytes,
    records: u64,
    bytes: u64,
}

/// What an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Snapshot,
    Chunk,
    Live,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Chunk => "chunk",
            Kind::Live => "live",
        }
    }
}

/// How a request wants to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// Answer at once.
    No,
    /// Long-poll: wait for a record when there is none.
    Poll,
    /// Server-Sent Events.
    Sse,
}

/// What a topic name keeps as it is in a URL path: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A parsed query string.
#[derive(Debug, Default, Clone)]
struct Query {
    from: Option<String>,
    live: Option<String>,
    epoch: Option<String>,
    format: Option<String>,
    translator: Option<pb::TranslatorRef>,
    keys: Vec<Bytes>,
    prefixes: Vec<Bytes>,
    /// The query as it came, minus `from` (part of the ETag and of the restart URL).
    rest: Vec<(String, String)>,
}

fn decode(s: &str) -> Vec<u8> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus).collect()
}

fn text(name: &str, bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| Error::invalid(name, "must be UTF-8 (percent-encoded)"))
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, Error> {
        let mut q = Query::default();
        let mut translator = pb::TranslatorRef::default();
        let mut named_translator = false;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = text("query", decode(name))?;
            let raw = decode(value);
            let once = |slot: &Option<String>| match slot {
                Some(_) => Err(Error::invalid(name.clone(), "is given twice; give it once")),
                None => Ok(()),
            };
            if name != "from" {
                q.rest.push((name.clone(), value.to_string()));
            }
            match name.as_str() {
                "from" => {
                    once(&q.from)?;
                    q.from = Some(text("from", raw)?);
                }
                "live" => {
                    once(&q.live)?;
                    q.live = Some(text("live", raw)?);
                }
                "epoch" => {
                    once(&q.epoch)?;
                    q.epoch = Some(text("epoch", raw)?);
                }
                "format" => {
                    once(&q.format)?;
                    q.format = Some(text("format", raw)?);
                }
                "translator" => {
                    named_translator = true;
                    translator.name = text("translator", raw)?;
                }
                "translator_digest" => translator.digest = text("translator_digest", raw)?,
                "translator_config" => translator.config = text("translator_config", raw)?,
                "skip_errors" => translator.skip_errors = flag("skip_errors", &raw)?,
                "key" => q.keys.push(Bytes::from(raw)),
                "key_prefix" => q.prefixes.push(Bytes::from(raw)),
                // Cache busters and tracking parameters a client or CDN may add.
                other if other.starts_with('_') => {}
                other => {
                    return Err(Error::invalid(
                        other,
                        "is not a parameter of the log; use from, live, epoch, format, translator, translator_digest, translator_config, skip_errors, key, key_prefix (or a name starting with '_', ignored)",
                    ))
                }
            }
        }
        let has_translator_options =
            !translator.digest.is_empty() || !translator.config.is_empty() || translator.skip_errors;
        if has_translator_options && !named_translator {
            return Err(Error::invalid(
                "translator",
                "translator_digest, translator_config and skip_errors need a translator",
            ));
        }
        q.translator = named_translator.then_some(translator);
        Ok(q)
    }

    fn live(&self) -> Result<Live, Error> {
        match self.live.as_deref() {
            None | Some("0") | Some("false") => Ok(Live::No),
            Some("1") | Some("true") => Ok(Live::Poll),
            Some("sse") => Ok(Live::Sse),
            Some(other) => Err(Error::invalid("live", format!("'{other}' is not one of 1 (long-poll), sse, 0"))),
        }
    }

    fn format(&self) -> Result<Format, Error> {
        match self.format.as_deref() {
            None | Some("json") => Ok(Format::Json),
            Some("ndjson") => Ok(Format::Ndjson),
            Some(other) => Err(Error::invalid("format", format!("'{other}' is not one of json, ndjson"))),
        }
    }

    /// The query without `from`, `live` and `epoch`: what a restart keeps.
    fn kept(&self) -> String {
        let kept: Vec<String> =
            self.rest.iter().filter(|(k, _)| k != "live" && k != "epoch").map(|(k, v)| format!("{k}={v}")).collect();
        kept.join("&")
    }
}

fn flag(name: &str, raw: &[u8]) -> Result<bool, Error> {
    match raw {
        b"" | b"1" | b"true" => Ok(true),
        b"0" | b"false" => Ok(false),
        _ => Err(Error::invalid(name, "must be 1, true, 0 or false")),
    }
}

/// What the request reads, resolved and checked.
#[derive(Clone)]
struct Reading {
    name: String,
    topic: Arc<TopicView>,
    filter: KeyFilter,
    translation: Option<Translation>,
    format: Format,
    query: Query,
    /// Whether responses may be stored by shared caches.
    public: bool,
}

/// One answer: its records and where the client goes next.
struct Answer {
    kind: Kind,
    next: Position,
    offsets: Vec<i64>,
    up_to_date: bool,
    outputs: Vec<Output>,
    skipped: u64,
}

/// Why a request cannot be answered: the core's error, or a position of another epoch or
/// partition count (409: start again from a snapshot).
#[derive(Debug, Clone)]
pub enum Problem {
    Core(Error),
    Stale { reason: &'static str, message: String },
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Problem::Core(e)
    }
}

impl Problem {
    fn is_conflict(&self) -> bool {
        match self {
            Problem::Core(e) => reply::status_of(e) == StatusCode::CONFLICT,
            Problem::Stale { .. } => true,
        }
    }
}

type Answered = Result<Response<Body>, Problem>;

impl HttpLog {
    pub fn new(gateway: GatewayService, config: HttpConfig) -> Self {
        let waiting = Arc::new(Semaphore::new(config.max_waiting));
        let idle: Arc<Mutex<Vec<(CatchUp, Instant)>>> = Arc::default();
        // Parked readers go back to the pool once they have idled IDLE_FOR, also when no
        // request comes to look.
        let parked = Arc::downgrade(&idle);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(idle) = parked.upgrade() else { return };
                idle.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, at)| at.elapsed() < IDLE_FOR);
            }
        });
        Self { gateway, config, waiting, inflight: DashMap::new(), idle, kept: AtomicUsize::new(0) }
    }

    /// Answers one request; every response carries the CORS headers its origin is allowed.
    pub async fn handle<B>(self: &Arc<Self>, request: Request<B>, certificate: Option<&str>) -> Response<Body> {
        let started = Instant::now();
        let (kind, mut response) = self.route(&request, certificate).await;
        self.cors(request.headers(), response.headers_mut());
        let status = response.status().as_u16().to_string();
        metrics::counter!("tributary_http_requests_total", "kind" => kind, "status" => status).increment(1);
        metrics::histogram!("tributary_http_response_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
        response
    }

    async fn route<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        certificate: Option<&str>,
    ) -> (&'static str, Response<Body>) {
        let path = request.uri().path();
        let Some(topic) = path.strip_prefix("/v1/topics/").and_then(|rest| rest.strip_suffix("/log")) else {
            let message = format!("'{path}' is not served here; the log is GET /v1/topics/{{topic}}/log?from=-1");
            return ("other", reply::problem(StatusCode::NOT_FOUND, "NOT_FOUND", &message, Map::new()));
        };
        if request.method() == Method::OPTIONS {
            let mut response = Response::new(reply::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            return ("preflight", response);
        }
        if request.method() != Method::GET {
            let message = format!("{} is not allowed; the log is read with GET", request.method());
            let mut response =
                reply::problem(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", &message, Map::new());
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, OPTIONS"));
            return ("other", response);
        }
        let parsed = text("topic", decode(topic)).and_then(|name| {
            let query = Query::parse(request.uri().query())?;
            let live = query.live()?;
            Ok((name, query, live))
        });
        let (name, query, live) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return ("other", reply::error(&e, Map::new())),
        };
        let kind = match (query.from.as_deref(), live) {
            (_, Live::Sse) => "sse",
            (Some("-1"), _) => "snapshot",
            (_, Live::Poll) => "long_poll",
            _ => "log",
        };
        let restart = self.restart(&name, &query);
        let headers = request.headers();
        let result = async {
            let reading = self.reading(&name, query, headers, certificate).await?;
            match live {
                Live::Sse => self.sse(reading, headers).await,
                _ => self.answer(reading, live, headers).await,
            }
        }
        .await;
        match result {
            Ok(response) => (kind, response),
            Err(problem) => {
                let extra = if problem.is_conflict() { restart } else { Map::new() };
                let response = match problem {
                    Problem::Core(e) => reply::error(&self.gateway.topology.locate(e).await, extra),
                    Problem::Stale { reason, message } => reply::problem(StatusCode::CONFLICT, reason, &message, extra),
                };
                (kind, response)
            }
        }
    }

    /// The details that tell a client how to start again: the current epoch and the snapshot URL.
    fn restart(&self, name: &str, query: &Query) -> Map<String, Value> {
        let topic = percent_encoding::utf8_percent_encode(name, UNRESERVED);
        let kept = query.kept();
        let sep = if kept.is_empty() { "" } else { "&" };
        let mut m = Map::new();
        m.insert("epoch".into(), json!(self.config.epoch));
        m.insert(
            "restart".into(),
            json!(format!("/v1/topics/{topic}/log?{kept}{sep}from=-1&epoch={}", self.config.epoch)),
        );
        m
    }

    /// Authenticates the caller and resolves what the request reads.
    async fn reading(
        &self,
        name: &str,
        query: Query,
        headers: &HeaderMap,
        certificate: Option<&str>,
    ) -> Result<Reading, Problem> {
        let auth = &self.gateway.auth;
        let caller: Caller = auth.authenticate_http(headers.get(header::AUTHORIZATION), certificate)?;
        let topic = self.gateway.view.topic(name)?;
        auth.check(&caller, Permission::ReadTopic(name))?;
        let format = query.format()?;
        let filter = KeyFilter::new(query.keys.clone(), query.prefixes.clone(), "key")?;
        let translation = self.gateway.translation(&caller, query.translator.clone(), "translator").await?;
        if let Some(epoch) = &query.epoch {
            if *epoch != self.config.epoch {
                return Err(self.epoch_changed(epoch));
            }
        }
        let authenticated = caller.identity.is_some() || auth.enforced();
        let public = !authenticated || self.config.authenticated_cache;
        Ok(Reading { name: name.to_string(), topic, filter, translation, format, query, public })
    }

    fn epoch_changed(&self, asked: &str) -> Problem {
        Problem::Stale {
            reason: "EPOCH_CHANGED",
            message: format!(
                "this position is of epoch '{asked}' and the log is now at epoch '{}' (the topic was recreated): start again from a snapshot (details.restart)",
                self.config.epoch
            ),
        }
    }

    /// Every partition's shard; a partition held by another replica is an error naming it.
    fn shards(&self, topic: &TopicView) -> Result<Vec<Arc<Shard>>, Error> {
        self.gateway.view.check_assigned()?;
        (0..topic.partitions())
            .map(|p| topic.shard(p).ok_or_else(|| Error::not_held(topic.name.to_string(), p)))
            .collect()
    }

    /// The position a request's `from` names, checked against the topic and Kafka's retention.
    async fn position(&self, reading: &Reading, from: &str, shards: &[Arc<Shard>]) -> Result<Position, Problem> {
        let position = Position::parse(from).map_err(|m| Error::invalid("from", m))?;
        if position.epoch != self.config.epoch {
            return Err(self.epoch_changed(&position.epoch));
        }
        if position.offsets.len() != shards.len() {
            return Err(Problem::Stale {
                reason: "PARTITIONS_CHANGED",
                message: format!(
                    "this position names {} partitions and topic '{}' has {}: start again from a snapshot (details.restart)",
                    position.offsets.len(),
                    reading.name,
                    shards.len()
                ),
            });
        }
        let from: Vec<PartitionOffset> = shards.iter().zip(&position.offsets).map(|(s, o)| s.at(*o)).collect();
        let plan = subscribe::plan_offsets(&self.gateway.view, std::slice::from_ref(&reading.name), &from, "from")?;
        plan.cursors(&self.gateway.shared.watermarks).await?;
        Ok(position)
    }

    fn wait_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.waiting.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this gateway holds at most {} waiting requests (http.max_waiting); retry later",
                self.config.max_waiting
            ))
        })
    }

    async fn answer(self: &Arc<Self>, reading: Reading, live: Live, headers: &HeaderMap) -> Answered {
        let Some(from) = reading.query.from.clone() else {
            return Err(Error::invalid(
                "from",
                "say where to start: -1 for a snapshot, or the `next` of the last response",
            )
            .into());
        };
        if from == "-1" {
            return self.snapshot(&reading).await;
        }
        let _waiting = match live {
            Live::Poll => Some(self.wait_slot()?),
            _ => None,
        };
        let wait = (live == Live::Poll).then(|| Duration::from_millis(self.config.long_poll_ms));
        let format = reading.format;
        let reading = Arc::new(reading);
        let encoded = self.shared_answer(&reading, &from, wait, format).await?;
        Ok(self.respond(&reading, &from, &encoded, headers))
    }

    /// The answer at `from`, encoded in `format`: made once for every request that asks for the
    /// same position and query while it is being made (on its own task, so a client leaving
    /// does not cancel it for the others).
    async fn shared_answer(
        self: &Arc<Self>,
        reading: &Arc<Reading>,
        from: &str,
        wait: Option<Duration>,
        format: Format,
    ) -> Result<Arc<Encoded>, Problem> {
        let translator = reading.translation.as_ref().map(|t| t.digest.as_str()).unwrap_or_default();
        let key = format!("{}\n{}\n{translator}\n{from}\n{wait:?}\n{format:?}", reading.name, reading.query.kept());
        let shared = match self.inflight.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(v) => {
                let (this, reading, from) = (self.clone(), reading.clone(), from.to_string());
                let task = tokio::spawn(async move {
                    let answer = this.read_from(&reading, &from, wait).await;
                    if let Ok(a) = &answer {
                        metrics::counter!("tributary_http_answers_made_total", "kind" => a.kind.name()).increment(1);
                    }
                    let encoded = answer.map(|a| Arc::new(this.encode(&reading, &from, a, format)));
                    this.linger(key, encoded.as_ref().map_or(0, |e| e.body.len()));
                    encoded
                });
                let shared = async move {
                    task.await.unwrap_or_else(|e| Err(Error::Internal(format!("answer task: {e}")).into()))
                }
                .boxed()
                .shared();
                v.insert(shared.clone());
                shared
            }
        };
        shared.await
    }

    /// Keeps a made answer for `live_max_age_s`, as a cache in front would, so that clients
    /// asking for it a moment after it was made (the usual case at the head: they come back at
    /// slightly different times) share it too; at most [`KEPT_BYTES`] of answers are kept.
    fn linger(self: &Arc<Self>, key: String, size: usize) {
        let linger = Duration::from_secs(self.config.live_max_age_s);
        let kept = self.kept.fetch_add(size, Ordering::Relaxed) + size;
        if linger.is_zero() || kept > KEPT_BYTES {
            self.kept.fetch_sub(size, Ordering::Relaxed);
            self.inflight.remove(&key);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            this.inflight.remove(&key);
            this.kept.fetch_sub(size, Ordering::Relaxed);
        });
    }

    /// An answer's body, written once.
    fn encode(&self, reading: &Reading, from: &str, answer: Answer, format: Format) -> Encoded {
        let envelope = self.envelope(reading, from, answer.kind, &answer.next, &answer.offsets, answer.up_to_date);
        let mut body = format.start(&envelope);
        for (i, o) in answer.outputs.iter().enumerate() {
            format.record(&mut body, o, i == 0);
        }
        format.end(&mut body, answer.skipped);
        let empty = answer.kind == Kind::Live && answer.outputs.is_empty() && answer.offsets == answer.next.offsets;
        Encoded {
            kind: answer.kind,
            up_to_date: answer.up_to_date,
            empty: empty && answer.next.wait > 0,
            next: answer.next,
            body: Bytes::from(body),
            records: answer.outputs.len() as u64,
            bytes: answer.outputs.iter().map(|o| o.data_bytes() as u64).sum(),
        }
    }

    /// The answer at `from`: a chunk, or the live part (waiting up to `wait` when there is none).
    async fn read_from(&self, reading: &Reading, from: &str, wait: Option<Duration>) -> Result<Answer, Problem> {
        let shards = self.shards(&reading.topic)?;
        let position = self.position(reading, from, &shards).await?;
        let mut watch = reading.topic.watch();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let shutdown = self.gateway.shared.shutdown.clone();
        let width = self.config.chunk_offsets;
        loop {
            watch.borrow_and_update();
            let heads: Vec<i64> = shards.iter().map(|s| s.next_offset()).collect();
            let complete: Vec<usize> =
                (0..shards.len()).filter(|&p| heads[p] >= cell_end(position.offsets[p], width)).collect();
            let (kind, ends) = match complete.is_empty() {
                false => {
                    let mut ends = position.offsets.clone();
                    for &p in &complete {
                        ends[p] = cell_end(position.offsets[p], width);
                    }
                    (Kind::Chunk, ends)
                }
                true => (Kind::Live, heads.iter().zip(&position.offsets).map(|(h, o)| (*h).max(*o)).collect()),
            };
            if ends != position.offsets {
                return Ok(self.read_ranges(reading, kind, &shards, &position, ends, &heads).await?);
            }
            if let Some(deadline) = deadline {
                let changed = tokio::select! {
                    changed = tokio::time::timeout_at(deadline, watch.changed()) => matches!(changed, Ok(Ok(()))),
                    _ = shutdown.cancelled() => return Err(Error::ShuttingDown { resume: Vec::new() }.into()),
                };
                if changed {
                    continue;
                }
            }
            let next = Position { wait: position.wait + u32::from(wait.is_some()), ..position.clone() };
            return Ok(Answer {
                kind: Kind::Live,
                next,
                offsets: position.offsets.clone(),
                up_to_date: true,
                outputs: Vec::new(),
                skipped: 0,
            });
        }
    }

    /// Reads each partition from the position to its end, in partition order, cut after the
    /// record at which the source bytes reach `max_chunk_bytes`.
    async fn read_ranges(
        &self,
        reading: &Reading,
        kind: Kind,
        shards: &[Arc<Shard>],
        position: &Position,
        mut ends: Vec<i64>,
        heads: &[i64],
    ) -> Result<Answer, Error> {
        let mut bytes = 0usize;
        let mut records: Vec<Record> = Vec::new();
        let mut cut = false;
        let mut spare = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop().map(|(c, _)| c);
        for (p, shard) in shards.iter().enumerate() {
            if cut {
                ends[p] = position.offsets[p];
                continue;
            }
            if ends[p] <= position.offsets[p] {
                continue;
            }
            let mut reader = RangeReader::new(self.gateway.shared.clone(), shard.clone(), position.offsets[p], ends[p])
                .with_spare(spare.take());
            'read: while let Some(batch) = reader.next_batch().await? {
                for record in batch {
                    bytes += record.size();
                    let offset = record.offset;
                    if reading.filter.matches(record.key()) {
                        records.push(record);
                    }
                    if bytes >= self.config.max_chunk_bytes {
                        cut = true;
                        ends[p] = offset + 1;
                        break 'read;
                    }
                }
            }
            spare = reader.into_spare();
        }
        if let Some(spare) = spare {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push((spare, Instant::now()));
            }
        }
        let (outputs, skipped) = match &reading.translation {
            None => (records.into_iter().map(Output::untranslated).collect(), 0),
            Some(t) => {
                let translated = t.translate(records).await?;
                (translated.outputs, translated.skipped)
            }
        };
        let up_to_date = ends.iter().zip(heads).all(|(e, h)| e >= h);
        let next = Position { epoch: self.config.epoch.clone(), offsets: ends.clone(), wait: 0 };
        Ok(Answer { kind, next, offsets: ends, up_to_date, outputs, skipped })
    }

    /// The envelope every answer starts with.
    fn envelope(
        &self,
        reading: &Reading,
        from: &str,
        kind: Kind,
        next: &Position,
        offsets: &[i64],
        up_to_date: bool,
    ) -> Value {
        let offsets: Vec<Value> =
            offsets.iter().enumerate().map(|(p, o)| json!({"partition": p, "offset": o})).collect();
        json!({
            "topic": reading.name,
            "kind": kind.name(),
            "from": from,
            "next": next.to_string(),
            "epoch": self.config.epoch,
            "up_to_date": up_to_date,
            "offsets": offsets,
        })
    }

    fn cache_control(&self, reading: &Reading, kind: Kind) -> String {
        let scope = if reading.public { "public" } else { "private" };
        match kind {
            Kind::Chunk => format!("{scope}, max-age=31536000, immutable"),
            Kind::Live => format!("{scope}, max-age={}", self.config.live_max_age_s),
            Kind::Snapshot => format!("{scope}, max-age={}", self.config.snapshot_max_age_s),
        }
    }

    fn headers(&self, reading: &Reading, kind: Kind, next: &Position, up_to_date: bool, out: &mut HeaderMap) {
        let value = |s: String| HeaderValue::from_str(&s).expect("ASCII header value");
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(reading.format.content_type()));
        out.insert(header::CACHE_CONTROL, value(self.cache_control(reading, kind)));
        out.insert("tributary-next", value(next.to_string()));
        out.insert("tributary-kind", HeaderValue::from_static(kind.name()));
        out.insert("tributary-up-to-date", HeaderValue::from_static(if up_to_date { "true" } else { "false" }));
        out.insert("tributary-epoch", value(self.config.epoch.clone()));
        if reading.public && self.config.authenticated_cache {
            out.append(header::VARY, HeaderValue::from_static("authorization"));
        }
    }

    fn respond(&self, reading: &Reading, from: &str, answer: &Encoded, request: &HeaderMap) -> Response<Body> {
        let mut response = Response::new(reply::empty());
        self.headers(reading, answer.kind, &answer.next, answer.up_to_date, response.headers_mut());
        if answer.kind == Kind::Chunk {
            let query: Vec<String> = reading.query.rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let id = format!("{}\n{}\n{}\n{}\n{}", self.config.epoch, reading.name, from, answer.next, query.join("&"));
            let etag = format!("\"{}\"", &tributary_wasm::sha256_hex(id.as_bytes())[..32]);
            let matched = request
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
            response.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
            if matched {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                return response;
            }
        }
        count_delivered(answer.records, answer.bytes);
        *response.body_mut() = reply::full(answer.body.clone());
        response
    }

    /// The snapshot, streamed: the envelope first (its `next` is the snapshot's offsets), then
    /// the entries as the core hands them over. An error after the first bytes aborts the body,
    /// so no client or cache takes a cut snapshot for a whole one.
    async fn snapshot(&self, reading: &Reading) -> Answered {
        self.shards(&reading.topic)?;
        let view = &self.gateway.view;
        let limits = &self.gateway.shared.limits;
        snapshot::wait_ready(view, Duration::from_millis(limits.ready_wait_ms.min(10_000))).await?;
        let permit = self.gateway.stream_permit("http_snapshot")?;
        let taken = snapshot::take(view, std::slice::from_ref(&reading.topic))?;
        let offsets: Vec<i64> = taken.offsets.iter().map(|o| o.offset).collect();
        let next = Position { epoch: self.config.epoch.clone(), offsets: offsets.clone(), wait: 0 };
        let envelope = self.envelope(reading, "-1", Kind::Snapshot, &next, &offsets, true);
        let format = reading.format;
        let (tx, rx) =
            buffer::channel(limits.stream_buffer_messages, limits.stream_buffer_bytes, &self.gateway.buffers);
        let (filter, translation) = (reading.filter.clone(), reading.translation.clone());
        let event_bytes = limits.max_chunk_bytes;
        self.gateway.tasks.spawn(async move {
            let _permit = permit;
            let filter = tributary_core::filter::Filter { keys: filter, ..Default::default() };
            snapshot::stream(taken, filter, translation, event_bytes, tx).await;
        });
        // The first event before the status: a translator that fails on the first entries (the
        // usual way) is an error response, not a cut body.
        let mut rx = rx;
        let pending = match rx.recv().await {
            Some(Err(e)) => return Err(e.into()),
            first => first,
        };
        let start = Bytes::from(format.start(&envelope));
        let stream = futures::stream::unfold(
            (rx, Some(start), pending, false, false),
            move |(mut rx, start, pending, mut any, done)| async move {
                if done {
                    return None;
                }
                if let Some(start) = start {
                    return Some((Ok(start), (rx, None, pending, any, false)));
                }
                let event = match pending {
                    Some(event) => Some(event),
                    None => rx.recv().await,
                };
                let (item, done) = match event {
                    Some(Ok(SnapshotEvent::Entries(outputs))) => {
                        let mut out = Vec::new();
                        for o in &outputs {
                            format.record(&mut out, o, !any);
                            any = true;
                        }
                        count_delivered(outputs.len() as u64, outputs.iter().map(|o| o.data_bytes() as u64).sum());
                        (Ok(Bytes::from(out)), false)
                    }
                    Some(Ok(SnapshotEvent::End { skipped })) => {
                        let mut out = Vec::new();
                        format.end(&mut out, skipped);
                        (Ok(Bytes::from(out)), true)
                    }
                    Some(Err(e)) => (Err(std::io::Error::other(e.to_string())), true),
                    None => (Err(std::io::Error::other("the snapshot ended without its end")), true),
                };
                Some((item, (rx, None, None, any, done)))
            },
        );
        let mut response = Response::new(StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync());
        self.headers(reading, Kind::Snapshot, &next, true, response.headers_mut());
        Ok(response)
    }

    /// Server-Sent Events from `from` (or `Last-Event-ID`): one event per answer, a keep-alive
    /// comment when there is nothing for `sse_keepalive_s`. An error ends the stream with an
    /// `error` event carrying the same JSON as an error response.
    async fn sse(self: &Arc<Self>, reading: Reading, headers: &HeaderMap) -> Answered {
        let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(mut from) = resumed.or_else(|| reading.query.from.clone()) else {
            return Err(Error::invalid(
                "from",
                "say where to start: -1 for a snapshot, or the `next` of the last event",
            )
            .into());
        };
        let permit = self.wait_slot()?;
        // Check the start now, so a bad one is an HTTP error rather than an event.
        let first = match from.as_str() {
            "-1" => {
                let response = self.snapshot(&reading).await?;
                let next = response.headers()["tributary-next"].to_str().unwrap_or_default().to_string();
                let body = response.into_body().collect().await.map_err(|e| Error::Internal(e.to_string()))?.to_bytes();
                from = next.clone();
                Some(event("snapshot", &next, &body))
            }
            _ => {
                let shards = self.shards(&reading.topic)?;
                self.position(&reading, &from, &shards).await?;
                None
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let this = self.clone();
        let keepalive = Duration::from_secs(self.config.sse_keepalive_s);
        let reading = Arc::new(reading);
        self.gateway.tasks.spawn(async move {
            let _permit = permit;
            if let Some(first) = first {
                if tx.send(first).await.is_err() {
                    return;
                }
            }
            loop {
                let answer = tokio::select! {
                    answer = this.shared_answer(&reading, &from, Some(keepalive), Format::Json) => answer,
                    _ = tx.closed() => return,
                };
                let message = match answer {
                    Ok(a) if a.empty => {
                        // On from the position with its wait count, as a long-poll client: the
                        // empty answer just made is kept a moment, and must not be met again.
                        from = a.next.to_string();
                        Bytes::from_static(b": keep-alive\n\n")
                    }
                    Ok(a) => {
                        let next = Position { wait: 0, ..a.next.clone() }.to_string();
                        count_delivered(a.records, a.bytes);
                        let message = event(a.kind.name(), &next, &a.body);
                        from = next;
                        message
                    }
                    Err(problem) => {
                        let json = match problem {
                            Problem::Core(e) => reply::error_json(&e, Map::new()),
                            Problem::Stale { reason, message } => {
                                reply::problem_json(StatusCode::CONFLICT, reason, &message, Map::new())
                            }
                        };
                        let _ = tx.send(event("error", &from, json.to_string().as_bytes())).await;
                        return;
                    }
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(Frame::data(b)), rx)) });
        let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // nginx buffers proxied responses unless told not to.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }

    /// CORS: the allowed origin, the headers a page may send and read.
    fn cors(&self, request: &HeaderMap, out: &mut HeaderMap) {
        let any = self.config.cors_origins.iter().any(|o| o == "*");
        if !any && !self.config.cors_origins.is_empty() {
            // On every answer, not only those to a page: a cache that stored a chunk fetched
            // without `Origin` must not hand it to a page, which needs the CORS headers.
            out.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = request.get(header::ORIGIN) else { return };
        let allowed = any || self.config.cors_origins.iter().any(|o| origin.as_bytes() == o.as_bytes());
        if !allowed {
            return;
        }
        let value = if any { HeaderValue::from_static("*") } else { origin.clone() };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "etag, tributary-next, tributary-kind, tributary-up-to-date, tributary-epoch, retry-after",
            ),
        );
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, if-none-match, last-event-id"),
        );
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}

/// One SSE event; `id` is the position after it (`Last-Event-ID` resumes there).
fn event(name: &str, id: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(format!("id: {id}\nevent: {name}\ndata: ").as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn count_delivered(records: u64, bytes: u64) {
    metrics::counter!("tributary_records_delivered_total", "kind" => "http").increment(records);
    metrics::counter!("tributary_bytes_delivered_total", "kind" => "http").increment(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_name_the_parameter() {
        let q = Query::parse(Some("from=1_0.5&live=1&key=a%20b&key=c+d&key_prefix=p&translator=t&skip_errors=1&_=9"))
            .unwrap();
        assert_eq!((q.from.as_deref(), q.live().unwrap()), (Some("1_0.5"), Live::Poll));
        assert_eq!(q.keys, vec![Bytes::from("a b"), Bytes::from("c d")]);
        assert_eq!(q.prefixes, vec![Bytes::from("p")]);
        let t = q.translator.clone().unwrap();
        assert_eq!((t.name.as_str(), t.skip_errors), ("t", true));
        assert_eq!(q.kept(), "key=a%20b&key=c+d&key_prefix=p&translator=t&skip_errors=1&_=9");
        let field = |query: &str| match Query::parse(Some(query)).and_then(|q| q.live().and(q.format()).map(|_| q)) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{query}: {other:?}"),
        };
        assert_eq!(field("from=1&from=2"), "from");
        assert_eq!(field("frm=1"), "frm");
        assert_eq!(field("live=2"), "live");
        assert_eq!(field("format=xml"), "format");
        assert_eq!(field("skip_errors=maybe"), "skip_errors");
        assert_eq!(field("translator_config=x"), "translator");
    }

    #[test]
    fn an_sse_event_is_one_block_with_its_position_as_id() {
        assert_eq!(&event("chunk", "1_5", b"{}")[..], b"id: 1_5\nevent: chunk\ndata: {}\n\n");
    }
}
