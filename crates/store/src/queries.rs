//! The SQL the store runs once connected: reading and writing tenants and
//! announcing changes. Every value is a bind parameter; notifications go out with
//! `pg_notify` inside the writing transaction, so other nodes hear of a change only
//! once it is committed.

use std::collections::HashMap;

use tokio_postgres::{Client, GenericClient, IsolationLevel, Row};

use crate::error::StoreError;
use crate::events;
use crate::record::{TenantRecord, UserRecord};

/// Whether `put` created the tenant or replaced an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
}

const TENANT: &str = "SELECT external_id, spec::text FROM tidepool.tenants WHERE external_id = $1";
const TENANT_USERS: &str =
    "SELECT tenant_external_id, db_user_alias, db_user, db_password, spec::text
     FROM tidepool.users WHERE tenant_external_id = $1 ORDER BY ordinal";
const ALL_TENANTS: &str =
    "SELECT external_id, spec::text FROM tidepool.tenants ORDER BY external_id";
const ALL_USERS: &str = "SELECT tenant_external_id, db_user_alias, db_user, db_password, spec::text
     FROM tidepool.users ORDER BY tenant_external_id, ordinal";

/// Writes `record` (its users replace the stored ones) and announces the change.
pub(crate) async fn put(
    client: &mut Client,
    record: &TenantRecord,
) -> Result<PutOutcome, StoreError> {
    let transaction = client.transaction().await?;
    let id = &record.external_id;
    // xmax is 0 on a freshly inserted row version, not on one an upsert updated.
    let created: bool = transaction
        .query_one(
            "INSERT INTO tidepool.tenants (external_id, spec) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (external_id) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now()
             RETURNING (xmax = 0)",
            &[id, &record.spec],
        )
        .await?
        .try_get(0)?;
    transaction
        .execute(
            "DELETE FROM tidepool.users WHERE tenant_external_id = $1",
            &[id],
        )
        .await?;
    let insert_user = transaction
        .prepare(
            "INSERT INTO tidepool.users
                 (tenant_external_id, db_user_alias, ordinal, db_user, db_password, spec)
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
        )
        .await?;
    for (ordinal, user) in record.users.iter().enumerate() {
        let ordinal = i32::try_from(ordinal).unwrap_or(i32::MAX);
        transaction
            .execute(
                &insert_user,
                &[
                    id,
                    &user.alias,
                    &ordinal,
                    &user.db_user,
                    &user.sealed_password,
                    &user.spec,
                ],
            )
            .await?;
    }
    notify(&transaction, events::CHANGED, id).await?;
    transaction.commit().await?;
    Ok(if created {
        PutOutcome::Created
    } else {
        PutOutcome::Updated
    })
}

/// Deletes the tenant (its users cascade) and announces it; false when absent.
pub(crate) async fn delete(client: &mut Client, id: &str) -> Result<bool, StoreError> {
    let transaction = client.transaction().await?;
    let deleted = transaction
        .execute(
            "DELETE FROM tidepool.tenants WHERE external_id = $1",
            &[&id],
        )
        .await?;
    if deleted > 0 {
        notify(&transaction, events::DELETED, id).await?;
    }
    transaction.commit().await?;
    Ok(deleted > 0)
}

/// Sends one notification (delivered at commit when inside a transaction).
pub(crate) async fn notify(
    client: &impl GenericClient,
    channel: &str,
    id: &str,
) -> Result<(), StoreError> {
    client
        .query_one("SELECT pg_notify($1, $2)", &[&channel, &id])
        .await?;
    Ok(())
}

/// The rows of one tenant (`Some(id)`) or of all, read from one snapshot; tenants
/// sorted by id, users in the order they were written.
pub(crate) async fn read(
    client: &mut Client,
    only: Option<&str>,
) -> Result<Vec<TenantRecord>, StoreError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let (tenants, users) = match only {
        Some(id) => (
            transaction.query(TENANT, &[&id]).await?,
            transaction.query(TENANT_USERS, &[&id]).await?,
        ),
        None => (
            transaction.query(ALL_TENANTS, &[]).await?,
            transaction.query(ALL_USERS, &[]).await?,
        ),
    };
    transaction.commit().await?;
    assemble(&tenants, &users)
}

/// Groups user rows under their tenant rows.
fn assemble(tenants: &[Row], users: &[Row]) -> Result<Vec<TenantRecord>, StoreError> {
    let mut by_tenant: HashMap<String, Vec<UserRecord>> = HashMap::new();
    for row in users {
        let tenant: String = row.try_get(0)?;
        let user = UserRecord {
            alias: row.try_get(1)?,
            db_user: row.try_get(2)?,
            sealed_password: row.try_get(3)?,
            spec: row.try_get(4)?,
        };
        by_tenant.entry(tenant).or_default().push(user);
    }
    tenants
        .iter()
        .map(|row| {
            let external_id: String = row.try_get(0)?;
            Ok(TenantRecord {
                users: by_tenant.remove(&external_id).unwrap_or_default(),
                spec: row.try_get(1)?,
                external_id,
            })
        })
        .collect()
}

/// A trivial round trip, to tell whether the store answers.
pub(crate) async fn ping(client: &Client) -> Result<(), StoreError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}
