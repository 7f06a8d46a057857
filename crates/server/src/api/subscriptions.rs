//! The `tributary.v1.Subscriptions` service (Commit, List, Describe, Delete) over the core's
//! [`Durable`] named subscriptions: the callers' ownership of names, and the mapping between
//! protobuf messages and the core's types. Where a subscription starts, takeover, commits and
//! lag are the core's.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tributary_core::{
    durable::{Described, Durable},
    positions::{check_subscription_name, Stamp},
    translate::Translation,
};

use crate::{
    api::{convert, status::status},
    auth::{audit, Auth, Caller, Permission},
    pb,
};

/// The stamp of a request: its topics and its translator (digest, and the SHA-256 of its
/// configuration).
pub fn stamp(topics: Vec<String>, reference: Option<&pb::TranslatorRef>, translation: Option<&Translation>) -> Stamp {
    let (translator_name, translator_digest, config_sha256) = match (reference, translation) {
        (Some(r), Some(t)) => (t.name.clone(), t.digest.clone(), tributary_wasm::sha256_hex(r.config.as_bytes())),
        _ => Default::default(),
    };
    Stamp { topics, translator_name, translator_digest, config_sha256, committed_at_ms: 0 }
}

/// A described subscription as Describe, List and Commit answer it.
fn info(d: Described) -> pb::SubscriptionInfo {
    let partitions = d
        .partitions
        .into_iter()
        .map(|p| pb::PartitionPosition {
            topic: p.topic,
            partition: p.partition,
            committed_offset: p.committed.unwrap_or(-1),
            latest_offset: p.latest,
            lag: p.lag,
        })
        .collect();
    pb::SubscriptionInfo {
        name: d.name,
        group: d.group,
        active_here: d.active_here,
        topics: d.stamp.topics,
        partitions,
        translator_name: d.stamp.translator_name,
        translator_digest: d.stamp.translator_digest,
        translator_config_sha256: d.stamp.config_sha256,
        committed_at_ms: d.stamp.committed_at_ms,
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
        check_subscription_name(name, "name").map_err(status)?;
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
        Ok(Response::new(pb::CommitResponse { subscription: Some(info(described)) }))
    }

    async fn list(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = Caller::of(&request);
        // Only the names the caller owns.
        let owned = |name: &str| self.auth.allows(&caller, Permission::OwnSubscription(name));
        let listed = self.durable.list(owned).await.map_err(status)?;
        Ok(Response::new(pb::ListSubscriptionsResponse { subscriptions: listed.into_iter().map(info).collect() }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        self.owns(&caller, &name)?;
        let described = self.durable.describe(&name).await.map_err(status)?;
        Ok(Response::new(info(described)))
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

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tributary_core::{
        durable::PartitionPosition,
        error::{Error, SubscriptionProblem, TranslatorFailure},
        translate::{Outcome, Translate},
        Record,
    };

    use super::*;

    #[test]
    fn a_described_subscription_becomes_its_info() {
        let described = Described {
            name: "s".into(),
            group: "tributary-sub-s".into(),
            active_here: true,
            stamp: Stamp {
                topics: vec!["t".into()],
                translator_name: "mapper".into(),
                translator_digest: "d".into(),
                config_sha256: "c".into(),
                committed_at_ms: 42,
            },
            partitions: vec![
                PartitionPosition { topic: "t".into(), partition: 0, committed: Some(7), latest: 10, lag: 3 },
                PartitionPosition { topic: "t".into(), partition: 1, committed: None, latest: 3, lag: 3 },
            ],
        };
        let expected = pb::SubscriptionInfo {
            name: "s".into(),
            group: "tributary-sub-s".into(),
            topics: vec!["t".into()],
            partitions: vec![
                pb::PartitionPosition {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: 7,
                    latest_offset: 10,
                    lag: 3,
                },
                // Nothing committed is -1 on the wire.
                pb::PartitionPosition {
                    topic: "t".into(),
                    partition: 1,
                    committed_offset: -1,
                    latest_offset: 3,
                    lag: 3,
                },
            ],
            translator_name: "mapper".into(),
            translator_digest: "d".into(),
            translator_config_sha256: "c".into(),
            committed_at_ms: 42,
            active_here: true,
        };
        assert_eq!(info(described), expected);
    }

    /// A translator that is never called: a stamp only reads a translation's name and digest.
    struct Unused;

    impl Translate for Unused {
        fn translate(&self, _: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
            unreachable!("a stamp translates nothing")
        }
    }

    #[test]
    fn a_stamp_names_the_resolved_translator_and_its_configurations_sha256() {
        let reference = pb::TranslatorRef { name: "mapper".into(), config: "{\"a\":1}".into(), ..Default::default() };
        let translation = Translation {
            name: "mapper".into(),
            digest: "d".repeat(64),
            translator: Arc::new(Unused),
            skip_errors: false,
            batch_records: 1,
        };
        let stamped = stamp(vec!["t".into()], Some(&reference), Some(&translation));
        let expected = Stamp {
            topics: vec!["t".into()],
            translator_name: "mapper".into(),
            // The version the request resolved to, not the empty digest it named.
            translator_digest: "d".repeat(64),
            config_sha256: tributary_wasm::sha256_hex(b"{\"a\":1}"),
            committed_at_ms: 0,
        };
        assert_eq!(stamped, expected);
        assert_eq!(stamp(vec!["t".into()], None, None), Stamp { topics: vec!["t".into()], ..Stamp::default() });
    }

    #[test]
    fn the_cores_subscription_errors_have_their_codes() {
        let code = |problem| status(Error::subscription("s", problem, "why")).code();
        assert_eq!(code(SubscriptionProblem::Unknown), Code::NotFound);
        for problem in [
            SubscriptionProblem::NoPosition,
            SubscriptionProblem::TopicsChanged,
            SubscriptionProblem::TranslatorChanged,
        ] {
            assert_eq!(code(problem), Code::FailedPrecondition, "{problem:?}");
        }
        let taken = Error::SubscriptionTakenOver { name: "s".into(), why: "was deleted".into(), resume: vec![] };
        assert_eq!(status(taken).code(), Code::Aborted);
        let bad_name = check_subscription_name("a b", "name").unwrap_err();
        assert_eq!(status(bad_name).code(), Code::InvalidArgument);
    }
}
