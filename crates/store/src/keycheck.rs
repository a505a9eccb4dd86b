//! The key check: one value sealed with the encryption key when the store is first
//! opened, so a later open with another key is refused at once, even before any
//! tenant (and so any password) has been stored.

use tokio_postgres::Transaction;

use crate::crypto::{Binding, EncryptionKey};
use crate::error::StoreError;

/// What the check value holds; its content matters less than its tag.
const PLAINTEXT: &[u8] = b"tidepool metadata store key check v1";

/// Seals the check value when there is none yet, else verifies it opens with `key`.
/// Runs inside the migration transaction, so two nodes cannot both seed it.
pub(crate) async fn verify_or_seed(
    transaction: &Transaction<'_>,
    key: &EncryptionKey,
) -> Result<(), StoreError> {
    let stored = transaction
        .query_opt("SELECT sealed FROM tidepool.keycheck", &[])
        .await?;
    match stored {
        Some(row) => {
            let sealed: Vec<u8> = row.try_get(0)?;
            match key.open(&sealed, Binding::KeyCheck) {
                Ok(plaintext) if plaintext == PLAINTEXT => Ok(()),
                _ => Err(StoreError::WrongKey),
            }
        }
        None => {
            let sealed = key.seal(PLAINTEXT, Binding::KeyCheck)?;
            transaction
                .execute(
                    "INSERT INTO tidepool.keycheck (sealed) VALUES ($1)",
                    &[&sealed],
                )
                .await?;
            tracing::info!("metadata store key check sealed with the configured key");
            Ok(())
        }
    }
}
