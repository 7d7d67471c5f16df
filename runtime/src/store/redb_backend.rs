//! The embedded engine: one redb database file under `storage.data_dir`.
//!
//! redb was chosen over fjall because the broker's writes are small,
//! transactional and short-lived (a queued delivery is deleted when acked):
//! a copy-on-write B-tree in one checksummed file gives atomic multi-table
//! commits, crash recovery to the last commit, and no compaction or
//! tombstones to tune. One file is also one thing to back up.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::records::{QueuedRecord, SessionRecord, Snapshot, StoredMessage, decode, encode};
use super::{Backend, Op, StoreError, WriterSettings};

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

/// The redb backend.
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
    durability: Durability,
}

impl RedbBackend {
    /// Open (or create) the database at `path` and read everything in it.
    pub fn open(path: &Path, settings: WriterSettings) -> Result<(Self, Snapshot), StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Open { path: path.to_owned(), message: "it is in use by another process".into() }
            }
            DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() != std::io::ErrorKind::InvalidData =>
            {
                StoreError::Open { path: path.to_owned(), message: io.to_string() }
            }
            other => StoreError::Corrupt { path: path.to_owned(), message: other.to_string() },
        })?;
        let durability = if settings.fsync { Durability::Immediate } else { Durability::None };
        let backend = RedbBackend { db, path: path.to_owned(), durability };
        backend.create_tables()?;
        let snapshot = backend.load()?;
        Ok((backend, snapshot))
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), message: e.to_string() }
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.corrupt(e))?;
        txn.open_table(RETAINED).map_err(|e| self.corrupt(e))?;
        txn.open_table(SESSIONS).map_err(|e| self.corrupt(e))?;
        txn.open_table(QUEUE).map_err(|e| self.corrupt(e))?;
        txn.open_table(KV).map_err(|e| self.corrupt(e))?;
        txn.commit().map_err(|e| self.corrupt(e))
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let mut snapshot = Snapshot::default();

        let retained = txn.open_table(RETAINED).map_err(|e| self.corrupt(e))?;
        for entry in retained.iter().map_err(|e| self.corrupt(e))? {
            let (topic, bytes) = entry.map_err(|e| self.corrupt(e))?;
            let message: StoredMessage = decode(bytes.value()).map_err(|e| self.corrupt(e))?;
            snapshot.retained.push((topic.value().to_string(), message));
        }

        let sessions = txn.open_table(SESSIONS).map_err(|e| self.corrupt(e))?;
        let queue = txn.open_table(QUEUE).map_err(|e| self.corrupt(e))?;
        for entry in sessions.iter().map_err(|e| self.corrupt(e))? {
            let (key, bytes) = entry.map_err(|e| self.corrupt(e))?;
            let key = key.value().to_string();
            let record: SessionRecord = decode(bytes.value()).map_err(|e| self.corrupt(e))?;
            let mut queued = Vec::new();
            for item in
                queue.range((key.as_str(), 0)..=(key.as_str(), u64::MAX)).map_err(|e| self.corrupt(e))?
            {
                let (k, v) = item.map_err(|e| self.corrupt(e))?;
                let record: QueuedRecord = decode(v.value()).map_err(|e| self.corrupt(e))?;
                queued.push((k.value().1, record));
            }
            snapshot.sessions.push((key, record, queued));
        }

        let kv = txn.open_table(KV).map_err(|e| self.corrupt(e))?;
        for entry in kv.iter().map_err(|e| self.corrupt(e))? {
            let (k, v) = entry.map_err(|e| self.corrupt(e))?;
            let (protocol, key) = k.value();
            let entry = decode(v.value()).map_err(|e| self.corrupt(e))?;
            snapshot.kv.push((protocol.to_string(), key.to_string(), entry));
        }
        Ok(snapshot)
    }

    fn apply(&self, ops: &[Op], durability: Durability) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut retained = txn.open_table(RETAINED)?;
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut queue = txn.open_table(QUEUE)?;
            let mut kv = txn.open_table(KV)?;
            for op in ops {
                match op {
                    Op::PutRetained { topic, message } => {
                        retained.insert(topic.as_str(), encode(message.as_ref()).as_slice())?;
                    }
                    Op::DeleteRetained { topic } => {
                        retained.remove(topic.as_str())?;
                    }
                    Op::PutSession { key, record } => {
                        sessions.insert(key.as_str(), encode(record).as_slice())?;
                    }
                    Op::DeleteSession { key } => {
                        sessions.remove(key.as_str())?;
                        queue.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |_, _| false)?;
                    }
                    Op::Enqueue { key, seq, record } => {
                        queue.insert((key.as_str(), *seq), encode(record).as_slice())?;
                    }
                    Op::Dequeue { key, seq } => {
                        queue.remove((key.as_str(), *seq))?;
                    }
                    Op::PutKv { protocol, key, entry } => {
                        kv.insert((protocol.as_str(), key.as_str()), encode(entry).as_slice())?;
                    }
                    Op::DeleteKv { protocol, key } => {
                        kv.remove((protocol.as_str(), key.as_str()))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Backend for RedbBackend {
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        self.apply(ops, self.durability)
            .map_err(|e| StoreError::Write(format!("{}: {e}", self.path.display())))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.apply(&[], Durability::Immediate)
            .map_err(|e| StoreError::Write(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::wasm::bindings::types::{FilterKind, Message, Qos, RetainedHandling, SubscribeOptions};

    fn message(topic: &str) -> StoredMessage {
        StoredMessage {
            published_at: 7,
            message: Message {
                topic: topic.into(),
                payload: b"p".to_vec(),
                headers: vec![("k".into(), "v".into())],
                reply_to: None,
                correlation: Some(vec![1, 2]),
                content_type: None,
                utf8_payload: true,
                expiry_secs: Some(60),
                retain: true,
                qos: Qos::AtLeastOnce,
            },
        }
    }

    fn settings() -> WriterSettings {
        WriterSettings { fsync: true, commit_delay: Duration::ZERO }
    }

    #[test]
    fn everything_written_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (mut backend, snapshot) = RedbBackend::open(&path, settings()).unwrap();
        assert!(snapshot.retained.is_empty() && snapshot.sessions.is_empty() && snapshot.kv.is_empty());
        let options = SubscribeOptions {
            kind: FilterKind::Wildcard,
            max_qos: Qos::AtLeastOnce,
            group: None,
            no_local: false,
            retained: RetainedHandling::Send,
        };
        let record = SessionRecord {
            expiry_secs: None,
            disconnected_at: Some(5),
            subscriptions: vec![(1, "a/#".into(), options)],
            next_subscription: 2,
        };
        let entry = crate::kv::KvEntry { value: b"v".to_vec(), expires_at: Some(9) };
        let queued = |seq| Op::Enqueue {
            key: "mqtt\0c".into(),
            seq,
            record: QueuedRecord { subscription: 1, message: message("a/b"), from_retained: false },
        };
        backend
            .commit(&[
                Op::PutRetained { topic: "a/b".into(), message: Arc::new(message("a/b")) },
                Op::PutRetained { topic: "a/c".into(), message: Arc::new(message("a/c")) },
                Op::DeleteRetained { topic: "a/c".into() },
                Op::PutSession { key: "mqtt\0c".into(), record },
                queued(1),
                queued(2),
                queued(3),
                Op::Dequeue { key: "mqtt\0c".into(), seq: 2 },
                Op::PutKv { protocol: "mqtt".into(), key: "k".into(), entry: entry.clone() },
            ])
            .unwrap();
        drop(backend);

        let (mut backend, snapshot) = RedbBackend::open(&path, settings()).unwrap();
        assert_eq!(snapshot.retained.len(), 1);
        assert_eq!(snapshot.retained[0].1.message.headers, vec![("k".to_string(), "v".to_string())]);
        let (key, record, queue) = &snapshot.sessions[0];
        assert_eq!((key.as_str(), record.next_subscription), ("mqtt\0c", 2));
        assert_eq!(queue.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(snapshot.kv, vec![("mqtt".to_string(), "k".to_string(), entry)]);

        backend.commit(&[Op::DeleteSession { key: "mqtt\0c".into() }]).unwrap();
        drop(backend);
        let (_, snapshot) = RedbBackend::open(&path, settings()).unwrap();
        assert!(snapshot.sessions.is_empty());
    }

    #[test]
    fn second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let _first = RedbBackend::open(&path, settings()).unwrap();
        match RedbBackend::open(&path, settings()) {
            Err(StoreError::Open { message, .. }) => assert!(message.contains("in use"), "{message}"),
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a second open succeeded"),
        }
    }
}
