//! A B written in Rust with the client's follow helper: A's state, then every change after it,
//! printed; resumable across restarts of either side (its position lives in a file).
//!
//! `cargo run --example demo_client -- [GATEWAY_URL] [TOPIC] [SECONDS] [POSITION_FILE]`
//! (0 seconds: until Ctrl-C; without a position file it starts from a snapshot every time).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tributary_client::{
    follow, BoxError, Change, Client, FileStore, FollowOptions, Handler, MemoryStore, Position, Store,
};

/// B's model: it counts the snapshot's entries and prints every live change.
struct Printer {
    /// Entries of the snapshot being applied; `usize::MAX` when none is.
    snapshot: Arc<AtomicUsize>,
}

impl Handler for Printer {
    async fn reset(&mut self) -> Result<(), BoxError> {
        self.snapshot.store(0, Ordering::Relaxed);
        Ok(())
    }

    async fn apply(&mut self, changes: &[Change], _: Option<&Position>) -> Result<(), BoxError> {
        for c in changes {
            if c.snapshot {
                self.snapshot.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let key = String::from_utf8_lossy(c.key.as_deref().unwrap_or_default());
            match &c.value {
                Some(v) => println!("B live: {key} = {}  [p{}@{}]", String::from_utf8_lossy(v), c.partition, c.offset),
                None => println!("B live: {key} ended  [p{}@{}]", c.partition, c.offset),
            }
        }
        Ok(())
    }
}

/// A position store that announces a completed snapshot (its offsets are the first save after it).
struct Announce<S> {
    inner: S,
    snapshot: Arc<AtomicUsize>,
}

impl<S: Store> Store for Announce<S> {
    async fn load(&mut self) -> Result<Option<Position>, BoxError> {
        let position = self.inner.load().await?;
        if let Some(p) = &position {
            println!("B resumes at {}", at(p));
        }
        Ok(position)
    }

    async fn save(&mut self, position: &Position) -> Result<(), BoxError> {
        let entries = self.snapshot.swap(usize::MAX, Ordering::Relaxed);
        if entries != usize::MAX {
            println!("B snapshot: {entries} entries, exact at {}", at(position));
        }
        self.inner.save(position).await
    }

    async fn clear(&mut self) -> Result<(), BoxError> {
        self.inner.clear().await
    }
}

fn at(position: &Position) -> String {
    position.iter().map(|(_, partition, offset)| format!("p{partition}@{offset}")).collect::<Vec<_>>().join(" ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let topic = args.next().unwrap_or_else(|| "media-assignments".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let position_file = args.next();

    let client = Client::builder(url).lazy().connect().await?;
    let options = FollowOptions::new([topic]);
    let snapshot = Arc::new(AtomicUsize::new(usize::MAX));
    let mut printer = Printer { snapshot: snapshot.clone() };
    let stop = async move {
        match seconds {
            0 => drop(tokio::signal::ctrl_c().await),
            s => tokio::time::sleep(Duration::from_secs(s)).await,
        }
    };
    match position_file {
        Some(path) => {
            let mut store = Announce { inner: FileStore::new(path), snapshot };
            follow(&client, options, &mut printer, &mut store, stop).await?
        }
        None => {
            let mut store = Announce { inner: MemoryStore::default(), snapshot };
            follow(&client, options, &mut printer, &mut store, stop).await?
        }
    }
    Ok(())
}
