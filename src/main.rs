//! The `tidepool` binary: arguments, environment, logging, signals and exit codes.
//! The service lives in `tidepool-core`, the management API and the store sync in
//! `tidepool-api`, the metadata store in `tidepool-store`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tidepool_core::config::{single_upstream, LogFormat, SingleUpstream};
use tidepool_core::secret::Secret;
use tidepool_core::shard::Shards;
use tidepool_core::{App, Config};
use tidepool_store::Store;
use tokio_util::sync::CancellationToken;

/// Secrets read from the environment only (never from flags, which `ps` shows).
const ENV_API_JWT_SECRET: &str = "API_JWT_SECRET";
const ENV_METRICS_JWT_SECRET: &str = "METRICS_JWT_SECRET";
const ENV_ENCRYPTION_KEY: &str = "TIDEPOOL_ENCRYPTION_KEY";
const ENV_ADMIN_PASSWORD: &str = "TIDEPOOL_ADMIN_PASSWORD";
/// How long the API may take to finish its requests once the pooler has stopped.
const API_STOP_GRACE: Duration = Duration::from_secs(5);

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

    /// Directory for a Unix socket clients may connect to as well, named as
    /// Postgres names its own: DIR/.s.PGSQL.PORT (overrides the file's
    /// server.unix_socket_dir).
    #[arg(long, value_name = "DIR")]
    unix_socket_dir: Option<String>,

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

    /// Single-upstream mode: refuse clients that do not use TLS (as PgBouncer's
    /// client_tls_sslmode = require). Needs --tls-cert and --tls-key.
    #[arg(long, requires = "tls_cert", conflicts_with = "config")]
    require_tls: bool,

    /// Log format: human or json (overrides the file's server.log_format).
    #[arg(long)]
    log_format: Option<String>,

    /// Threads serving clients, each with its own runtime (overrides the file's
    /// server.worker_threads); 0 = one per CPU core, 1 = everything on one thread.
    #[arg(long)]
    worker_threads: Option<u32>,

    /// Metadata store: a Postgres URL whose database holds the tenants created
    /// through the API (overrides the file's metadata.url). Needs
    /// TIDEPOOL_ENCRYPTION_KEY.
    #[arg(long, env = "TIDEPOOL_METADATA_URL", hide_env_values = true)]
    metadata_url: Option<String>,

    /// Address of the management HTTP API (overrides the file's api.listen). Needs
    /// API_JWT_SECRET.
    #[arg(long)]
    api_listen: Option<String>,

    /// The admin console's user (overrides the file's admin.user): logging in
    /// as it to database `pgbouncer` or `tidepool` reaches the console. Its
    /// password comes from TIDEPOOL_ADMIN_PASSWORD (or the file's
    /// admin.password).
    #[arg(long, value_name = "NAME")]
    admin_user: Option<String>,

    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

