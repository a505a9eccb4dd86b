//! `storm`: `concurrency` workers each connect, log in, send Terminate and
//! close, over and over, for `duration`. Reports completed logins per second
//! and the login time (connect to ReadyForQuery) percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::login::{connect, login, terminate};
use crate::Context;

pub struct StormPlan {
    pub duration: Duration,
    pub concurrency: usize,
}

#[derive(Default)]
struct WorkerResult {
    /// Login times of the successful logins, in microseconds.
    login_micros: Vec<u32>,
    failed: usize,
    first_error: Option<String>,
}

/// After a failed login a worker pauses this long, so that a refusing
/// server is not hammered in a tight loop.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(20);

async fn worker(context: Arc<Context>, deadline: Instant) -> WorkerResult {
    let mut result = WorkerResult::default();
    while Instant::now() < deadline {
        let began = Instant::now();
        let attempt = async {
            let mut stream = connect(&context).await?;
            login(&mut stream, &context.target, context.next_nonce())
                .await
                .map_err(|e| e.to_string())?;
            let took = began.elapsed();
            terminate(&mut stream)
                .await
                .map_err(|e| format!("terminate: {e}"))?;
            Ok::<Duration, String>(took)
        };
        match tokio::time::timeout(context.login_timeout, attempt).await {
            Ok(Ok(took)) => result
                .login_micros
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX)),
            Ok(Err(error)) => {
                result.failed += 1;
                result.first_error.get_or_insert(error);
                tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
            }
            Err(_) => {
                result.failed += 1;
                result
                    .first_error
                    .get_or_insert_with(|| "login timed out".to_string());
            }
        }
    }
    result
}

fn percentile_ms(sorted_micros: &[u32], fraction: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_micros.len() as f64) * fraction).ceil() as usize;
    let index = rank.clamp(1, sorted_micros.len()) - 1;
    f64::from(sorted_micros[index]) / 1000.0
}

pub async fn run(context: Context, plan: StormPlan) -> Result<(), String> {
    let context = Arc::new(context);
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency {
        workers.spawn(worker(context.clone(), deadline));
    }
    let mut logins = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(done) = workers.join_next().await {
        let part = done.map_err(|e| format!("storm worker failed: {e}"))?;
        logins.extend(part.login_micros);
        failed += part.failed;
        if first_error.is_none() {
            first_error = part.first_error;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    logins.sort_unstable();
    println!("ok={}", logins.len());
    println!("failed={failed}");
    println!("secs={secs:.2}");
    println!("rate={:.1}", logins.len() as f64 / secs);
    println!("login_p50_ms={:.2}", percentile_ms(&logins, 0.50));
    println!("login_p99_ms={:.2}", percentile_ms(&logins, 0.99));
    println!(
        "first_error={}",
        first_error.unwrap_or_default().replace('\n', " ")
    );
    Ok(())
}
