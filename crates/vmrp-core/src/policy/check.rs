//! `vmrp policy check FILE`: load and validate a policy file the way the function app will, and
//! print either a summary of what each rule does or every problem on its own line (exit 1).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::validate::IN_FLIGHT_PER_COLLECTION;
use super::{Policy, PolicyError, PolicyProblem, Rule};

/// The timer schedule `vmrp policy check` assumes when neither the flag nor `VMRP_SCHEDULE` set it.
pub const DEFAULT_TIMER_SCHEDULE: &str = "0 0 */4 * * *";

/// `vmrp policy check`'s flags (clap with the `cli` feature: the ops command has it, the deploy
/// binary does not link clap).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct PolicyCheckArgs {
    /// The policy file: `.json` or `.toml` (other extensions: detected from the content).
    pub file: PathBuf,
    /// The timer's NCRONTAB schedule; rules without their own schedule create points at each of
    /// its ticks, so spacing is checked against it.
    #[cfg_attr(feature = "cli", arg(long, env = "VMRP_SCHEDULE", default_value = DEFAULT_TIMER_SCHEDULE))]
    pub timer_schedule: String,
    /// Print the result as one JSON object.
    #[cfg_attr(feature = "cli", arg(long))]
    pub json: bool,
}

/// The outcome of checking one policy file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    /// Rule summaries (when the policy parsed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<PolicyProblem>,
    /// What is valid but may surprise (printed, never failing the check).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the file could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The drills section's summary with its stated coverage period (docs/policy.md, drills).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drills: Option<String>,
}

impl CheckReport {
    /// The text `vmrp policy check` prints.
    pub fn render(&self, json: bool) -> String {
        if json {
            // Invariant: the report is strings, numbers and lists; serde_json cannot fail on it.
            return serde_json::to_string_pretty(self).expect("report serialises") + "\n";
        }
        let mut out = String::new();
        if let Some(e) = &self.parse_error {
            out.push_str(e);
            out.push('\n');
        } else if self.ok {
            out.push_str(&format!(
                "policy OK: {} rule{}\n",
                self.rules.len(),
                if self.rules.len() == 1 { "" } else { "s" }
            ));
            for r in &self.rules {
                out.push_str(&format!("  {r}\n"));
            }
            if let Some(d) = &self.drills {
                out.push_str(&format!("  {d}\n"));
            }
            for w in &self.warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
        } else {
            for p in &self.problems {
                out.push_str(&p.to_string());
                out.push('\n');
            }
        }
        out
    }
}

/// Loads and validates `path`. `Err` only when the file cannot be read.
pub fn check_file(path: &Path, timer_schedule: &str) -> Result<CheckReport, String> {
    let policy = match Policy::from_file(path) {
        Ok(p) => p,
        Err(e @ PolicyError::Read { .. }) => return Err(e.to_string()),
        Err(e) => {
            return Ok(CheckReport {
                ok: false,
                rules: Vec::new(),
                problems: Vec::new(),
                warnings: Vec::new(),
                parse_error: Some(e.to_string()),
                drills: None,
            })
        }
    };
    Ok(check_policy(&policy, timer_schedule))
}

/// Validates a parsed policy against the timer schedule.
pub fn check_policy(policy: &Policy, timer_schedule: &str) -> CheckReport {
    let problems = policy.problems(Some(timer_schedule));
    let drills = policy
        .drills
        .as_ref()
        .map(|d| d.summary(time::OffsetDateTime::now_utc()));
    CheckReport {
        drills: drills.as_ref().map(|(line, _)| line.clone()),
        ok: problems.is_empty(),
        rules: policy
            .rules
            .iter()
            .map(|r| summarize(r, timer_schedule))
            .collect(),
        problems,
        warnings: policy
            .rules
            .iter()
            .filter_map(own_region_warning)
            .chain(policy.rules.iter().filter_map(instant_access_warning))
            .chain(policy.rules.iter().filter_map(crash_support_warning))
            .chain(policy.rules.iter().flat_map(cmk_warnings))
            .chain(drills.and_then(|(_, warning)| warning))
            .collect(),
        parse_error: None,
    }
}

