//! Moving a tenant between placements as named phases: lock and read,
//! prepare the target, copy and count, flip the directory, remove the old
//! copy.

use std::time::Duration;

use enclave_core::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use crate::{check_role_name, PgError};

use super::provision::{owner_pool, prepare_schema, tenant_tx};
use super::*;

/// How long a move waits between switching the directory entry and removing
/// the old copy (reads in flight finish on the old copy).
const MOVE_GRACE: Duration = Duration::from_secs(2);

/// Tables copied by a move, parents first. The audit log and usage counters
/// are the control plane's: they stay in the main database whatever the
/// placement.
const DATA_TABLES: &[&str] = &["documents", "chunks", "text_stats", "messages"];

/// Non-generated columns of `schema.table`, as the target of an INSERT.
async fn insertable_columns(
    db: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, PgError> {
    Ok(sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER' \
           AND NOT (is_identity = 'YES' AND identity_generation = 'ALWAYS') \
         ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(db)
    .await?)
}

/// Copies the tenant's rows of one table from `src` to `dst` in batches
/// through a server-side cursor; returns the number of rows.
async fn copy_table(
    src: &mut PgConnection,
    src_schema: &str,
    dst: &mut PgConnection,
    dst_schema: &str,
    table: &str,
    columns: &[String],
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let lit = sql_literal(tenant.as_str());
    sqlx::raw_sql(&format!(
        "DECLARE enclave_move NO SCROLL CURSOR FOR \
         SELECT to_jsonb(t) FROM {src_schema}.{table} t WHERE t.tenant_id = {lit}"
    ))
    .execute(&mut *src)
    .await?;
    let cols = columns.join(", ");
    let insert = format!(
        "INSERT INTO {dst_schema}.{table} ({cols}) \
         SELECT {cols} FROM jsonb_populate_recordset(NULL::{dst_schema}.{table}, $1)"
    );
    let mut copied = 0u64;
    loop {
        let rows = sqlx::raw_sql("FETCH 500 FROM enclave_move")
            .fetch_all(&mut *src)
            .await?;
        if rows.is_empty() {
            break;
        }
        let batch = rows
            .iter()
            .map(|r| r.try_get::<Value, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        copied += batch.len() as u64;
        sqlx::query(&insert)
            .bind(Value::Array(batch))
            .execute(&mut *dst)
            .await?;
    }
    sqlx::raw_sql("CLOSE enclave_move")
        .execute(&mut *src)
        .await?;
    Ok(copied)
}

async fn count_rows(
    db: &mut PgConnection,
    schema: &str,
    table: &str,
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.as_str())
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// Deletes the tenant's data rows (and, unless `keep_tenant_row`, its
/// `tenants` row) from `schema`.
async fn delete_rows(
    db: &mut PgConnection,
    schema: &str,
    tenant: &TenantId,
    keep_tenant_row: bool,
) -> Result<(), PgError> {
    for table in ["chunks", "text_stats", "documents", "messages"] {
        sqlx::query(&format!(
            "DELETE FROM {schema}.{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .execute(&mut *db)
        .await?;
    }
    if !keep_tenant_row {
        sqlx::query(&format!(
            "DELETE FROM {schema}.tenants WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Moves `tenant` to `target` without losing data, as the owner of the main
/// database (`owner_url`). `app_role` receives its privileges on a new
/// schema or database. Moving out of database mode needs that database's
/// owner URL (`source_owner_url`). Safe to run again after an interruption:
/// the target is cleared before the copy, and the directory flips only after
/// the copy is committed and counted.
pub async fn move_tenant(
    owner_url: &str,
    tenant: &TenantId,
    target: MoveTarget,
    app_role: &str,
    source_owner_url: Option<&str>,
) -> Result<MoveReport, PgError> {
    check_role_name(app_role)?;
    let main = owner_pool(owner_url, None).await?;
    let (mut mtx, from) = lock_and_read(&main, tenant).await?;
    let to = match &target {
        MoveTarget::Shared => Placement::Shared,
        MoveTarget::Schema => Placement::Schema(schema_name(tenant)),
        MoveTarget::Database { app_url, .. } => Placement::Database(app_url.clone()),
    };
    if from == to {
        mtx.commit().await?;
        main.close().await;
        return Ok(MoveReport {
            from,
            to,
            rows: Vec::new(),
        });
    }
    let mut ends = prepare_target(
        owner_url,
        tenant,
        &target,
        &from,
        app_role,
        source_owner_url,
    )
    .await?;
    let rows = copy_tables(&mut ends, &mut mtx, tenant, &from, &to).await?;
    let Ends {
        src_pool,
        dst_pool,
        src_tx,
        dst_tx,
    } = ends;
    flip(mtx, dst_tx, tenant, &to).await?;
    // A tenant without data has nothing a reader of the old copy could miss.
    let had_rows = rows.iter().any(|(_, n)| *n > 0);
    if let Err(e) = remove_old_copy(&main, tenant, &from, src_tx, had_rows).await {
        return Err(PgError::Invalid(format!(
            "{tenant} now lives in {to}, but removing the old copy in {from} failed: {e}; \
             the old copy is unreachable through Enclave; remove it by hand"
        )));
    }
    main.close().await;
    for p in [src_pool, dst_pool].into_iter().flatten() {
        p.close().await;
    }
    Ok(MoveReport { from, to, rows })
}

/// The two ends of a move outside the main database: the source's and the
/// target's own databases (database mode), each with its transaction.
struct Ends {
    src_pool: Option<PgPool>,
    dst_pool: Option<PgPool>,
    src_tx: Option<Transaction<'static, Postgres>>,
    dst_tx: Option<Transaction<'static, Postgres>>,
}

/// Opens the move's main transaction: the directory row (made if missing),
/// the placement lock held exclusively (in-flight writers finish first,
/// later ones wait for the move), and where the tenant lives now.
async fn lock_and_read(
    main: &PgPool,
    tenant: &TenantId,
) -> Result<(Transaction<'static, Postgres>, Placement), PgError> {
    let mut mtx = tenant_tx(main, tenant).await?;
    sqlx::query(
        "INSERT INTO public.tenants (tenant_id, slug, name) VALUES ($1, 't' || substr(md5($1), 1, 24), $1) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .execute(&mut *mtx)
    .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(placement_lock_key(tenant))
        .execute(&mut *mtx)
        .await?;
    let (isolation, location): (String, Option<String>) = sqlx::query_as(
        "SELECT isolation, location FROM public.tenants WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *mtx)
    .await?;
    let from = Placement::from_row(&isolation, location)?;
    Ok((mtx, from))
}

/// The target's tables (by the same migrations) and the transactions on
/// the ends that have their own database; the source is locked so it
/// cannot change under the copy.
async fn prepare_target(
    owner_url: &str,
    tenant: &TenantId,
    target: &MoveTarget,
    from: &Placement,
    app_role: &str,
    source_owner_url: Option<&str>,
) -> Result<Ends, PgError> {
    let mut dst_pool = None;
    match target {
        MoveTarget::Shared => {}
        MoveTarget::Schema => prepare_schema(owner_url, &schema_name(tenant), app_role).await?,
        MoveTarget::Database { owner_url, .. } => {
            crate::migrate(owner_url, app_role, None).await?;
            dst_pool = Some(owner_pool(owner_url, None).await?);
        }
    }
    let src_pool = match from {
        Placement::Database(_) => Some(
            owner_pool(
                source_owner_url.ok_or_else(|| {
                    PgError::Invalid(
                        "the tenant lives in its own database: give that database's owner URL"
                            .into(),
                    )
                })?,
                None,
            )
            .await?,
        ),
        _ => None,
    };
    let dst_tx = match &dst_pool {
        Some(p) => Some(tenant_tx(p, tenant).await?),
        None => None,
    };
    let src_tx = match &src_pool {
        Some(p) => {
            let mut tx = tenant_tx(p, tenant).await?;
            sqlx::query("SELECT 1 FROM public.tenants WHERE tenant_id = $1 FOR UPDATE")
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            Some(tx)
        }
        None => None,
    };
    Ok(Ends {
        src_pool,
        dst_pool,
        src_tx,
        dst_tx,
    })
}

/// Clears leftovers of an interrupted move at the target, then copies the
/// tenant's row and data tables and counts what landed; the rows copied
/// per data table.
async fn copy_tables(
    ends: &mut Ends,
    mtx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    from: &Placement,
    to: &Placement,
) -> Result<Vec<(&'static str, u64)>, PgError> {
    let (src_schema, dst_schema) = (from.schema().to_owned(), to.schema().to_owned());
    {
        let dst = on(&mut ends.dst_tx, mtx);
        delete_rows(dst, &dst_schema, tenant, matches!(to, Placement::Shared)).await?;
    }
    let mut rows = Vec::new();
    let tables = std::iter::once("tenants").chain(DATA_TABLES.iter().copied());
    for table in tables {
        // The main database's tenants row is the directory entry itself.
        if table == "tenants" && matches!(to, Placement::Shared) {
            continue;
        }
        let mut columns = {
            let dst = on(&mut ends.dst_tx, mtx);
            insertable_columns(dst, &dst_schema, table).await?
        };
        if table == "tenants" {
            columns.retain(|c| !matches!(c.as_str(), "isolation" | "location" | "vector_index"));
        }
        let (src, dst) = (&src_schema, &dst_schema);
        let copied = match (&mut ends.src_tx, &mut ends.dst_tx) {
            (Some(s), Some(d)) => copy_table(s, src, d, dst, table, &columns, tenant).await?,
            (Some(s), None) => copy_table(s, src, mtx, dst, table, &columns, tenant).await?,
            (None, Some(d)) => copy_table(mtx, src, d, dst, table, &columns, tenant).await?,
            // Same connection: a cursor and inserts interleave fine.
            (None, None) => copy_same_connection(mtx, src, dst, table, &columns, tenant).await?,
        };
        let landed = {
            let dst = on(&mut ends.dst_tx, mtx);
            count_rows(dst, &dst_schema, table, tenant).await?
        };
        if landed != copied {
            return Err(PgError::Invalid(format!(
                "move of {tenant}: {table} copied {copied} rows but the target holds {landed}; nothing was changed"
            )));
        }
        if table != "tenants" {
            rows.push((table, copied));
        }
    }
    Ok(rows)
}

/// Commits the copy, then points the directory at the new place and
/// announces it, in the transaction that holds the placement lock.
async fn flip(
    mut mtx: Transaction<'static, Postgres>,
    dst_tx: Option<Transaction<'static, Postgres>>,
    tenant: &TenantId,
    to: &Placement,
) -> Result<(), PgError> {
    if let Some(d) = dst_tx {
        d.commit().await?;
    }
    sqlx::query(
        "UPDATE public.tenants SET isolation = $2, location = $3, vector_index = false, updated_at = now() \
         WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .bind(to.isolation())
    .bind(to.location())
    .execute(&mut *mtx)
    .await?;
    crate::changes::notify(&mut mtx, tenant).await?;
    mtx.commit().await?;
    Ok(())
}

/// Removes the old copy in a later transaction, after a grace period: a
/// reader whose snapshot predates the flip still reads the old place.
/// Deleted rows stay visible to such snapshots (MVCC), and a reader already
/// inside the old schema holds a lock that DROP SCHEMA waits for.
async fn remove_old_copy(
    main: &PgPool,
    tenant: &TenantId,
    from: &Placement,
    src_tx: Option<Transaction<'static, Postgres>>,
    had_rows: bool,
) -> Result<(), PgError> {
    if had_rows {
        tokio::time::sleep(MOVE_GRACE).await;
    }
    match from {
        Placement::Shared => {
            let mut tx = tenant_tx(main, tenant).await?;
            delete_rows(&mut tx, "public", tenant, true).await?;
            tx.commit().await?;
            // A per-tenant index on the shared table now covers no rows.
            sqlx::raw_sql(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS public.{}",
                vector_index_name(tenant)
            ))
            .execute(main)
            .await?;
        }
        Placement::Schema(s) => {
            sqlx::raw_sql(&format!("DROP SCHEMA {s} CASCADE"))
                .execute(main)
                .await?;
        }
        Placement::Database(_) => {
            if let Some(mut s) = src_tx {
                delete_rows(&mut s, "public", tenant, false).await?;
                s.commit().await?;
            }
        }
    }
    Ok(())
}

/// The connection of an end of the move: its own database's transaction, or
/// the main database's.
fn on<'a>(
    own: &'a mut Option<Transaction<'static, Postgres>>,
    main: &'a mut Transaction<'static, Postgres>,
) -> &'a mut PgConnection {
    match own {
        Some(t) => t,
        None => main,
    }
}

/// Copy within one connection (shared ↔ schema in the main database).
async fn copy_same_connection(
    conn: &mut PgConnection,
    src_schema: &str,
    dst_schema: &str,
    table: &str,
    columns: &[String],
    tenant: &TenantId,
) -> Result<u64, PgError> {
    let cols = columns.join(", ");
    let done = sqlx::query(&format!(
        "INSERT INTO {dst_schema}.{table} ({cols}) SELECT {cols} FROM {src_schema}.{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
