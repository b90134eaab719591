//! Per-invocation figures: polled points that stay `Creating`, the handler processes of vmrp and the peer, cold start, load runs, peak RSS and CPU.

use super::*;

/// A restore point that stays `Creating`, and what a poll message for it needs.
#[derive(Debug, Clone)]
pub(super) struct PolledPoint {
    point: ResourceId,
    vm: ResourceId,
    tick: OffsetDateTime,
}

/// Cold start, peak RSS and CPU per invocation for each contender, alternating.
pub(super) async fn per_invocation_figures(
    contenders: &[Contender],
    runs: usize,
    load_runs: usize,
    invocations: usize,
) -> Result<Value, String> {
    let now = OffsetDateTime::now_utc();
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: now.replace_nanosecond(0).unwrap_or(now),
        seed: 8,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: POLLED_POINTS,
                tagged_fraction: 1.0,
                ephemeral_os_fraction: 0.0,
                shared_disk_fraction: 0.0,
                ultra_disk_fraction: 0.0,
                premium_v2_fraction: 0.0,
                seed: 8,
                ..FleetSpec::default()
            },
            // Points stay `Creating`: every poll requeues (the common path).
            timings: Timings {
                local_create_secs: (30.0 * 86_400.0, 30.0 * 86_400.0),
                ..Timings::default()
            },
            // Throttling is the fleet figure's subject; here it would only add noise.
            throttle: ThrottleConfig {
                enabled: false,
                ..ThrottleConfig::default()
            },
            ..ArmConfig::default()
        },
        require_arm_auth: false,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| format!("emulator: {e}"))?;
    let points = create_points(&emulator).await?;
    let settings = handler_settings(&emulator);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("vmrp-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;

    let mut cold: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut loads: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    // Each run's messages carry fresh attempt numbers, so no send is a duplicate of another.
    let mut attempt_base = 0u32;
    let per_round = (invocations / POLLED_POINTS + 2) as u32;
    for round in 0..runs {
        for c in contenders {
            attempt_base += 1;
            let envelope = poll_envelope(&emulator, &points[round % points.len()], attempt_base);
            let log = work.path().join(format!("{}-cold-{round}.log", c.name));
            let mut child = spawn(c, &settings, &log)?;
            let result = wait_first_success(&client, &mut child, &envelope).await;
            let _ = child.process.kill().await;
            let ms = result
                .map_err(|e| format!("{} cold start: {e} (log: {})", c.name, log.display()))?;
            eprintln!("  cold start {:>4}: {ms:7.1} ms", c.name);
            cold.entry(c.name).or_default().push(ms);
        }
    }
    for round in 0..load_runs {
        for c in contenders {
            let log = work.path().join(format!("{}-load-{round}.log", c.name));
            let sample = load_run(
                c,
                &emulator,
                &settings,
                &client,
                &points,
                invocations,
                attempt_base,
                &log,
            )
            .await
            .map_err(|e| format!("{} load: {e} (log: {})", c.name, log.display()))?;
            attempt_base += per_round;
            eprintln!("  load {:>4}: {sample}", c.name);
            loads.entry(c.name).or_default().push(sample);
        }
    }
    let mut out = serde_json::Map::new();
    for c in contenders {
        let samples = loads.get(c.name).cloned().unwrap_or_default();
        let field =
            |k: &str| -> Vec<f64> { samples.iter().filter_map(|s| s[k].as_f64()).collect() };
        out.insert(
            c.name.to_string(),
            json!({
                "command": c.command,
                "coldStartMs": stats_json(cold.get(c.name).map(Vec::as_slice).unwrap_or(&[])),
                "peakRssMib": stats_json(&field("peakRssMib")),
                "cpuUsPerInvocation": stats_json(&field("cpuUsPerInvocation")),
                "invocationsPerSec": stats_json(&field("invocationsPerSec")),
                "loadRuns": samples,
            }),
        );
    }
    emulator.stop().await.map_err(|e| e.to_string())?;
    Ok(Value::Object(out))
}

