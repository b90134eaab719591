//! What Azure's restore point support matrix says about a VM itself (not its disks' SKUs):
//! confidential VMs, VM sizes without Premium storage, and the cases where a crash-consistent
//! point is created but may not be consistent across disks. Pure functions over names, shared
//! by vmrp's per-VM checks (`Rule::check_vm`) and the emulator's rules, so both read the same
//! documents the same way.
//!
//! Sources (learn.microsoft.com):
//! - `virtual-machines/concepts-restore-points` (support matrix): "Confidential VMs | No";
//!   "Crash consistency is supported for VM SKUs that support Premium storage"; Intel V6+ and
//!   AMD V7+ sizes "with more than one data disk might not be consistent across disks";
//!   "VMs with trusted launch OS disk | Yes".
//! - `virtual-machines/virtual-machines-create-restore-points` (Limitations): "Ultra Disks,
//!   Premium SSD v2 disks, Write-accelerated disks, Ephemeral OS disks, and shared disks aren't
//!   supported for crash consistency mode"; crash consistency "cannot be guaranteed" for disks
//!   with read/write host caching.
//! - `virtual-machines/vm-naming-conventions`: a lowercase `s` among a size's additive features
//!   means Premium storage capable; "some newer sizes without the attribute of s can still
//!   support Premium Storage (M128, M64 …)".

/// `securityProfile.securityType` of a confidential VM.
pub const CONFIDENTIAL_VM: &str = "ConfidentialVM";

/// True when `security_type` names a confidential VM (restore points: not supported at all).
pub fn is_confidential(security_type: Option<&str>) -> bool {
    security_type.is_some_and(|t| t.eq_ignore_ascii_case(CONFIDENTIAL_VM))
}

/// The parts of a size name: `Standard_D4ads_v7` → family `D`, features `ads`, version 7.
struct SizeName<'a> {
    family: &'a str,
    features: &'a str,
    version: Option<u32>,
}

fn parse_size(size: &str) -> Option<SizeName<'_>> {
    let rest = size
        .strip_prefix("Standard_")
        .or_else(|| size.strip_prefix("standard_"))?;
    let (body, version) = match rest.rsplit_once('_') {
        Some((b, v)) => (
            b,
            v.strip_prefix(['v', 'V'])
                .and_then(|n| n.parse::<u32>().ok()),
        ),
        None => (rest, None),
    };
    // The family comes before the vCPU count, the features after it; a constrained-vCPU size
    // (`M8-2ms`, `E32-8s_v5`) has its features after the active count, behind the dash.
    let digits_at = body.find(|c: char| c.is_ascii_digit())?;
    let family = &body[..digits_at];
    let after = match body.rsplit_once('-') {
        Some((_, active)) => active,
        None => &body[digits_at..],
    };
    let features_at = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    Some(SizeName {
        family,
        features: &after[features_at..],
        version,
    })
}

/// Whether a VM size supports Premium storage, from its name: `Some(true)` with an `s` feature
/// (or an `S` family such as `DS`/`GS`, or the M-series, which the naming page names as
/// Premium-capable without the `s`), `Some(false)` for the general-purpose, memory and compute
/// families (A, D, E, F, Basic) without it, `None` when the name alone does not tell (the
/// answer is then "supported": only what a source shows is refused).
pub fn premium_storage_capable(size: &str) -> Option<bool> {
    if size.starts_with("Basic_") || size.starts_with("basic_") {
        return Some(false);
    }
    let s = parse_size(size)?;
    if s.features.contains('s') || s.family.len() > 1 && s.family.ends_with(['S', 's']) {
        return Some(true);
    }
    let family = s.family.to_ascii_uppercase();
    if family.starts_with('M') {
        return Some(true);
    }
    matches!(family.as_str(), "A" | "D" | "E" | "F").then_some(false)
}

