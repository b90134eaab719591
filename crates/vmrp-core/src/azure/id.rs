//! ARM resource ids: parsed once, compared case-insensitively (ARM returns mixed case).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ARM resource id such as
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`.
///
/// The original spelling is kept for display and for URLs; equality and hashing ignore case,
/// because ARM ids come back as `resourcegroups` or `resourceGroups` depending on the caller.
#[derive(Clone)]
pub struct ResourceId {
    raw: String,
    /// `(type, name)` pairs after `providers/{namespace}`, e.g. `[("restorePointCollections", "rpc-a"), ("restorePoints", "rp-1")]`.
    segments: Vec<(String, String)>,
    subscription: String,
    resource_group: Option<String>,
    namespace: Option<String>,
}

/// Why a string is not a resource id we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ARM resource id {id:?}: {reason}")]
pub struct ResourceIdError {
    pub id: String,
    pub reason: &'static str,
}

impl ResourceId {
    /// Parses an id. Accepts a missing leading `/` (one official example returns ids without it).
    pub fn parse(input: &str) -> Result<Self, ResourceIdError> {
        let err = |reason| ResourceIdError {
            id: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(err("empty"));
        }
        if trimmed.len() > 4096 {
            return Err(err("longer than 4096 characters"));
        }
        let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
        let parts: Vec<&str> = body.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("empty path segment"));
        }
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") {
            return Err(err("must start with /subscriptions/{id}"));
        }
        let subscription = parts[1].to_string();
        let mut i = 2;
        let mut resource_group = None;
        if parts.len() > i && parts[i].eq_ignore_ascii_case("resourceGroups") {
            let rg = parts
                .get(i + 1)
                .ok_or_else(|| err("resourceGroups without a name"))?;
            resource_group = Some(rg.to_string());
            i += 2;
        }
        let mut namespace = None;
        let mut segments = Vec::new();
        if parts.len() > i {
            if !parts[i].eq_ignore_ascii_case("providers") {
                return Err(err("expected 'providers' after the scope"));
            }
            let ns = parts
                .get(i + 1)
                .ok_or_else(|| err("providers without a namespace"))?;
            namespace = Some(ns.to_string());
            i += 2;
            let rest = &parts[i..];
            if rest.is_empty() || rest.len() % 2 != 0 {
                return Err(err("resource type without a name"));
            }
            for pair in rest.chunks(2) {
                segments.push((pair[0].to_string(), pair[1].to_string()));
            }
        }
        let raw = format!("/{body}");
        Ok(Self {
            raw,
            segments,
            subscription,
            resource_group,
            namespace,
        })
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`. A component
    /// that is empty or holds a `/` (a region or group name from a message, say) is an error, not
    /// a different id.
    pub fn new_in_group(
        subscription: &str,
        resource_group: &str,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Self, ResourceIdError> {
        let parts = [subscription, resource_group, namespace, kind, name];
        if parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(ResourceIdError {
                id: format!(
                    "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{namespace}/{kind}/{name}"
                ),
                reason: "a component is empty or contains '/'",
            });
        }
        Self::parse(&format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{namespace}/{kind}/{name}"
        ))
    }

    /// A child of this resource: `{self}/{kind}/{name}`.
    pub fn child(&self, kind: &str, name: &str) -> Self {
        Self::parse(&format!("{}/{kind}/{name}", self.raw)).expect("child of a valid id is valid")
    }

    /// The parent resource (`None` for a top-level resource or a scope).
    pub fn parent(&self) -> Option<Self> {
        if self.segments.len() < 2 {
            return None;
        }
        let cut = self
            .raw
            .rfind('/')
            .and_then(|last| self.raw[..last].rfind('/'))?;
        Self::parse(&self.raw[..cut]).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    /// Whether this id lies in Azure Backup's territory: a resource group `AzureBackupRG_*`
    /// (where Backup keeps its instant-restore collections) or a collection `AzureBackup_*`
    /// (learn.microsoft.com/azure/backup/backup-during-vm-creation; the VM move limitations
    /// page names the collection `AzureBackup_<VM name>_<number>`). vmrp reads these (their
    /// points count against a VM's 500) and never writes or deletes there.
    pub fn is_azure_backup(&self) -> bool {
        let starts = |s: &str, prefix: &str| {
            s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        self.resource_group()
            .is_some_and(|rg| starts(rg, "AzureBackupRG_"))
            || self.segments.iter().any(|(kind, name)| {
                kind.eq_ignore_ascii_case("restorePointCollections") && starts(name, "AzureBackup_")
            })
    }

    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    /// The last resource name (e.g. the VM name); `None` for a scope id.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(|(_, n)| n.as_str())
    }
    /// The full resource type, e.g. `Microsoft.Compute/restorePointCollections/restorePoints`.
    pub fn resource_type(&self) -> Option<String> {
        let ns = self.namespace.as_deref()?;
        let mut t = ns.to_string();
        for (kind, _) in &self.segments {
            t.push('/');
            t.push_str(kind);
        }
        Some(t)
    }
    /// True when the id's type equals `expected` (case-insensitive), e.g. `Microsoft.Compute/virtualMachines`.
    pub fn is_type(&self, expected: &str) -> bool {
        self.resource_type()
            .is_some_and(|t| t.eq_ignore_ascii_case(expected))
    }
    /// The `(type, name)` pairs below the provider namespace.
    pub fn segments(&self) -> &[(String, String)] {
        &self.segments
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}
impl Eq for ResourceId {}
impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.raw.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}
impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw
            .to_ascii_lowercase()
            .cmp(&other.raw.to_ascii_lowercase())
    }
}
impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}
impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.raw)
    }
}
impl std::str::FromStr for ResourceId {
    type Err = ResourceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}
impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn azure_backup_territory() {
        let id = |s: &str| ResourceId::parse(s).unwrap();
        let rpc = "providers/Microsoft.Compute/restorePointCollections";
        for (raw, backup) in [
            (format!("/subscriptions/s/resourceGroups/AzureBackupRG_westeurope_1/{rpc}/AzureBackup_vm1_123"), true),
            (format!("/subscriptions/s/resourceGroups/azurebackuprg_westeurope_1/{rpc}/x"), true),
            (format!("/subscriptions/s/resourceGroups/rg/{rpc}/AzureBackup_vm1_1/restorePoints/p"), true),
            (format!("/subscriptions/s/resourceGroups/rg/{rpc}/rpc-vm1-abc/restorePoints/AzureBackup_1"), false),
            (format!("/subscriptions/s/resourceGroups/rg-backup/{rpc}/rpc-vm1-abc"), false),
            (format!("/subscriptions/s/resourceGroups/AzureBackupRG/{rpc}/c"), false),
        ] {
            assert_eq!(id(&raw).is_azure_backup(), backup, "{raw}");
        }
    }

    use super::*;

    const VM: &str =
        "/subscriptions/s1/resourceGroups/RG-App/providers/Microsoft.Compute/virtualMachines/vm-01";

    #[test]
    fn parses_components() {
        let id = ResourceId::parse(VM).unwrap();
        assert_eq!(id.subscription(), "s1");
        assert_eq!(id.resource_group(), Some("RG-App"));
        assert_eq!(id.name(), Some("vm-01"));
        assert!(id.is_type("microsoft.compute/VIRTUALMACHINES"));
    }

    #[test]
    fn mixed_case_ids_are_equal_and_hash_alike() {
        let a = ResourceId::parse(VM).unwrap();
        let b = ResourceId::parse(&VM.to_lowercase()).unwrap();
        assert_eq!(a, b);
        let set: std::collections::HashSet<_> = [a.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(a.to_string(), VM, "original spelling kept");
    }

    #[test]
    fn missing_leading_slash_is_accepted() {
        let id = ResourceId::parse(&VM[1..]).unwrap();
        assert_eq!(id.as_str(), VM);
    }

    #[test]
    fn child_and_parent_round_trip() {
        let rpc = ResourceId::new_in_group(
            "s1",
            "rg",
            "Microsoft.Compute",
            "restorePointCollections",
            "rpc-vm",
        )
        .unwrap();
        let rp = rpc.child("restorePoints", "rp-1");
        assert!(rp.is_type("Microsoft.Compute/restorePointCollections/restorePoints"));
        assert_eq!(rp.parent().unwrap(), rpc);
        assert_eq!(rpc.parent(), None);
    }

    #[test]
    fn new_in_group_refuses_a_slash_or_an_empty_component_instead_of_panicking() {
        for (rg, name) in [
            ("rg", "rpc-vm-a/b"),
            ("rg/x", "rpc"),
            ("", "rpc"),
            ("rg", ""),
        ] {
            let made = ResourceId::new_in_group(
                "s1",
                rg,
                "Microsoft.Compute",
                "restorePointCollections",
                name,
            );
            assert!(made.is_err(), "{rg:?} {name:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "/",
            "vm-01",
            "/subscriptions",
            "/subscriptions/s1/resourceGroups",
            "/subscriptions/s1/foo/bar",
            "/subscriptions/s1/providers/Microsoft.Compute/virtualMachines",
            "/subscriptions//x",
        ] {
            assert!(
                ResourceId::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