/// One collection and one point per VM, through the emulator's ARM API like any client.
pub(super) async fn create_points(emulator: &RunningEmulator) -> Result<Vec<PolledPoint>, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let tick = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?
        .replace_second(0)
        .map_err(|e| e.to_string())?;
    let api = crate::azure::models::API_VERSION;
    let base = emulator.urls.arm.trim_end_matches('/');
    // ARM (and the emulator) refuses a request without a bearer token: one from the emulator's
    // own identity endpoint, for the audience the handlers use.
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let mut out = Vec::new();
    for vm in emulator.arm.list_vms() {
        let Some(vm_id) = vm.resource_id() else {
            continue;
        };
        let collection = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/restorePointCollections/{}",
            vm_id.subscription(),
            vm_id.resource_group().unwrap_or_default(),
            names::collection_name(&vm_id)
        );
        let point = format!(
            "{collection}/restorePoints/{}",
            names::restore_point_name(tick, 0)
        );
        let location = vm.location.clone().unwrap_or_default();
        for (url, body) in [
            (
                &collection,
                json!({"location": location, "properties": {"source": {"id": vm_id.as_str()}}}),
            ),
            (&point, json!({"properties": {}})),
        ] {
            let rsp = http
                .put(format!("{base}{url}?api-version={api}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("PUT {url}: {e}"))?;
            if !rsp.status().is_success() {
                let status = rsp.status();
                let text = rsp.text().await.unwrap_or_default();
                return Err(format!("PUT {url}: {status}: {text}"));
            }
        }
        out.push(PolledPoint {
            point: ResourceId::parse(&point).map_err(|e| e.to_string())?,
            vm: vm_id,
            tick,
        });
    }
    if out.is_empty() {
        return Err("the emulator's fleet has no VMs to create points for".into());
    }
    Ok(out)
}

/// What the host gives a handler: the emulator's settings plus vmrp's own (the peer ignores them).
pub(super) fn handler_settings(emulator: &RunningEmulator) -> BTreeMap<String, String> {
    let mut settings = emulator.handler_settings(BusAuth::Sas);
    let policy = crate::local::default_policy(&emulator.subscriptions, &[], ("vmrp", "on"));
    settings.insert(
        "VMRP_POLICY".into(),
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        serde_json::to_string(&policy).expect("policy serialises"),
    );
    settings.insert("VMRP_LOOPBACK_ONLY".into(), "1".into());
    settings
}

/// The host envelope of a PollRestorePoint invocation for `point`, poll number `attempt`.
pub(super) fn poll_envelope(
    emulator: &RunningEmulator,
    point: &PolledPoint,
    attempt: u32,
) -> String {
    let now = emulator.clock.now();
    let msg = PollRequest {
        target: point.point.clone(),
        role: Role::Local,
        attempt,
        first_seen: point.tick,
        deadline: now + time::Duration::days(30),
        vm: point.vm.clone(),
        tick: point.tick,
        rule: Some("local-demo".into()),
        retry: 0,
        copy_to: Vec::new(),
        source: None,
        target_region: None,
        prune_again: 0,
    };
    let message = OutgoingMessage {
        queue: Queue::Poll,
        message_id: names::message_id("poll", point.point.as_str(), point.tick, attempt),
        body: QueueMessage::Poll(msg).encode(),
        not_before: None,
    };
    queue_envelope(emulator, "PollRestorePoint", message, i64::from(attempt))
}

/// The host envelope of the PlanRestorePoints invocation that plans `subscription` at `tick`
/// (the message the timer sends, `schedule_restore_points::plan_message`).
pub(super) fn plan_envelope(
    emulator: &RunningEmulator,
    subscription: &str,
    tick: OffsetDateTime,
) -> String {
    let message =
        crate::functions::schedule_restore_points::plan_message(subscription, tick, 0, None);
    queue_envelope(emulator, crate::functions::PLAN_RESTORE_POINTS, message, 1)
}