/// The value of environment variable `name`, when set and not empty.
fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(Secret::new)
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
            require_tls: args.require_tls,
        })?,
        // Every tenant may come from the metadata store.
        (None, None) if args.metadata_url.is_some() => tidepool_core::config::RawConfig::default(),
        _ => anyhow::bail!("give --config FILE, --upstream URL or --metadata-url URL (see --help)"),
    };
    if let Some(listen) = &args.listen {
        raw.server.listen = Some(listen.clone());
    }
    if let Some(dir) = &args.unix_socket_dir {
        raw.server.unix_socket_dir = Some(dir.clone());
    }
    if let Some(format) = &args.log_format {
        raw.server.log_format = Some(format.clone());
    }
    if let Some(n) = args.worker_threads {
        raw.server.worker_threads = Some(n);
    }
    if let Some(url) = &args.metadata_url {
        raw.metadata.url = Some(Secret::new(url.clone()));
    }
    if let Some(listen) = &args.api_listen {
        raw.api.listen = Some(listen.clone());
    }
    if let Some(user) = &args.admin_user {
        raw.admin.user = Some(user.clone());
    }
    if let Some(password) = env_secret(ENV_ADMIN_PASSWORD) {
        raw.admin.password = Some(password);
    }
    if let Some(key) = env_secret(ENV_ENCRYPTION_KEY) {
        raw.metadata.encryption_key = Some(key);
    }
    if let Some(secret) = env_secret(ENV_API_JWT_SECRET) {
        raw.api.jwt_secret = Some(secret);
    }
    if let Some(secret) = env_secret(ENV_METRICS_JWT_SECRET) {
        raw.api.metrics_jwt_secret = Some(secret);
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
    // Client sessions run on shards, one single-threaded runtime per core; the
    // main thread's runtime accepts, serves the API and follows the store.
    let shard_count = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidepool: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let shards = if shard_count > 1 {
        match Shards::start(shard_count) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("tidepool: cannot start runtime threads: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let result = runtime.block_on(serve(args, config, shards.as_ref().map(|s| s.0.clone())));
    if let Some((_, threads)) = shards {
        threads.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tidepool: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args, config: Config, shards: Option<Arc<Shards>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let app = App::new(config)?;
    if let Some(shards) = shards {
        app.use_shards(shards);
    }
    let args = Arc::new(args);
    if args.config.is_some() {
        let args = args.clone();
        app.set_reloader(Box::new(move |app: &App| {
            load(&args)
                .and_then(|c| app.reload(c).map_err(Into::into))
                .map_err(|e| format!("{e:#}"))
        }));
    }
    let store = open_store(&app).await?;
    let api = start_api(&app, store).await?;
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
                    app.force_close();
                } else {
                    tracing::info!("stop signal received");
                    app.shut_down();
                }
            }
        })
    };
    let result = tidepool_core::run(app).await;
    signals.abort();
    if let Some((stop, api)) = api {
        stop.cancel();
        match tokio::time::timeout(API_STOP_GRACE, api).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("management API stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("management API task failed: {e}"),
            Err(_) => tracing::warn!("management API did not stop within {API_STOP_GRACE:?}"),
        }
    }
    result.context("listener failed")
}

/// Opens the metadata store when one is configured, loads its tenants and starts
/// following its changes. Fails (and Tidepool does not start) when the store cannot
/// be reached or the encryption key is missing or wrong.
async fn open_store(app: &Arc<App>) -> anyhow::Result<Option<Arc<Store>>> {
    let config = app.config();
    let Some(url) = &config.metadata.url else {
        return Ok(None);
    };
    let key = config.metadata.encryption_key.as_ref().map(Secret::expose);
    let store = Arc::new(Store::open(url.expose(), key).await?);
    let served = tidepool_api::sync::load_all(app, &store)
        .await
        .context("cannot load tenants from the metadata store")?;
    tracing::info!(tenants = served, "tenants loaded from the metadata store");
    tidepool_api::sync::spawn(app.clone(), store.clone());
    Ok(Some(store))
}

type ApiTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Binds and starts the management API when it is configured. It runs until the
/// returned token is cancelled, after the pooler has drained, so `/api/health`
/// reports the shutdown while it lasts.
async fn start_api(
    app: &Arc<App>,
    store: Option<Arc<Store>>,
) -> anyhow::Result<Option<(CancellationToken, ApiTask)>> {
    let config = app.config();
    let Some(addr) = config.api.listen else {
        return Ok(None);
    };
    // Validation demands the secret whenever the API listens.
    let secret = config
        .api
        .jwt_key
        .as_ref()
        .context("the management API needs API_JWT_SECRET")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the management API"))?;
    let state = tidepool_api::ApiState::new(
        app.clone(),
        store,
        secret,
        config.api.metrics_jwt_key.as_ref(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(tidepool_api::serve(listener, state, stop.clone()));
    Ok(Some((stop, task)))
}

fn reload(app: &App, args: &Args) {
    if args.config.is_none() {
        tracing::info!("SIGHUP ignored: no configuration file to reload");
        return;
    }
    match app.reload_from_source() {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!("configuration not reloaded, keeping the old one: {e}"),
    }
}