/// A rule whose copies all go to one region gives VMs located in that region no copy at all:
/// the create drops a copy to the VM's own region (a copy needs another region), and pruning
/// and `vmrp plan` do not wait for it. Only the VM's location tells, so the check warns.
fn own_region_warning(rule: &Rule) -> Option<String> {
    let [only] = rule.copies.as_slice() else {
        return None;
    };
    Some(format!(
        "rule {:?}: copies[0].region {}: VMs located in {} itself get no cross-region copy (a copy needs another region than the VM's); add a second copy region if they need one",
        rule.name, only.region, only.region
    ))
}

/// Instant access only helps the Premium SSD v2 / Ultra disks of application-consistent points,
/// which the policy file alone cannot tell (`vmrp plan` and the create see each VM's disks):
/// say so, and name a consistency tag that may make some VMs crash-consistent.
fn instant_access_warning(rule: &Rule) -> Option<String> {
    rule.instant_access.as_ref()?;
    let tag = match &rule.consistency_tag {
        Some(tag) => format!("; VMs whose tag {tag} selects CrashConsistent get none"),
        None => String::new(),
    };
    Some(format!(
        "rule {:?}: instantAccess applies only to VMs with Premium SSD v2 or Ultra disks (other VMs' points are created without it){tag}",
        rule.name
    ))
}

/// A crash-consistent rule (or one whose tag may choose crash consistency) meets the support
/// matrix's crash-only limits on VMs the check cannot see: said here, and `vmrp plan` names
/// the VMs.
fn crash_support_warning(rule: &Rule) -> Option<String> {
    let crash = rule.consistency == crate::azure::models::ConsistencyMode::CrashConsistent
        || rule.consistency_tag.is_some();
    crash.then(|| {
        format!(
            "rule {:?}: crash-consistent points are not supported for confidential VMs (no points in any mode), VM sizes without Premium storage, or VMs with write-accelerated, Ultra or Premium SSD v2 disks that excludeDisks does not leave out: such VMs get no point (vmrp plan names them, the timer says so once per tick); points of VMs with ReadWrite-cached disks or of Intel v6+ / AMD v7+ sizes with more than one data disk may not be consistent across disks",
            rule.name
        )
    })
}

/// Copies of disks encrypted with customer-managed keys need a target encryption set per
/// source set (`copies[].encryptionSets`); without a mapping such a disk is not copied (Azure's
/// copy documentation keeps CMK copies on CMK, docs/emulator-arm.md). The file does not know the
/// VMs' disks, so the check says per copy region which sets it can encrypt; `vmrp plan` names
/// the VMs whose disks use another set.
fn cmk_warnings(rule: &Rule) -> Vec<String> {
    rule.copies
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.encryption_sets.is_empty() {
                format!(
                    "rule {:?}: copies[{i}] ({}) maps no disk encryption sets: a VM whose disks use customer-managed keys gets no copy in {} (reported per VM by vmrp plan and the copy, never downgraded to platform keys); map each source set in copies[{i}].encryptionSets",
                    rule.name, c.region, c.region
                )
            } else {
                format!(
                    "rule {:?}: copies[{i}] ({}) encrypts copies of disks with {} mapped disk encryption set(s); a disk using any other set is not copied there (reported per VM by vmrp plan)",
                    rule.name,
                    c.region,
                    c.encryption_sets.len()
                )
            }
        })
        .collect()
}

