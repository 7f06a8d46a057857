//! Positions in the HTTP log: an opaque token of the epoch and every partition's next offset,
//! `{epoch}_{o0}.{o1}.…[_{wait}]`, and the fixed grid that cuts each partition into chunks.
//!
//! The token is printable, URL-safe and short (a few bytes per partition), so it can be a cache
//! key. `wait` counts the empty long-polls in a row at that position: each one gives the client a
//! new URL, so a cache that kept the last empty answer cannot send it back in a loop.

use std::fmt;

/// A position: every partition's next offset, in partition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offsets: Vec<i64>,
    /// Empty long-polls in a row at these offsets.
    pub wait: u32,
}

/// Checks an epoch: 1 to 32 letters, digits or `-`.
pub fn check_epoch(epoch: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!("epoch '{epoch}' must be 1 to 32 letters, digits or '-'")),
    }
}

impl Position {
    /// Parses a token; the error says what is wrong with it.
    pub fn parse(token: &str) -> Result<Self, String> {
        let mut parts = token.split('_');
        let (Some(epoch), Some(offsets)) = (parts.next(), parts.next()) else {
            return Err(format!(
                "'{token}' is not a position: use -1 for a snapshot, or the `next` of the last response"
            ));
        };
        check_epoch(epoch).map_err(|e| format!("position '{token}': {e}"))?;
        let offsets = offsets
            .split('.')
            .map(|o| o.parse::<i64>().ok().filter(|o| *o >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("position '{token}': its offsets must be non-negative integers separated by '.'"))?;
        let wait = match parts.next() {
            None => 0,
            Some(w) => w.parse().map_err(|_| format!("position '{token}': its wait count '{w}' is not a number"))?,
        };
        if parts.next().is_some() {
            return Err(format!("'{token}' has too many parts to be a position"));
        }
        Ok(Self { epoch: epoch.to_string(), offsets, wait })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_", self.epoch)?;
        for (i, o) in self.offsets.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{o}")?;
        }
        if self.wait > 0 {
            write!(f, "_{}", self.wait)?;
        }
        Ok(())
    }
}

/// The end of the grid cell that `offset` is in, for cells `width` offsets wide: the chunk from
/// `offset` ends there (at `i64::MAX` for the last cell, whatever the offset).
pub fn cell_end(offset: i64, width: u64) -> i64 {
    let width = i64::try_from(width).unwrap_or(i64::MAX).max(1);
    (offset / width).saturating_add(1).saturating_mul(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_say_why() {
        let p = Position { epoch: "e1".into(), offsets: vec![0, 1500, 7], wait: 0 };
        assert_eq!(p.to_string(), "e1_0.1500.7");
        assert_eq!(Position::parse("e1_0.1500.7").unwrap(), p);
        let waited = Position { wait: 3, ..p.clone() };
        assert_eq!(waited.to_string(), "e1_0.1500.7_3");
        assert_eq!(Position::parse("e1_0.1500.7_3").unwrap(), waited);
        for (bad, says) in [
            ("0", "not a position"),
            ("e1_x.2", "non-negative integers"),
            ("e1_-3", "non-negative integers"),
            ("e1_1..2", "non-negative integers"),
            ("e!_1", "letters, digits"),
            ("_1", "letters, digits"),
            ("e1_1_x", "wait count"),
            ("e1_1_2_3", "too many parts"),
        ] {
            let e = Position::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_grid_cuts_every_partition_at_multiples_of_its_width() {
        assert_eq!(cell_end(0, 100), 100);
        assert_eq!(cell_end(99, 100), 100);
        assert_eq!(cell_end(100, 100), 200);
        assert_eq!(cell_end(250, 100), 300);
        assert_eq!(cell_end(7, 1), 8);
        assert_eq!(cell_end(i64::MAX - 1, 100), i64::MAX, "the last cell ends at the last offset");
        assert_eq!(cell_end(5, u64::MAX), i64::MAX);
    }
}
