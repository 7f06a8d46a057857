//! Every record out unchanged: key (or none), value (or tombstone) and headers (null values
//! included). The configuration is ignored.

use tributary_translator_sdk::{export_translator, Outcome, SourceRecord, Translator};

struct Identity;

impl Translator for Identity {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Identity)
    }

    fn translate<'a>(&mut self, record: SourceRecord<'a>) -> Outcome<'a> {
        Outcome::pass(record)
    }
}

export_translator!(Identity);
