//! Persistence: the durable side of retained messages, sessions, queued
//! deliveries and key-value data.
//!
//! The broker keeps its working state in memory (router, sessions, retained
//! map) and writes every change that must survive a restart through this
//! store as [`Op`]s. One writer thread applies them in submission order,
//! gathering everything submitted while the previous commit was syncing into
//! the next transaction (group commit). A submission returns a [`Ticket`];
//! waiting on it returns once that change is on disk. Connections wait on the
//! ticket of a publish before writing the guest's output, so a client never
//! sees an acknowledgement for a message that is not yet durable.
//!
//! With `engine = "memory"` nothing is written and tickets are ready at once.

mod records;
mod redb_backend;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

pub use records::{QueuedRecord, SessionRecord, Snapshot, StoredMessage};

use crate::config::{Storage, StorageEngine};

/// Name of the database file inside `data_dir`.
pub const DATABASE_FILE: &str = "sandport.redb";

/// Most ops applied in one transaction.
const MAX_BATCH_OPS: usize = 65_536;

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Op {
    PutRetained {
        topic: String,
        message: Arc<StoredMessage>,
    },
    DeleteRetained {
        topic: String,
    },
    PutSession {
        key: String,
        record: SessionRecord,
    },
    /// Delete the session and every queued delivery of it.
    DeleteSession {
        key: String,
    },
    Enqueue {
        key: String,
        seq: u64,
        record: QueuedRecord,
    },
    Dequeue {
        key: String,
        seq: u64,
    },
    PutKv {
        protocol: String,
        key: String,
        entry: crate::kv::KvEntry,
    },
    DeleteKv {
        protocol: String,
        key: String,
    },
}

/// A storage failure. Messages name the file or directory.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "storage: data directory {} does not exist; create it (mkdir -p) to start with an empty store",
        .0.display()
    )]
    MissingDataDir(PathBuf),
    #[error("storage: cannot open {}: {message}", path.display())]
    Open { path: PathBuf, message: String },
    #[error("storage: {} is unreadable or corrupt: {message}; restore it from a backup or move it away to start empty", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("storage: write failed: {0}")]
    Write(String),
}

/// A position in the submission order; see [`Store::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    committed: u64,
    failed: bool,
}

/// Where ops are applied.
pub trait Backend: Send + 'static {
    /// Apply `ops` atomically (and durably, when fsync is on).
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError>;

    /// Make earlier non-fsynced commits durable.
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// With fsync off, how often commits are made durable anyway.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Handle to the store, shared by the broker.
pub struct Store {
    /// `None` for the memory engine.
    writer: Option<WriterHandle>,
}

/// Ops numbered in submission order.
type Submission = (u64, Vec<Op>);

struct WriterHandle {
    /// Last sequence number handed out, and the channel (taken on drop).
    submit: Mutex<(u64, Option<mpsc::Sender<Submission>>)>,
    last_submitted: AtomicU64,
    progress: watch::Receiver<Progress>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Durability knobs.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// fsync each commit (`storage.fsync`).
    pub fsync: bool,
    /// Wait this long after the first op to gather more into the commit.
    pub commit_delay: Duration,
}

impl Store {
    /// A store that keeps nothing.
    pub fn memory() -> (Store, Snapshot) {
        (Store { writer: None }, Snapshot::default())
    }

    /// Open the store described by the config; returns what it holds.
    pub fn open(storage: &Storage, data_dir: &Path) -> Result<(Store, Snapshot), StoreError> {
        match storage.engine {
            StorageEngine::Memory => Ok(Store::memory()),
            StorageEngine::Embedded => {
                if !data_dir.is_dir() {
                    return Err(StoreError::MissingDataDir(data_dir.to_owned()));
                }
                let settings = WriterSettings {
                    fsync: storage.fsync,
                    commit_delay: Duration::from_micros(storage.commit_delay_us),
                };
                let (backend, snapshot) =
                    redb_backend::RedbBackend::open(&data_dir.join(DATABASE_FILE), settings)?;
                Ok((Store::with_backend(backend, settings), snapshot))
            }
        }
    }

