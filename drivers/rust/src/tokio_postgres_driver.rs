//! tokio-postgres checks: 10 clients, each preparing its statements once
//! (`Client::prepare` names them s0, s1, ... on every connection, so the names
//! collide across clients) and reusing them in and out of transactions, in
//! pipelined batches, and after an error has rolled a transaction back.

use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio::sync::Barrier;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::report::Report;
use crate::{starved, Target, CLIENTS, PROBE_TIMEOUT, ROUNDS};

type Outcome = Result<(), String>;

pub async fn run(target: &Target, report: &mut Report) {
    let config = format!(
        "host={} port={} user={} password={} dbname={} connect_timeout=10",
        target.host, target.port, target.user, target.password, target.database
    );
    report.check("create table", create_table(&config).await);
    report.check(
        "10 concurrent clients: prepared statements reused across transactions, pipelined, after errors",
        concurrent_clients(&config).await,
    );
    report.check(
        "idle clients hold no server connection",
        idle_clients_hold_no_server(&config).await,
    );
}

/// CLIENTS clients one after another each prepare a statement (their last
/// action) and stay connected, idle: every one must still get a server
/// connection.
async fn idle_clients_hold_no_server(config: &str) -> Outcome {
    let mut idle = Vec::new();
    let mut outcome = Ok(());
    for n in 0..CLIENTS {
        let opened = tokio::time::timeout(PROBE_TIMEOUT, async {
            let (client, driver) = connect(config).await?;
            client
                .prepare("SELECT $1::int4")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client, driver))
        })
        .await;
        match opened {
            Ok(Ok(pair)) => idle.push(pair),
            Ok(Err(e)) => {
                outcome = Err(e);
                break;
            }
            Err(_) => {
                outcome = Err(starved(n, "Client::prepare"));
                break;
            }
        }
    }
    for (client, driver) in idle {
        drop(client);
        let _ = driver.await;
    }
    outcome
}

/// Connects one client and drives its connection on a task that ends when
/// the client is dropped. With PGSSLMODE=verify-full (the TLS pass), over TLS,
/// trusting only PGSSLROOTCERT and checking the host name, as libpq would:
/// tokio-postgres reads no environment, so this is the application's setting.
async fn connect(config: &str) -> Result<(Client, tokio::task::JoinHandle<()>), String> {
    let (client, driver) = match std::env::var("PGSSLMODE").as_deref() {
        Ok("verify-full") => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(verify_full_config()?);
            let config = format!("{config} sslmode=require");
            let (client, connection) = tokio_postgres::connect(&config, tls)
                .await
                .map_err(|e| e.to_string())?;
            (client, tokio::spawn(drive(connection)))
        }
        Ok("disable") | Err(_) => {
            let (client, connection) = tokio_postgres::connect(config, NoTls)
                .await
                .map_err(|e| e.to_string())?;
            (client, tokio::spawn(drive(connection)))
        }
        Ok(other) => return Err(format!("PGSSLMODE={other} is not supported by this check")),
    };
    Ok((client, driver))
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(error) = connection.await {
        eprintln!("connection error: {error}");
    }
}

/// A rustls client trusting the certificates in PGSSLROOTCERT.
fn verify_full_config() -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path =
        std::env::var("PGSSLROOTCERT").map_err(|_| "PGSSLROOTCERT is not set".to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path).map_err(|e| format!("{path}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{path}: {e}"))?)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    // ring offers no post-quantum key exchange (hence deprecated); a classical
    // one is what this check needs.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn create_table(config: &str) -> Outcome {
    let (client, driver) = connect(config).await?;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS tp_items;
             CREATE TABLE tp_items (worker int4, round int4, PRIMARY KEY (worker, round))",
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    driver.await.map_err(|e| e.to_string())
}

async fn concurrent_clients(config: &str) -> Outcome {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS as i32 {
        let config = config.to_string();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, driver) = connect(&config).await?;
            barrier.wait().await;
            let outcome = client_rounds(&mut client, worker).await;
            drop(client);
            let _ = driver.await;
            outcome.map_err(|e| format!("client {worker}: {e}"))
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn client_rounds(client: &mut Client, worker: i32) -> Outcome {
    let err = |e: tokio_postgres::Error| e.to_string();
    let add = client
        .prepare("SELECT $1::int4 + $2::int4")
        .await
        .map_err(err)?;
    let insert = client
        .prepare("INSERT INTO tp_items (worker, round) VALUES ($1, $2)")
        .await
        .map_err(err)?;
    let count = client
        .prepare("SELECT count(*) FROM tp_items WHERE worker = $1")
        .await
        .map_err(err)?;
    for round in 0..ROUNDS {
        let sum: i32 = client
            .query_one(&add, &[&round, &worker])
            .await
            .map_err(err)?
            .get(0);
        if sum != round + worker {
            return Err(format!("{round} + {worker} came back as {sum}"));
        }
        let tx = client.transaction().await.map_err(err)?;
        tx.execute(&insert, &[&worker, &round]).await.map_err(err)?;
        let rows: i64 = tx.query_one(&count, &[&worker]).await.map_err(err)?.get(0);
        if rows != i64::from(round) + 1 {
            return Err(format!("round {round}: {rows} rows inside the transaction"));
        }
        tx.commit().await.map_err(err)?;
    }

    // Pipelined: several executions in flight on one connection at once.
    let numbers: Vec<i32> = (0..8).collect();
    let shared: &Client = client;
    let pipelined = try_join_all(numbers.iter().map(|n| {
        let add = &add;
        async move { shared.query_one(add, &[n, &worker]).await }
    }))
    .await
    .map_err(err)?;
    for (n, row) in numbers.iter().zip(pipelined) {
        let sum: i32 = row.get(0);
        if sum != n + worker {
            return Err(format!("pipelined {n} + {worker} came back as {sum}"));
        }
    }

    // An error aborts the transaction; the prepared statements still work after it.
    let tx = client.transaction().await.map_err(err)?;
    match tx.query_one("SELECT 1 / $1::int4", &[&0i32]).await {
        Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {}
        Err(e) => return Err(format!("expected division_by_zero, got {e}")),
        Ok(_) => return Err("1 / 0 succeeded".to_string()),
    }
    tx.rollback().await.map_err(err)?;
    let sum: i32 = client
        .query_one(&add, &[&1i32, &worker])
        .await
        .map_err(err)?
        .get(0);
    if sum != 1 + worker {
        return Err(format!("after the error, 1 + {worker} came back as {sum}"));
    }
    Ok(())
}
