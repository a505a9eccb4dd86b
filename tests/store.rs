//! The metadata store against a real Postgres: tenants round-trip with their
//! passwords, passwords are stored encrypted and bound to their row, the key is
//! checked, nodes hear each other's changes, and the store and its watcher survive
//! losing their connections.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::PgServer;
use tidepool_core::config::{RawTenant, RawUser};
use tidepool_core::secret::Secret;
use tidepool_store::{PutOutcome, Store, StoreError, StoreEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
/// How soon another node must hear of a change.
const HEARD_WITHIN: Duration = Duration::from_secs(1);

async fn open(pg: &PgServer) -> Store {
    Store::open(&pg.superuser_url(), Some(KEY)).await.unwrap()
}

fn user(name: &str, alias: Option<&str>, password: Option<&str>) -> RawUser {
    RawUser {
        db_user: Some(name.into()),
        db_user_alias: alias.map(Into::into),
        db_password: password.map(Secret::new),
        pool_size: Some(4),
        mode_type: Some("transaction".into()),
        ..RawUser::default()
    }
}

fn tenant(id: &str) -> RawTenant {
    RawTenant {
        external_id: Some(id.into()),
        db_host: Some("db.internal".into()),
        db_port: Some(5432),
        db_database: Some("app".into()),
        default_pool_size: Some(7),
        require_user: Some(true),
        allow_list: Some(vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()]),
        default_parameter_status: Some(BTreeMap::from([(
            "server_version".to_owned(),
            "16.4".to_owned(),
        )])),
        // Not in alphabetical order: the store keeps the order given.
        users: vec![
            user("zed", None, Some("zed's password")),
            user("app", Some("alpha"), Some("alpha's password")),
            user("nopass", None, None),
        ],
        ..RawTenant::default()
    }
}

async fn next_event(events: &mut mpsc::Receiver<StoreEvent>, within: Duration) -> StoreEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .expect("no event in time")
        .expect("the watcher stopped")
}

#[tokio::test]
async fn tenants_round_trip_with_their_passwords() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    assert_eq!(store.load_all().await.unwrap(), Vec::new());
    assert_eq!(store.get("t1").await.unwrap(), None);

    let mut second = tenant("t0");
    second.users = vec![user("only", None, Some("only's password"))];
    second.db_host = Some("other.internal".into());
    store.put(&tenant("t1")).await.unwrap();
    store.put(&second).await.unwrap();

    let t1 = store.get("t1").await.unwrap().unwrap();
    assert_eq!(t1, tenant("t1"));
    assert_eq!(
        t1.users[1].db_password.as_ref().map(Secret::expose),
        Some("alpha's password")
    );
    assert_eq!(store.load_all().await.unwrap(), vec![second, tenant("t1")]);

    // A second node with the same key reads the same.
    let other = open(&pg).await;
    assert_eq!(other.get("t1").await.unwrap(), Some(tenant("t1")));
}

#[tokio::test]
async fn put_creates_then_updates_and_replaces_users() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    assert_eq!(store.put(&tenant("t1")).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put(&tenant("t1")).await.unwrap(), PutOutcome::Updated);

    let mut changed = tenant("t1");
    changed.db_port = Some(6543);
    changed.users = vec![user("app", Some("alpha"), Some("a new password"))];
    assert_eq!(store.put(&changed).await.unwrap(), PutOutcome::Updated);
    assert_eq!(store.get("t1").await.unwrap(), Some(changed));
    let users: i64 = pg
        .client()
        .await
        .query_one("SELECT count(*) FROM tidepool.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1);
}

#[tokio::test]
async fn put_refuses_a_tenant_without_id() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    let mut anonymous = tenant("x");
    anonymous.external_id = None;
    assert!(matches!(
        store.put(&anonymous).await,
        Err(StoreError::InvalidTenant { .. })
    ));
}

