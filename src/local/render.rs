//! The summary table, the summary line and the live progress bar of a run.

use super::*;

/// The summary table.
pub fn render(report: &LocalReport) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "VM",
        "region",
        "points per region",
        "last settled",
        "age",
        "failures",
    ]);
    for r in &report.rows {
        let per_region: Vec<String> = r
            .points_by_region
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        table.add_row([
            r.vm.clone(),
            r.region.clone(),
            per_region.join(", "),
            r.last_settled.clone().unwrap_or_else(|| "-".into()),
            r.last_settled_age_minutes
                .map(crate::commands::status::human_minutes)
                .unwrap_or_else(|| "-".into()),
            if r.failures.is_empty() {
                "-".into()
            } else {
                r.failures.join("; ")
            },
        ]);
    }
    table.to_string()
}

/// One line: what was expected, what settled, what failed.
pub fn summary_line(r: &LocalReport) -> String {
    format!(
        "{}: {} VMs × {} ticks — local {}/{} settled ({} nothing to restore, {} otherwise explained, {} unexplained), copies {}/{} settled ({} nothing to restore, {} otherwise explained, {} unexplained), {} duplicates, {} dead letters, {} handler panics, {} parked, {} × 429, {} ARM requests, {} handler instances, {} handler restarts; {:.0} h virtual in {:.1} s",
        if r.clean() {
            "coverage complete"
        } else if r.complete {
            "FAILED (coverage complete, but work was dead-lettered or parked, or the handler panicked)"
        } else {
            "COVERAGE INCOMPLETE"
        },
        r.vms,
        r.ticks.len(),
        r.local.settled,
        r.local.expected,
        r.local.nothing_to_restore(),
        r.local.failed.len() - r.local.unexplained() - r.local.nothing_to_restore(),
        r.local.unexplained(),
        r.copies.settled,
        r.copies.expected,
        r.copies.nothing_to_restore(),
        r.copies.failed.len() - r.copies.unexplained() - r.copies.nothing_to_restore(),
        r.copies.unexplained(),
        r.local.duplicates + r.copies.duplicates,
        r.dead_letters.len(),
        r.handler_panics,
        r.parked.len(),
        r.throttled_429,
        r.arm_requests,
        r.instances,
        r.handler_restarts,
        r.virtual_seconds as f64 / 3600.0,
        r.real_seconds,
    )
}

/// The virtual moment as the progress line shows it: to the second, no nanoseconds.
pub fn virtual_label(now: OffsetDateTime) -> String {
    let (h, m, s) = now.to_hms();
    format!("{} {h:02}:{m:02}:{s:02}", now.date())
}

/// Live progress on a terminal (hidden when stdout is not one).
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(super) fn new(show: bool, total: usize) -> Self {
        if !show {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} settled  {msg}",
            )
            // Invariant: a constant input (a fixed policy, date or template) that a test exercises.
            .expect("valid template"),
        );
        Self { bar: Some(bar) }
    }

    pub(super) fn update(
        &self,
        done: usize,
        _tracker: &Tracker,
        points: &[PointSummary],
        now: OffsetDateTime,
        total_ticks: usize,
        ticks: &[OffsetDateTime],
    ) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(done as u64);
        let fired = ticks.iter().filter(|t| **t <= now).count();
        let creating = points
            .iter()
            .filter(|p| p.provisioning_state == "Creating")
            .count();
        let failed = points
            .iter()
            .filter(|p| p.provisioning_state == "Failed")
            .count();
        let mut copy_pct: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for p in points
            .iter()
            .filter(|p| p.source_restore_point.is_some() && p.copy_percent.unwrap_or(100) < 100)
        {
            let e = copy_pct
                .entry(canonical_region(&p.region))
                .or_insert((0, 0));
            e.0 += i64::from(p.copy_percent.unwrap_or(0));
            e.1 += 1;
        }
        let copies: Vec<String> = copy_pct
            .iter()
            .map(|(r, (sum, n))| format!("{r} {}%", sum / n.max(&1)))
            .collect();
        bar.set_message(format!(
            "tick {fired}/{total_ticks} | virtual {} | creating {creating} | copying {} | failed {failed}",
            virtual_label(now),
            if copies.is_empty() { "-".to_string() } else { copies.join(", ") }
        ));
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
