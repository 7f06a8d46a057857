//! The port a translator runtime plugs into ([`Translate`]), and the one place where a
//! translator's outcomes become outputs: one outcome per record, errors skipped or fatal, every
//! output at its source record's coordinates (rule 8).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

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

/// What a translator made of a batch, every output in one list: one allocation per call, not
/// per record, whatever the number of outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcomes {
    /// The outputs of every record, in record order.
    pub payloads: Vec<Payload>,
    /// Per record, in order: how many of `payloads` are its, or its error value.
    pub records: Vec<Counted>,
}

/// What became of one record in [`Outcomes`].
#[derive(Debug, Clone, PartialEq)]
pub enum Counted {
    /// This many outputs, the next ones in the list.
    Ok(u32),
    Err(String),
}

impl From<Vec<Outcome>> for Outcomes {
    fn from(outcomes: Vec<Outcome>) -> Self {
        let mut flat = Outcomes { payloads: Vec::new(), records: Vec::with_capacity(outcomes.len()) };
        for outcome in outcomes {
            flat.records.push(match outcome {
                Outcome::Ok(payloads) => {
                    let n = payloads.len() as u32;
                    flat.payloads.extend(payloads);
                    Counted::Ok(n)
                }
                Outcome::Err(message) => Counted::Err(message),
            });
        }
        flat
    }
}

/// A translator with its configuration, ready to run (`tributary-wasm` runs WebAssembly ones).
pub trait Translate: Send + Sync + 'static {
    /// Translates a batch: exactly one outcome per record, in order. Blocking (runs guest code):
    /// called from a blocking thread.
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure>;

    /// [`Translate::translate`] with every output in one list, which is what the gateway uses:
    /// a runtime that reads a batch's outputs from one buffer makes them without an allocation
    /// per record.
    fn translate_flat(&self, batch: &[Record]) -> Result<Outcomes, TranslatorFailure> {
        self.translate(batch).map(Outcomes::from)
    }

    /// The outcomes this translator (with its configuration) already made of the newest records,
    /// shared by every subscription that uses it; `None` when it keeps none.
    fn shared_outcomes(&self) -> Option<&SharedOutcomes> {
        None
    }
}

/// An outcome as made into outputs and kept: its payloads (`len` of them from `start` in the
/// payloads of its translator call) shared, not copied, by every output and every subscription
/// that delivers them.
#[derive(Debug, Clone)]
enum Made {
    Ok { payloads: Arc<[Payload]>, start: u32, len: u32 },
    Err(Arc<str>),
}

impl Made {
    /// The outcomes of one call, sharing one allocation of its payloads; `None` when the counts
    /// do not add up to the payloads (a bug of the runtime).
    fn of_call(outcomes: Outcomes) -> Option<Vec<Made>> {
        let payloads: Arc<[Payload]> = outcomes.payloads.into();
        let mut start = 0u32;
        let made: Vec<Made> = outcomes
            .records
            .into_iter()
            .map(|counted| match counted {
                Counted::Ok(len) => {
                    let made = Made::Ok { payloads: payloads.clone(), start, len };
                    start = start.saturating_add(len);
                    made
                }
                Counted::Err(message) => Made::Err(message.into()),
            })
            .collect();
        (start as usize == payloads.len()).then_some(made)
    }

    fn payloads(&self) -> &[Payload] {
        match self {
            Made::Ok { payloads, start, len } => &payloads[*start as usize..(*start + *len) as usize],
            Made::Err(_) => &[],
        }
    }

    /// Bytes the outcome holds, counted like [`Record::size`].
    fn size(&self) -> usize {
        match self {
            Made::Ok { .. } => self.payloads().iter().map(Payload::size).sum(),
            Made::Err(message) => message.len(),
        }
    }
}

