//! The tenant's vectors held in memory for exact search, and their blob
//! encoding.

use enclave_core::TenantId;
use parking_lot::RwLock;
use rusqlite::{params, OptionalExtension, Transaction};

use crate::sqlite::db::sql_err;

use crate::vector::VectorSet;
use crate::{StoreError, StoreResult};

/// A tenant's vectors in memory, refreshed from the file when the tenant's
/// write generations move (appends are loaded incrementally; a delete or
/// replace reloads).
pub(crate) struct VectorCache {
    pub(super) state: RwLock<CacheState>,
    /// Tick of the last search, for least-recently-used eviction.
    pub(crate) last_used: std::sync::atomic::AtomicU64,
}

pub(super) struct CacheState {
    pub(super) set: VectorSet,
    pub(super) add_gen: i64,
    pub(super) del_gen: i64,
    pub(super) max_chunk_no: i64,
    pub(super) loaded: bool,
}

impl VectorCache {
    pub fn new(dims: usize) -> Self {
        Self {
            state: RwLock::new(CacheState {
                set: VectorSet::new(dims),
                add_gen: 0,
                del_gen: 0,
                max_chunk_no: 0,
                loaded: false,
            }),
            last_used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Memory held, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        let s = self.state.read();
        s.set.data.len() * 4 + s.set.keys.len() * 8
    }

    /// Frees the vectors; the next search reloads them from the file.
    pub(crate) fn unload(&self) {
        let mut s = self.state.write();
        s.set = VectorSet::new(s.set.dims);
        s.max_chunk_no = 0;
        s.loaded = false;
    }

    /// Brings the cache up to the snapshot `tx` sees (never backwards).
    pub(super) fn refresh(&self, tx: &Transaction<'_>, tenant: &TenantId) -> StoreResult<()> {
        let gens: Option<(i64, i64)> = tx
            .query_row(
                "SELECT add_gen, del_gen FROM tenants WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql_err)?;
        let (add_gen, del_gen) = gens.unwrap_or((0, 0));
        let is_newer = |s: &CacheState| !s.loaded || add_gen + del_gen > s.add_gen + s.del_gen;
        if !is_newer(&self.state.read()) {
            return Ok(());
        }
        let mut s = self.state.write();
        if !is_newer(&s) {
            return Ok(());
        }
        if !s.loaded || del_gen != s.del_gen {
            s.set = VectorSet::new(s.set.dims);
            s.max_chunk_no = 0;
        }
        let dims = s.set.dims;
        let mut stmt = tx
            .prepare_cached(
                "SELECT chunk_no, embedding FROM vectors WHERE tenant_id = ?1 AND chunk_no > ?2 ORDER BY chunk_no",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(params![tenant.as_str(), s.max_chunk_no])
            .map_err(sql_err)?;
        let mut buf = Vec::with_capacity(dims);
        while let Some(r) = rows.next().map_err(sql_err)? {
            let key: i64 = r.get(0).map_err(sql_err)?;
            let blob = r
                .get_ref(1)
                .map_err(sql_err)?
                .as_blob()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            decode_vector(blob, &mut buf)?;
            if buf.len() != dims {
                return Err(StoreError::Internal(format!(
                    "stored vector has {} dimensions",
                    buf.len()
                )));
            }
            s.set.push(key, &buf);
            s.max_chunk_no = key;
        }
        s.add_gen = add_gen;
        s.del_gen = del_gen;
        s.loaded = true;
        Ok(())
    }
}

pub(super) fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn decode_vector(blob: &[u8], out: &mut Vec<f32>) -> StoreResult<()> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::Internal("corrupt vector blob".into()));
    }
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}