/// Intel v6+ or AMD v7+ sizes (Azure Boost): crash-consistent points of such a VM with more
/// than one data disk "might not be consistent across disks". AMD sizes carry an `a` feature.
pub fn boost_multi_disk_caveat(size: &str) -> bool {
    let Some(s) = parse_size(size) else {
        return false;
    };
    match s.version {
        Some(v) if s.features.contains('a') => v >= 7,
        Some(v) => v >= 6,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premium_storage_from_the_size_name() {
        let cases = [
            ("Standard_D4s_v5", Some(true)),
            ("Standard_DS3_v2", Some(true)),
            ("Standard_B2ms", Some(true)),
            ("Standard_E4ads_v7", Some(true)),
            ("Standard_M64", Some(true)),
            ("Standard_M8-2ms", Some(true)),
            // Constrained vCPU: the base size's Premium storage (learn.microsoft.com/azure/
            // virtual-machines/constrained-vcpu, Standard_E32-8s_v5 keeps "the memory, storage,
            // and I/O bandwidth specifications of the Standard_E32s_v5").
            ("Standard_E32-8s_v5", Some(true)),
            ("Standard_E4-2ads_v5", Some(true)),
            ("Standard_GS5", Some(true)),
            ("Standard_D4_v5", Some(false)),
            ("Standard_A2_v2", Some(false)),
            ("Standard_F4", Some(false)),
            ("Standard_E8_v3", Some(false)),
            ("Basic_A1", Some(false)),
            // Unknown families: not refused.
            ("Standard_NC6", None),
            ("Standard_H16", None),
            // An `S` after a family letter (`DS`, `GS`) marks Premium storage; no family is
            // `S` alone, so such a name says nothing.
            ("Standard_S4", None),
            ("weird", None),
        ];
        for (size, want) in cases {
            assert_eq!(premium_storage_capable(size), want, "{size}");
        }
    }

    /// The parse the two tables above rest on, as the doc of `SizeName` gives it.
    #[test]
    fn size_names_split_into_family_features_and_version() {
        let cases = [
            ("Standard_D4ads_v7", Some(("D", "ads", Some(7)))),
            ("standard_E64is_V5", Some(("E", "is", Some(5)))),
            ("Standard_M8-2ms", Some(("M", "ms", None))),
            ("Standard_E32-8s_v5", Some(("E", "s", Some(5)))),
            ("Standard_E4-2ads_v5", Some(("E", "ads", Some(5)))),
            ("Standard_M416ms_v2", Some(("M", "ms", Some(2)))),
            ("Standard_DC4as_cc_v5", Some(("DC", "as_cc", Some(5)))),
            ("Standard_NC4as_T4_v3", Some(("NC", "as_T4", Some(3)))),
            ("Standard_GS5", Some(("GS", "", None))),
            ("Standard_B2ms", Some(("B", "ms", None))),
            ("Standard_D", None),
            ("Basic_A1", None),
        ];
        for (size, want) in cases {
            let got = parse_size(size).map(|s| (s.family, s.features, s.version));
            assert_eq!(got, want, "{size}");
        }
    }

    #[test]
    fn boost_caveat_table() {
        let cases = [
            ("Standard_D4s_v6", true),
            ("Standard_E8s_v6", true),
            ("Standard_D4s_v5", false),
            ("Standard_D4as_v6", false),
            ("Standard_D4as_v7", true),
            ("Standard_E4ads_v7", true),
            ("Standard_DS3_v2", false),
            ("Standard_M64", false),
        ];
        for (size, want) in cases {
            assert_eq!(boost_multi_disk_caveat(size), want, "{size}");
        }
    }

    #[test]
    fn confidential_is_the_only_unsupported_security_type() {
        assert!(is_confidential(Some("ConfidentialVM")));
        assert!(is_confidential(Some("confidentialvm")));
        assert!(!is_confidential(Some("TrustedLaunch")));
        assert!(!is_confidential(None));
    }
}
