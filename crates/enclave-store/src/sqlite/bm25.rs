//! `enclave_bm25(fts_table, k1, b [, weights])`: Okapi BM25 as an FTS5
//! auxiliary function with the saturation `k1` and length normalisation `b` given
//! by the caller — FTS5's own `bm25()` fixes them at 1.2 and 0.75, and
//! Enclave ranks with [`enclave_core::bm25::K1`] and [`enclave_core::bm25::B`]
//! on every store (PostgreSQL computes the same sum in SQL).
//!
//! The body is FTS5's `fts5Bm25Function` (`ext/fts5/fts5_aux.c`) with the
//! two constants turned into arguments: per query, the table's row count,
//! its average row length in tokens and each phrase's document frequency
//! (counted once with `xQueryPhrase` and kept as the query's aux data);
//! per row, each phrase's frequency and the row's length. It returns the
//! score negated, as `bm25()` does, so `ORDER BY` it ascending ranks best
//! first. `weights`, when given, is each phrase's weight in the sum, in the
//! order FTS5 numbers the phrases (`"1,1,0.4"`; a phrase it does not name
//! weighs 1): query expansion's terms count for less than the query's own.
//!
//! SQLite offers auxiliary functions only through the `fts5_api` C
//! interface, which rusqlite does not wrap: this module is the one place
//! the embedded store calls SQLite's C API directly. Nothing here unwinds
//! into C: every fallible step returns an SQLite error code.

use std::ffi::{c_int, c_void};
use std::ptr;

use rusqlite::ffi;
use rusqlite::Connection;

/// The SQL expression scoring a row of the FTS5 table `table` with
/// Enclave's BM25 (negated: ascending is best first); `weights` names the
/// SQL parameter holding the phrases' weights (`sql::fts_weights`), if any.
pub(crate) fn score_expr(table: &str, weights: Option<&str>) -> String {
    // `{:?}` prints an f64 so that it reads back as the same value.
    let (k1, b) = (enclave_core::bm25::K1, enclave_core::bm25::B);
    match weights {
        None => format!("enclave_bm25({table}, {k1:?}, {b:?})"),
        Some(p) => format!("enclave_bm25({table}, {k1:?}, {b:?}, {p})"),
    }
}

/// Registers `enclave_bm25` on `conn` (each connection needs it once).
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    // SAFETY: `handle()` is the live connection; the statement is prepared,
    // stepped and finalized on it here, and the pointer FTS5 writes is read
    // only after the step that writes it.
    unsafe {
        let db = conn.handle();
        let mut api: *mut ffi::fts5_api = ptr::null_mut();
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        let rc = ffi::sqlite3_prepare_v2(
            db,
            c"SELECT fts5(?1)".as_ptr(),
            -1,
            &mut stmt,
            ptr::null_mut(),
        );
        if rc != ffi::SQLITE_OK {
            return Err(error(rc, "preparing SELECT fts5(?1)"));
        }
        let mut rc = ffi::sqlite3_bind_pointer(
            stmt,
            1,
            (&mut api as *mut *mut ffi::fts5_api).cast::<c_void>(),
            c"fts5_api_ptr".as_ptr(),
            None,
        );
        if rc == ffi::SQLITE_OK {
            rc = ffi::sqlite3_step(stmt);
        }
        let finalized = ffi::sqlite3_finalize(stmt);
        if rc != ffi::SQLITE_ROW && rc != ffi::SQLITE_DONE {
            return Err(error(rc, "asking for the fts5 API"));
        }
        if finalized != ffi::SQLITE_OK {
            return Err(error(finalized, "asking for the fts5 API"));
        }
        if api.is_null() || (*api).iVersion < 2 {
            return Err(error(ffi::SQLITE_ERROR, "this SQLite has no fts5 API v2"));
        }
        let Some(create) = (*api).xCreateFunction else {
            return Err(error(
                ffi::SQLITE_ERROR,
                "the fts5 API has no xCreateFunction",
            ));
        };
        let rc = create(
            api,
            c"enclave_bm25".as_ptr(),
            ptr::null_mut(),
            Some(bm25_function),
            None,
        );
        if rc != ffi::SQLITE_OK {
            return Err(error(rc, "registering enclave_bm25"));
        }
    }
    Ok(())
}

fn error(code: c_int, what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(what.to_owned()))
}

/// What one query's scoring computes once: FTS5's `Fts5Bm25Data`.
struct QueryData {
    idf: Vec<f64>,
    /// Each phrase's weight (the call's fourth argument; 1 without it).
    weight: Vec<f64>,
    avg_len: f64,
    /// Each phrase's frequency in the current row (reused per row).
    freq: Vec<f64>,
}

unsafe extern "C" fn drop_query_data(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: only `query_data` stores aux data, always a leaked Box.
        drop(unsafe { Box::from_raw(p.cast::<QueryData>()) });
    }
}

