//! The domain error every layer returns. It says what went wrong and carries what a client needs
//! to act (which field, which offsets); `tributary-server` maps each variant to a gRPC code and
//! status details in one exhaustive match.

use crate::record::PartitionOffset;

/// Everything that can go wrong for a caller. Adding a variant forces a decision about its gRPC
/// code (in the server's status mapping).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A malformed request: `field` names what to fix.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A topic that this gateway does not expose.
    #[error("topic '{topic}' is not exposed by this gateway (exposed: {})", exposed.join(", "))]
    UnknownTopic { topic: String, exposed: Vec<String> },
    /// A partition the topic does not have.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions}: 0..{partitions})")]
    UnknownPartition { topic: String, partition: i32, partitions: i32 },
    /// Offsets below the earliest retained offset: the client must re-snapshot.
    #[error(
        "offset {requested} of {topic}/{partition} is no longer retained (earliest is {earliest}); take a new snapshot"
    )]
    TooOld { topic: String, partition: i32, requested: i64, earliest: i64, earliest_offsets: Vec<PartitionOffset> },
    /// A snapshot as of an offset below what the gateway can roll its state back to (the tail
    /// buffer's reach): take it at a later offset.
    #[error(
        "the state of {topic}/{partition} as of offset {requested} is no longer known here: this gateway can roll it back to offset {earliest} at the earliest (limits.tail_max_records and limits.tail_max_bytes set how far); ask for a later offset"
    )]
    AsOfTooOld { topic: String, partition: i32, requested: i64, earliest: i64, earliest_offsets: Vec<PartitionOffset> },
    /// An offset beyond what Kafka has.
    #[error("offset {requested} of {topic}/{partition} is beyond the end of the partition (latest is {latest})")]
    BeyondEnd { topic: String, partition: i32, requested: i64, latest: i64, latest_offsets: Vec<PartitionOffset> },
    /// Sharding: a partition this replica does not hold. `owner`: the advertised address of the
    /// replica that holds it, when the group's topology says (the call goes there); `None` while
    /// no replica holds it (it is moving: retry). A stream on a partition taken from this replica
    /// ends with it, `resume` saying where the stream stood.
    #[error("{}", not_held(topic, *partition, owner.as_deref()))]
    PartitionNotHeld { topic: String, partition: i32, owner: Option<String>, resume: Vec<PartitionOffset> },
    /// The view has not caught up yet.
    #[error("the view is still loading ({percent}% caught up); retry shortly")]
    NotReady { percent: u32 },
    /// Kafka could not be reached or answered with an error.
    #[error("kafka: {message}")]
    Kafka { message: String, resume: Vec<PartitionOffset> },
    /// A bound was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is shutting down; resume elsewhere or later from `resume`.
    #[error("the gateway is shutting down; resume from the offsets in the details")]
    ShuttingDown { resume: Vec<PartitionOffset> },
    /// A translator name, or a digest of it, that the registry does not have. The message names
    /// no other translator: callers may not see each other's names.
    #[error("{}", unknown_translator(name, digest.as_deref(), *versions))]
    UnknownTranslator {
        name: String,
        digest: Option<String>,
        /// How many versions `name` has (when a digest of it was not found).
        versions: usize,
    },
    /// A stored translator version whose files failed their integrity check at load: disabled
    /// until the same bytes are uploaded again. The gateway's log says which file and why.
    #[error("translator '{name}' ({digest}) is disabled: its stored files failed the gateway's integrity check; upload the same component again to repair it")]
    TranslatorUnavailable { name: String, digest: String },
    /// An uploaded translator component declares more than a limit of this gateway allows (its
    /// initial memory, its tables, its instances...): it could never be instantiated here. The
    /// component must change, or the operator the limit when `limit` is a configuration key.
    #[error("{message}")]
    ComponentLimit {
        /// The limit's stable name: its configuration key (`translators.memory_bytes`) when it
        /// has one.
        limit: String,
        /// What the component declares.
        requested: u64,
        /// What this gateway allows.
        allowed: u64,
        message: String,
    },
    /// A translator's `init` rejected the configuration.
    #[error("translator '{name}' ({digest}) rejected its configuration: {message}")]
    TranslatorConfig { name: String, digest: String, message: String },
    /// A translator call failed; only the calls using that translator end.
    #[error("translator '{name}' ({digest}) {failure}{}", at.as_deref().map(|(t, p, o)| format!(" on {t}/{p}@{o}")).unwrap_or_default())]
    Translator {
        name: String,
        digest: String,
        failure: TranslatorFailure,
        /// The record the call failed on (boxed: keeps every `Result<_, Error>` small).
        at: Option<Box<(String, i32, i64)>>,
        resume: Vec<PartitionOffset>,
    },
    /// A durable subscription's state does not allow the call (see [`SubscriptionProblem`]).
    #[error("subscription '{name}': {message}")]
    Subscription { name: String, problem: SubscriptionProblem, message: String },
    /// A newer stream took over this stream's named subscription, or the subscription was
    /// deleted: this stream ends; `resume` is where it stood.
    #[error("subscription '{name}' {why}; this stream ended (its position is in the details)")]
    SubscriptionTakenOver { name: String, why: String, resume: Vec<PartitionOffset> },
    /// The call has no valid identity (a bad token, or none where one is needed).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's identity lacks a permission; the message names it.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A reserved part of the API that this version does not serve yet.
    #[error("{0}")]
    Unimplemented(String),
    /// A record whose value the schema registry's decoding could not turn into JSON, for a topic
    /// whose `on_error` is `fail`: the stream ends at it, `resume` saying where it stood.
    #[error("the value of {}/{} at offset {} cannot be decoded: {message} (schemas.topics.\"{}\".on_error is \"fail\", so it is not skipped)", at.topic, at.partition, at.offset, at.topic)]
    Undecodable {
        at: PartitionOffset,
        failure: crate::decode::DecodeFailure,
        message: String,
        resume: Vec<PartitionOffset>,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A partition this replica does not hold; who does is for the caller's layer to find.
    pub fn not_held(topic: impl Into<String>, partition: i32) -> Self {
        Error::PartitionNotHeld { topic: topic.into(), partition, owner: None, resume: Vec::new() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
    }

    pub fn kafka(message: impl Into<String>) -> Self {
        Error::Kafka { message: message.into(), resume: Vec::new() }
    }

    /// Attaches the position a stream reached, so that the client can resume without a gap.
    pub fn with_resume(self, position: Vec<PartitionOffset>) -> Self {
        match self {
            Error::Kafka { message, .. } => Error::Kafka { message, resume: position },
            Error::Undecodable { at, failure, message, .. } => {
                Error::Undecodable { at, failure, message, resume: position }
            }
            Error::ShuttingDown { .. } => Error::ShuttingDown { resume: position },
            Error::PartitionNotHeld { topic, partition, owner, .. } => {
                Error::PartitionNotHeld { topic, partition, owner, resume: position }
            }
            Error::SubscriptionTakenOver { name, why, .. } => {
                Error::SubscriptionTakenOver { name, why, resume: position }
            }
            Error::Translator { name, digest, failure, at, .. } => {
                Error::Translator { name, digest, failure, at, resume: position }
            }
            other => other,
        }
    }
}

/// What is wrong with a durable subscription for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionProblem {
    /// No subscription of that name exists (NOT_FOUND).
    Unknown,
    /// Nothing is committed under the name: start it with offsets (FAILED_PRECONDITION).
    NoPosition,
    /// The request names other topics than the subscription follows (FAILED_PRECONDITION).
    TopicsChanged,
    /// The position was committed with another translator or configuration (FAILED_PRECONDITION).
    TranslatorChanged,
}

