//! A cursor: one partition of a subscription, its next offset, and where it reads from.
//!
//! Exactly-once delivery within a stream rests on one invariant: `pos` is the next offset not yet
//! delivered, a record is delivered only if its offset is `>= pos`, after which `pos` moves past
//! it. Both sources (the tail buffer and a catch-up reader) only ever move `pos` forward.

use std::sync::Arc;

use crate::{record::PartitionOffset, view::Shard};

/// A cursor over one partition.
#[derive(Debug)]
pub struct Cursor {
    pub shard: Arc<Shard>,
    /// The next offset not yet delivered.
    pub pos: i64,
    /// True while the cursor reads from the catch-up reader instead of the tail buffer.
    pub(crate) behind: bool,
}

impl Cursor {
    pub fn new(shard: Arc<Shard>, pos: i64) -> Self {
        Self { shard, pos, behind: false }
    }

    pub fn position(&self) -> PartitionOffset {
        self.shard.at(self.pos)
    }
}