/// Most records whose outcomes one translator (digest and configuration) keeps for sharing.
const SHARED_RECORDS: usize = 16_384;
/// Most bytes (records and their outcomes, counted like [`Record::size`]) one translator keeps
/// for sharing.
const SHARED_BYTES: usize = 16 << 20;
/// Most bytes every translator together keeps for sharing: past it, a translator drops its own
/// oldest entries (or keeps none), so many translators in use cannot hold more.
const SHARED_TOTAL_BYTES: usize = 256 << 20;
/// Bytes kept by every [`SharedOutcomes`] of the process.
static SHARED_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The outcomes a translator made of the newest records of each partition, so that subscriptions
/// following the head with the same translator and configuration translate each record once
/// instead of once each. A translator is a pure function of its configuration and the record,
/// so an outcome is reused for an equal record only: the same record of the view, or one with
/// the same coordinates and content. Bounded by [`SHARED_RECORDS`] and [`SHARED_BYTES`] per
/// translator and [`SHARED_TOTAL_BYTES`] in all: the oldest entries go first.
#[derive(Default)]
pub struct SharedOutcomes {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// Per topic and partition, in offset order.
    partitions: HashMap<Arc<str>, HashMap<i32, VecDeque<Entry>>>,
    /// Runs of entries appended to one partition, oldest first: the front run's entries are the
    /// oldest of their partition (each partition's entries are appended in offset order).
    order: VecDeque<Run>,
    /// Entries kept, and their bytes.
    len: usize,
    bytes: usize,
}

/// `entries` consecutive entries of one partition in [`Store::order`].
struct Run {
    topic: Arc<str>,
    partition: i32,
    entries: usize,
}

struct Entry {
    offset: i64,
    record: Record,
    made: Made,
    bytes: usize,
}

