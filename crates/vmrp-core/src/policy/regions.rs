//! Azure region names: the built-in list a policy's copy regions (and a message's) are checked
//! against, the normalisation of display names ("West US 2") to ARM's `location` spelling
//! ("westus2"), and the syntax of that spelling.
//!
//! Two checks, for two uses:
//! - [`region_name`]: the syntax of an ARM location name, lowercase letters and digits starting
//!   with a letter, after dropping spaces and case. It guards every place a region becomes part
//!   of a resource name or URL (a `/` or a space there is never a region).
//! - [`known_region`]: the syntax plus this list, which spans the public cloud, Azure US
//!   Government and Azure China (`VMRP_ARM_ENDPOINT` reaches all three), so a sovereign-cloud
//!   deployment is not refused. Policies and messages both go through it before anything is
//!   written: a typo (`westus9`, `mars`) is a clear refusal rather than ARM's
//!   `LocationNotAvailableForResourceType` at 3 a.m. A region Azure adds later needs one line
//!   here.
//!
//! Sources: public regions from <https://learn.microsoft.com/azure/reliability/regions-list>
//! ("Programmatic name"); US Government and China location names from the Azure SDKs' region
//! constants (`Azure.Core.AzureLocation`, <https://learn.microsoft.com/dotnet/api/azure.core.azurelocation>:
//! `USGovVirginia`, `USGovArizona`, `USGovTexas`, `USDoDEast`, `USDoDCentral`; Java
//! `com.azure.core.management.Region`: `CHINA_EAST` … `CHINA_NORTH3`).

/// Longest location name accepted by [`region_name`] (the longest real one has 18 characters);
/// it bounds the copy collection names built from it.
pub const MAX_REGION_LEN: usize = 32;

/// ARM `location` names vmrp accepts as copy targets: public, US Government and China clouds.
pub const KNOWN_REGIONS: &[&str] = &[
    "australiacentral",
    "australiacentral2",
    "australiaeast",
    "australiasoutheast",
    "austriaeast",
    "belgiumcentral",
    "brazilsouth",
    "brazilsoutheast",
    "canadacentral",
    "canadaeast",
    "centralindia",
    "centralus",
    "chilecentral",
    "chinaeast",
    "chinaeast2",
    "chinaeast3",
    "chinanorth",
    "chinanorth2",
    "chinanorth3",
    "eastasia",
    "eastus",
    "eastus2",
    "francecentral",
    "francesouth",
    "germanynorth",
    "germanywestcentral",
    "indonesiacentral",
    "israelcentral",
    "italynorth",
    "japaneast",
    "japanwest",
    "koreacentral",
    "koreasouth",
    "malaysiawest",
    "mexicocentral",
    "newzealandnorth",
    "northcentralus",
    "northeurope",
    "norwayeast",
    "norwaywest",
    "polandcentral",
    "qatarcentral",
    "southafricanorth",
    "southafricawest",
    "southcentralus",
    "southeastasia",
    "southindia",
    "spaincentral",
    "swedencentral",
    "switzerlandnorth",
    "switzerlandwest",
    "uaecentral",
    "uaenorth",
    "uksouth",
    "ukwest",
    "usdodcentral",
    "usdodeast",
    "usgovarizona",
    "usgovtexas",
    "usgovvirginia",
    "westcentralus",
    "westeurope",
    "westindia",
    "westus",
    "westus2",
    "westus3",
];

/// The short form ARM uses for a region name: `"West US 2"` → `"westus2"`. Any name, known or
/// not (ARM accepts both spellings; compare this form).
pub fn canonical_region(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Why a region name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error(
        "{0:?} is not a region name: an ARM location is lowercase letters and digits starting \
         with a letter, at most {MAX_REGION_LEN} (e.g. westus2, or the display name \"West US 2\")"
    )]
    Malformed(String),
    #[error(
        "{0:?} is not an Azure region vmrp knows (public, US Government and China clouds); use \
         the ARM name (e.g. westus2) or the display name (e.g. \"West US 2\")"
    )]
    Unknown(String),
}

