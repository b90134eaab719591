//! Tests of the tuning settings: every setting parsed, bounded, and documented in docs/deploy.md.

use super::*;

fn from(pairs: &[(&str, &str)]) -> Result<Tuning, TuningError> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Tuning::from_settings(&|k: &str| map.get(k).cloned())
}

#[test]
fn settings_override_the_defaults() {
    assert_eq!(from(&[]).unwrap(), Tuning::default(), "none set");
    assert_eq!(
        from(&[(ARM_SHARE_VAR, "  ")]).unwrap(),
        Tuning::default(),
        "blank"
    );
    let t = from(&[
        (ARM_SHARE_VAR, "0.5"),
        ("VMRP_TICK_MARGIN_SECS", "60"),
        (COPY_DURATION_VAR, "5400"),
        ("VMRP_RESCHEDULE_FIRST_SECS", "10"),
        ("VMRP_RESCHEDULE_CAP_SECS", "120"),
        ("VMRP_MAX_RESCHEDULES", "3"),
        ("VMRP_MAX_DELETES_PER_INVOCATION", "7"),
        ("VMRP_MAX_ORPHAN_DELETES_PER_TICK", "0"),
        ("VMRP_ONBOARD_FIRST_POINT", "False"),
        ("VMRP_DISK_CACHE_TTL_SECS", "600"),
        ("VMRP_LISTED_MAX_AGE_SECS", "1800"),
        ("VMRP_COVERAGE_MAX_READS", "50"),
        (PACE_INSTANCES_VAR, "40"),
    ])
    .unwrap();
    assert_eq!(t.pacing.reserve, 0.5);
    assert_eq!(t.pacing.window_margin, Duration::from_secs(60));
    assert_eq!(t.pacing.copy_duration, Duration::from_secs(5400));
    assert_eq!(t.reschedule_first, Duration::from_secs(10));
    assert_eq!(t.reschedule_cap, Duration::from_secs(120));
    assert_eq!(t.max_reschedules, 3);
    assert_eq!(t.max_deletes_per_invocation, 7);
    assert_eq!(t.max_orphan_deletes_per_tick, 0);
    assert!(!t.onboard_first_point);
    assert_eq!(t.disk_cache_ttl, Duration::from_secs(600));
    assert_eq!(t.listed_max_age, Duration::from_secs(1800));
    assert_eq!(t.coverage_max_reads, 50);
    assert_eq!(t.pace_instances, 40);
    // The whole budget is allowed.
    assert_eq!(from(&[(ARM_SHARE_VAR, "1")]).unwrap().pacing.reserve, 0.0);
}

#[test]
fn bad_values_are_refused_with_the_settings_name() {
    // (setting, value, words the error must hold)
    let table = [
        (ARM_SHARE_VAR, "95%", "0.01 to 1"),
        (ARM_SHARE_VAR, "0", "0.01 to 1"),
        (ARM_SHARE_VAR, "1.5", "0.01 to 1"),
        (ARM_SHARE_VAR, "NaN", "0.01 to 1"),
        ("VMRP_TICK_MARGIN_SECS", "-5", "0 to 3600"),
        (COPY_DURATION_VAR, "30", "60 to 1209600"),
        (COPY_DURATION_VAR, "1h", "whole number"),
        ("VMRP_MAX_RESCHEDULES", "ten", "whole number"),
        ("VMRP_MAX_DELETES_PER_INVOCATION", "2.5", "whole number"),
        ("VMRP_ONBOARD_FIRST_POINT", "yes", "true or false"),
        ("VMRP_RESCHEDULE_FIRST_SECS", "0", "1 to 3600"),
        ("VMRP_COVERAGE_MAX_READS", "1e9", "whole number"),
        (PACE_INSTANCES_VAR, "0", "1 to 1000"),
    ];
    for (setting, value, words) in table {
        let e = from(&[(setting, value)]).unwrap_err();
        assert_eq!(e.setting, setting, "{setting}={value}");
        let text = e.to_string();
        assert!(
            text.starts_with(setting) && text.contains(words) && text.contains(value),
            "{setting}={value}: {text}"
        );
    }
    let e = from(&[
        ("VMRP_RESCHEDULE_FIRST_SECS", "600"),
        ("VMRP_RESCHEDULE_CAP_SECS", "60"),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "VMRP_RESCHEDULE_CAP_SECS", "{e}");
    // Every setting the parser reads is in the documented table, with its default.
    let docs = include_str!("../../../../../docs/deploy.md");
    for (name, _, default) in TUNING_SETTINGS {
        assert!(from(&[(name, default)]).is_ok(), "{name}={default}");
        assert!(
            docs.contains(&format!("| `{name}` |")) && docs.contains(&format!("`{default}`")),
            "{name} is not in docs/deploy.md's tuning table"
        );
    }
}