impl Error {
    pub fn subscription(name: &str, problem: SubscriptionProblem, message: impl Into<String>) -> Self {
        Error::Subscription { name: name.to_string(), problem, message: message.into() }
    }
}

fn not_held(topic: &str, partition: i32, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!(
            "partition {topic}/{partition} is served by another replica, at {owner}; call it there (GetTopology lists every partition's replica)"
        ),
        None => format!(
            "partition {topic}/{partition} is not held by this replica and is moving between replicas; retry shortly (GetTopology says where it goes)"
        ),
    }
}

fn unknown_translator(name: &str, digest: Option<&str>, versions: usize) -> String {
    match digest {
        Some(d) => format!(
            "translator '{name}' has no version with digest '{d}' (it has {versions}; Translators/Describe lists them)"
        ),
        None => format!("no translator named '{name}' (Translators/List shows the uploaded ones)"),
    }
}

/// Why a translator call failed. Each one ends only the calls that use that translator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslatorFailure {
    /// The guest trapped (e.g. a panic, an out-of-bounds access).
    Trap(String),
    /// The call ran past `call_deadline_ms` and was interrupted.
    Deadline,
    /// The instance tried to grow its memory past `memory_bytes`.
    Memory,
    /// The call returned more than `output_bytes`.
    Output(String),
    /// The guest returned an error value (for `init`: it rejected the configuration).
    Error(String),
    /// Every instance slot of the pooling allocator is in use (`max_instances`).
    Instances(u32),
}

impl TranslatorFailure {
    /// The stable word used in statuses and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TranslatorFailure::Trap(_) => "trap",
            TranslatorFailure::Deadline => "deadline",
            TranslatorFailure::Memory => "memory",
            TranslatorFailure::Output(_) => "output",
            TranslatorFailure::Error(_) => "error",
            TranslatorFailure::Instances(_) => "instances",
        }
    }
}

impl std::fmt::Display for TranslatorFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslatorFailure::Trap(m) => write!(f, "trapped: {m}"),
            TranslatorFailure::Deadline => write!(f, "ran past its deadline and was interrupted"),
            TranslatorFailure::Memory => write!(f, "tried to grow its memory past the cap"),
            TranslatorFailure::Output(m) => write!(f, "output rejected: {m}"),
            TranslatorFailure::Error(m) => write!(f, "returned an error: {m}"),
            TranslatorFailure::Instances(n) => {
                write!(f, "could not be instantiated: all {n} translator instances are in use (translators.max_instances); retry later")
            }
        }
    }
}