/// The host envelope of a `function` invocation delivering `message` from its queue, first
/// delivery, as the Functions host hands it over.
fn queue_envelope(
    emulator: &RunningEmulator,
    function: &str,
    message: OutgoingMessage,
    sequence_number: i64,
) -> String {
    let now = emulator.clock.now();
    let stored = StoredMessage {
        sequence_number,
        message_id: message.message_id,
        body: message.body,
        content_type: Some("application/json".into()),
        correlation_id: None,
        subject: None,
        reply_to: None,
        to: None,
        session_id: None,
        reply_to_session_id: None,
        partition_key: None,
        application_properties: serde_json::Map::new(),
        enqueued_time: now,
        scheduled_enqueue_time: None,
        expires_at: now + time::Duration::days(14),
        available_at: now,
        delivery_count: 1,
        lock_token: None,
        locked_until: None,
        duplicated: false,
    };
    let delivery = Delivery {
        queue: message.queue.name().into(),
        message: stored,
        lock_token: uuid::Uuid::new_v4().to_string(),
    };
    let client = ClientInfo {
        fully_qualified_namespace: format!(
            "{}.servicebus.windows.net",
            emulator.bus.config().namespace
        ),
        identifier: "vmrp-bench".into(),
    };
    service_bus_body(function, "msg", false, &delivery, &client, now)
}

pub(super) struct Running {
    process: tokio::process::Child,
    pid: i32,
    port: u16,
}

pub(super) fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts a handler the way the host does: app settings + FUNCTIONS_CUSTOMHANDLER_PORT.
pub(super) fn spawn(
    c: &Contender,
    settings: &BTreeMap<String, String>,
    log: &std::path::Path,
) -> Result<Running, String> {
    let port = free_port()?;
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new(&c.command[0]);
    cmd.args(&c.command[1..])
        .envs(settings)
        // The handler's own default log level, as deployed.
        .env_remove("RUST_LOG")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let process = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.command))?;
    let pid = process
        .id()
        .ok_or("the handler exited at once")?
        .try_into()
        .map_err(|_| "pid out of range".to_string())?;
    Ok(Running { process, pid, port })
}

