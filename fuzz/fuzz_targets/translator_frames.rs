//! The host's reading of a translator's output frames (`crates/wasm/src/frames.rs`, version 2 of
//! the translator contract): the buffer comes from B's guest code and is trusted in nothing. A
//! buffer is refused with the byte at fault, or accepted and read back without a panic, holding
//! one outcome per record and exactly what the caps counted.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tributary_core::translate::Counted;
use tributary_wasm::frames::check_output;

#[derive(Arbitrary, Debug)]
struct Input {
    records: u8,
    buffer: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let (records, len) = (usize::from(input.records), input.buffer.len());
    let checked = match check_output(input.buffer, records) {
        Ok(checked) => checked,
        Err(malformed) => {
            assert!(malformed.at <= malformed.len && malformed.len == len, "{malformed:?}");
            return;
        }
    };
    let counts = checked.counts.clone();
    let outcomes = checked.outcomes();
    assert_eq!(outcomes.records.len(), records, "one outcome per record");
    assert_eq!(outcomes.payloads.len(), counts.records, "the outputs the caps counted");
    let listed: u64 = outcomes.records.iter().map(|c| if let Counted::Ok(n) = c { u64::from(*n) } else { 0 }).sum();
    assert_eq!(listed, outcomes.payloads.len() as u64);
    let payload: usize = outcomes
        .payloads
        .iter()
        .map(|p| {
            p.key.as_ref().map_or(0, |k| k.len())
                + p.value.as_ref().map_or(0, |v| v.len())
                + p.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len())).sum::<usize>()
        })
        .sum();
    assert_eq!(payload, counts.payload, "the payload bytes the caps counted");
});
