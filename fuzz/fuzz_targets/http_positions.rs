//! Positions in the HTTP log (`crates/server/src/web/position.rs`): the `from` token comes from a
//! browser's URL, so any text. A token is refused with a message, or parsed to a position that
//! prints back as a token of the same position; the chunk grid always ends a chunk past its start.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_server::web::position::{cell_end, Position};

fuzz_target!(|input: (&str, i64, u64)| {
    let (token, offset, width) = input;
    match Position::parse(token) {
        Ok(position) => {
            let printed = position.to_string();
            assert_eq!(Position::parse(&printed).as_ref(), Ok(&position), "{token:?} printed as {printed:?}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
    if offset >= 0 && width > 0 {
        let end = cell_end(offset, width);
        assert!(end > offset || end == i64::MAX, "cell_end({offset}, {width}) = {end}");
    }
});
