//! Versioned schema: `migrations/NNNN_*.sql`, applied in order and tracked with
//! `PRAGMA user_version` (0 on a new file).

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Migration `i` brings the schema to version `i + 1`. Append only: never edit a shipped file.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_telemetry_minutes.sql"),
    include_str!("../migrations/0003_drop_unused.sql"),
    include_str!("../migrations/0004_list_order.sql"),
    include_str!("../migrations/0005_cancel_requested.sql"),
    include_str!("../migrations/0006_auth.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Migration(format!("invalid schema version {v} in the database")))
}

/// Brings the database to [`SCHEMA_VERSION`]; does nothing when it is already there.
/// Returns the version found before.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    // IMMEDIATE takes the write lock first, so two processes opening the same new file do
    // not both apply migration 1.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = user_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Migration(format!(
            "the database has schema version {found} but this binary knows only up to \
             {SCHEMA_VERSION}: it was written by a newer cloudai; upgrade cloudai or use another file"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i + 1;
        tx.execute_batch(sql).map_err(|e| StoreError::Migration(format!("migration {version}: {e}")))?;
        // PRAGMA takes no bound parameters; `version` is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
    }
    tx.commit()?;
    if found < SCHEMA_VERSION {
        tracing::info!(from = found, to = SCHEMA_VERSION, "database schema migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(migrate(&mut conn).expect("first"), 0);
        assert_eq!(migrate(&mut conn).expect("second"), SCHEMA_VERSION);
        assert_eq!(user_version(&conn).expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_rejected() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).expect("set");
        let err = migrate(&mut conn).expect_err("newer");
        assert!(err.to_string().contains("newer cloudai"), "{err}");
    }
}
