//! `vmrp serve`: the process the Functions host starts (host.json `customHandler`). Listens on
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` only, and on SIGTERM/SIGINT stops accepting and lets
//! in-flight invocations finish.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::ConfigError;

/// The variable the host sets to the port it will call (PROTOCOL §1).
pub const PORT_VAR: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

/// The default of `--shutdown-grace-secs`: host.json's functionTimeout (10 min).
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 600;

/// Run the custom handler (started by the Azure Functions host).
///
/// The deploy binary reads these with its own small parser (`crate::args`: clap, with rand 0.9,
/// was 0.32 MiB of it for two flags); `vmrp serve` (the `cli` feature) derives them with clap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// Log JSON lines; automatic under the Functions host (FUNCTIONS_WORKER_RUNTIME is set).
    #[cfg_attr(feature = "cli", arg(long))]
    pub log_json: bool,
    /// After SIGTERM/SIGINT, how long in-flight invocations may take to finish. The default is
    /// host.json's functionTimeout (10 min): no invocation legitimately runs longer.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS))]
    pub shutdown_grace_secs: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            log_json: false,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

/// Why `vmrp serve` could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{PORT_VAR} is not set: the Azure Functions host sets it to the port it will call; to run by hand: {PORT_VAR}=8080 vmrp serve")]
    PortMissing,
    #[error("{PORT_VAR}={value:?} is not a TCP port (expected a whole number from 1 to 65535)")]
    PortInvalid { value: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("cannot install the SIGTERM/SIGINT handler: {0}")]
    Signal(io::Error),
    #[error("the HTTP server failed: {0}")]
    Serve(io::Error),
}

/// The port from the variable's value; `None` = unset.
pub fn port_from(value: Option<&str>) -> Result<u16, ServeError> {
    let value = value.ok_or(ServeError::PortMissing)?;
    match value.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ServeError::PortInvalid {
            value: value.to_string(),
        }),
    }
}

/// The runtime the deploy binary serves on (`vmrp serve` uses `#[tokio::main]`'s): one thread
/// runs every invocation (tokio's blocking pool still takes blocking work, e.g. DNS lookups),
/// and one malloc arena serves every thread ([`one_malloc_arena`]).
///
/// Why not a worker per core: an invocation is I/O (one ARM GET and one Service Bus send per
/// poll, ~0.2 ms of CPU), so one thread keeps up with the host's 16 concurrent calls; workers
/// per core cost memory (a stack and an arena each, and the scheduler's own code) and CPU (work
/// stealing, cross-thread wake-ups). Measured side by side (docs/bench.md): CPU per poll −7 %,
/// cold start −40 %, peak RSS −0.3 MiB. A long CPU-bound step (planning a large
/// subscription) delays the other invocations of this instance by its length, as it would on
/// the one vCPU a small Flex Consumption instance has.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    one_malloc_arena();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The malloc arenas glibc may create: 1, unless the process was given `MALLOC_ARENA_MAX`.
///
/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and an arena
/// keeps the pages of its peak. Under the 10,000-poll load on two tokio workers each worker's
/// arena held ~1.5 MiB, much of it free memory the other could not reuse (one arena: peak RSS
/// 12.4 → 11.6 MiB, docs/bench.md). The runtime now has one thread, but tokio's blocking pool
/// (DNS lookups) still starts threads; they share the one arena too. The allocation fast path
/// (glibc's per-thread tcache) takes no lock. `MALLOC_ARENA_MAX` would do the same, but it is
/// an app setting someone must remember; called before any thread is spawned.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of glibc's allocator; M_ARENA_MAX is valid at any
        // time (arenas already created stay, new threads share the existing ones).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// `vmrp serve`. Logging is expected to be initialised by the caller (`logging::init`).
pub async fn run(args: ServeArgs) -> Result<ExitCode, ServeError> {
    let port = match std::env::var(PORT_VAR) {
        Ok(v) => port_from(Some(&v))?,
        Err(std::env::VarError::NotPresent) => port_from(None)?,
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(ServeError::PortInvalid {
                value: v.to_string_lossy().into_owned(),
            })
        }
    };
    let deps = crate::config::deps_from_env().await?;
    // Signals first: a SIGTERM right after we announce readiness must not kill us mid-start.
    let shutdown = shutdown_signal().map_err(ServeError::Signal)?;
    // The host always calls the literal 127.0.0.1 (PROTOCOL §1); nothing else may reach us.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|source| ServeError::Bind { port, source })?;
    tracing::info!(
        address = %format!("127.0.0.1:{port}"),
        version = env!("CARGO_PKG_VERSION"),
        "vmrp serve listening"
    );
    serve_on(
        listener,
        super::app(deps),
        shutdown,
        Duration::from_secs(args.shutdown_grace_secs),
    )
    .await
    .map_err(ServeError::Serve)?;
    tracing::info!("vmrp serve stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves `router` until `shutdown` resolves, then waits up to `grace` for in-flight requests.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = rx => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, waiting for in-flight invocations"
    );
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight invocations did not finish in time; exiting anyway"
            );
            Ok(())
        }
    }
}

/// Registers SIGTERM and SIGINT now; the returned future resolves on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "ctrl-c", "shutdown requested");
        } else {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_values() {
        let cases: &[(Option<&str>, Result<u16, &str>)] = &[
            (Some("8080"), Ok(8080)),
            (Some(" 38123 "), Ok(38123)),
            (Some("65535"), Ok(65535)),
            (None, Err("FUNCTIONS_CUSTOMHANDLER_PORT is not set")),
            (
                Some(""),
                Err("FUNCTIONS_CUSTOMHANDLER_PORT=\"\" is not a TCP port"),
            ),
            (Some("0"), Err("is not a TCP port")),
            (Some("65536"), Err("is not a TCP port")),
            (Some("-1"), Err("is not a TCP port")),
            (
                Some("http"),
                Err("FUNCTIONS_CUSTOMHANDLER_PORT=\"http\" is not a TCP port"),
            ),
        ];
        for (value, want) in cases {
            match (port_from(*value), want) {
                (Ok(p), Ok(w)) => assert_eq!(p, *w),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{value:?}: {e}"),
                (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
