//! The triggers and invocations: timers, queue listeners, Event Grid delivery, the call to the
//! handler and its output bindings.

use super::*;

impl HostSim {
    pub(super) fn start_triggers(self: &Arc<Self>) -> Result<(), HostSimError> {
        for f in self.app.functions.clone() {
            match &f.trigger {
                Trigger::Timer { schedule, .. } => {
                    let parsed = Schedule::parse(schedule).map_err(|e| HostSimError::Invalid {
                        path: self.app.root.join(&f.name).join("function.json"),
                        reason: e.to_string(),
                    })?;
                    // Evaluated now, when the listener starts (not when the task first runs),
                    // so a clock jump right after start() counts as missed occurrences.
                    let now = self.clock.now();
                    let first = parsed.next_after(now);
                    let s = self.clone();
                    self.track(tokio::spawn(async move {
                        s.run_timer(f, parsed, now, first).await
                    }));
                }
                Trigger::ServiceBus { queue, .. } => {
                    if self.bus.counters(queue).is_err() {
                        return Err(HostSimError::Invalid {
                            path: self.app.root.join(&f.name).join("function.json"),
                            reason: format!(
                                "queue {queue:?} does not exist in the emulated namespace"
                            ),
                        });
                    }
                    let s = self.clone();
                    self.track(tokio::spawn(async move { s.run_queue(f).await }));
                }
                Trigger::EventGrid { .. } | Trigger::Other { .. } => {}
            }
        }
        Ok(())
    }

    pub(super) async fn run_timer(
        self: Arc<Self>,
        f: FunctionDef,
        schedule: Schedule,
        started: OffsetDateTime,
        first: Option<OffsetDateTime>,
    ) {
        let Trigger::Timer {
            run_on_startup,
            use_monitor,
            ..
        } = f.trigger
        else {
            return;
        };
        // The host disables the schedule monitor for sub-minute schedules (a few upcoming
        // occurrences tell; scanning a whole year is slow for per-minute schedules).
        let upcoming = schedule.occurrences(started, started + time::Duration::days(2), 64);
        let monitored = use_monitor
            && upcoming
                .windows(2)
                .all(|w| w[1] - w[0] >= time::Duration::minutes(1));
        let mut fired = 0u32;
        let limit = self.config.timer_ticks;
        let mut stop_rx = self.stop_tx.subscribe();
        if run_on_startup && limit.is_none_or(|n| n > 0) {
            let now = self.clock.now();
            self.fire_timer_at(&f, now, false, monitored).await;
            fired += 1;
        }
        let mut next = first;
        while let Some(occurrence) = next {
            if limit.is_some_and(|n| fired >= n) || self.stopping() {
                return;
            }
            tokio::select! {
                _ = self.clock.sleep_until(occurrence) => {}
                _ = stop_rx.changed() => return,
            }
            // A clock jump past several occurrences runs once, past due, for the latest.
            let now = self.clock.now();
            let latest = schedule
                .latest_at_or_before(now)
                .unwrap_or(occurrence)
                .max(occurrence);
            self.fire_timer_at(&f, latest, latest > occurrence, monitored)
                .await;
            fired += 1;
            next = schedule.next_after(self.clock.now().max(latest));
        }
    }

