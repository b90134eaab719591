//! Azure region names: the built-in list a policy's copy regions are checked against, and the
//! normalisation of display names ("West US 2") to ARM's `location` spelling ("westus2").
//!
//! The list is the public, generally available regions; a region missing here is rejected by
//! validation with the list's hint, so a new region needs one line here.

/// ARM `location` names of the public Azure regions vmrp accepts as copy targets.
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