#[tokio::test]
async fn delete_reports_whether_the_tenant_was_there() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    store.put(&tenant("t1")).await.unwrap();
    store.put(&tenant("t2")).await.unwrap();
    assert!(store.delete("t1").await.unwrap());
    assert!(!store.delete("t1").await.unwrap());
    assert_eq!(store.get("t1").await.unwrap(), None);
    assert_eq!(store.load_all().await.unwrap(), vec![tenant("t2")]);
    let orphans: i64 = pg
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM tidepool.users WHERE tenant_external_id = 't1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "users cascade with their tenant");
}

#[tokio::test]
async fn the_key_is_required_well_formed_and_the_right_one() {
    let pg = PgServer::start();
    // Even before any tenant exists, the store remembers its key.
    drop(open(&pg).await);

    let wrong = Store::open(&pg.superuser_url(), Some(OTHER_KEY)).await;
    assert!(matches!(wrong, Err(StoreError::WrongKey)), "{wrong:?}");

    let missing = Store::open(&pg.superuser_url(), None).await.unwrap_err();
    assert!(matches!(missing, StoreError::MissingKey));
    assert!(missing.to_string().contains("TIDEPOOL_ENCRYPTION_KEY"));

    let short = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes
    for malformed in ["", "not base64!", short] {
        let error = Store::open(&pg.superuser_url(), Some(malformed))
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::MalformedKey), "{error:?}");
        if !malformed.is_empty() {
            assert!(!error.to_string().contains(malformed));
        }
    }
    for error in [wrong.unwrap_err(), missing] {
        let shown = format!("{error} {error:?}");
        assert!(
            !shown.contains(KEY) && !shown.contains(OTHER_KEY),
            "{shown}"
        );
    }
    // The right key still opens it.
    open(&pg).await;
}

#[tokio::test]
async fn errors_never_show_the_store_password() {
    let pg = PgServer::start();
    let error = Store::open(
        &pg.url("postgres", "not-the-password-x9", "postgres"),
        Some(KEY),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Connect(_)), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("28P01"), "the cause is shown: {shown}");
    assert!(!shown.contains("not-the-password-x9"), "{shown}");

    let error = Store::open("postgres://u:pass word x9@[bad", Some(KEY))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Url), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("x9"), "{shown}");
}

#[tokio::test]
async fn stored_passwords_are_encrypted() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    store.put(&tenant("t1")).await.unwrap();
    let rows = pg
        .client()
        .await
        .query(
            "SELECT db_user_alias, db_password, spec::text FROM tidepool.users",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let tenant_spec: String = pg
        .client()
        .await
        .query_one("SELECT spec::text FROM tidepool.tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!tenant_spec.contains("password"), "{tenant_spec}");
    for row in rows {
        let alias: String = row.get(0);
        let sealed: Option<Vec<u8>> = row.get(1);
        let spec: String = row.get(2);
        assert!(!spec.contains("password"), "{spec}");
        let Some(sealed) = sealed else {
            assert_eq!(alias, "nopass");
            continue;
        };
        for password in ["zed's password", "alpha's password"] {
            assert!(
                !sealed
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{alias}'s stored value holds a password in clear"
            );
        }
        // 12-byte nonce, the ciphertext, a 16-byte tag.
        assert!(sealed.len() >= 12 + 16 + "zed's password".len());
    }
}

#[tokio::test]
async fn a_password_moved_to_another_row_does_not_decrypt() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    store.put(&tenant("t1")).await.unwrap();
    store.put(&tenant("t2")).await.unwrap();
    let admin = pg.client().await;

    // Within a tenant: zed's value copied into alpha's row.
    admin
        .execute(
            "UPDATE tidepool.users SET db_password = (SELECT db_password FROM tidepool.users
                 WHERE tenant_external_id = 't1' AND db_user_alias = 'zed')
             WHERE tenant_external_id = 't1' AND db_user_alias = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    match store.get("t1").await {
        Err(StoreError::Undecryptable { tenant, user }) => {
            assert_eq!((tenant.as_str(), user.as_str()), ("t1", "alpha"));
        }
        other => panic!("{other:?}"),
    }
    assert!(store.load_all().await.is_err());

    // Between tenants: t1's zed value copied into t2's zed row.
    admin
        .execute(
            "UPDATE tidepool.users SET db_password = (SELECT db_password FROM tidepool.users
                 WHERE tenant_external_id = 't1' AND db_user_alias = 'zed')
             WHERE tenant_external_id = 't2' AND db_user_alias = 'zed'",
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        store.get("t2").await,
        Err(StoreError::Undecryptable { .. })
    ));
}

