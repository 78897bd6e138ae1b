//! Conversation messages: per-session sequence numbers under an advisory
//! lock, pages, deletion and storage use.

use enclave_core::{Message, MessageId, MessageRole, Origin, SessionId};
use enclave_store::{StoreError, StoreResult};
use serde_json::{Map, Value};
use sqlx::Row;

use super::rows::db_err;
use super::tx::{READ, WRITE};
use super::PgTenant;

pub(super) async fn append_message(store: &PgTenant, m: Message) -> StoreResult<Message> {
    let t = store.t();
    let mut tx = store.begin(WRITE).await?;
    tx.may_add(store.inner.opts.require_directory)?;
    tx.ensure_tenant_row(&t).await?;
    // One writer per session at a time: the next number is read and
    // used in the same transaction.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('session:' || $1 || ':' || $2, 0))")
        .bind(&t)
        .bind(m.session_id.as_str())
        .execute(tx.db())
        .await
        .map_err(db_err)?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO messages (tenant_id, session_id, seq, message_id, role, content, origin, metadata, created_at) \
         SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6, $7, $8 FROM messages WHERE tenant_id = $1 AND session_id = $2 \
         RETURNING seq",
    )
    .bind(&t)
    .bind(m.session_id.as_str())
    .bind(m.message_id.as_uuid())
    .bind(m.role.as_str())
    .bind(&m.content)
    .bind(m.origin.as_ref().map(|o| o.as_str()))
    .bind(Value::Object(m.metadata.clone()))
    .bind(m.created_at)
    .fetch_one(tx.db())
    .await
    .map_err(db_err)?;
    tx.commit().await?;
    Ok(Message { seq, ..m })
}

pub(super) async fn list_messages(
    store: &PgTenant,
    session: &SessionId,
    before_seq: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let mut tx = store.begin(READ).await?;
    let rows = sqlx::query(
        "SELECT session_id, seq, message_id, role, content, origin, metadata, created_at FROM messages \
         WHERE tenant_id = $1 AND session_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
    )
    .bind(store.t())
    .bind(session.as_str())
    .bind(before_seq.unwrap_or(i64::MAX))
    .bind(limit as i64)
    .fetch_all(tx.db())
    .await
    .map_err(db_err)?;
    tx.commit().await?;
    let internal = |e: enclave_core::InvalidInput| StoreError::Internal(e.to_string());
    let mut out = rows
        .iter()
        .map(|r| {
            let metadata: Value = r.try_get(6).map_err(db_err)?;
            Ok(Message {
                session_id: SessionId::parse(r.try_get::<&str, _>(0).map_err(db_err)?)
                    .map_err(internal)?,
                seq: r.try_get(1).map_err(db_err)?,
                message_id: MessageId::parse(
                    &r.try_get::<sqlx::types::Uuid, _>(2)
                        .map_err(db_err)?
                        .hyphenated()
                        .to_string(),
                )
                .map_err(internal)?,
                role: r
                    .try_get::<&str, _>(3)
                    .map_err(db_err)?
                    .parse::<MessageRole>()
                    .map_err(internal)?,
                content: r.try_get(4).map_err(db_err)?,
                origin: r
                    .try_get::<Option<&str>, _>(5)
                    .map_err(db_err)?
                    .map(Origin::parse)
                    .transpose()
                    .map_err(internal)?,
                metadata: match metadata {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                created_at: r.try_get(7).map_err(db_err)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

pub(super) async fn delete_session(store: &PgTenant, session: &SessionId) -> StoreResult<u64> {
    let mut tx = store.begin(WRITE).await?;
    let n = sqlx::query("DELETE FROM messages WHERE tenant_id = $1 AND session_id = $2")
        .bind(store.t())
        .bind(session.as_str())
        .execute(tx.db())
        .await
        .map_err(db_err)?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

pub(super) async fn message_count(store: &PgTenant) -> StoreResult<u64> {
    let mut tx = store.begin(READ).await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE tenant_id = $1")
        .bind(store.t())
        .fetch_one(tx.db())
        .await
        .map_err(db_err)?;
    tx.commit().await?;
    Ok(n as u64)
}

pub(super) async fn message_usage(store: &PgTenant) -> StoreResult<enclave_store::MessageUsage> {
    let mut tx = store.begin(READ).await?;
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(octet_length(content) + octet_length(metadata::text)), 0)::int8 \
         FROM messages WHERE tenant_id = $1",
    )
    .bind(store.t())
    .fetch_one(tx.db())
    .await
    .map_err(db_err)?;
    tx.commit().await?;
    Ok(enclave_store::MessageUsage {
        count: count as u64,
        bytes: bytes as u64,
    })
}

pub(super) async fn delete_all_messages(store: &PgTenant) -> StoreResult<u64> {
    let mut tx = store.begin(WRITE).await?;
    let n = sqlx::query("DELETE FROM messages WHERE tenant_id = $1")
        .bind(store.t())
        .execute(tx.db())
        .await
        .map_err(db_err)?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}
