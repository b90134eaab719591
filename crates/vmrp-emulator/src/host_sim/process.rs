//! The handler processes: readiness probes, spawning, console forwarding and the supervisor
//! that restarts a handler after a crash or kill.

use super::*;

impl HostSim {
    pub(super) async fn probe_until_ready(&self, port: u16, limit: Duration) -> bool {
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            // Any HTTP answer, 404 included, means ready (PROTOCOL §1).
            let probe = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok() {
                return true;
            }
            if self.stopping() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub(super) fn spawn_child(&self, port: u16) -> Result<tokio::process::Child, String> {
        let host = &self.app.host;
        let settings = &self.config.app_settings;
        let lookup = |name: &str| {
            settings
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        };
        let exe = expand_percent(&host.executable, &lookup);
        let in_root = self.app.root.join(&exe);
        let program = if let Some(path) = &self.config.executable_override {
            path.clone()
        } else if Path::new(&exe).is_relative() && in_root.is_file() {
            in_root
        } else {
            PathBuf::from(&exe)
        };
        // A relative path names a file from where we were started; the child starts in the app
        // root, where `pkg/vmrp` would name `pkg/pkg/vmrp`. A bare name stays a PATH lookup.
        let program = if program.is_relative() && program.components().count() > 1 {
            std::path::absolute(&program).unwrap_or(program)
        } else {
            program
        };
        let args: Vec<String> = host
            .arguments
            .iter()
            .map(|a| expand_percent(a, &lookup))
            .filter(|a| !a.is_empty())
            .collect();
        let cwd = if host.working_directory.is_empty() {
            self.app.root.clone()
        } else {
            self.app.root.join(&host.working_directory)
        };
        let worker_id = uuid::Uuid::new_v4().to_string();
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&cwd)
            .envs(settings)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &self.app.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        if let Some(out) = child.stdout.take() {
            self.forward_console(out, false);
        }
        if let Some(err) = child.stderr.take() {
            self.forward_console(err, true);
        }
        Ok(child)
    }

    pub(super) fn forward_console<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        &self,
        pipe: R,
        stderr: bool,
    ) {
        let sink = ConsoleSink(self.console_tail.clone());
        let log_path = self.config.console_log.clone();
        tokio::spawn(async move {
            let mut log_file = match &log_path {
                Some(path) => match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::error!(path = %path.display(), "cannot open the console log: {e}");
                        None
                    }
                },
                None => None,
            };
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let level = console_level(stderr, &line);
                match level {
                    ConsoleLevel::Error => {
                        tracing::error!(target: "Host.Function.Console", "{line}")
                    }
                    ConsoleLevel::Warning => {
                        tracing::warn!(target: "Host.Function.Console", "{line}")
                    }
                    ConsoleLevel::Information => {
                        tracing::info!(target: "Host.Function.Console", "{line}")
                    }
                }
                if let Some(f) = log_file.as_mut() {
                    use std::io::Write;
                    // The level the host gives the line, then the line: what Application
                    // Insights would show as severityLevel and message. One write of the whole
                    // line: every instance's stdout and stderr append to this file, and
                    // `writeln!` on a `File` writes piece by piece, so lines could interleave
                    // (seen: a line starting with the tab, its level in another line).
                    let _ = f.write_all(format!("{}\t{line}\n", level.as_str()).as_bytes());
                }
                sink.push(ConsoleLine {
                    level,
                    stderr,
                    message: line,
                });
            }
        });
    }

    /// Starts one handler instance, restarts it after crashes and kills, stops it on `stop()`.
    pub(super) async fn supervise(self: Arc<Self>, inst: Arc<Instance>) {
        let mut stop_rx = self.stop_tx.subscribe();
        let mut failed_starts = 0u32;
        loop {
            if self.stopping() {
                break;
            }
            inst.state_tx.send_replace(HandlerState::Starting);
            let mut child = match self.spawn_child(inst.port) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("custom handler: {e}");
                    inst.state_tx.send_replace(HandlerState::Stopped(e));
                    return;
                }
            };
            self.count(|c| c.handler_starts += 1);
            inst.count(|c| c.starts += 1);
            let probe = {
                let (s, port) = (self.clone(), inst.port);
                async move {
                    s.probe_until_ready(port, s.app.host.initialization_timeout)
                        .await
                }
            };
            tokio::pin!(probe);
            let mut probing = true;
            let mut became_ready = false;
            let mut killed = false;
            let status = loop {
                tokio::select! {
                    ready = &mut probe, if probing => {
                        probing = false;
                        if ready {
                            became_ready = true;
                            failed_starts = 0;
                            inst.state_tx.send_replace(HandlerState::Ready);
                        } else {
                            tracing::error!("custom handler not ready after {:?}; restarting", self.app.host.initialization_timeout);
                            let _ = child.start_kill();
                        }
                    }
                    status = child.wait() => break status.ok(),
                    _ = inst.kill.notified() => {
                        killed = true;
                        let _ = child.start_kill();
                    }
                    _ = stop_rx.changed() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return;
                    }
                }
            };
            if self.stopping() {
                return;
            }
            let code = status.and_then(|s| s.code());
            tracing::warn!(exit_code = ?code, killed, instance = inst.index, "custom handler exited");
            if !became_ready {
                failed_starts += 1;
                if failed_starts >= self.config.max_failed_starts {
                    inst.state_tx.send_replace(HandlerState::Stopped(format!(
                        "{failed_starts} consecutive starts never became ready"
                    )));
                    return;
                }
            }
            match code {
                Some(0) if !killed => {
                    // Exit 0: the host does not restart; later invocations fail.
                    inst.state_tx
                        .send_replace(HandlerState::Stopped("handler exited with code 0".into()));
                    return;
                }
                Some(200) if !killed => {} // intentional restart, not an error
                _ => {
                    self.count(|c| c.handler_restarts += 1);
                    inst.count(|c| c.restarts += 1);
                }
            }
        }
    }

    pub(super) fn restart_after_timeout(&self, inst: &Instance) {
        if self.config.launch == HandlerLaunch::Spawn {
            inst.kill.notify_one();
        }
    }
}
