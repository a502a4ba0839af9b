//! API tokens and the audit trail: the writer's statements and the readers' queries.

use rusqlite::{Connection, Transaction, params};

use super::rows::col;
use crate::{AuditRecord, StoreError, StoredToken};

pub(crate) fn insert_token(tx: &Transaction<'_>, t: &StoredToken) -> Result<(), StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_at_ms, revoked_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![t.id, t.name, t.role, t.secret_hash, t.created_at_ms, t.revoked_at_ms])?;
    if inserted == 0 {
        return Err(StoreError::TokenExists(t.id.clone()));
    }
    Ok(())
}

/// Revoking twice keeps the first time.
pub(crate) fn revoke_token(tx: &Transaction<'_>, id: &str, at_ms: i64) -> Result<(), StoreError> {
    let found = tx
        .prepare_cached("UPDATE api_tokens SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1")?
        .execute(params![id, at_ms])?;
    if found == 0 {
        return Err(StoreError::NoSuchToken(id.to_string()));
    }
    Ok(())
}

pub(crate) fn append_audit(tx: &Transaction<'_>, records: &[AuditRecord]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (at_ms, actor, action, target, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in records {
        insert.execute(params![r.at_ms, r.actor, r.action, r.target, r.status, r.detail])?;
    }
    Ok(())
}

pub(crate) fn list_tokens(conn: &Connection) -> Result<Vec<StoredToken>, StoreError> {
    const T: &str = "api_tokens";
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, secret_hash, created_at_ms, revoked_at_ms FROM api_tokens \
         ORDER BY created_at_ms, id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = col(row, 0, T, "?")?;
        out.push(StoredToken {
            name: col(row, 1, T, &id)?,
            role: col(row, 2, T, &id)?,
            secret_hash: col(row, 3, T, &id)?,
            created_at_ms: col(row, 4, T, &id)?,
            revoked_at_ms: col(row, 5, T, &id)?,
            id,
        });
    }
    Ok(out)
}

/// Newest first, `seq` below `before` when given.
pub(crate) fn list_audit(
    conn: &Connection,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    const T: &str = "audit";
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, actor, action, target, status, detail FROM audit \
         WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![before.unwrap_or(i64::MAX), limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let seq: i64 = col(row, 0, T, "?")?;
        let id = seq.to_string();
        out.push(AuditRecord {
            seq,
            at_ms: col(row, 1, T, &id)?,
            actor: col(row, 2, T, &id)?,
            action: col(row, 3, T, &id)?,
            target: col(row, 4, T, &id)?,
            status: col(row, 5, T, &id)?,
            detail: col(row, 6, T, &id)?,
        });
    }
    Ok(out)
}
