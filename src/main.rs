//! The `tidepool` binary: arguments, logging, signals and exit codes. Everything else
//! lives in `tidepool-core`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tidepool_core::config::{single_upstream, LogFormat, SingleUpstream};
use tidepool_core::{App, Config};

/// Tidepool: a multi-tenant PostgreSQL connection pooler.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Mutually exclusive with --upstream.
    #[arg(long, short = 'c', conflicts_with = "upstream")]
    config: Option<PathBuf>,

    /// Single-upstream mode: postgres://USER:PASS@HOST:PORT/DB. Clients log in as USER with PASS.
    #[arg(long)]
    upstream: Option<String>,

    /// Address to listen on (overrides the file's server.listen).
    #[arg(long)]
    listen: Option<String>,

    /// Single-upstream mode: server connections in the pool [default: 20].
    #[arg(long, conflicts_with = "config")]
    pool_size: Option<u32>,

    /// Single-upstream mode: transaction or session [default: transaction].
    #[arg(long, conflicts_with = "config")]
    pool_mode: Option<String>,

    /// Single-upstream mode: client authentication (scram-sha-256, md5, password, trust).
    #[arg(long, conflicts_with = "config")]
    auth_method: Option<String>,

    /// Single-upstream mode: TLS certificate (PEM) offered to clients.
    #[arg(long, requires = "tls_key", conflicts_with = "config")]
    tls_cert: Option<String>,

    /// Single-upstream mode: TLS private key (PEM).
    #[arg(long, requires = "tls_cert", conflicts_with = "config")]
    tls_key: Option<String>,

    /// Log format: human or json (overrides the file's server.log_format).
    #[arg(long)]
    log_format: Option<String>,

    /// Runtime worker threads (overrides the file's server.worker_threads); 0 = one
    /// per CPU core, 1 = a single thread.
    #[arg(long)]
    worker_threads: Option<u32>,

    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut raw = match (&args.config, &args.upstream) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<tidepool_core::config::RawConfig>(&text)
                .map_err(|e| anyhow::anyhow!("invalid configuration {}: {e}", path.display()))?
        }
        (None, Some(url)) => single_upstream(&SingleUpstream {
            listen: args
                .listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:6432".into()),
            upstream: url.clone(),
            pool_size: args.pool_size.unwrap_or(20),
            pool_mode: args
                .pool_mode
                .clone()
                .unwrap_or_else(|| "transaction".into()),
            auth_method: args.auth_method.clone(),
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
        })?,
        _ => anyhow::bail!("give either --config FILE or --upstream URL (see --help)"),
    };
    if let Some(listen) = &args.listen {
        raw.server.listen = Some(listen.clone());
    }
    if let Some(format) = &args.log_format {
        raw.server.log_format = Some(format.clone());
    }
    if let Some(n) = args.worker_threads {
        raw.server.worker_threads = Some(n);
    }
    Ok(Config::from_raw(raw)?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidepool: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(config.server.log_format);
    let mut builder = match config.server.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n as usize);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidepool: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tidepool: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args, config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let app = App::new(config)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let signals = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {
                        reload(&app, &args);
                        continue;
                    }
                }
                if app.shutdown.is_cancelled() {
                    tracing::warn!("second stop signal: closing all clients now");
                    app.force.cancel();
                } else {
                    tracing::info!("stop signal received");
                    app.shutdown.cancel();
                }
            }
        })
    };
    let result = tidepool_core::run(app).await;
    signals.abort();
    result.context("listener failed")
}

fn reload(app: &App, args: &Args) {
    if args.config.is_none() {
        tracing::info!("SIGHUP ignored: no configuration file to reload (single-upstream mode)");
        return;
    }
    match load(args).and_then(|c| app.reload(c).map_err(Into::into)) {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!("configuration not reloaded, keeping the old one: {e:#}"),
    }
}
