//! The HTML coverage report in a real browser: `vmrp local --html` writes the page
//! after a small run, headless Chromium opens it, runs its script, and the test reads the DOM the
//! script built (`--dump-dom`) and takes a screenshot. Filtering is checked through the browser
//! too, by opening the page with a view in its URL fragment.
//!
//! Chromium: the Debian package `chromium` (scripts/setup.sh installs it), or `VMRP_CHROMIUM`.
//! Without it the test skips with a message, except under CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vmrp");

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMRP_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium, or `None` after saying why the test is skipped; panics under CI.
fn chromium_or_skip() -> Option<PathBuf> {
    match chromium() {
        Some(c) => Some(c),
        None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI=true but no Chromium found (install the Debian package `chromium` with scripts/setup.sh, or set VMRP_CHROMIUM)")
        }
        None => {
            eprintln!("SKIPPED html_report: no Chromium on PATH (install the Debian package `chromium`, e.g. scripts/setup.sh, or set VMRP_CHROMIUM); under CI=true this test fails instead");
            None
        }
    }
}

/// Runs headless Chromium on `url` with `args`; returns stdout.
fn browse(chromium: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    // What the script built, without the script's own text (its templates name the same tags).
    match dom.find("<script") {
        Some(at) => dom[..at].to_string(),
        None => dom,
    }
}

/// `<tag ... attr="value"` occurrences.
fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// The text of the element with `id`, up to its first child tag.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[test]
fn the_report_page_renders_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("coverage.html");
    let report = dir.path().join("report.json");
    let faults = dir.path().join("faults.json");
    // Some points fail for good: the page must list them with their reasons.
    std::fs::write(
        &faults,
        r#"{"arm": {"operations": {"PUT restorePoints": {"failedProvisioning": 0.6}}}}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["local", "--vms", "10", "--ticks", "2", "--speed", "1200"])
        .arg("--faults")
        .arg(&faults)
        .arg("--html")
        .arg(&html)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "vmrp local: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in ["src=", "href=", "http://", "https://", "url("] {
        assert!(!page.contains(needle), "the page would fetch: {needle}");
    }
    let vms = report["rows"].as_array().unwrap().len();
    let failures = report["local"]["failed"].as_array().unwrap().len()
        + report["copies"]["failed"].as_array().unwrap().len();
    assert!(failures > 0, "the faults made some points fail");
    let profile = dir.path().join("profile");
    let url = format!("file://{}", html.display());

    // The DOM after the page's script ran: every VM has a row, the summary counts them.
    let dom = browse(
        &chromium,
        &profile,
        &["--dump-dom"],
        &format!("{url}#state=all&sort=vm"),
    );
    assert!(
        dom.contains(r#"<body data-rendered="true""#),
        "the script ran"
    );
    assert_eq!(count(&dom, "<tr data-vm="), vms, "one row per VM");
    assert_eq!(text_of(&dom, "n-vms"), vms.to_string());
    assert!(text_of(&dom, "shown").starts_with(&format!("Showing {vms} of {vms}")));
    // Cells carry a symbol and a text, not colour alone.
    assert!(dom.contains("✔ ") && dom.contains(r#"aria-label=""#));
    // Failures with their reasons, and the timeline of both ticks.
    assert_eq!(count(&dom, "<tr data-failure="), failures);
    assert!(
        dom.contains("provisioningState Failed"),
        "the reason is shown"
    );
    assert_eq!(count(&dom, r#"class="tick" data-tick="#), 2);

    // Filtering, through the browser: only northeurope VMs (by name) stay.
    let north = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["vm"].as_str().unwrap().contains("northeurope"))
        .count();
    assert!(north > 0 && north < vms);
    let filtered = browse(
        &chromium,
        &profile,
        &["--dump-dom"],
        &format!("{url}#q=northeurope&group=region"),
    );
    assert_eq!(count(&filtered, "<tr data-vm="), north);
    assert!(!filtered.contains(r#"<tr data-vm="vm-westeurope"#));
    assert!(
        filtered.contains(r#"<tr class="group">"#),
        "grouped by region"
    );

    // A screenshot of the rendered page.
    let shot = dir.path().join("shot.png");
    browse(
        &chromium,
        &profile,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a real page, not a blank one: {} bytes",
        png.len()
    );
}

/// 5,000 VMs in three regions: the page opens on the late and missing ones (above 500 VMs),
/// pages the rest 250 at a time, and the summary still counts every VM.
#[test]
fn five_thousand_vms_stay_readable() {
    use vmrp::commands::status::{Coverage, StatusRow};
    use vmrp::html_report::{render, Report};
    use vmrp::inventory::CollectionRole;
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let mut rows = Vec::new();
    let mut problems = 0;
    for i in 0..5000 {
        let home = ["westeurope", "northeurope"][i % 2];
        let coverage = match i % 50 {
            0 => Coverage::Missing,
            1 => Coverage::Late,
            _ => Coverage::Ok,
        };
        if coverage != Coverage::Ok {
            problems += 1;
        }
        for (region, role) in [
            (home, CollectionRole::Local),
            ("swedencentral", CollectionRole::Copy),
        ] {
            rows.push(StatusRow {
                vm: format!("vm-{i:05}"),
                region: region.into(),
                role,
                newest_settled: (coverage != Coverage::Missing).then(|| "rp-20260105T0800Z".into()),
                newest_created: None,
                age_minutes: (coverage != Coverage::Missing).then_some(300),
                coverage,
                in_flight: vec![],
                failed: vec![],
                vm_id: format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm-{i:05}"),
                drill: None,
            });
        }
    }
    let report = Report {
        title: "5000".into(),
        generated_at: time::OffsetDateTime::UNIX_EPOCH,
        schedule: "0 0 */4 * * *".into(),
        rows,
        failures: vec![],
        ticks: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("big.html");
    std::fs::write(&html, render(&report)).unwrap();
    let profile = dir.path().join("profile");
    let started = std::time::Instant::now();
    let dom = browse(
        &chromium,
        &profile,
        &["--dump-dom"],
        &format!("file://{}", html.display()),
    );
    eprintln!(
        "5,000 VMs rendered in {:.1}s (browser start included)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(text_of(&dom, "n-vms"), "5000");
    // Opens on late or missing: 200 of them, all on the first page.
    assert_eq!(count(&dom, "<tr data-vm="), problems);
    assert!(!dom.contains(r#"data-state="ok"><th"#));
    // Everything: paged.
    let all = browse(
        &chromium,
        &profile,
        &["--dump-dom"],
        &format!("file://{}#state=all", html.display()),
    );
    assert_eq!(count(&all, "<tr data-vm="), 250);
    assert!(text_of(&all, "shown").starts_with("Showing 250 of 5000"));
    assert!(
        all.contains(r#"<button id="more" type="button">"#),
        "a Show more button"
    );
}
