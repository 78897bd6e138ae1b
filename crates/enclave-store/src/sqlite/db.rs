//! One SQLite database file: schema, a writer connection and a small pool of
//! readers (WAL mode lets readers run while a write commits).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::{StoreError, StoreResult};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per tenant that has ever written. tenant_no names the tenant's own
-- full-text table, so BM25 statistics never mix tenants.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id     TEXT PRIMARY KEY,
    tenant_no     INTEGER NOT NULL UNIQUE,
    next_chunk_no INTEGER NOT NULL DEFAULT 1,
    chunk_rows    INTEGER NOT NULL DEFAULT 0, -- searchable chunks, for BM25's N
    add_gen       INTEGER NOT NULL DEFAULT 0,
    del_gen       INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS documents (
    tenant_id     TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL,
    name          TEXT NOT NULL,
    doc_type      TEXT NOT NULL,
    origin        TEXT,
    external_id   TEXT,
    metadata      TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    chunk_count   INTEGER NOT NULL,
    token_count   INTEGER NOT NULL,
    document_date TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, document_id),
    UNIQUE (tenant_id, dedupe_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_by_origin ON documents (tenant_id, origin, document_id);
CREATE INDEX IF NOT EXISTS documents_by_created ON documents (tenant_id, created_at);

-- kind 0 = searchable chunk, 1 = parent section kept for context.
CREATE TABLE IF NOT EXISTS chunks (
    tenant_id    TEXT NOT NULL,
    chunk_no     INTEGER NOT NULL,
    chunk_id     TEXT NOT NULL,
    document_id  TEXT NOT NULL,
    kind         INTEGER NOT NULL,
    idx          INTEGER NOT NULL,
    content      TEXT NOT NULL,
    token_count  INTEGER NOT NULL,
    metadata     TEXT NOT NULL,
    parent_idx   INTEGER,
    PRIMARY KEY (tenant_id, chunk_no),
    UNIQUE (tenant_id, chunk_id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, document_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (tenant_id, document_id, kind, idx);

-- Conversation memory (API.md §6): a session's messages numbered from 1.
CREATE TABLE IF NOT EXISTS messages (
    tenant_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    origin     TEXT,
    metadata   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, session_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS vectors (
    tenant_id TEXT NOT NULL,
    chunk_no  INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (tenant_id, chunk_no),
    FOREIGN KEY (tenant_id, chunk_no) REFERENCES chunks (tenant_id, chunk_no) ON DELETE CASCADE
);
";

/// Durability of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a process crash (WAL, `synchronous=NORMAL`); a power loss may
    /// drop the last commits, never half of one.
    #[default]
    Process,
    /// Survives power loss (`synchronous=FULL`), at an fsync per commit.
    PowerLoss,
}

pub(crate) struct Db {
    path: PathBuf,
    durability: Durability,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Reader connections kept open between reads (each holds three
    /// descriptors: the file, its `-wal`, its `-shm`).
    idle_readers: usize,
}

pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Runs `open` (connect, switch to WAL, create the schema) again while it
/// fails on a lock, for up to ten seconds. The busy handler does not cover
/// every lock a first open takes: beside another process opening the same
/// new file (`enclave stats` while `enclave ingest` starts), SQLite can
/// answer SQLITE_BUSY at once (WAL recovery, the journal-mode switch), and
/// the ingest exited with "database is locked".
pub(crate) fn open_retrying<T>(mut open: impl FnMut() -> rusqlite::Result<T>) -> StoreResult<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match open() {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => return other.map_err(sql_err),
        }
    }
}

impl Db {
    /// Opens (creating if needed) the file and checks it was made for `dims`.
    pub fn open(
        path: &Path,
        dims: usize,
        durability: Durability,
        analyzer: &enclave_core::analyze::Analyzer,
    ) -> StoreResult<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", parent.display())))?;
        }
        let mut conn = open_retrying(|| {
            let conn = Self::connect(path, durability)?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })?;
        // Two processes may open a new file at once (`enclave stats` beside
        // a starting `enclave ingest`): the first to record the dimensions
        // wins and the other checks against them, never a key conflict.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dimensions', ?1), ('schema_version', ?2) \
             ON CONFLICT (key) DO NOTHING",
            rusqlite::params![dims.to_string(), SCHEMA_VERSION.to_string()],
        )
        .map_err(sql_err)?;
        let stored: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'dimensions'", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        match stored {
            d if d == dims.to_string() => {}
            d => {
                return Err(StoreError::Invalid(format!(
                    "{} holds {d}-dimensional vectors but the embedder makes {dims}; re-index into a new data directory",
                    path.display()
                )))
            }
        }
        super::tenant::reindex_text_if_needed(&mut conn, analyzer)?;
        Ok(Self {
            path: path.to_owned(),
            durability,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            idle_readers: 8,
        })
    }

    /// Keeps at most `n` reader connections open between reads.
    pub fn with_idle_readers(mut self, n: usize) -> Self {
        self.idle_readers = n;
        self
    }

    /// A file of the file-per-tenant layout belongs to one tenant: the
    /// first open records its id in `meta`, every later one checks it (a
    /// file renamed or copied under another tenant's name is refused).
    pub fn claim_for(&self, tenant: &enclave_core::TenantId) -> StoreResult<()> {
        let conn = self.writer.lock();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('tenant_id', ?1) ON CONFLICT (key) DO NOTHING",
            [tenant.as_str()],
        )
        .map_err(sql_err)?;
        let owner: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'tenant_id'", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        if owner != tenant.as_str() {
            return Err(StoreError::Internal(format!(
                "{} belongs to another tenant",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn connect(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The busy handler first: switching a new file to WAL (and creating
        // the schema) while another process opens it too would otherwise
        // fail at once with SQLITE_BUSY (seen: `enclave stats` beside a
        // starting `enclave ingest` made the ingest exit).
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
        ))?;
        super::bm25::register(&conn)?;
        Ok(conn)
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer; commits if it
    /// returns `Ok`, rolls back otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    pub fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.readers.lock().pop();
        let mut conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.path, self.durability).map_err(sql_err)?,
        };
        let out = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(sql_err)?;
            let out = f(&tx)?;
            tx.finish().map_err(sql_err)?;
            Ok(out)
        })();
        let mut pool = self.readers.lock();
        if pool.len() < self.idle_readers {
            pool.push(conn);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opening_one_new_file_at_once_all_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("new-{round}.sqlite"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Db::open(
                            &path,
                            384,
                            Durability::Process,
                            &enclave_core::analyze::Analyzer::new("english").unwrap(),
                        )
                        .map(|_| ())
                    })
                })
                .collect();
            for o in opened {
                o.join().unwrap().unwrap();
            }
        }
    }
}
