//! `idle`: opens `count` authenticated connections with at most `concurrency`
//! logins in flight, then keeps them open and silent. When all are settled it
//! writes the ready file (what bench/run.sh waits for before reading the
//! pooler's memory), holds until SIGTERM/SIGINT or `hold` has passed, and
//! finally reports how many connections the server had closed meanwhile.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use crate::login::{connect, login};
use crate::tls::Conn;
use crate::Context;

pub struct IdlePlan {
    pub count: usize,
    pub concurrency: usize,
    pub ready_file: Option<String>,
    pub hold: Duration,
    /// No new login is started after this long; each login has its own timeout.
    pub open_timeout: Duration,
}

#[derive(Default)]
struct Opened {
    streams: Vec<Conn>,
    failed: usize,
    first_error: Option<String>,
}

async fn open_some(
    context: Arc<Context>,
    next: Arc<AtomicUsize>,
    count: usize,
    deadline: Instant,
) -> Opened {
    let mut opened = Opened::default();
    while next.fetch_add(1, Ordering::Relaxed) < count {
        if Instant::now() >= deadline {
            opened.failed += 1;
            opened
                .first_error
                .get_or_insert_with(|| "open timeout reached".to_string());
            continue;
        }
        let attempt = async {
            let mut stream = connect(&context).await?;
            login(&mut stream, &context.target, context.next_nonce())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<Conn, String>(stream)
        };
        match tokio::time::timeout(context.login_timeout, attempt).await {
            Ok(Ok(stream)) => opened.streams.push(stream),
            Ok(Err(error)) => {
                opened.failed += 1;
                opened.first_error.get_or_insert(error);
            }
            Err(_) => {
                opened.failed += 1;
                opened
                    .first_error
                    .get_or_insert_with(|| "login timed out".to_string());
            }
        }
    }
    opened
}

/// Counts connections the server has closed (EOF, error, or unexpected data,
/// which over TLS is any record: an idle client is sent nothing).
fn count_closed(streams: Vec<Conn>) -> usize {
    let mut buffer = [0u8; 256];
    streams
        .iter()
        .filter(|stream| {
            // try_read never waits.
            !matches!(stream.tcp().try_read(&mut buffer), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count()
}

pub async fn run(context: Context, plan: IdlePlan) -> Result<(), String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let context = Arc::new(context);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + plan.open_timeout;
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.min(plan.count.max(1)) {
        workers.spawn(open_some(
            context.clone(),
            next.clone(),
            plan.count,
            deadline,
        ));
    }
    let mut all = Opened::default();
    while let Some(done) = workers.join_next().await {
        let part = done.map_err(|e| format!("login worker failed: {e}"))?;
        all.streams.extend(part.streams);
        all.failed += part.failed;
        if all.first_error.is_none() {
            all.first_error = part.first_error;
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let opened = all.streams.len();
    let first_error = all.first_error.unwrap_or_default().replace('\n', " ");
    let tls_version = all
        .streams
        .first()
        .and_then(Conn::tls_version)
        .unwrap_or_else(|| "none".into());
    let report = format!(
        "opened={opened}\nfailed={}\nopen_secs={open_secs:.2}\ntls={tls_version}\nfirst_error={first_error}\n",
        all.failed
    );
    if let Some(path) = &plan.ready_file {
        // Written whole, then renamed, so a reader never sees half of it.
        let partial = format!("{path}.partial");
        std::fs::write(&partial, &report).map_err(|e| format!("writing {partial}: {e}"))?;
        std::fs::rename(&partial, path).map_err(|e| format!("renaming to {path}: {e}"))?;
    }
    print!("{report}");

    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(plan.hold) => {}
    }
    let closed = count_closed(all.streams);
    println!("closed_by_server={closed}");
    println!("still_open={}", opened - closed);
    Ok(())
}