    /// A store writing through `backend` on its own thread.
    pub fn with_backend(backend: impl Backend, settings: WriterSettings) -> Store {
        let (tx, rx) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let thread = std::thread::Builder::new()
            .name("sandport-store".into())
            .spawn(move || write_loop(backend, rx, progress_tx, settings))
            .map_err(|e| tracing::error!("cannot start the store writer thread: {e}"))
            .ok();
        Store {
            writer: Some(WriterHandle {
                submit: Mutex::new((0, Some(tx))),
                last_submitted: AtomicU64::new(0),
                progress,
                thread,
            }),
        }
    }

    /// Whether changes are persisted (false for the memory engine).
    pub fn is_durable(&self) -> bool {
        self.writer.is_some()
    }

    /// Queue `ops` for the writer; the ticket covers them and everything
    /// submitted before.
    pub fn submit(&self, ops: Vec<Op>) -> Ticket {
        let Some(writer) = &self.writer else { return Ticket(0) };
        if ops.is_empty() {
            return self.barrier();
        }
        let mut submit = writer.submit.lock();
        submit.0 += 1;
        let seq = submit.0;
        // A send fails only if the writer thread died; waiters then see `failed`.
        if let Some(tx) = &submit.1 {
            let _ = tx.send((seq, ops));
        }
        writer.last_submitted.store(seq, Ordering::Release);
        Ticket(seq)
    }

    /// A ticket covering everything submitted so far.
    pub fn barrier(&self) -> Ticket {
        match &self.writer {
            Some(writer) => Ticket(writer.last_submitted.load(Ordering::Acquire)),
            None => Ticket(0),
        }
    }

    /// Wait until everything up to `ticket` is durable.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else { return Ok(()) };
        let mut progress = writer.progress.clone();
        let reached = progress.wait_for(|p| p.failed || p.committed >= ticket.0).await;
        match reached {
            Ok(p) if !p.failed => Ok(()),
            _ => Err(StoreError::Write("the store writer failed; see earlier errors".into())),
        }
    }
}

impl Drop for Store {
    /// Let the writer finish what was submitted, flush, and stop.
    fn drop(&mut self) {
        if let Some(writer) = &mut self.writer {
            writer.submit.lock().1 = None;
            if let Some(thread) = writer.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn write_loop(
    mut backend: impl Backend,
    rx: mpsc::Receiver<Submission>,
    progress: watch::Sender<Progress>,
    settings: WriterSettings,
) {
    let mut unflushed = false;
    loop {
        let (mut last, mut ops) = match rx.recv_timeout(FLUSH_INTERVAL) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if unflushed && backend.flush().is_ok() {
                    unflushed = false;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if !settings.commit_delay.is_zero() {
            std::thread::sleep(settings.commit_delay);
        }
        while ops.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok((seq, more)) => {
                    last = seq;
                    ops.extend(more);
                }
                Err(_) => break,
            }
        }
        match backend.commit(&ops) {
            Ok(()) => {
                unflushed = !settings.fsync;
                progress.send_modify(|p| p.committed = last);
            }
            Err(e) => {
                tracing::error!("{e}");
                progress.send_modify(|p| p.failed = true);
                return;
            }
        }
    }
    if unflushed && let Err(e) = backend.flush() {
        tracing::error!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(std::sync::Arc<Mutex<Vec<usize>>>);

    impl Backend for Recorder {
        fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(5));
            self.0.lock().push(ops.len());
            Ok(())
        }
    }

    #[tokio::test]
    async fn tickets_complete_in_order_and_commits_are_grouped() {
        let commits = std::sync::Arc::new(Mutex::new(Vec::new()));
        let settings = WriterSettings { fsync: true, commit_delay: Duration::ZERO };
        let store = Store::with_backend(Recorder(commits.clone()), settings);
        let mut last = Ticket(0);
        for i in 0..50 {
            last = store.submit(vec![Op::DeleteKv { protocol: "p".into(), key: i.to_string() }]);
        }
        store.wait(last).await.unwrap();
        let commits = commits.lock();
        assert_eq!(commits.iter().sum::<usize>(), 50);
        assert!(commits.len() < 50, "submissions during a commit share the next one: {commits:?}");
    }

    #[tokio::test]
    async fn memory_store_is_always_ready() {
        let (store, snapshot) = Store::memory();
        assert!(!store.is_durable());
        assert!(snapshot.sessions.is_empty());
        store.wait(store.submit(vec![Op::DeleteRetained { topic: "t".into() }])).await.unwrap();
    }
}