/// Milliseconds from spawn (well, from now; call right after [`spawn`]) to the first 2xx answer
/// to a PollRestorePoint invocation.
pub(super) async fn wait_first_success(
    client: &reqwest::Client,
    child: &mut Running,
    envelope: &str,
) -> Result<f64, String> {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{}/PollRestorePoint", child.port);
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(60) {
        match client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(envelope.to_string())
            .send()
            .await
        {
            Ok(rsp) if rsp.status().is_success() => {
                return Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(rsp) => {
                let status = rsp.status();
                let text = rsp.text().await.unwrap_or_default();
                last = format!(
                    "HTTP {status}: {}",
                    text.chars().take(600).collect::<String>()
                );
            }
            Err(e) => last = e.to_string(),
        }
        if let Ok(Some(status)) = child.process.try_wait() {
            return Err(format!(
                "the handler exited ({status}); last answer: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Err(format!("no 2xx within 60 s; last answer: {last}"))
}

/// Peak RSS (`VmHWM`, KiB) and real seconds of a handler process started for one invocation
/// alone: `envelope` posted once to `function` as soon as the handler listens, its 2xx awaited
/// (up to `timeout`). What one invocation costs, apart from the others an instance runs at once.
pub(super) async fn one_invocation_alone(
    c: &Contender,
    settings: &BTreeMap<String, String>,
    function: &str,
    envelope: &str,
    timeout: Duration,
    log: &std::path::Path,
) -> Result<(u64, f64), String> {
    let mut child = spawn(c, settings, log)?;
    let listening = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", child.port))
        .await
        .is_err()
    {
        if listening.elapsed() > Duration::from_secs(60) {
            return Err("the handler did not listen within 60 s".into());
        }
        if let Ok(Some(status)) = child.process.try_wait() {
            return Err(format!("the handler exited ({status})"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let answer = client
        .post(format!("http://127.0.0.1:{}/{function}", child.port))
        .header("Content-Type", "application/json")
        .body(envelope.to_string())
        .send()
        .await
        .map_err(|e| format!("{function}: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let status = answer.status();
    let peak = peak_rss_kib(child.pid);
    let _ = child.process.kill().await;
    if !status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Err(format!(
            "{function}: HTTP {status}: {}",
            text.chars().take(600).collect::<String>()
        ));
    }
    Ok((peak?, secs))
}

/// CPU seconds (user + system) the process has used so far.
pub(super) fn cpu_secs(pid: i32) -> Result<f64, String> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

pub(super) fn peak_rss_kib(pid: i32) -> Result<u64, String> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?
        .vmhwm
        .ok_or_else(|| format!("/proc/{pid}/status has no VmHWM"))
}

/// Starts a handler, waits until it answers, then sends `invocations` polls, 16 at a time.
#[allow(clippy::too_many_arguments)]
pub(super) async fn load_run(
    c: &Contender,
    emulator: &RunningEmulator,
    settings: &BTreeMap<String, String>,
    client: &reqwest::Client,
    points: &[PolledPoint],
    invocations: usize,
    attempt_base: u32,
    log: &std::path::Path,
) -> Result<Value, String> {
    let mut child = spawn(c, settings, log)?;
    let warm = poll_envelope(emulator, &points[0], attempt_base + 1);
    wait_first_success(client, &mut child, &warm).await?;
    let queued_before = emulator
        .bus
        .messages("rp-poll")
        .map(|m| m.len())
        .unwrap_or(0);
    // Envelopes are built before the clock starts: the harness's work is not the handler's.
    let envelopes: Arc<Vec<String>> = Arc::new(
        (0..invocations)
            .map(|i| {
                let attempt = attempt_base + 2 + (i / points.len()) as u32;
                poll_envelope(emulator, &points[i % points.len()], attempt)
            })
            .collect(),
    );
    let cpu_before = cpu_secs(child.pid)?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{}/PollRestorePoint", child.port);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (next, envelopes, client, url) =
            (next.clone(), envelopes.clone(), client.clone(), url.clone());
        workers.spawn(async move {
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(envelope) = envelopes.get(i) else {
                    break;
                };
                let key = match client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(envelope.clone())
                    .send()
                    .await
                {
                    Ok(rsp) if rsp.status().is_success() => match rsp.json::<Value>().await {
                        Ok(v) => v["ReturnValue"]["status"]
                            .as_str()
                            .unwrap_or("no status")
                            .to_string(),
                        Err(_) => "unreadable reply".into(),
                    },
                    Ok(rsp) => format!("HTTP {}", rsp.status().as_u16()),
                    Err(e) => format!("error: {e}"),
                };
                *statuses.entry(key).or_default() += 1;
            }
            statuses
        });
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        for (k, n) in done.map_err(|e| e.to_string())? {
            *statuses.entry(k).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_secs(child.pid)?;
    let peak = peak_rss_kib(child.pid)?;
    let _ = child.process.kill().await;
    let queued_after = emulator
        .bus
        .messages("rp-poll")
        .map(|m| m.len())
        .unwrap_or(0);
    let rescheduled = statuses.get("rescheduled").copied().unwrap_or(0);
    if rescheduled != invocations as u64 {
        return Err(format!(
            "expected {invocations} rescheduled polls, got {statuses:?}"
        ));
    }
    Ok(json!({
        "invocations": invocations,
        "statuses": statuses,
        "scheduledMessagesAdded": queued_after.saturating_sub(queued_before),
        "seconds": elapsed,
        "invocationsPerSec": invocations as f64 / elapsed,
        "cpuSeconds": cpu_after - cpu_before,
        "cpuUsPerInvocation": (cpu_after - cpu_before) * 1e6 / invocations as f64,
        "peakRssMib": peak as f64 / 1024.0,
    }))
}