    pub(super) async fn fire_timer_at(
        &self,
        f: &FunctionDef,
        occurrence: OffsetDateTime,
        past_due: bool,
        monitored: bool,
    ) -> InvocationRecord {
        let Trigger::Timer { binding, .. } = &f.trigger else {
            unreachable!("timer functions only");
        };
        let now = self.clock.now();
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&f.name)
            .copied()
            .unwrap_or(TimerState {
                last: None,
                last_updated: now,
            });
        let status = monitored.then(|| ScheduleStatus {
            last: previous.last.unwrap_or_else(dotnet_min_value),
            next: occurrence,
            last_updated: previous.last_updated,
        });
        // A failed run is retried only under a function-level retry policy (PROTOCOL §4.6);
        // without one the tick is simply lost until the next occurrence, as on the real host.
        let mut retry = f.retry.as_ref().map(|p| RetryContext {
            retry_count: 0,
            max_retry_count: p.max_retry_count,
            exception: None,
        });
        let mut record;
        loop {
            let at = self.clock.now();
            let body =
                timer_body_with_retry(&f.name, binding, status, past_due, at, retry.as_ref());
            record = self.invoke(f, "timer", body, None, None).await;
            let (Some(policy), Some(ctx)) = (&f.retry, retry.as_mut()) else {
                break;
            };
            if record.status == InvocationStatus::Succeeded
                || ctx.retry_count >= policy.max_retry_count
                || self.stopping()
            {
                break;
            }
            ctx.retry_count += 1;
            ctx.exception = Some(
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", record.status)),
            );
            self.count(|c| c.timer_retries += 1);
            let mut stop_rx = self.stop_tx.subscribe();
            tokio::select! {
                _ = self.clock.sleep_until(self.clock.now() + policy.delay(ctx.retry_count)) => {}
                _ = stop_rx.changed() => break,
            }
        }
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                f.name.clone(),
                TimerState {
                    last: Some(now),
                    last_updated: self.clock.now(),
                },
            );
        record
    }

    /// Runs a timer function once now (control endpoint, tests); not past due.
    pub async fn fire_timer(&self, function: &str) -> Result<InvocationRecord, HostSimError> {
        let f = self
            .app
            .function(function)
            .filter(|f| matches!(f.trigger, Trigger::Timer { .. }))
            .ok_or_else(|| HostSimError::BadEvent(format!("no timer function named {function:?}")))?
            .clone();
        let now = self.clock.now();
        Ok(self.fire_timer_at(&f, now, false, true).await)
    }

    pub(super) async fn run_queue(self: Arc<Self>, f: FunctionDef) {
        let Trigger::ServiceBus { queue, .. } = &f.trigger else {
            return;
        };
        let queue = queue.clone();
        // maxConcurrentCalls is per instance: N instances take up to N times as many at once.
        let permits = Arc::new(Semaphore::new(
            self.app.host.max_concurrent_calls * self.instances.len(),
        ));
        let f = Arc::new(f);
        loop {
            if self.stopping() {
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            match self.bus.receive(&queue) {
                Ok(Some(delivery)) => {
                    // The host renews the lock up to maxAutoLockRenewalDuration.
                    let until = self.clock.now() + self.app.host.max_auto_lock_renewal;
                    self.bus.renew_lock(&queue, &delivery.lock_token, until);
                    let s = self.clone();
                    let f = f.clone();
                    tokio::spawn(async move {
                        s.deliver(&f, delivery).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let wait = self
                        .bus
                        .next_available_at(&queue)
                        .map(|t| self.clock.real_until(t))
                        .unwrap_or(Duration::from_millis(50))
                        .clamp(Duration::from_millis(2), Duration::from_millis(50));
                    tokio::select! {
                        _ = self.bus.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    tracing::error!("listener for {}: {e}", f.name);
                    return;
                }
            }
        }
    }

    pub(super) async fn deliver(&self, f: &FunctionDef, delivery: Delivery) {
        let Trigger::ServiceBus {
            binding, binary, ..
        } = &f.trigger
        else {
            return;
        };
        let body = service_bus_body(
            &f.name,
            binding,
            *binary,
            &delivery,
            &self.client,
            self.clock.now(),
        );
        let invocation = self.invoke(
            f,
            "serviceBus",
            body,
            Some(delivery.message.delivery_count),
            Some(delivery.message.message_id.clone()),
        );
        let record = tokio::select! {
            record = invocation => record,
            never = self.renew_while_running(&delivery) => match never {},
        };
        if record.status == InvocationStatus::Succeeded {
            self.bus.complete(&delivery.queue, &delivery.lock_token);
        } else {
            self.bus.abandon(&delivery.queue, &delivery.lock_token);
        }
    }

    /// Keeps the lock of a message whose invocation runs for as long as functionTimeout's real
    /// floor ([`HostSimConfig::min_real_function_timeout`]): the initial renewal covers
    /// maxAutoLockRenewalDuration of virtual time only, which at high speed is less than the
    /// real time a busy handler needs, and a lost lock means a redelivery of a message that is
    /// being handled (and a dead letter once DeliveryCount reaches the maximum). Never returns.
    pub(super) async fn renew_while_running(
        &self,
        delivery: &Delivery,
    ) -> std::convert::Infallible {
        let real_start = Instant::now();
        let virtual_until = self.clock.now() + self.app.host.max_auto_lock_renewal;
        let lock_duration = self.bus.config().lock_duration;
        while real_start.elapsed() < self.config.min_real_function_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let until = virtual_until.max(self.clock.now() + lock_duration);
            self.bus
                .renew_lock(&delivery.queue, &delivery.lock_token, until);
        }
        std::future::pending().await
    }

    /// Injects Event Grid events (one invocation per event and eventGridTrigger function),
    /// delivered in the background with retries. Returns the event ids.
    pub fn inject_events(self: &Arc<Self>, body: Value) -> Result<Vec<String>, HostSimError> {
        let events = normalize_events(body, self.clock.now())?;
        let functions: Vec<FunctionDef> = self
            .app
            .functions
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::EventGrid { .. }))
            .cloned()
            .collect();
        if functions.is_empty() {
            return Err(HostSimError::BadEvent(
                "the app has no eventGridTrigger function".into(),
            ));
        }
        let mut ids = Vec::new();
        for event in events {
            ids.push(event["id"].as_str().unwrap_or_default().to_string());
            for f in &functions {
                let s = self.clone();
                let f = f.clone();
                let event = event.clone();
                self.track(tokio::spawn(async move { s.deliver_event(f, event).await }));
            }
        }
        Ok(ids)
    }

    pub(super) async fn deliver_event(&self, f: FunctionDef, event: Value) {
        let Trigger::EventGrid { binding } = &f.trigger else {
            return;
        };
        let delays = self.config.event_grid_retry_delays.clone();
        for attempt in 0..=delays.len() {
            let body = event_grid_body(&f.name, binding, &event, self.clock.now());
            let record = self
                .invoke(&f, "eventGrid", body, Some(attempt as u32 + 1), None)
                .await;
            if record.status == InvocationStatus::Succeeded {
                return;
            }
            match delays.get(attempt) {
                Some(delay) => {
                    let at = self.clock.now() + *delay;
                    self.clock.sleep_until(at).await;
                }
                None => {
                    self.count(|c| c.event_grid_dead_lettered += 1);
                    self.event_grid_dead
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(serde_json::json!({
                            "function": f.name,
                            "event": event,
                            "deliveryAttempts": attempt + 1,
                            "lastError": record.error,
                        }));
                    return;
                }
            }
        }
    }

    /// Sends one invocation and classifies the reply (§4.2), then records it.
    pub(super) async fn invoke(
        &self,
        f: &FunctionDef,
        trigger: &'static str,
        body: String,
        delivery_count: Option<u32>,
        message_id: Option<String>,
    ) -> InvocationRecord {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let started = self.clock.now();
        let real_start = Instant::now();
        let timer = trigger == "timer";
        let inst = self.dispatch();
        inst.count(|c| c.invocations += 1);
        inst.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if timer {
            self.timers_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = self
            .call_handler(f, &inst, &invocation_id, body, started)
            .await;
        if timer {
            self.timers_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        inst.in_flight.fetch_sub(1, Ordering::Relaxed);
        let record = InvocationRecord {
            invocation_id,
            function: f.name.clone(),
            trigger,
            instance: inst.index,
            status: outcome.status,
            http_status: outcome.http_status,
            error: outcome.error,
            started,
            duration_ms: real_start.elapsed().as_millis() as u64,
            delivery_count,
            message_id,
            response: outcome.response,
        };
        if record.status != InvocationStatus::Succeeded {
            tracing::warn!(function = %record.function, status = ?record.status, error = ?record.error, "invocation failed");
        }
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record.clone());
        record
    }

    pub(super) async fn call_handler(
        &self,
        f: &FunctionDef,
        inst: &Instance,
        invocation_id: &str,
        body: String,
        started: OffsetDateTime,
    ) -> Outcome {
        let fail = failed;
        if let Err(e) = inst
            .wait_ready(self.app.host.initialization_timeout * 4)
            .await
        {
            return fail(e, None);
        }
        let deadline = self.app.host.function_timeout.map(|t| started + t);
        let (status, content_type, bytes) =
            match self.exchange(f, inst, invocation_id, body, deadline).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
        if !(200..300).contains(&status) {
            // The host only reads the status, but keeping the handler's error body lets tests
            // and the dump say why the invocation failed.
            return Outcome {
                response: serde_json::from_slice(&bytes).ok(),
                ..fail(
                    "Response status code does not indicate success".to_string(),
                    Some(status),
                )
            };
        }
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() || text.trim() == "null" {
            // The real host never completes such an invocation: it hangs until functionTimeout,
            // which then restarts the handler (PROTOCOL §4.2).
            self.count(|c| c.protocol_violations += 1);
            if let Some(d) = deadline {
                self.clock.sleep_until(d).await;
                self.count(|c| c.timeouts += 1);
                self.restart_after_timeout(inst);
            }
            return Outcome {
                status: InvocationStatus::ProtocolViolation,
                http_status: Some(status),
                error: Some(
                    "2xx with an empty or null body: the host hangs until functionTimeout".into(),
                ),
                response: None,
            };
        }
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if media != "application/json" && media != "text/json" {
            return fail(
                format!("reply Content-Type {content_type:?} is not application/json"),
                Some(status),
            );
        }
        let parsed: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return fail(format!("reply is not JSON: {e}"), Some(status)),
        };
        if let Some(logs) = prop(&parsed, "Logs").and_then(Value::as_array) {
            for line in logs {
                let line = line
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| line.to_string());
                tracing::info!(target: "Function.User", function = %f.name, "{line}");
            }
        }
        if let Err(e) = self.apply_outputs(f, &parsed) {
            return fail(e, Some(status));
        }
        Outcome {
            status: InvocationStatus::Succeeded,
            http_status: Some(status),
            error: None,
            response: Some(parsed),
        }
    }

    /// POSTs the invocation to the handler instance and reads its reply (status, Content-Type,
    /// body); a connection error, an unreadable reply, or no reply before `deadline` (the
    /// handler is then restarted) is the invocation's outcome.
    async fn exchange(
        &self,
        f: &FunctionDef,
        inst: &Instance,
        invocation_id: &str,
        body: String,
        deadline: Option<OffsetDateTime>,
    ) -> Result<(u16, String, axum::body::Bytes), Outcome> {
        let fail = failed;
        let url = format!("http://127.0.0.1:{}/{}", inst.port, f.name);
        // A one-chunk stream: no Content-Length, so HTTP/1.1 goes chunked like the host's.
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let request = self
            .http
            .post(url)
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(stream));
        let exchange = async {
            let resp = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    // A crashed handler: give the supervisor a moment to notice the exit, so the
                    // redelivery waits for the restart instead of burning DeliveryCount at once
                    // (the real host's dispatcher learns of the exit about as fast).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(fail(format!("connection error: {e}"), None));
                }
            };
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| fail(format!("reading the reply: {e}"), Some(status)))?;
            Ok::<_, Outcome>((status, content_type, bytes))
        };
        let timed = async {
            match deadline {
                Some(d) => {
                    let real_floor = tokio::time::sleep(self.config.min_real_function_timeout);
                    tokio::select! {
                        r = exchange => Some(r),
                        _ = async { tokio::join!(self.clock.sleep_until(d), real_floor) } => None,
                    }
                }
                None => Some(exchange.await),
            }
        };
        match timed.await {
            None => {
                self.count(|c| c.timeouts += 1);
                self.restart_after_timeout(inst);
                Err(Outcome {
                    status: InvocationStatus::TimedOut,
                    http_status: None,
                    error: Some("no reply within functionTimeout; handler restarted".into()),
                    response: None,
                })
            }
            Some(r) => r,
        }
    }

    pub(super) fn apply_outputs(&self, f: &FunctionDef, reply: &Value) -> Result<(), String> {
        let mut outputs: Map<String, Value> = prop(reply, "Outputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // ReturnValue as an object supplies further outputs when there is no $return (§4.3).
        if let Some(Value::Object(rv)) = prop(reply, "ReturnValue") {
            for (k, v) in rv {
                outputs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for binding in &f.outputs {
            let Some(value) = outputs.get(&binding.name) else {
                continue;
            };
            for text in output_messages(value) {
                self.bus
                    .send(
                        &binding.queue,
                        NewMessage {
                            body: text,
                            content_type: Some("text/plain".into()),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| format!("output binding {}: {e}", binding.name))?;
                self.count(|c| c.output_messages_sent += 1);
            }
        }
        Ok(())
    }
}

/// A failed invocation: `error`, with the handler's HTTP status when it answered.
fn failed(error: String, http_status: Option<u16>) -> Outcome {
    Outcome {
        status: InvocationStatus::Failed,
        http_status,
        error: Some(error),
        response: None,
    }
}