unsafe extern "C" fn count_row(
    _api: *const ffi::Fts5ExtensionApi,
    _fts: *mut ffi::Fts5Context,
    user: *mut c_void,
) -> c_int {
    // SAFETY: `user` is the `i64` counter `query_data` passes.
    unsafe { *user.cast::<i64>() += 1 };
    ffi::SQLITE_OK
}

/// The query's statistics, computed on its first row and kept as aux data.
///
/// # Safety
/// `api` and `fts` are the pointers FTS5 passed to the current call.
unsafe fn query_data(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    weights: Option<&str>,
) -> Result<*mut QueryData, c_int> {
    let (
        Some(get_aux),
        Some(set_aux),
        Some(phrase_count),
        Some(row_count),
        Some(total_size),
        Some(query_phrase),
    ) = (
        api.xGetAuxdata,
        api.xSetAuxdata,
        api.xPhraseCount,
        api.xRowCount,
        api.xColumnTotalSize,
        api.xQueryPhrase,
    )
    else {
        return Err(ffi::SQLITE_ERROR);
    };
    // SAFETY (all calls below): FTS5's own API on its own context.
    let existing = unsafe { get_aux(fts, 0) }.cast::<QueryData>();
    if !existing.is_null() {
        return Ok(existing);
    }
    let phrases = unsafe { phrase_count(fts) }.max(0) as usize;
    let mut rows: i64 = 0;
    let rc = unsafe { row_count(fts, &mut rows) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    let mut tokens: i64 = 0;
    let rc = unsafe { total_size(fts, -1, &mut tokens) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    let mut idf = Vec::with_capacity(phrases);
    for i in 0..phrases {
        let mut hits: i64 = 0;
        let rc = unsafe {
            query_phrase(
                fts,
                i as c_int,
                (&mut hits as *mut i64).cast::<c_void>(),
                Some(count_row),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        idf.push(enclave_core::bm25::idf(
            rows.max(0) as u64,
            hits.max(0) as u64,
        ));
    }
    let mut weight = vec![1.0; phrases];
    for (w, given) in weight.iter_mut().zip(weights.unwrap_or("").split(',')) {
        match given.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => *w = x,
            _ if given.trim().is_empty() => {}
            _ => return Err(ffi::SQLITE_MISMATCH),
        }
    }
    let data = Box::into_raw(Box::new(QueryData {
        idf,
        weight,
        avg_len: tokens as f64 / rows.max(1) as f64,
        freq: vec![0.0; phrases],
    }));
    let rc = unsafe { set_aux(fts, data.cast::<c_void>(), Some(drop_query_data)) };
    if rc != ffi::SQLITE_OK {
        // FTS5 calls the destructor itself when it cannot keep the data.
        return Err(rc);
    }
    Ok(data)
}

/// The current row's score, or an SQLite error code.
///
/// # Safety
/// As [`query_data`]; `args` holds `n` values.
unsafe fn score_row(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    n: c_int,
    args: *mut *mut ffi::sqlite3_value,
) -> Result<f64, c_int> {
    if !(2..=3).contains(&n) || args.is_null() {
        return Err(ffi::SQLITE_MISUSE);
    }
    // SAFETY: `args` holds the trailing arguments (k1, b[, weights]); the
    // text lives until the next call on this value, and is parsed at once.
    let (k1, b, weights) = unsafe {
        let weights = if n == 3 {
            let text = ffi::sqlite3_value_text(*args.add(2));
            let len = ffi::sqlite3_value_bytes(*args.add(2)).max(0) as usize;
            if text.is_null() {
                None
            } else {
                std::str::from_utf8(std::slice::from_raw_parts(text, len)).ok()
            }
        } else {
            None
        };
        (
            ffi::sqlite3_value_double(*args),
            ffi::sqlite3_value_double(*args.add(1)),
            weights,
        )
    };
    let (Some(inst_count), Some(inst), Some(column_size)) =
        (api.xInstCount, api.xInst, api.xColumnSize)
    else {
        return Err(ffi::SQLITE_ERROR);
    };
    // SAFETY: the aux data lives as long as the query; only this call
    // touches it while it runs.
    let data = unsafe { &mut *query_data(api, fts, weights)? };
    data.freq.iter_mut().for_each(|f| *f = 0.0);
    let mut instances: c_int = 0;
    let rc = unsafe { inst_count(fts, &mut instances) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    for i in 0..instances {
        let (mut phrase, mut column, mut offset) = (0, 0, 0);
        let rc = unsafe { inst(fts, i, &mut phrase, &mut column, &mut offset) };
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        if let Some(f) = data.freq.get_mut(phrase.max(0) as usize) {
            *f += 1.0;
        }
    }
    let mut len: c_int = 0;
    let rc = unsafe { column_size(fts, -1, &mut len) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    let len = len as f64;
    Ok(data
        .idf
        .iter()
        .zip(&data.freq)
        .zip(&data.weight)
        .map(|((idf, tf), w)| {
            w * enclave_core::bm25::term_score_with(k1, b, *idf, *tf, len, data.avg_len)
        })
        .sum())
}

unsafe extern "C" fn bm25_function(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    ctx: *mut ffi::sqlite3_context,
    n: c_int,
    args: *mut *mut ffi::sqlite3_value,
) {
    // A panic must not cross into C: it becomes an SQLite error.
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: FTS5 passes a valid API table for the call.
        let Some(api) = (unsafe { api.as_ref() }) else {
            return Err(ffi::SQLITE_MISUSE);
        };
        unsafe { score_row(api, fts, n, args) }
    })
    .unwrap_or(Err(ffi::SQLITE_INTERNAL));
    // SAFETY: `ctx` is the call's result context.
    unsafe {
        match outcome {
            Ok(score) => ffi::sqlite3_result_double(ctx, -score),
            Err(code) => ffi::sqlite3_result_error_code(ctx, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[&str]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch("CREATE VIRTUAL TABLE t USING fts5(content)")
            .unwrap();
        for r in rows {
            conn.execute("INSERT INTO t (content) VALUES (?1)", [r])
                .unwrap();
        }
        conn
    }

    fn scores(conn: &Connection, query: &str, k1: f64, b: f64) -> Vec<(i64, f64, f64)> {
        let mut stmt = conn
            .prepare(
                "SELECT rowid, enclave_bm25(t, ?2, ?3), bm25(t) FROM t WHERE t MATCH ?1 \
                 ORDER BY enclave_bm25(t, ?2, ?3), rowid",
            )
            .unwrap();
        stmt.query_map(rusqlite::params![query, k1, b], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    const ROWS: &[&str] = &[
        "refund refund paid within five days",
        "refund policy",
        "shipping takes five days and costs little",
        "the card is charged when the order ships with a very long tail of words",
        "gift cards never expire",
    ];

    #[test]
    fn with_fts5s_constants_it_is_fts5s_bm25() {
        let conn = table(ROWS);
        for q in [
            "refund",
            "five OR days",
            "refund OR card OR ships",
            "\"five days\"",
        ] {
            let got = scores(&conn, q, 1.2, 0.75);
            assert!(!got.is_empty(), "{q}");
            for (row, ours, fts5) in got {
                assert!(
                    (ours - fts5).abs() < 1e-12,
                    "{q} row {row}: {ours} vs {fts5}"
                );
            }
        }
    }

    #[test]
    fn k1_and_b_are_the_callers() {
        let conn = table(ROWS);
        // b = 0: length no longer matters; the two one-match rows of "five"
        // score alike although their lengths differ.
        let flat = scores(&conn, "five", 1.2, 0.0);
        assert_eq!(flat.len(), 2);
        assert!((flat[0].1 - flat[1].1).abs() < 1e-12);
        let normalised = scores(&conn, "five", 1.2, 0.75);
        assert!((normalised[0].1 - normalised[1].1).abs() > 1e-6);
        // The formula of enclave_core::bm25 with the table's statistics:
        // 5 rows, "policy" in one of them, row 2 of 2 tokens, 34 in all.
        let idf = enclave_core::bm25::idf(5, 1);
        let expected = enclave_core::bm25::term_score_with(0.9, 0.4, idf, 1.0, 2.0, 34.0 / 5.0);
        let got = scores(&conn, "policy", 0.9, 0.4);
        assert_eq!(got.len(), 1);
        assert!((got[0].1 + expected).abs() < 1e-12, "{got:?} vs {expected}");
    }

    #[test]
    fn weights_scale_each_phrases_share() {
        let conn = table(ROWS);
        let plain: Vec<(i64, f64)> = conn
            .prepare("SELECT rowid, enclave_bm25(t, 1.2, 0.4) FROM t WHERE t MATCH 'policy OR gift' ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let weighted: Vec<(i64, f64)> = conn
            .prepare("SELECT rowid, enclave_bm25(t, 1.2, 0.4, '1,0.25') FROM t WHERE t MATCH 'policy OR gift' ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Row 2 holds "policy" (weight 1), row 5 "gift" (weight 0.25).
        assert_eq!(plain.len(), 2);
        assert!((weighted[0].1 - plain[0].1).abs() < 1e-12);
        assert!((weighted[1].1 - 0.25 * plain[1].1).abs() < 1e-12);
        assert!(conn
            .query_row(
                "SELECT enclave_bm25(t, 1.2, 0.4, 'x') FROM t WHERE t MATCH 'gift'",
                [],
                |r| r.get::<_, f64>(0)
            )
            .is_err());
    }

    #[test]
    fn a_wrong_call_is_an_error_not_a_crash() {
        let conn = table(ROWS);
        let err = conn
            .query_row(
                "SELECT enclave_bm25(t) FROM t WHERE t MATCH 'refund'",
                [],
                |r| r.get::<_, f64>(0),
            )
            .unwrap_err();
        assert!(matches!(err, rusqlite::Error::SqliteFailure(_, _)), "{err}");
    }
}
