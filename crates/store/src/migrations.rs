//! The store's schema, as numbered migrations applied in order at open.
//!
//! Everything runs in one transaction under a transaction-level advisory lock, so
//! nodes starting together apply each migration once and the others wait, then see
//! it done. A store whose schema is newer than this binary knows is refused rather
//! than guessed at. Migrations are append-only: never edit one that has shipped.

use tokio_postgres::{Client, Transaction};

use crate::crypto::EncryptionKey;
use crate::error::StoreError;
use crate::keycheck;

/// Serialises migrations between nodes ("tidepool" in ASCII).
const MIGRATION_LOCK: i64 = 0x7469_6465_706f_6f6c;

/// One step of the schema.
struct Migration {
    version: i32,
    sql: &'static str,
}

/// Every migration, in order; versions start at 1 and have no gaps.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
        CREATE TABLE tidepool.tenants (
            external_id text PRIMARY KEY,
            spec jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE tidepool.users (
            tenant_external_id text NOT NULL
                REFERENCES tidepool.tenants (external_id) ON DELETE CASCADE,
            db_user_alias text NOT NULL,
            ordinal int NOT NULL,
            db_user text NOT NULL,
            db_password bytea,
            spec jsonb NOT NULL,
            PRIMARY KEY (tenant_external_id, db_user_alias)
        );
        CREATE TABLE tidepool.keycheck (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            sealed bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    ",
}];

/// The schema version this binary writes.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema up to date and checks `key` against the store, in one
/// transaction. A no-op (apart from the key check) on an up-to-date store.
pub(crate) async fn apply(client: &mut Client, key: &EncryptionKey) -> Result<(), StoreError> {
    let bootstrap = |source| StoreError::Migration { version: 0, source };
    let transaction = client.transaction().await.map_err(bootstrap)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(bootstrap)?;
    let current = current_version(&transaction).await.map_err(bootstrap)?;
    let known = latest_version();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| StoreError::Migration {
            version: migration.version,
            source,
        };
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO tidepool.schema_migrations (version, applied_at) VALUES ($1, now())",
                &[&migration.version],
            )
            .await
            .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            "metadata store schema migrated"
        );
    }
    keycheck::verify_or_seed(&transaction, key).await?;
    transaction.commit().await.map_err(StoreError::Query)
}

/// The highest applied version; creates the schema and the version table first
/// when the store is empty (0 then).
async fn current_version(transaction: &Transaction<'_>) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = transaction
        .query_one(
            "SELECT to_regclass('tidepool.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        transaction
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS tidepool;
                 CREATE TABLE tidepool.schema_migrations (
                     version int PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
            )
            .await?;
        return Ok(0);
    }
    let version: Option<i32> = transaction
        .query_one("SELECT max(version) FROM tidepool.schema_migrations", &[])
        .await?
        .get(0);
    Ok(version.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).ok(), Some(index + 1));
        }
        assert_eq!(latest_version(), 1);
    }
}