impl SharedOutcomes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept outcome of each record, in order (`None` where there is none).
    fn get(&self, records: &[Record]) -> Vec<Option<Made>> {
        let store = self.lock();
        if store.order.is_empty() {
            return vec![None; records.len()];
        }
        // Records come in runs of one partition, in offset order: the partition is looked up
        // once per run, and the entry after the last one found is tried before searching.
        let mut run: Option<(&Record, Option<&VecDeque<Entry>>)> = None;
        let mut last = usize::MAX;
        records
            .iter()
            .map(|r| {
                let entries = match run {
                    Some((prev, entries)) if prev.partition == r.partition && prev.topic == r.topic => entries,
                    _ => {
                        last = usize::MAX;
                        store.partitions.get(&*r.topic).and_then(|p| p.get(&r.partition))
                    }
                };
                run = Some((r, entries));
                let entries = entries?;
                // After a new run's lookup, `last` is usize::MAX: the first entry is tried.
                let next = last.wrapping_add(1);
                let at = match entries.get(next) {
                    Some(e) if e.offset == r.offset => next,
                    _ => {
                        let (first, newest) = (entries.front()?.offset, entries.back()?.offset);
                        if r.offset < first || r.offset > newest {
                            return None;
                        }
                        entries.binary_search_by_key(&r.offset, |e| e.offset).ok()?
                    }
                };
                last = at;
                (entries[at].record == *r).then(|| entries[at].made.clone())
            })
            .collect()
    }

    /// Keeps the outcomes of records newer than every record kept for their partition. Records
    /// come in runs of one partition: each run is looked up once, and the oldest entries are
    /// evicted a run at a time.
    fn put(&self, records: &[Record], made: &[Made]) {
        let mut store = self.lock();
        let Store { partitions, order, len, bytes } = &mut *store;
        let mut added = 0;
        let mut rest = records.iter().zip(made).peekable();
        while let Some(&(first, _)) = rest.peek() {
            let (topic, partition) = (&first.topic, first.partition);
            let entries = partitions.entry(topic.clone()).or_default().entry(partition).or_default();
            let mut appended = 0;
            while let Some((record, made)) = rest.next_if(|(r, _)| r.partition == partition && r.topic == *topic) {
                let size = record.size() + made.size();
                if size > SHARED_BYTES / 16 || entries.back().is_some_and(|e| e.offset >= record.offset) {
                    continue;
                }
                entries.push_back(Entry {
                    offset: record.offset,
                    record: record.clone(),
                    made: made.clone(),
                    bytes: size,
                });
                appended += 1;
                added += size;
            }
            match order.back_mut() {
                Some(run) if run.partition == partition && run.topic == *topic => run.entries += appended,
                _ if appended > 0 => order.push_back(Run { topic: topic.clone(), partition, entries: appended }),
                _ => {}
            }
            *len += appended;
        }
        *bytes += added;
        let mut total = SHARED_TOTAL.fetch_add(added, Ordering::Relaxed) + added;
        let mut freed = 0;
        let over = |len: usize, bytes: usize, total: usize| {
            len > SHARED_RECORDS || bytes > SHARED_BYTES || total > SHARED_TOTAL_BYTES
        };
        while over(*len, *bytes, total) {
            let Some(run) = order.front_mut() else { break };
            let Some(kept) = partitions.get_mut(&run.topic) else {
                order.pop_front();
                continue;
            };
            let Some(entries) = kept.get_mut(&run.partition) else {
                order.pop_front();
                continue;
            };
            while run.entries > 0 && over(*len, *bytes, total) {
                let Some(oldest) = entries.pop_front() else { break };
                run.entries -= 1;
                *len -= 1;
                *bytes -= oldest.bytes;
                total -= oldest.bytes;
                freed += oldest.bytes;
            }
            if entries.is_empty() {
                run.entries = 0;
                kept.remove(&run.partition);
                if kept.is_empty() {
                    partitions.remove(&run.topic);
                }
            }
            if run.entries == 0 {
                order.pop_front();
            }
        }
        SHARED_TOTAL.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Records whose outcomes are kept.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SharedOutcomes {
    fn drop(&mut self) {
        SHARED_TOTAL.fetch_sub(self.lock().bytes, Ordering::Relaxed);
    }
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
        self.translate_with(records, false, vec![None; records.len()])
    }

    /// Like [`Translation::translate_blocking`], reusing the outcomes the translator keeps for
    /// the newest records (see [`SharedOutcomes`]) and keeping the new ones.
    pub fn translate_shared_blocking(&self, records: &[Record]) -> Result<Translated, Error> {
        self.translate_with(records, true, self.known(records))
    }

    /// The translator's kept outcomes of `records`, in order (`None` where there is none).
    fn known(&self, records: &[Record]) -> Vec<Option<Made>> {
        let Some(shared) = self.translator.shared_outcomes() else { return vec![None; records.len()] };
        let known = shared.get(records);
        let reused = known.iter().filter(|o| o.is_some()).count();
        if reused > 0 {
            metrics::counter!("tributary_translator_reused_records_total", "translator" => self.name.clone())
                .increment(reused as u64);
        }
        known
    }

    /// Outputs of `records`: their `known` outcomes, and the translator's for the others (kept
    /// for sharing when `share`).
    fn translate_with(
        &self,
        records: &[Record],
        share: bool,
        mut known: Vec<Option<Made>>,
    ) -> Result<Translated, Error> {
        let shared = self.translator.shared_outcomes().filter(|_| share);
        let mut translated = Translated { outputs: Vec::with_capacity(records.len()), skipped: 0 };
        // The records to translate, called in chunks as the outputs reach them, so that a fatal
        // error value stops the translation where it is (as if nothing were shared). When no
        // outcome is known (a snapshot, a catch-up), that is every record: no copy of the list.
        let missing: Vec<Record> = if known.iter().any(Option::is_some) {
            records.iter().zip(&known).filter(|(_, o)| o.is_none()).map(|(r, _)| r.clone()).collect()
        } else {
            Vec::new()
        };
        let missing = if missing.is_empty() { records } else { &missing };
        let mut chunks = missing.chunks(self.batch_records.max(1));
        let mut fresh = VecDeque::new();
        for (record, known) in records.iter().zip(known.iter_mut()) {
            let outcome = match known.take() {
                Some(outcome) => outcome,
                None => {
                    if fresh.is_empty() {
                        let chunk = chunks.next().expect("a chunk for every record not kept");
                        let made = self.call(chunk)?;
                        if let Some(shared) = shared {
                            shared.put(chunk, &made);
                        }
                        fresh.extend(made);
                    }
                    fresh.pop_front().expect("one outcome per record")
                }
            };
            match outcome {
                Made::Ok { payloads, start, len } => translated
                    .outputs
                    .extend((0..len).map(|i| Output::translated_at(record.clone(), payloads.clone(), start + i, i))),
                Made::Err(_) if self.skip_errors => translated.skipped += 1,
                Made::Err(message) => {
                    return Err(self.failure(TranslatorFailure::Error(message.to_string()), Some(record)))
                }
            }
        }
        Ok(translated)
    }

    /// One call of the translator: exactly one outcome per record.
    fn call(&self, chunk: &[Record]) -> Result<Vec<Made>, Error> {
        let label = ("translator", self.name.clone());
        let started = std::time::Instant::now();
        let result = self.translator.translate_flat(chunk);
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
        if outcomes.records.len() != chunk.len() {
            // The same bug the SDK reports as an error value of the call: the same status
            // (FAILED_PRECONDITION, TRANSLATOR_ERROR) whichever side finds it, never skipped.
            let message = format!(
                "translator returned {} outcomes for {} records; one outcome per record is required",
                outcomes.records.len(),
                chunk.len()
            );
            return Err(self.failure(TranslatorFailure::Error(message), chunk.first()));
        }
        Made::of_call(outcomes).ok_or_else(|| {
            let message = "the runtime's output counts do not add up to its outputs".to_string();
            self.failure(TranslatorFailure::Trap(message), chunk.first())
        })
    }

    /// Translates `records` on a blocking thread.
    pub async fn translate(&self, records: Vec<Record>) -> Result<Translated, Error> {
        let known = vec![None; records.len()];
        self.translate_off_thread(records, false, known).await
    }

    /// [`Translation::translate_shared_blocking`] on a blocking thread: for subscriptions, which
    /// follow the same newest records as others. When every outcome is kept, no guest runs: the
    /// outputs are made here, with no blocking thread.
    pub async fn translate_shared(&self, records: Vec<Record>) -> Result<Translated, Error> {
        let known = self.known(&records);
        if known.iter().all(Option::is_some) {
            return self.translate_with(&records, true, known);
        }
        self.translate_off_thread(records, true, known).await
    }

    async fn translate_off_thread(
        &self,
        records: Vec<Record>,
        share: bool,
        known: Vec<Option<Made>>,
    ) -> Result<Translated, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.translate_with(&records, share, known))
            .await
            .map_err(|e| Error::Internal(format!("translation task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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

    /// Uppercases values, counting the records it is called with; fails on "bad".
    #[derive(Default)]
    struct Counting {
        translated: std::sync::atomic::AtomicUsize,
        shared: SharedOutcomes,
    }

    impl Translate for Counting {
        fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
            self.translated.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(batch
                .iter()
                .map(|r| match r.value() {
                    Some(b"bad") => Outcome::Err("bad value".into()),
                    v => Outcome::Ok(vec![Payload {
                        value: v.map(|v| Bytes::from(v.to_ascii_uppercase())),
                        ..Payload::default()
                    }]),
                })
                .collect())
        }

        fn shared_outcomes(&self) -> Option<&SharedOutcomes> {
            Some(&self.shared)
        }
    }

    fn counting() -> (Arc<Counting>, Translation) {
        let counting = Arc::new(Counting::default());
        let translation = Translation { translator: counting.clone(), ..translation(false) };
        (counting, translation)
    }

    fn calls(c: &Counting) -> usize {
        c.translated.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn subscriptions_sharing_a_translator_translate_each_newest_record_once() {
        let (counting, translation) = counting();
        let records: Vec<Record> = (0..5).map(|o| record(o, "abc")).collect();
        let first = translation.translate_shared_blocking(&records).unwrap();
        assert_eq!(calls(&counting), 5);
        // Another subscription at the same records (the same records of the view).
        let second = translation.translate_shared_blocking(&records).unwrap();
        assert_eq!(calls(&counting), 5, "kept outcomes are reused");
        assert_eq!(first.outputs, second.outputs);
        assert_eq!(second.outputs[0].payload().unwrap().value.as_deref(), Some(&b"ABC"[..]));
        // Part kept, part new: only the new ones are translated, and the order is the input's.
        let more: Vec<Record> = (3..8).map(|o| record(o, "abc")).collect();
        let third = translation.translate_shared_blocking(&more).unwrap();
        assert_eq!(calls(&counting), 8);
        let offsets: Vec<i64> = third.outputs.iter().map(|o| o.source.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5, 6, 7]);
        // Snapshots translate on their own and keep nothing.
        translation.translate_blocking(&records).unwrap();
        assert_eq!(calls(&counting), 13);
        assert_eq!(counting.shared.len(), 8);
    }

    #[tokio::test]
    async fn a_subscription_whose_records_are_all_kept_runs_no_guest() {
        let (counting, translation) = counting();
        let records: Vec<Record> = (0..3).map(|o| record(o, "abc")).collect();
        let first = translation.translate_shared(records.clone()).await.unwrap();
        let second = translation.translate_shared(records.clone()).await.unwrap();
        assert_eq!((calls(&counting), first.outputs), (3, second.outputs));
        let mut more = records;
        more.push(record(3, "bad"));
        assert!(translation.translate_shared(more).await.is_err(), "a record not kept is translated");
        assert_eq!(calls(&counting), 4);
    }

    #[test]
    fn a_kept_outcome_is_reused_only_for_an_equal_record() {
        let (counting, translation) = counting();
        translation.translate_shared_blocking(&[record(1, "abc")]).unwrap();
        // Same coordinates, other content (a topic deleted and created again): translated anew.
        let other = translation.translate_shared_blocking(&[record(1, "xyz")]).unwrap();
        assert_eq!(calls(&counting), 2);
        assert_eq!(other.outputs[0].payload().unwrap().value.as_deref(), Some(&b"XYZ"[..]));
        // An equal record read again from Kafka (another allocation) reuses it.
        translation.translate_shared_blocking(&[record(1, "abc")]).unwrap();
        assert_eq!(calls(&counting), 2);
    }

    #[test]
    fn kept_outcomes_are_bounded_and_the_oldest_go_first() {
        let (counting, translation) = counting();
        let n = SHARED_RECORDS as i64 + 10;
        let records: Vec<Record> = (0..n).map(|o| record(o, "v")).collect();
        translation.translate_shared_blocking(&records).unwrap();
        assert_eq!(counting.shared.len(), SHARED_RECORDS);
        let before = calls(&counting);
        translation.translate_shared_blocking(&records[..10]).unwrap();
        assert_eq!(calls(&counting) - before, 10, "the 10 oldest were dropped");
        translation.translate_shared_blocking(&records[10..20]).unwrap();
        assert_eq!(calls(&counting) - before, 10, "newer ones are kept");
        // Older records than the newest kept are not kept (each partition keeps its newest).
        assert_eq!(counting.shared.len(), SHARED_RECORDS);
    }

    #[test]
    fn kept_outcomes_of_several_partitions_go_oldest_first_across_runs() {
        let (counting, translation) = counting();
        let of = |partition: i32, offsets: std::ops::Range<i64>| -> Vec<Record> {
            offsets.map(|o| Record::new("t".into(), partition, o, 0, None, Some(b"v"), &[])).collect()
        };
        let fill = SHARED_RECORDS as i64 - 200;
        // Runs of two partitions, interleaved: [1: 0..100] [2: 0..100] [1: 100..fill+100].
        let mut records = of(1, 0..100);
        records.extend(of(2, 0..100));
        records.extend(of(1, 100..fill + 100));
        translation.translate_shared_blocking(&records).unwrap();
        assert_eq!(counting.shared.len(), SHARED_RECORDS);
        // 150 more of partition 2: the oldest 150 overall go, 100 of partition 1 and 50 of 2.
        translation.translate_shared_blocking(&of(2, 100..250)).unwrap();
        assert_eq!(counting.shared.len(), SHARED_RECORDS);
        let before = calls(&counting);
        translation.translate_shared_blocking(&of(2, 50..100)).unwrap();
        assert_eq!(calls(&counting), before, "partition 2's 50..100 are kept");
        translation.translate_shared_blocking(&of(2, 0..50)).unwrap();
        assert_eq!(calls(&counting) - before, 50, "partition 2's oldest 50 went");
        translation.translate_shared_blocking(&of(1, 0..100)).unwrap();
        assert_eq!(calls(&counting) - before, 150, "partition 1's oldest 100 went");
        translation.translate_shared_blocking(&of(1, 100..110)).unwrap();
        assert_eq!(calls(&counting) - before, 150, "partition 1's next run is kept");
    }

    #[test]
    fn a_fatal_error_value_stops_the_translation_where_it_is_with_kept_outcomes_too() {
        let (counting, translation) = counting();
        translation.translate_shared_blocking(&[record(3, "a")]).unwrap();
        // batch_records = 2: [bad, c] is one call, [d] would be the next.
        let records = [record(3, "a"), record(4, "bad"), record(5, "c"), record(6, "d")];
        match translation.translate_shared_blocking(&records).unwrap_err() {
            Error::Translator { at, .. } => assert_eq!(*at.unwrap(), ("t".to_string(), 1, 4)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(calls(&counting), 3, "the call after the error value is not made");
        // The error value is kept like any outcome: skipped by a subscription that skips errors.
        let skipping = Translation { skip_errors: true, ..translation.clone() };
        let out = skipping.translate_shared_blocking(&records[..3]).unwrap();
        assert_eq!((out.skipped, out.outputs.len(), calls(&counting)), (1, 2, 3));
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
