//! Conversation messages.

use enclave_core::{Message, SessionId};
use rusqlite::params;
use serde_json::Value;

use super::rows::message_row;
use super::SqliteTenant;
use crate::sqlite::db::sql_err;
use crate::sqlite::sql::ts;
use crate::StoreResult;

pub(super) async fn append_message(store: &SqliteTenant, m: Message) -> StoreResult<Message> {
    store.write(move |tx, tenant| {
        let seq: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE tenant_id = ?1 AND session_id = ?2",
                params![tenant.as_str(), m.session_id.as_str()],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        tx.execute(
            "INSERT INTO messages (tenant_id, session_id, seq, message_id, role, content, origin, metadata, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                tenant.as_str(),
                m.session_id.as_str(),
                seq,
                m.message_id.to_string(),
                m.role.as_str(),
                m.content,
                m.origin.as_ref().map(|o| o.as_str()),
                Value::Object(m.metadata.clone()).to_string(),
                ts(m.created_at)
            ],
        )
        .map_err(sql_err)?;
        Ok(Message { seq, ..m })
    })
    .await
}

pub(super) async fn list_messages(
    store: &SqliteTenant,
    session: &SessionId,
    before_seq: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let session = session.clone();
    store.read(move |tx, tenant, _| {
        let mut st = tx
            .prepare(
                "SELECT session_id, seq, message_id, role, content, origin, metadata, created_at FROM messages \
                 WHERE tenant_id = ?1 AND session_id = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
            )
            .map_err(sql_err)?;
        let mut rows = st
            .query_map(
                params![tenant.as_str(), session.as_str(), before_seq.unwrap_or(i64::MAX), limit],
                message_row,
            )
            .map_err(sql_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_err)?;
        rows.reverse();
        Ok(rows)
    })
    .await
}

pub(super) async fn delete_session(store: &SqliteTenant, session: &SessionId) -> StoreResult<u64> {
    let session = session.clone();
    if !store.has_data() {
        return Ok(0);
    }
    store
        .write(move |tx, tenant| {
            tx.execute(
                "DELETE FROM messages WHERE tenant_id = ?1 AND session_id = ?2",
                params![tenant.as_str(), session.as_str()],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
}

pub(super) async fn message_count(store: &SqliteTenant) -> StoreResult<u64> {
    store
        .read(move |tx, tenant, _| {
            tx.query_row(
                "SELECT COUNT(*) FROM messages WHERE tenant_id = ?1",
                [tenant.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
}

pub(super) async fn message_usage(store: &SqliteTenant) -> StoreResult<crate::MessageUsage> {
    store.read(move |tx, tenant, _| {
        tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(content AS BLOB)) + length(CAST(metadata AS BLOB))), 0) \
             FROM messages WHERE tenant_id = ?1",
            [tenant.as_str()],
            |r| {
                Ok(crate::MessageUsage {
                    count: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                })
            },
        )
        .map_err(sql_err)
    })
    .await
}

pub(super) async fn delete_all_messages(store: &SqliteTenant) -> StoreResult<u64> {
    if !store.has_data() {
        return Ok(0);
    }
    store
        .write(move |tx, tenant| {
            tx.execute(
                "DELETE FROM messages WHERE tenant_id = ?1",
                [tenant.as_str()],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
}