#[tokio::test]
async fn another_node_hears_changes_deletes_and_terminations() {
    let pg = PgServer::start();
    let writer = open(&pg).await;
    let reader = open(&pg).await;
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut events = reader.watch(&tasks, stop.clone());
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Resync
    );

    writer.put(&tenant("t1")).await.unwrap();
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Changed("t1".into())
    );
    writer.announce_terminate("t1").await.unwrap();
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Terminate("t1".into())
    );
    writer.delete("t1").await.unwrap();
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Deleted("t1".into())
    );
    // Deleting what is absent announces nothing.
    assert!(!writer.delete("t1").await.unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );

    stop.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the watcher stops when told");
    assert_eq!(events.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_both_open_the_store() {
    let pg = PgServer::start();
    let url = pg.superuser_url();
    let (first, second) = tokio::join!(
        tokio::spawn({
            let url = url.clone();
            async move { Store::open(&url, Some(KEY)).await.map(drop) }
        }),
        tokio::spawn(async move { Store::open(&url, Some(KEY)).await.map(drop) }),
    );
    first.unwrap().unwrap();
    second.unwrap().unwrap();

    // Opening again changes nothing.
    let admin = pg.client().await;
    let before: Vec<(i32, String)> = migrations_and_key(&admin).await;
    open(&pg).await;
    assert_eq!(migrations_and_key(&admin).await, before);
    assert_eq!(before.len(), 1);
}

async fn migrations_and_key(admin: &tokio_postgres::Client) -> Vec<(i32, String)> {
    admin
        .query(
            "SELECT version, applied_at::text || encode(k.sealed, 'hex')
             FROM tidepool.schema_migrations, tidepool.keycheck k ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let pg = PgServer::start();
    open(&pg).await;
    pg.execute("INSERT INTO tidepool.schema_migrations (version) VALUES (999)")
        .await;
    match Store::open(&pg.superuser_url(), Some(KEY)).await {
        Err(StoreError::SchemaTooNew { found: 999, known }) => assert!(known < 999),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_store_and_its_watcher_survive_losing_their_connections() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut events = store.watch(&tasks, stop.clone());
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Resync
    );
    store.put(&tenant("t1")).await.unwrap();
    assert_eq!(
        next_event(&mut events, HEARD_WITHIN).await,
        StoreEvent::Changed("t1".into())
    );

    let terminated: i64 = pg
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
             FROM pg_stat_activity WHERE application_name = 'tidepool-store'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(terminated, 2, "the query connection and the watcher's");

    // The very next call works, without the caller retrying: it reconnects (or
    // retries once on a fresh connection if it used the dying one first).
    assert_eq!(store.put(&tenant("t1")).await.unwrap(), PutOutcome::Updated);
    assert!(store.ping().await);

    // The watcher reconnects (backing off from 100 ms) and asks for a resync first.
    // That put may have committed before or after it listened again, so it is
    // heard after the resync, or not at all (the resync covers it).
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        StoreEvent::Resync
    );
    store.put(&tenant("t2")).await.unwrap();
    let mut event = next_event(&mut events, HEARD_WITHIN).await;
    if event == StoreEvent::Changed("t1".into()) {
        event = next_event(&mut events, HEARD_WITHIN).await;
    }
    assert_eq!(event, StoreEvent::Changed("t2".into()));

    stop.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the watcher stops when told");
}

#[tokio::test]
async fn ping_follows_the_server() {
    let pg = PgServer::start();
    let store = open(&pg).await;
    assert!(store.ping().await);
    drop(pg);
    assert!(!store.ping().await);
}
