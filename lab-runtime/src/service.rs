//! Run-time plumbing shared by the api and the worker: logging, the shutdown
//! signal and the Redis connection. Students need not edit this file.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Runs a service's main future on a multi-threaded runtime. Once it returns
/// (its work finished and acknowledged), background connection tasks get
/// 100 ms to end instead of holding the process for seconds.
pub fn block_on<T>(
    main: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    block_on_threads(None, main)
}

/// [`block_on`] on `threads` threads (`Some(1)`: everything on the calling
/// thread, no hand-offs between threads; `None`: one per core).
pub fn block_on_threads<T>(
    threads: Option<usize>,
    main: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let result = runtime.block_on(main);
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Log lines to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, so log files and `docker compose logs` stay plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C or SIGTERM (what `docker compose down` and `./lab down` send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight work");
}

/// A Redis connection that reconnects by itself after Redis restarts.
///
/// It connects lazily, so a service starts even while Redis is still coming up;
/// each command fails after `timeout` instead of hanging.
pub fn redis_connection(redis_url: &str, timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(redis_url)
        .map_err(|e| anyhow::anyhow!("invalid REDIS_URL {redis_url:?}: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// The second in which "redis unavailable" was last logged, and the 503s not logged since.
static LAST_LOGGED_SEC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static NOT_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Logs a 503 of a service at most once per second, with the number of 503s in
/// between, so a Redis restart under load is a few log lines, not one per request.
pub fn log_redis_unavailable(detail: &str) {
    use std::sync::atomic::Ordering;
    let now = lab_schema::now_ms() / 1000;
    let last = LAST_LOGGED_SEC.load(Ordering::Relaxed);
    if now != last
        && LAST_LOGGED_SEC
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let not_logged = NOT_LOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(%detail, not_logged, "redis unavailable: answering 503");
    } else {
        NOT_LOGGED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request body must be JSON: `Ok` for `application/json` (any parameters, any
/// case), else the message of the 415 answer naming what was sent.
pub fn require_json(content_type: &str) -> Result<(), String> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(format!(
            "Content-Type must be application/json (got {content_type:?})"
        ))
    }
}
