//! Typed ARM models for the Compute resources vmrp touches (api-version 2025-04-01), shared by the
//! client and the emulator. Field names follow `restorePoint.json` / `virtualMachine.json`; every
//! field the service may omit is optional (list items can be as thin as `{id, location}`), and
//! `None` is never serialised, so request bodies carry exactly what we set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::id::ResourceId;

/// The Compute api-version vmrp speaks.
pub const API_VERSION: &str = "2025-04-01";

pub type Tags = BTreeMap<String, String>;

/// `{ "id": "..." }` references (`ApiEntityReference` / `SubResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
}

// ---------------------------------------------------------------------------------------------
// Restore point collections
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointCollection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<RestorePointCollectionProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointCollectionProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<RestorePointCollectionSource>,
    /// Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_point_collection_id: Option<String>,
    /// Read-only; present with `$expand=restorePoints`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_points: Option<Vec<RestorePoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instant_access: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointCollectionSource {
    /// The VM id (same region) or the source collection id (cross-region copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Read-only: the source's location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl RestorePointCollection {
    /// The PUT body for a collection in `location` whose source is `source` (a VM, or for a
    /// cross-region copy target, the source-region collection).
    pub fn for_source(location: &str, source: &ResourceId, tags: Tags) -> Self {
        Self {
            location: Some(location.to_string()),
            tags: (!tags.is_empty()).then_some(tags),
            properties: Some(RestorePointCollectionProperties {
                source: Some(RestorePointCollectionSource {
                    id: Some(source.to_string()),
                    location: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    pub fn source_id(&self) -> Option<&str> {
        self.properties.as_ref()?.source.as_ref()?.id.as_deref()
    }
    pub fn restore_points(&self) -> &[RestorePoint] {
        self.properties
            .as_ref()
            .and_then(|p| p.restore_points.as_deref())
            .unwrap_or(&[])
    }
}

// ---------------------------------------------------------------------------------------------
// Restore points
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<RestorePointProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_disks: Option<Vec<IdRef>>,
    /// Read-only: the VM as it was when the point was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency_mode: Option<ConsistencyMode>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option",
        default
    )]
    pub time_created: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_restore_point: Option<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instant_access_duration_minutes: Option<i32>,
    /// Present with `$expand=instanceView`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<RestorePointInstanceView>,
}

/// `consistencyMode`: modelled as a string upstream (`modelAsString`), so unknown values survive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsistencyMode {
    CrashConsistent,
    FileSystemConsistent,
    ApplicationConsistent,
    #[serde(untagged)]
    Other(String),
}

impl ConsistencyMode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::CrashConsistent => "CrashConsistent",
            Self::FileSystemConsistent => "FileSystemConsistent",
            Self::ApplicationConsistent => "ApplicationConsistent",
            Self::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePointInstanceView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_restore_points: Option<Vec<DiskRestorePointInstanceView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<InstanceViewStatus>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskRestorePointInstanceView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_status: Option<DiskRestorePointReplicationStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_access_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskRestorePointReplicationStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<InstanceViewStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_percent: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `Info | Warning | Error` (closed enum upstream; kept as a string to stay lenient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option",
        default
    )]
    pub time: Option<OffsetDateTime>,
}

/// ARM's reading of `provisioningState`: only `Succeeded`, `Failed` and `Canceled` are final, any
/// other value means still running, and no value at all means finished and succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningState {
    Succeeded,
    Failed,
    Canceled,
    InProgress(String),
}

impl ProvisioningState {
    pub fn from_field(value: Option<&str>) -> Self {
        match value {
            None => Self::Succeeded,
            Some(s) if s.eq_ignore_ascii_case("Succeeded") => Self::Succeeded,
            Some(s) if s.eq_ignore_ascii_case("Failed") => Self::Failed,
            Some(s) if s.eq_ignore_ascii_case("Canceled") => Self::Canceled,
            Some(s) => Self::InProgress(s.to_string()),
        }
    }
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::InProgress(_))
    }
}

