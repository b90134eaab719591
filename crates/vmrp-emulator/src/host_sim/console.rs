//! The handler's console: the level the host logs each line at, the kept tail, and the
//! tie between the handler's life and this process's.

use super::*;

/// The level the Functions host logs a custom handler's console line at (category
/// `Host.Function.Console`), as `WorkerProcess.cs` in Azure/azure-functions-host does
/// (`OnOutputDataReceived`, `ParseErrorMessageAndLog`; `HttpWorkerProcess` leaves
/// `useStdErrStreamForErrorsOnly` false): stdout is Information; stderr is Warning when the line
/// contains "warn", else Error when it contains "error", "fail" or "severe", else Information
/// (case-insensitive). Not modelled: lines starting `LanguageWorkerConsoleLog` go to the worker
/// logger instead (vmrp never writes them).
pub fn console_level(stderr: bool, line: &str) -> ConsoleLevel {
    if !stderr {
        return ConsoleLevel::Information;
    }
    let lower = line.to_ascii_lowercase();
    if lower.contains("warn") {
        ConsoleLevel::Warning
    } else if ["error", "fail", "severe"]
        .iter()
        .any(|k| lower.contains(k))
    {
        ConsoleLevel::Error
    } else {
        ConsoleLevel::Information
    }
}

/// The host's log levels a console line can get (Application Insights `severityLevel` 1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConsoleLevel {
    Information,
    Warning,
    Error,
}

impl ConsoleLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Information => "Information",
            Self::Warning => "Warning",
            Self::Error => "Error",
        }
    }
}

/// One console line of the handler as the host records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleLine {
    pub level: ConsoleLevel,
    /// Read from stderr (else stdout).
    pub stderr: bool,
    pub message: String,
}

/// Console lines forwarded from the handler; shared by the forwarding tasks and the dump.
pub(super) struct ConsoleSink(pub(super) Arc<Mutex<std::collections::VecDeque<ConsoleLine>>>);

impl ConsoleSink {
    pub(super) fn push(&self, line: ConsoleLine) {
        let mut tail = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() >= CONSOLE_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The handler dies with this process, however this process ends: `kill_on_drop` and `stop()`
/// cover an orderly exit, but a SIGKILL (or a SIGTERM nobody handles) runs no destructor, and
/// the orphaned `vmrp serve` would keep its port. On Linux the kernel sends the child SIGKILL
/// when the thread that spawned it exits; that is a tokio worker (or the test's thread), which
/// lives as long as the runtime. Elsewhere only the orderly paths apply.
pub(super) fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // getppid, both async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would signal us.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the host simulation exited"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