/// `prod: ApplicationConsistent (tag rp-consistency may override), at the timer "0 0 */4 * * *";
/// keep keepLast 6, daily 7; copies to westus2 (keepLast 4); up to 25 points per VM`.
fn summarize(rule: &Rule, timer_schedule: &str) -> String {
    let mut s = format!("{}: {}", rule.name, rule.consistency.as_str());
    if let Some(tag) = &rule.consistency_tag {
        s.push_str(&format!(" (tag {tag} may override)"));
    }
    match &rule.schedule {
        Some(own) => s.push_str(&format!(", schedule {own:?} at the timer's ticks")),
        None => s.push_str(&format!(", every tick of the timer {timer_schedule:?}")),
    }
    s.push_str(&format!("; keep {}", describe_retention(&rule.retention)));
    let mut max = rule.retention.max_settled() + IN_FLIGHT_PER_COLLECTION;
    if !rule.copies.is_empty() {
        let copies: Vec<String> = rule
            .copies
            .iter()
            .map(|c| match &c.retention {
                Some(r) => format!("{} ({})", c.region, describe_retention(r)),
                None => c.region.clone(),
            })
            .collect();
        s.push_str(&format!("; copies to {}", copies.join(", ")));
        max += rule
            .copies
            .iter()
            .map(|c| {
                c.retention
                    .as_ref()
                    .unwrap_or(&rule.retention)
                    .max_settled()
                    + IN_FLIGHT_PER_COLLECTION
            })
            .sum::<u32>();
    }
    s.push_str(&format!("; up to {max} points per VM"));
    s
}