impl RestorePoint {
    /// The PUT body for a local restore point. `consistencyMode` is sent only for
    /// `CrashConsistent`: the 2025-04-01 spec (`restorePoint.json`, `consistencyMode`) says "For
    /// now, only CrashConsistent is accepted as a valid input", and application consistency
    /// (file-system consistency on Linux) is what Azure does when the field is absent.
    pub fn local(consistency: Option<ConsistencyMode>, exclude_disks: &[ResourceId]) -> Self {
        Self {
            properties: Some(RestorePointProperties {
                consistency_mode: consistency.filter(|c| *c == ConsistencyMode::CrashConsistent),
                exclude_disks: (!exclude_disks.is_empty()).then(|| {
                    exclude_disks
                        .iter()
                        .map(|d| IdRef { id: d.to_string() })
                        .collect()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    /// The PUT body for a cross-region copy of `source`.
    pub fn copy_of(source: &ResourceId) -> Self {
        Self {
            properties: Some(RestorePointProperties {
                source_restore_point: Some(IdRef {
                    id: source.to_string(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    pub fn provisioning_state(&self) -> ProvisioningState {
        ProvisioningState::from_field(
            self.properties
                .as_ref()
                .and_then(|p| p.provisioning_state.as_deref()),
        )
    }
    pub fn time_created(&self) -> Option<OffsetDateTime> {
        self.properties.as_ref()?.time_created
    }
    pub fn source_restore_point(&self) -> Option<&str> {
        Some(
            self.properties
                .as_ref()?
                .source_restore_point
                .as_ref()?
                .id
                .as_str(),
        )
    }
    /// Per-disk `snapshotAccessState` from the instance view, as (disk restore point id, state);
    /// disks without the field are left out (empty without `$expand=instanceView`).
    pub fn snapshot_access_states(&self) -> Vec<(&str, &str)> {
        self.properties
            .as_ref()
            .and_then(|p| p.instance_view.as_ref())
            .and_then(|iv| iv.disk_restore_points.as_ref())
            .map(|disks| {
                disks
                    .iter()
                    .filter_map(|d| {
                        Some((
                            d.id.as_deref().unwrap_or("?"),
                            d.snapshot_access_state.as_deref()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Per-disk replication percentages from the instance view (empty without `$expand=instanceView`).
    pub fn replication_percents(&self) -> Vec<i32> {
        self.properties
            .as_ref()
            .and_then(|p| p.instance_view.as_ref())
            .and_then(|iv| iv.disk_restore_points.as_ref())
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| {
                        d.replication_status
                            .as_ref()
                            .and_then(|r| r.completion_percent)
                            .unwrap_or(0)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// True when a disk restore point's replication (a copy's) reports `Failed`: Azure gives no
    /// detail and no percent for it (virtual-machines-restore-points-copy, Limitations), so the
    /// missing percent must not read as "0 %, still replicating". A copy terminated after two
    /// weeks shows this way while its `provisioningState` stays `Succeeded`.
    pub fn replication_failed(&self) -> bool {
        self.properties
            .as_ref()
            .and_then(|p| p.instance_view.as_ref())
            .and_then(|iv| iv.disk_restore_points.as_ref())
            .is_some_and(|disks| {
                disks.iter().any(|d| {
                    d.replication_status
                        .as_ref()
                        .and_then(|r| r.status.as_ref())
                        .is_some_and(|s| {
                            s.level
                                .as_deref()
                                .is_some_and(|l| l.eq_ignore_ascii_case("Error"))
                                || s.code
                                    .as_deref()
                                    .is_some_and(|c| c.to_ascii_lowercase().ends_with("/failed"))
                        })
                })
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual machines (read side) and disks
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<VirtualMachineProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_profile: Option<StorageProfile>,
    /// `securityType` (`TrustedLaunch`, `ConfidentialVM`) decides whether restore points are
    /// supported at all (confidential VMs: no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_profile: Option<serde_json::Value>,
    /// `periodicRestorePoints` (preview): the platform's own restore points of this VM, which
    /// count against the 500 per VM too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resiliency_profile: Option<serde_json::Value>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option",
        default
    )]
    pub time_created: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_disk: Option<OsDisk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_disks: Option<Vec<DataDisk>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_disk: Option<ManagedDiskParameters>,
    /// `{"option": "Local"}` marks an ephemeral OS disk (not supported by restore points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_disk_settings: Option<DiffDiskSettings>,
    #[serde(rename = "diskSizeGB", skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<i32>,
    /// `None`, `ReadOnly`, `ReadWrite`: crash consistency is not guaranteed with `ReadWrite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caching: Option<String>,
    /// Write-accelerated disks are not supported by crash-consistent points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_accelerator_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffDiskSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    pub lun: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_disk: Option<ManagedDiskParameters>,
    #[serde(rename = "diskSizeGB", skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<i32>,
    /// As [`OsDisk::caching`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caching: Option<String>,
    /// As [`OsDisk::write_accelerator_enabled`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_accelerator_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDiskParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// e.g. `Premium_LRS`, `UltraSSD_LRS`, `PremiumV2_LRS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_account_type: Option<String>,
    /// Set when the disk is encrypted with a customer-managed key (server-side encryption
    /// with a disk encryption set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_encryption_set: Option<IdRef>,
}

/// A managed disk (`Microsoft.Compute/disks`), read only to learn whether it is shared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<DiskSku>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<DiskProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskSku {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskProperties {
    /// More than 1 means a shared disk (not supported by restore points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_shares: Option<i32>,
    #[serde(rename = "diskSizeGB", skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<i32>,
    /// How the disk was made (a restored disk names its disk restore point here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_data: Option<DiskCreationData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// `properties.creationData` of a disk: `createOption` and its source (for `Restore`, the disk
/// restore point).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskCreationData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_option: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_resource_id: Option<String>,
}

/// One disk of a VM, flattened from the storage profile for planning (exclusions, mode checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// `None` for the OS disk.
    pub lun: Option<i32>,
    pub name: Option<String>,
    pub managed_disk_id: Option<ResourceId>,
    pub storage_account_type: Option<String>,
    pub ephemeral: bool,
    /// `writeAcceleratorEnabled` of the storage profile entry.
    pub write_accelerator: bool,
    /// `caching` of the storage profile entry (`ReadWrite`, `ReadOnly`, `None`).
    pub caching: Option<String>,
    /// `managedDisk.diskEncryptionSet.id`: the disk uses a customer-managed key.
    pub disk_encryption_set: Option<ResourceId>,
}

/// The disk encryption set a storage profile's `managedDisk` names, if a valid id.
fn des_of(m: Option<&ManagedDiskParameters>) -> Option<ResourceId> {
    ResourceId::parse(&m?.disk_encryption_set.as_ref()?.id).ok()
}

impl VirtualMachine {
    pub fn resource_id(&self) -> Option<ResourceId> {
        ResourceId::parse(self.id.as_deref()?).ok()
    }
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .as_ref()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    /// `hardwareProfile.vmSize`, e.g. `Standard_D4s_v5`.
    pub fn vm_size(&self) -> Option<&str> {
        self.properties.as_ref()?.hardware_profile.as_ref()?["vmSize"].as_str()
    }
    /// `securityProfile.securityType`, e.g. `TrustedLaunch`, `ConfidentialVM`.
    pub fn security_type(&self) -> Option<&str> {
        self.properties.as_ref()?.security_profile.as_ref()?["securityType"].as_str()
    }
    /// Whether the platform takes periodic restore points of this VM
    /// (`resiliencyProfile.periodicRestorePoints.isEnabled`, preview).
    pub fn periodic_restore_points(&self) -> bool {
        self.properties
            .as_ref()
            .and_then(|p| p.resiliency_profile.as_ref())
            .and_then(|r| r["periodicRestorePoints"]["isEnabled"].as_bool())
            .unwrap_or(false)
    }
    /// The managed data disks' ids, by LUN (the disks whose details exclusions need).
    pub fn managed_data_disk_ids(&self) -> impl Iterator<Item = ResourceId> {
        self.disks()
            .into_iter()
            .filter(|d| d.lun.is_some())
            .filter_map(|d| d.managed_disk_id)
    }
    /// OS disk first, then data disks by LUN.
    pub fn disks(&self) -> Vec<VmDisk> {
        let Some(sp) = self
            .properties
            .as_ref()
            .and_then(|p| p.storage_profile.as_ref())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(os) = &sp.os_disk {
            out.push(VmDisk {
                lun: None,
                name: os.name.clone(),
                managed_disk_id: os
                    .managed_disk
                    .as_ref()
                    .and_then(|m| m.id.as_deref())
                    .and_then(|i| ResourceId::parse(i).ok()),
                storage_account_type: os
                    .managed_disk
                    .as_ref()
                    .and_then(|m| m.storage_account_type.clone()),
                disk_encryption_set: des_of(os.managed_disk.as_ref()),
                ephemeral: os
                    .diff_disk_settings
                    .as_ref()
                    .and_then(|d| d.option.as_deref())
                    .is_some_and(|o| o.eq_ignore_ascii_case("Local")),
                write_accelerator: os.write_accelerator_enabled.unwrap_or(false),
                caching: os.caching.clone(),
            });
        }
        let mut data: Vec<&DataDisk> = sp.data_disks.iter().flatten().collect();
        data.sort_by_key(|d| d.lun);
        for d in data {
            out.push(VmDisk {
                lun: Some(d.lun),
                disk_encryption_set: des_of(d.managed_disk.as_ref()),
                name: d.name.clone(),
                managed_disk_id: d
                    .managed_disk
                    .as_ref()
                    .and_then(|m| m.id.as_deref())
                    .and_then(|i| ResourceId::parse(i).ok()),
                storage_account_type: d
                    .managed_disk
                    .as_ref()
                    .and_then(|m| m.storage_account_type.clone()),
                ephemeral: false,
                write_accelerator: d.write_accelerator_enabled.unwrap_or(false),
                caching: d.caching.clone(),
            });
        }
        out
    }
}

/// `{"value": [...], "nextLink": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// ARM's error body (`CloudError`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ApiError>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub innererror: Option<serde_json::Value>,
}

impl CloudError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: Some(ApiError {
                code: Some(code.to_string()),
                message: Some(message.into()),
                ..Default::default()
            }),
        }
    }
}

/// The body of an `Azure-AsyncOperation` status URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncOperationStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option",
        default
    )]
    pub start_time: Option<OffsetDateTime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option",
        default
    )]
    pub end_time: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}
