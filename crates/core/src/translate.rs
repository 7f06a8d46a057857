//! The port a translator runtime plugs into ([`Translate`]), and the one place where a
//! translator's outcomes become outputs: one outcome per record, errors skipped or fatal, every
//! output at its source record's coordinates (rule 8).

use std::sync::Arc;

use crate::{
    error::{Error, TranslatorFailure},
    record::{Output, Payload, Record},
};

/// What a translator made of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Zero or more of B's records.
    Ok(Vec<Payload>),
    /// The translator's error value for this record.
    Err(String),
}

/// A translator with its configuration, ready to run (`tributary-wasm` runs WebAssembly ones).
pub trait Translate: Send + Sync + 'static {
    /// Translates a batch: exactly one outcome per record, in order. Blocking (runs guest code):
    /// called from a blocking thread.
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure>;
}

/// A translator applied to a call's records: what it is (for errors), the shared translator, and
/// how records go through it.
#[derive(Clone)]
pub struct Translation {
    pub name: String,
    pub digest: String,
    pub translator: Arc<dyn Translate>,
    /// Skip records whose translation returns an error value instead of ending the call.
    pub skip_errors: bool,
    /// Records passed to one `translate` call.
    pub batch_records: usize,
}

impl std::fmt::Debug for Translation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translation").field("name", &self.name).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// B's records made from A's.
#[derive(Debug, Default)]
pub struct Translated {
    pub outputs: Vec<Output>,
    /// Records whose translation returned an error and were skipped (`skip_errors`).
    pub skipped: u64,
}

impl Translation {
    /// What a failed translation is reported as: which translator, why, and where.
    pub fn failure(&self, failure: TranslatorFailure, at: Option<&Record>) -> Error {
        Error::Translator {
            name: self.name.clone(),
            digest: self.digest.clone(),
            failure,
            at: at.map(|r| Box::new((r.topic.to_string(), r.partition, r.offset))),
            resume: Vec::new(),
        }
    }

    /// Translates `records` synchronously, in calls of `batch_records`.
    pub fn translate_blocking(&self, records: &[Record]) -> Result<Translated, Error> {
        let mut translated = Translated::default();
        let label = ("translator", self.name.clone());
        for chunk in records.chunks(self.batch_records.max(1)) {
            let started = std::time::Instant::now();
            let result = self.translator.translate(chunk);
            metrics::histogram!("tributary_translator_call_duration_seconds", std::slice::from_ref(&label))
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("tributary_translator_calls_total", std::slice::from_ref(&label)).increment(1);
            metrics::counter!("tributary_translator_records_total", std::slice::from_ref(&label))
                .increment(chunk.len() as u64);
            if let Err(failure) = &result {
                metrics::counter!("tributary_translator_errors_total", "translator" => self.name.clone(), "reason" => failure.reason())
                    .increment(1);
            }
            let outcomes = result.map_err(|f| self.failure(f, chunk.first()))?;
            if outcomes.len() != chunk.len() {
                // The same bug the SDK reports as an error value of the call: the same status
                // (FAILED_PRECONDITION, TRANSLATOR_ERROR) whichever side finds it, never skipped.
                let message = format!(
                    "translator returned {} outcomes for {} records; one outcome per record is required",
                    outcomes.len(),
                    chunk.len()
                );
                return Err(self.failure(TranslatorFailure::Error(message), chunk.first()));
            }
            for (record, outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Outcome::Ok(payloads) => {
                        translated.outputs.extend(payloads.into_iter().enumerate().map(|(i, payload)| Output {
                            source: record.clone(),
                            index: i as u32,
                            translated: Some(Box::new(payload)),
                            wire: None,
                        }))
                    }
                    Outcome::Err(_) if self.skip_errors => translated.skipped += 1,
                    Outcome::Err(message) => return Err(self.failure(TranslatorFailure::Error(message), Some(record))),
                }
            }
        }
        Ok(translated)
    }

    /// Translates `records` on a blocking thread.
    pub async fn translate(&self, records: Vec<Record>) -> Result<Translated, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.translate_blocking(&records))
            .await
            .map_err(|e| Error::Internal(format!("translation task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes two outputs of every record, or fails on values equal to "bad".
    struct Twice;

    impl Translate for Twice {
        fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
            Ok(batch
                .iter()
                .map(|r| match r.value() {
                    Some(b"bad") => Outcome::Err("bad value".into()),
                    _ => {
                        Outcome::Ok(vec![Payload::default(), Payload { value: r.value_bytes(), ..Payload::default() }])
                    }
                })
                .collect())
        }
    }

    fn record(offset: i64, value: &'static str) -> Record {
        Record::new("t".into(), 1, offset, 0, None, Some(value.as_bytes()), &[])
    }

    fn translation(skip_errors: bool) -> Translation {
        Translation {
            name: "twice".into(),
            digest: "d".into(),
            translator: Arc::new(Twice),
            skip_errors,
            batch_records: 2,
        }
    }

    #[test]
    fn outputs_keep_source_coordinates_and_index() {
        let out = translation(false).translate_blocking(&[record(3, "a"), record(7, "b"), record(9, "c")]).unwrap();
        let coords: Vec<_> = out.outputs.iter().map(|o| (o.source.offset, o.index)).collect();
        assert_eq!(coords, vec![(3, 0), (3, 1), (7, 0), (7, 1), (9, 0), (9, 1)]);
    }

    /// Returns one outcome fewer than records.
    struct Short;

    impl Translate for Short {
        fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
            Ok(batch.iter().skip(1).map(|_| Outcome::Ok(vec![])).collect())
        }
    }

    #[test]
    fn a_wrong_number_of_outcomes_is_the_error_the_sdk_reports_and_is_never_skipped() {
        let short = Translation { translator: Arc::new(Short), ..translation(true) };
        match short.translate_blocking(&[record(3, "a"), record(4, "b")]).unwrap_err() {
            Error::Translator { failure: TranslatorFailure::Error(m), .. } => {
                assert!(m.contains("1 outcomes for 2 records"), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_values_are_skipped_or_fatal() {
        let records = [record(3, "a"), record(4, "bad"), record(5, "c")];
        let skipped = translation(true).translate_blocking(&records).unwrap();
        assert_eq!(skipped.skipped, 1);
        assert_eq!(skipped.outputs.len(), 4);
        let err = translation(false).translate_blocking(&records).unwrap_err();
        match err {
            Error::Translator { failure: TranslatorFailure::Error(m), at, .. } => {
                assert_eq!(m, "bad value");
                assert_eq!(*at.unwrap(), ("t".to_string(), 1, 4));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