fn describe_retention(r: &super::Retention) -> String {
    let mut parts = vec![format!("keepLast {}", r.keep_last)];
    for (name, v) in [
        ("daily", r.daily),
        ("weekly", r.weekly),
        ("monthly", r.monthly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if r.floor != 1 {
        parts.push(format!("floor {}", r.floor));
    }
    parts.join(", ")
}

/// `vmrp policy check`: prints the report on stdout; exit 0 when valid, 1 on problems.
pub async fn run(args: PolicyCheckArgs) -> Result<ExitCode, String> {
    let (text, ok) = outcome(&args)?;
    print!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `vmrp policy check` prints on stdout, and whether the policy is fine. With `--json` a
/// file that cannot be read is a JSON answer too (`{"ok": false, "readError": …}`), so a
/// script parsing stdout never meets plain text; without, it is the `Err` for stderr.
pub fn outcome(args: &PolicyCheckArgs) -> Result<(String, bool), String> {
    match check_file(&args.file, &args.timer_schedule) {
        Ok(report) => Ok((report.render(args.json), report.ok)),
        Err(e) if args.json => {
            let doc = serde_json::json!({"ok": false, "readError": e});
            Ok((
                serde_json::to_string_pretty(&doc).expect("JSON values serialise") + "\n",
                false,
            ))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_check_states_the_drill_coverage_period_and_checks_the_section() {
        let rules = r#""rules":[{"name":"all","targets":{},"retention":{"keepLast":3}}]"#;
        let ok: Policy = serde_json::from_str(&format!(
            r#"{{{rules},"drills":{{"resourceGroup":"rg-drill","vmsPerRun":2,"regions":["local","swedencentral"]}}}}"#
        ))
        .unwrap();
        let report = check_policy(&ok, DEFAULT_TIMER_SCHEDULE);
        assert!(report.ok, "{report:?}");
        let text = report.render(false);
        assert!(
            text.contains("drills: 2 VMs per run") && text.contains("100 VMs within 50 d"),
            "{text}"
        );
        let bad: Policy = serde_json::from_str(&format!(
            r#"{{{rules},"drills":{{"resourceGroup":"rg-drill","vmsPerRun":0}}}}"#
        ))
        .unwrap();
        let report = check_policy(&bad, DEFAULT_TIMER_SCHEDULE);
        assert!(!report.ok);
        assert!(
            report.render(false).contains("drills.vmsPerRun"),
            "{report:?}"
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PolicyCheckArgs,
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const GOOD: &str = r#"{"rules":[
        {"name":"prod","targets":{"tags":{"env":"prod"}},"consistencyTag":"rp-mode",
         "retention":{"keepLast":6,"daily":7},
         "copies":[{"region":"West US 2","retention":{"keepLast":4}}]},
        {"name":"dev","targets":{},"consistency":"CrashConsistent","schedule":"0 0 */2 * * *",
         "retention":{"keepLast":3}}]}"#;

    /// Regression: `--json` printed a read error as plain text on stderr.
    #[test]
    fn a_read_error_is_json_with_json() {
        let missing = "/nonexistent/policy.toml";
        let json = Cli::parse_from(["x", missing, "--json"]).args;
        let (text, ok) = outcome(&json).unwrap();
        assert!(!ok);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["ok"], false);
        assert!(v["readError"].as_str().unwrap().contains(missing), "{v}");
        let plain = Cli::parse_from(["x", missing]).args;
        assert!(outcome(&plain).unwrap_err().contains(missing));
    }

    #[test]
    fn instant_access_is_checked_and_warned_about() {
        let policy: Policy = serde_json::from_str(
            r#"{"rules":[{"name":"fast","targets":{},"consistencyTag":"rp-mode",
                "instantAccess":{"durationMinutes":120},"retention":{"keepLast":3}}]}"#,
        )
        .unwrap();
        let report = check_policy(&policy, DEFAULT_TIMER_SCHEDULE);
        assert!(report.ok, "{:?}", report.problems);
        // The consistency tag also draws the crash-consistent support warning; one is ours.
        let instant: Vec<_> = report
            .warnings
            .iter()
            .filter(|w| w.contains("instantAccess"))
            .collect();
        assert_eq!(instant.len(), 1, "{:?}", report.warnings);
        assert!(instant[0].contains("Premium SSD v2 or Ultra"));
        assert!(instant[0].contains("rp-mode selects CrashConsistent"));
        let bad: Policy = serde_json::from_str(
            r#"{"rules":[{"name":"fast","targets":{},"instantAccess":{"durationMinutes":30},
                "retention":{"keepLast":3}}]}"#,
        )
        .unwrap();
        let report = check_policy(&bad, DEFAULT_TIMER_SCHEDULE);
        assert!(!report.ok);
        assert!(report.render(false).contains(
            "instantAccess.durationMinutes: 30 is out of range: Azure keeps instant access between 60 and 300 minutes"
        ), "{}", report.render(false));
    }

    #[test]
    fn crash_consistent_rules_warn_about_what_azure_does_not_support() {
        let policy = |fields: &str| {
            Policy::from_json_str(&format!(
                r#"{{"rules":[{{"name":"r","targets":{{}},"retention":{{"keepLast":3}}{fields}}}]}}"#
            ))
            .unwrap()
        };
        let warned = |p: &Policy| {
            check_policy(p, DEFAULT_TIMER_SCHEDULE)
                .warnings
                .iter()
                .any(|w| w.contains("write-accelerated") && w.contains("confidential"))
        };
        assert!(warned(&policy(r#","consistency":"CrashConsistent""#)));
        assert!(warned(&policy(r#","consistencyTag":"rp-mode""#)));
        assert!(!warned(&policy("")));
    }

    #[test]
    fn a_valid_file_prints_a_summary_per_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.json", GOOD);
        let report = check_file(&path, DEFAULT_TIMER_SCHEDULE).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(
            report.render(false),
            "policy OK: 2 rules\n  \
             prod: ApplicationConsistent (tag rp-mode may override), every tick of the timer \"0 0 */4 * * *\"; keep keepLast 6, daily 7; copies to westus2 (keepLast 4); up to 23 points per VM\n  \
             dev: CrashConsistent, schedule \"0 0 */2 * * *\" at the timer's ticks; keep keepLast 3; up to 6 points per VM\n\
             warning: rule \"prod\": copies[0].region westus2: VMs located in westus2 itself get no cross-region copy (a copy needs another region than the VM's); add a second copy region if they need one\n\
             warning: rule \"prod\": crash-consistent points are not supported for confidential VMs (no points in any mode), VM sizes without Premium storage, or VMs with write-accelerated, Ultra or Premium SSD v2 disks that excludeDisks does not leave out: such VMs get no point (vmrp plan names them, the timer says so once per tick); points of VMs with ReadWrite-cached disks or of Intel v6+ / AMD v7+ sizes with more than one data disk may not be consistent across disks\n\
             warning: rule \"dev\": crash-consistent points are not supported for confidential VMs (no points in any mode), VM sizes without Premium storage, or VMs with write-accelerated, Ultra or Premium SSD v2 disks that excludeDisks does not leave out: such VMs get no point (vmrp plan names them, the timer says so once per tick); points of VMs with ReadWrite-cached disks or of Intel v6+ / AMD v7+ sizes with more than one data disk may not be consistent across disks\n\
             warning: rule \"prod\": copies[0] (westus2) maps no disk encryption sets: a VM whose disks use customer-managed keys gets no copy in westus2 (reported per VM by vmrp plan and the copy, never downgraded to platform keys); map each source set in copies[0].encryptionSets\n"
        );
        assert!(report.ok, "a warning does not fail the check");
    }

    /// `copies[].encryptionSets`: ids checked, the mapping counted in the warning.
    #[test]
    fn encryption_set_mappings_are_checked_and_summarised() {
        let des = |n: &str| {
            format!("/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/{n}")
        };
        let policy = |map: &str| {
            format!(
                r#"{{"rules":[{{"name":"prod","targets":{{}},"retention":{{"keepLast":3}},
                "copies":[{{"region":"westus2","encryptionSets":{map}}},{{"region":"northeurope"}}]}}]}}"#
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            &dir,
            "ok.json",
            &policy(&format!(r#"{{"{}":"{}"}}"#, des("east"), des("west2"))),
        );
        let report = check_file(&ok, DEFAULT_TIMER_SCHEDULE).unwrap();
        assert!(report.ok, "{report:?}");
        let text = report.render(false);
        assert!(
            text.contains(
                "copies[0] (westus2) encrypts copies of disks with 1 mapped disk encryption set(s)"
            ),
            "{text}"
        );
        assert!(
            text.contains("copies[1] (northeurope) maps no disk encryption sets"),
            "{text}"
        );
        let bad = write(
            &dir,
            "bad.json",
            &policy(&format!(
                r#"{{"{}":"not-an-id","/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/disks/d":"{}","{}":"{}"}}"#,
                des("east"),
                des("west2"),
                des("EAST"),
                des("west2")
            )),
        );
        let report = check_file(&bad, DEFAULT_TIMER_SCHEDULE).unwrap();
        assert!(!report.ok);
        let text = report.render(false);
        assert!(
            text.contains("\"not-an-id\" is not a disk encryption set id"),
            "{text}"
        );
        assert!(
            text.contains("Microsoft.Compute/disks/d\" is not a disk encryption set id"),
            "{text}"
        );
        assert!(text.contains("mapped twice"), "{text}");
    }

    #[test]
    fn problems_are_printed_one_per_line_and_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.toml",
            "[[rules]]\nname = \"prod\"\ntargets = {}\nretention = { keepLast = 0 }\ndeadlines = { localMinutes = 0 }\n",
        );
        let report = check_file(&path, DEFAULT_TIMER_SCHEDULE).unwrap();
        assert!(!report.ok);
        let text = report.render(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("rule \"prod\": retention.keepLast: 0 with no"));
        assert!(lines[1].starts_with("rule \"prod\": deadlines.localMinutes: 0 would report"));
    }

    #[test]
    fn the_timer_schedule_decides_spacing_of_rules_without_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.json", GOOD);
        let report = check_file(&path, "0 0 * * * *").unwrap();
        assert!(!report.ok);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].rule.as_deref(), Some("prod"));
    }

    #[test]
    fn parse_errors_are_a_failed_check_and_unreadable_files_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.json",
            r#"{"rules":[{"name":"a","targets":{},"retention":{"keepLast":1},"schedul":"x"}]}"#,
        );
        let report = check_file(&path, DEFAULT_TIMER_SCHEDULE).unwrap();
        assert!(!report.ok);
        let text = report.render(false);
        assert!(
            text.contains("rules[0]") && text.contains("unknown field `schedul`"),
            "{text}"
        );

        let missing = dir.path().join("absent.json");
        let err = check_file(&missing, DEFAULT_TIMER_SCHEDULE).unwrap_err();
        assert!(err.starts_with("cannot read policy file"), "{err}");
    }

    #[test]
    fn json_output_carries_the_problems() {
        let policy = Policy::from_json_str(
            r#"{"rules":[{"name":"p","targets":{},"retention":{"keepLast":1},"copies":[{"region":"mars"}]}]}"#,
        )
        .unwrap();
        let report = check_policy(&policy, DEFAULT_TIMER_SCHEDULE);
        let v: serde_json::Value = serde_json::from_str(&report.render(true)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["problems"][0]["field"], "copies[0].region");
        assert_eq!(v["rules"].as_array().unwrap().len(), 1);
    }

    /// US Government and China regions are regions (`VMRP_ARM_ENDPOINT` reaches those clouds);
    /// old main refused `usgovvirginia` and `chinaeast2` as unknown.
    #[test]
    fn sovereign_cloud_regions_pass_the_check() {
        for (copies, ok) in [
            (
                r#"[{"region":"usgovvirginia"},{"region":"US Gov Arizona"}]"#,
                true,
            ),
            (
                r#"[{"region":"chinaeast2"},{"region":"chinanorth3"}]"#,
                true,
            ),
            (r#"[{"region":"mars"}]"#, false),
            (r#"[{"region":"sweden/central"}]"#, false),
        ] {
            let policy = Policy::from_json_str(&format!(
                r#"{{"rules":[{{"name":"p","targets":{{}},"retention":{{"keepLast":1}},"copies":{copies}}}]}}"#
            ))
            .unwrap();
            let report = check_policy(&policy, DEFAULT_TIMER_SCHEDULE);
            let v: serde_json::Value = serde_json::from_str(&report.render(true)).unwrap();
            assert_eq!(v["ok"], ok, "{copies}: {v}");
        }
    }

    #[tokio::test]
    async fn run_returns_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(&dir, "good.json", GOOD);
        let bad = write(&dir, "bad.json", r#"{"rules":[]}"#);
        let code = |p: &Path| {
            Cli::try_parse_from([
                "check",
                p.to_str().unwrap(),
                "--timer-schedule",
                "0 0 */6 * * *",
            ])
            .unwrap()
            .args
        };
        assert_eq!(run(code(&good)).await.unwrap(), ExitCode::SUCCESS);
        assert_eq!(run(code(&bad)).await.unwrap(), ExitCode::from(1));
        assert!(run(code(&dir.path().join("none.json"))).await.is_err());
    }

    #[test]
    fn flags_parse_with_defaults() {
        // Only when the environment does not set the timer, so the default shows.
        if std::env::var_os("VMRP_SCHEDULE").is_none() {
            let args = Cli::try_parse_from(["check", "p.toml"]).unwrap().args;
            assert_eq!(args.timer_schedule, DEFAULT_TIMER_SCHEDULE);
            assert!(!args.json);
        }
        let args = Cli::try_parse_from([
            "check",
            "p.toml",
            "--json",
            "--timer-schedule",
            "0 0 1 * * *",
        ])
        .unwrap()
        .args;
        assert!(args.json);
        assert_eq!(args.timer_schedule, "0 0 1 * * *");
        assert_eq!(args.file, PathBuf::from("p.toml"));
    }
}
