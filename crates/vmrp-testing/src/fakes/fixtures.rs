//! Fixture builders: resource ids, VMs, disks, rules and policies for tests.

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}`.
pub fn vm_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "virtualMachines", name)
        .expect("fixture names form an id")
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}`.
pub fn disk_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "disks", name)
        .expect("fixture names form an id")
}

/// Builds a [`VirtualMachine`] the way ARM returns it: a managed OS disk named `{name}-os`.
pub struct VmBuilder {
    vm: VirtualMachine,
}

impl VmBuilder {
    pub fn new(sub: &str, rg: &str, name: &str) -> Self {
        let id = vm_id(sub, rg, name);
        let os_disk = disk_id(sub, rg, &format!("{name}-os"));
        Self {
            vm: VirtualMachine {
                id: Some(id.to_string()),
                name: Some(name.to_string()),
                kind: Some("Microsoft.Compute/virtualMachines".into()),
                location: Some("eastus".into()),
                tags: None,
                zones: None,
                properties: Some(VirtualMachineProperties {
                    vm_id: Some(format!("00000000-0000-0000-0000-{:0>12}", name.len())),
                    provisioning_state: Some("Succeeded".into()),
                    storage_profile: Some(StorageProfile {
                        os_disk: Some(OsDisk {
                            os_type: Some("Linux".into()),
                            name: Some(format!("{name}-os")),
                            managed_disk: Some(ManagedDiskParameters {
                                id: Some(os_disk.to_string()),
                                storage_account_type: Some("Premium_LRS".into()),
                                disk_encryption_set: None,
                            }),
                            ..Default::default()
                        }),
                        data_disks: None,
                    }),
                    ..Default::default()
                }),
            },
        }
    }
    pub fn location(mut self, location: &str) -> Self {
        self.vm.location = Some(location.into());
        self
    }
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.vm
            .tags
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }
    /// A managed data disk at `lun` with this disk id and storage type (e.g. `Premium_LRS`).
    pub fn data_disk(mut self, lun: i32, disk: &ResourceId, storage: &str) -> Self {
        let sp = self.storage_profile();
        sp.data_disks.get_or_insert_with(Vec::new).push(DataDisk {
            lun,
            name: disk.name().map(str::to_string),
            managed_disk: Some(ManagedDiskParameters {
                id: Some(disk.to_string()),
                storage_account_type: Some(storage.into()),
                disk_encryption_set: None,
            }),
            disk_size_gb: Some(128),
            ..Default::default()
        });
        self
    }
    /// Makes the OS disk ephemeral (`diffDiskSettings.option = Local`).
    pub fn ephemeral_os(mut self) -> Self {
        if let Some(os) = self.storage_profile().os_disk.as_mut() {
            os.diff_disk_settings = Some(DiffDiskSettings {
                option: Some("Local".into()),
                placement: Some("CacheDisk".into()),
            });
        }
        self
    }
    /// Encrypts the OS disk with the customer-managed key of disk encryption set `set`
    /// (`managedDisk.diskEncryptionSet.id`).
    pub fn os_disk_encryption_set(mut self, set: &str) -> Self {
        if let Some(disk) = self
            .storage_profile()
            .os_disk
            .as_mut()
            .and_then(|os| os.managed_disk.as_mut())
        {
            disk.disk_encryption_set = Some(crate::azure::models::IdRef { id: set.into() });
        }
        self
    }
    fn storage_profile(&mut self) -> &mut StorageProfile {
        self.vm
            .properties
            .get_or_insert_with(Default::default)
            .storage_profile
            .get_or_insert_with(Default::default)
    }
    pub fn build(self) -> VirtualMachine {
        self.vm
    }
}

/// A managed disk as `GET disks/{name}` returns it.
pub fn disk(id: &ResourceId, sku: &str, max_shares: Option<i32>, tags: &[(&str, &str)]) -> Disk {
    Disk {
        id: Some(id.to_string()),
        name: id.name().map(str::to_string),
        location: Some("eastus".into()),
        tags: (!tags.is_empty()).then(|| {
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        sku: Some(DiskSku {
            name: Some(sku.into()),
        }),
        properties: Some(DiskProperties {
            max_shares,
            disk_size_gb: Some(128),
            ..Default::default()
        }),
    }
}

/// A rule covering every VM, crash-consistent, keeping the newest `keep_last` points; adjust the
/// public fields for other cases.
pub fn rule(name: &str, keep_last: u32) -> Rule {
    Rule {
        name: name.to_string(),
        targets: Targets::default(),
        schedule: None,
        consistency: crate::azure::models::ConsistencyMode::CrashConsistent,
        consistency_tag: None,
        exclude_disks: Default::default(),
        copies: Vec::new(),
        retention: Retention::newest(keep_last),
        deadlines: Deadlines::default(),
        collection_resource_group: None,
        instant_access: None,
        skip_backup_protected: false,
    }
}

/// A policy of these rules, keeping orphans forever.
pub fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        orphans: Default::default(),
        drills: None,
    }
}