/// The ARM location name of `input` by syntax alone: `"Sweden Central"` → `"swedencentral"`;
/// `"rg/x"`, `"west-us"`, `""` are refused. No list is consulted.
pub fn region_name(input: &str) -> Result<String, RegionError> {
    let name = canonical_region(input);
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= MAX_REGION_LEN;
    if well_formed {
        Ok(name)
    } else {
        Err(RegionError::Malformed(input.to_string()))
    }
}

/// [`region_name`] plus [`KNOWN_REGIONS`]: the check for a copy region from a policy or a
/// message, before anything is written.
pub fn known_region(input: &str) -> Result<&'static str, RegionError> {
    let name = region_name(input)?;
    KNOWN_REGIONS
        .iter()
        .copied()
        .find(|r| *r == name)
        .ok_or_else(|| RegionError::Unknown(input.to_string()))
}

/// `"West US 2"`, `"westus2"`, `" WestUS2 "` → `Some("westus2")`; unknown names → `None`.
pub fn normalize_region(name: &str) -> Option<&'static str> {
    let squashed = canonical_region(name);
    KNOWN_REGIONS.iter().copied().find(|r| *r == squashed)
}

/// Whether two region spellings name the same region (`"West US 2"` = `"westus2"`). Unknown
/// names compare by their squashed lowercase form, so a typo never equals a real region.
pub fn same_region(a: &str, b: &str) -> bool {
    canonical_region(a) == canonical_region(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_of_any_region_name() {
        assert_eq!(canonical_region("West US 2"), "westus2");
        assert_eq!(canonical_region("westus2"), "westus2");
        assert_eq!(canonical_region(" Not A Region "), "notaregion");
    }

    #[test]
    fn display_names_and_arm_names_normalise_to_the_arm_name() {
        for (input, want) in [
            ("westus2", Some("westus2")),
            ("West US 2", Some("westus2")),
            (" WestEurope ", Some("westeurope")),
            ("Germany West Central", Some("germanywestcentral")),
            ("UK South", Some("uksouth")),
            ("westus4", None),
            ("west-us-2", None),
            ("", None),
        ] {
            assert_eq!(normalize_region(input), want, "{input:?}");
        }
    }

    #[test]
    fn sovereign_cloud_regions_are_known() {
        for r in [
            "usgovvirginia",
            "usgovarizona",
            "US Gov Texas",
            "chinaeast2",
            "China North 3",
            "germanywestcentral",
        ] {
            assert!(known_region(r).is_ok(), "{r}");
        }
    }

    #[test]
    fn region_syntax_and_list() {
        for (input, want) in [
            ("Sweden Central", Ok("swedencentral")),
            ("westus2", Ok("westus2")),
            ("mars", Err("unknown")),
            ("westus9", Err("unknown")),
            ("sweden/central", Err("malformed")),
            ("west-us-2", Err("malformed")),
            ("2westus", Err("malformed")),
            ("", Err("malformed")),
            ("  ", Err("malformed")),
            ("é", Err("malformed")),
        ] {
            let got = known_region(input).map_err(|e| match e {
                RegionError::Malformed(_) => "malformed",
                RegionError::Unknown(_) => "unknown",
            });
            assert_eq!(got, want, "{input:?}");
        }
        assert_eq!(region_name("mars").as_deref(), Ok("mars"));
        assert!(region_name(&"a".repeat(MAX_REGION_LEN + 1)).is_err());
        assert!(known_region("rg/x")
            .unwrap_err()
            .to_string()
            .contains("not a region name"));
    }

    #[test]
    fn list_is_sorted_lowercase_and_without_duplicates() {
        let mut sorted = KNOWN_REGIONS.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, KNOWN_REGIONS);
        assert!(KNOWN_REGIONS.iter().all(|r| r
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())));
    }

    #[test]
    fn same_region_ignores_case_and_spaces() {
        assert!(same_region("East US", "eastus"));
        assert!(!same_region("eastus", "eastus2"));
    }
}
