//! A seeded fleet of VMs and their managed disks, shaped like `VirtualMachine_Get.json`: the same
//! [`FleetSpec`] (seed included) always yields the same subscriptions, resource groups, VMs,
//! disks, ids and GUIDs. Also the deterministic hashing the emulator uses for GUIDs and jitter.

pub use crate::schedule::rfc3339;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// What fleet to seed. Fractions are per VM and independent; a VM drawn for "ultra" gets one
/// Ultra (or, for the Premium SSD v2 fraction, one `PremiumV2_LRS`) data disk, a VM drawn for
/// "shared" gets one data disk with `maxShares: 2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FleetSpec {
    /// Number of VMs.
    pub count: usize,
    /// Number of subscriptions; VMs are spread over them round-robin.
    pub subscriptions: usize,
    /// Regions VMs are spread over (ARM names such as `westeurope`).
    pub regions: Vec<String>,
    /// Resource groups per (subscription, region), named `rg-{region}-{n}`.
    pub resource_groups_per_region: usize,
    pub min_data_disks: u32,
    pub max_data_disks: u32,
    pub ephemeral_os_fraction: f64,
    pub shared_disk_fraction: f64,
    pub ultra_disk_fraction: f64,
    pub premium_v2_fraction: f64,
    /// Fraction of VMs whose managed disks are encrypted with a customer-managed key: each such
    /// disk names its region's disk encryption set (`managedDisk.diskEncryptionSet.id`), and
    /// every (subscription, region) gets one set, `des-{region}` in `rg-{region}-1`. Drawn from
    /// its own random stream, so 0 (the default) leaves every other draw, and so the fleet, as
    /// it was.
    pub cmk_fraction: f64,
    pub linux_fraction: f64,
    /// Fraction of VMs carrying the opt-in tag `tag_key = tag_value`.
    pub tagged_fraction: f64,
    /// The features from here on are drawn from their own per-VM hash ([`unit`]), so a fleet
    /// with them at 0 is the fleet it was before.
    /// Fraction of confidential VMs (`securityType: ConfidentialVM`, a DCasv5 size): restore
    /// points do not support them.
    pub confidential_fraction: f64,
    /// Fraction of Trusted Launch VMs (`securityType: TrustedLaunch`): supported.
    pub trusted_launch_fraction: f64,
    /// Fraction of VMs (M-series) with a write-accelerated data disk.
    pub write_accelerated_fraction: f64,
    /// Fraction of VMs of a size without Premium storage (`Standard_D4_v5`); their disks are
    /// Standard SSDs.
    pub no_premium_size_fraction: f64,
    /// Fraction of VMs Azure Backup also protects: a Backup collection
    /// `AzureBackup_{vm}_{n}` in `AzureBackupRG_{region}_1` holding daily points (instant
    /// restore snapshots), which count against the 500 per VM.
    pub backup_fraction: f64,
    /// Fraction of VMs with platform-managed periodic restore points
    /// (`resiliencyProfile.periodicRestorePoints.isEnabled`, preview).
    pub periodic_restore_points_fraction: f64,
    pub tag_key: String,
    pub tag_value: String,
    pub seed: u64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            count: 20,
            subscriptions: 1,
            regions: vec!["westeurope".to_string(), "northeurope".to_string()],
            resource_groups_per_region: 2,
            min_data_disks: 0,
            max_data_disks: 2,
            ephemeral_os_fraction: 0.05,
            shared_disk_fraction: 0.05,
            ultra_disk_fraction: 0.03,
            premium_v2_fraction: 0.03,
            cmk_fraction: 0.0,
            linux_fraction: 0.5,
            tagged_fraction: 0.8,
            confidential_fraction: 0.0,
            trusted_launch_fraction: 0.0,
            write_accelerated_fraction: 0.0,
            no_premium_size_fraction: 0.0,
            backup_fraction: 0.0,
            periodic_restore_points_fraction: 0.0,
            tag_key: "vmrp".to_string(),
            tag_value: "on".to_string(),
            seed: 1,
        }
    }
}

impl FleetSpec {
    /// An empty fleet (for tests that seed example-shaped resources themselves).
    pub fn empty() -> Self {
        Self {
            count: 0,
            subscriptions: 0,
            ..Self::default()
        }
    }

    /// Checks the spec; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        let fractions = [
            ("ephemeralOsFraction", self.ephemeral_os_fraction),
            ("sharedDiskFraction", self.shared_disk_fraction),
            ("ultraDiskFraction", self.ultra_disk_fraction),
            ("premiumV2Fraction", self.premium_v2_fraction),
            ("cmkFraction", self.cmk_fraction),
            ("linuxFraction", self.linux_fraction),
            ("taggedFraction", self.tagged_fraction),
            ("confidentialFraction", self.confidential_fraction),
            ("trustedLaunchFraction", self.trusted_launch_fraction),
            ("writeAcceleratedFraction", self.write_accelerated_fraction),
            ("noPremiumSizeFraction", self.no_premium_size_fraction),
            ("backupFraction", self.backup_fraction),
            (
                "periodicRestorePointsFraction",
                self.periodic_restore_points_fraction,
            ),
        ];
        for (name, v) in fractions {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "fleet.{name} = {v}: expected a fraction between 0 and 1"
                ));
            }
        }
        if self.count > 0 {
            if self.regions.is_empty() || self.regions.iter().any(|r| r.trim().is_empty()) {
                return Err("fleet.regions: expected at least one non-empty region name".into());
            }
            if let Some(Err(e)) = self
                .regions
                .iter()
                .map(|r| crate::policy::regions::known_region(r))
                .find(Result::is_err)
            {
                return Err(format!("fleet.regions: {e}"));
            }
            if self.subscriptions == 0 {
                return Err("fleet.subscriptions: expected at least 1 when count > 0".into());
            }
            if self.resource_groups_per_region == 0 {
                return Err("fleet.resourceGroupsPerRegion: expected at least 1".into());
            }
        }
        if self.min_data_disks > self.max_data_disks || self.max_data_disks > 64 {
            return Err(format!(
                "fleet.minDataDisks/maxDataDisks = {}/{}: expected min <= max <= 64",
                self.min_data_disks, self.max_data_disks
            ));
        }
        if self.tag_key.trim().is_empty() {
            return Err("fleet.tagKey: expected a non-empty tag name".into());
        }
        Ok(())
    }

    /// The spec with out-of-range values clamped (used when an invalid spec reaches `new`).
    pub fn sanitized(&self) -> Self {
        let mut s = self.clone();
        let clamp = |v: f64| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        s.ephemeral_os_fraction = clamp(s.ephemeral_os_fraction);
        s.shared_disk_fraction = clamp(s.shared_disk_fraction);
        s.ultra_disk_fraction = clamp(s.ultra_disk_fraction);
        s.premium_v2_fraction = clamp(s.premium_v2_fraction);
        s.cmk_fraction = clamp(s.cmk_fraction);
        s.linux_fraction = clamp(s.linux_fraction);
        s.tagged_fraction = clamp(s.tagged_fraction);
        for f in [
            &mut s.confidential_fraction,
            &mut s.trusted_launch_fraction,
            &mut s.write_accelerated_fraction,
            &mut s.no_premium_size_fraction,
            &mut s.backup_fraction,
            &mut s.periodic_restore_points_fraction,
        ] {
            *f = clamp(*f);
        }
        s.regions.retain(|r| !r.trim().is_empty());
        if s.regions.is_empty() {
            s.regions.push("westeurope".into());
        }
        if s.count > 0 {
            s.subscriptions = s.subscriptions.max(1);
        }
        s.resource_groups_per_region = s.resource_groups_per_region.max(1);
        s.max_data_disks = s.max_data_disks.min(64);
        s.min_data_disks = s.min_data_disks.min(s.max_data_disks);
        if s.tag_key.trim().is_empty() {
            s.tag_key = "vmrp".into();
        }
        s
    }
}

/// The generated fleet: subscriptions, resource groups, VM and disk documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub subscriptions: Vec<String>,
    /// `(subscription, resource group, location)`.
    pub resource_groups: Vec<(String, String, String)>,
    pub vms: Vec<Value>,
    pub disks: Vec<Value>,
    /// Disk encryption set documents (`Microsoft.Compute/diskEncryptionSets`), one per
    /// (subscription, region) when `cmk_fraction` > 0.
    pub encryption_sets: Vec<Value>,
}

/// The id of the fleet's disk encryption set for `region` in `subscription`.
pub fn encryption_set_id(subscription: &str, region: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/rg-{region}-1/providers/Microsoft.Compute/diskEncryptionSets/des-{region}"
    )
}

/// A disk encryption set document (the shape of `DiskEncryptionSet_Get`, trimmed).
pub fn encryption_set_doc(id: &str, location: &str, seed: u64) -> Value {
    let name = id.rsplit('/').next().unwrap_or_default();
    json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Compute/diskEncryptionSets",
        "location": location,
        "identity": {"type": "SystemAssigned", "principalId": det_uuid(seed, &format!("{id}/principal")), "tenantId": det_uuid(seed, "tenant")},
        "properties": {
            "encryptionType": "EncryptionAtRestWithCustomerKey",
            "activeKey": {"keyUrl": format!("https://kv-{location}.vault.azure.net/keys/{name}/{}", det_uuid(seed, &format!("{id}/key")).replace('-', ""))},
            "provisioningState": "Succeeded"
        }
    })
}

const VM_SIZES: &[&str] = &[
    "Standard_D2s_v5",
    "Standard_D4s_v5",
    "Standard_E4s_v5",
    "Standard_B2ms",
    "Standard_DS3_v2",
];

/// Builds the fleet for `spec` (assumed sanitized), with `timeCreated` set to `created`.
pub fn generate(spec: &FleetSpec, created: OffsetDateTime) -> Fleet {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let subscriptions: Vec<String> = (0..spec.subscriptions)
        .map(|i| det_uuid(spec.seed, &format!("subscription/{i}")))
        .collect();
    let mut resource_groups = Vec::new();
    for sub in &subscriptions {
        for region in &spec.regions {
            for n in 1..=spec.resource_groups_per_region {
                resource_groups.push((sub.clone(), format!("rg-{region}-{n}"), region.clone()));
            }
        }
    }
    let mut vms = Vec::new();
    let mut disks = Vec::new();
    // Its own stream: drawing from `rng` would shift every later draw of existing fleets.
    let mut cmk_rng = ChaCha8Rng::seed_from_u64(mix(spec.seed, "cmk"));
    let encryption_sets = if spec.cmk_fraction > 0.0 {
        subscriptions
            .iter()
            .flat_map(|s| {
                spec.regions
                    .iter()
                    .map(|r| encryption_set_doc(&encryption_set_id(s, r), r, spec.seed))
            })
            .collect()
    } else {
        Vec::new()
    };
    for i in 0..spec.count {
        let sub = &subscriptions[i % subscriptions.len()];
        let region = &spec.regions[rng.random_range(0..spec.regions.len())];
        let rg = format!(
            "rg-{region}-{}",
            rng.random_range(1..=spec.resource_groups_per_region)
        );
        let name = format!("vm-{region}-{i:04}");
        let linux = rng.random::<f64>() < spec.linux_fraction;
        let ephemeral = rng.random::<f64>() < spec.ephemeral_os_fraction;
        let shared = rng.random::<f64>() < spec.shared_disk_fraction;
        let ultra = rng.random::<f64>() < spec.ultra_disk_fraction;
        let premium_v2 = rng.random::<f64>() < spec.premium_v2_fraction;
        let tagged = rng.random::<f64>() < spec.tagged_fraction;
        let mut data_count = rng.random_range(spec.min_data_disks..=spec.max_data_disks) as usize;
        let special = [shared, ultra, premium_v2].iter().filter(|b| **b).count();
        data_count = data_count.max(special);
        let size = VM_SIZES[rng.random_range(0..VM_SIZES.len())];
        let zone = rng.random_range(0..4u32);
        let env = ["prod", "test", "dev"][rng.random_range(0..3)];

        let mut tags = serde_json::Map::new();
        tags.insert("env".into(), json!(env));
        if tagged {
            tags.insert(spec.tag_key.clone(), json!(spec.tag_value));
        }
        let mut data_kinds: Vec<(&str, i32)> = vec![("Premium_LRS", 1); data_count];
        let mut slot = 0;
        for (flag, kind) in [
            (shared, ("Premium_LRS", 2)),
            (ultra, ("UltraSSD_LRS", 1)),
            (premium_v2, ("PremiumV2_LRS", 1)),
        ] {
            if flag {
                data_kinds[slot] = kind;
                slot += 1;
            }
        }
        let mut seed_vm = VmSeed {
            subscription: sub.clone(),
            resource_group: rg,
            name: name.clone(),
            location: region.clone(),
            vm_size: size.to_string(),
            linux,
            ephemeral_os: ephemeral,
            os_disk_size_gb: if linux { 30 } else { 127 },
            data_disks: Vec::new(),
            tags: Value::Object(tags),
            zones: (zone > 0).then(|| vec![zone.to_string()]),
            seed: spec.seed,
            created,
            disk_encryption_set: None,
        };
        for (lun, (sku, shares)) in data_kinds.into_iter().enumerate() {
            seed_vm.data_disks.push(DataDiskSeed {
                lun: lun as i32,
                name: format!("{name}_DataDisk_{lun}"),
                resource_group: None,
                storage_account_type: sku.to_string(),
                size_gb: [32, 64, 128, 256, 512][rng.random_range(0..5)],
                max_shares: shares,
            });
        }
        if spec.cmk_fraction > 0.0 && cmk_rng.random::<f64>() < spec.cmk_fraction {
            seed_vm.disk_encryption_set = Some(encryption_set_id(sub, region));
        }
        let (mut vm, mut vm_disks) = seed_vm.build();
        mix_in_features(spec, &mut vm, &mut vm_disks);
        vms.push(vm);
        disks.extend(vm_disks);
    }
    Fleet {
        subscriptions,
        resource_groups,
        vms,
        disks,
        encryption_sets,
    }
}

/// Whether the VM `name` is drawn for `feature` (its own hash, independent of the fleet's RNG).
pub fn drawn(spec: &FleetSpec, name: &str, feature: &str, fraction: f64) -> bool {
    fraction > 0.0 && unit(spec.seed, &format!("{name}/{feature}")) < fraction
}

/// The features of [`FleetSpec`] drawn per VM by hash (see `confidential_fraction`): applied to the
/// built documents. At most one of the size-changing ones (confidential, write-accelerated,
/// no Premium storage) applies, in that order. The Backup collection is seeded by the
/// emulator ([`backup_points_of`]), not here.
fn mix_in_features(spec: &FleetSpec, vm: &mut Value, disks: &mut [Value]) {
    let name = vm["name"].as_str().unwrap_or_default().to_string();
    let props = &mut vm["properties"];
    if drawn(spec, &name, "confidential", spec.confidential_fraction) {
        props["hardwareProfile"]["vmSize"] = json!("Standard_DC4as_v5");
        props["securityProfile"] = json!({
            "securityType": "ConfidentialVM",
            "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}
        });
    } else if drawn(
        spec,
        &name,
        "writeAccelerated",
        spec.write_accelerated_fraction,
    ) && props["storageProfile"]["dataDisks"]
        .as_array()
        .is_some_and(|d| !d.is_empty())
    {
        // Write Accelerator is an M-series feature, on Premium disks without ReadWrite caching.
        props["hardwareProfile"]["vmSize"] = json!("Standard_M8ms");
        let data = &mut props["storageProfile"]["dataDisks"][0];
        if data["managedDisk"]["storageAccountType"] == json!("Premium_LRS") {
            data["writeAcceleratorEnabled"] = json!(true);
            data["caching"] = json!("None");
        }
    } else if drawn(spec, &name, "noPremiumSize", spec.no_premium_size_fraction) {
        props["hardwareProfile"]["vmSize"] = json!("Standard_D4_v5");
        props["storageProfile"]["osDisk"]["managedDisk"]["storageAccountType"] =
            json!("StandardSSD_LRS");
        for d in props["storageProfile"]["dataDisks"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if d["managedDisk"]["storageAccountType"] == json!("Premium_LRS") {
                d["managedDisk"]["storageAccountType"] = json!("StandardSSD_LRS");
            }
        }
        for d in disks.iter_mut() {
            if d["sku"]["name"] == json!("Premium_LRS") {
                d["sku"] = json!({"name": "StandardSSD_LRS", "tier": "Standard"});
            }
        }
    }
    if drawn(spec, &name, "trustedLaunch", spec.trusted_launch_fraction)
        && props.get("securityProfile").is_none()
    {
        props["securityProfile"] = json!({
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}
        });
    }
    if drawn(
        spec,
        &name,
        "periodicRestorePoints",
        spec.periodic_restore_points_fraction,
    ) {
        props["resiliencyProfile"] = json!({"periodicRestorePoints": {"isEnabled": true}});
    }
}

/// How many Azure Backup points a Backup-protected VM has when the emulator starts: daily
/// instant-restore snapshots kept 5 days (Standard policy; Enhanced keeps up to 30), so 5.
pub const BACKUP_POINTS_PER_VM: u32 = 5;

/// The Backup collection of a Backup-protected VM (`backup_fraction`): resource group
/// `AzureBackupRG_{region}_1` and collection `AzureBackup_{vm}_{n}` (Azure Backup's naming,
/// learn.microsoft.com/azure/backup/backup-during-vm-creation and the VM move limitations
/// page), or `None` when the VM is not drawn.
pub fn backup_points_of(spec: &FleetSpec, vm: &Value) -> Option<(String, String)> {
    let name = vm["name"].as_str()?;
    if !drawn(spec, name, "backup", spec.backup_fraction) {
        return None;
    }
    let region = vm["location"].as_str()?;
    let n = mix(spec.seed, &format!("{name}/backupCollection")) % 100_000_000_000;
    Some((
        format!("AzureBackupRG_{region}_1"),
        format!("AzureBackup_{name}_{n:011}"),
    ))
}

/// One data disk to attach in [`VmSeed`].
#[derive(Debug, Clone, PartialEq)]
pub struct DataDiskSeed {
    pub lun: i32,
    pub name: String,
    /// The disk's resource group when it differs from the VM's.
    pub resource_group: Option<String>,
    pub storage_account_type: String,
    pub size_gb: i32,
    pub max_shares: i32,
}

/// Everything needed to build a realistic VM document and its disks (also used by tests to seed
/// example-shaped VMs).
#[derive(Debug, Clone, PartialEq)]
pub struct VmSeed {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub vm_size: String,
    pub linux: bool,
    pub ephemeral_os: bool,
    pub os_disk_size_gb: i32,
    pub data_disks: Vec<DataDiskSeed>,
    pub tags: Value,
    pub zones: Option<Vec<String>>,
    pub seed: u64,
    pub created: OffsetDateTime,
    /// Customer-managed keys: every managed disk of the VM names this disk encryption set.
    pub disk_encryption_set: Option<String>,
}

impl VmSeed {
    /// A plain VM (Windows, one 30 GB OS disk, no data disks) to customise.
    pub fn new(subscription: &str, resource_group: &str, name: &str, location: &str) -> Self {
        Self {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            name: name.into(),
            location: location.into(),
            vm_size: "Standard_DS3_v2".into(),
            linux: false,
            ephemeral_os: false,
            os_disk_size_gb: 30,
            data_disks: Vec::new(),
            tags: json!({}),
            zones: None,
            seed: 0,
            created: time::macros::datetime!(2026-01-01 00:00 UTC),
            disk_encryption_set: None,
        }
    }

    /// Adds a `Premium_LRS` data disk in the VM's resource group.
    pub fn with_data_disk(mut self, lun: i32, name: &str) -> Self {
        self.data_disks.push(DataDiskSeed {
            lun,
            name: name.into(),
            resource_group: None,
            storage_account_type: "Premium_LRS".into(),
            size_gb: 128,
            max_shares: 1,
        });
        self
    }

    /// A data disk of another SKU and size, e.g. `PremiumV2_LRS` (whose restore points copy
    /// their snapshot in the background for a time growing with `size_gb`).
    pub fn with_data_disk_sku(mut self, lun: i32, name: &str, sku: &str, size_gb: i32) -> Self {
        self.data_disks.push(DataDiskSeed {
            lun,
            name: name.into(),
            resource_group: None,
            storage_account_type: sku.into(),
            size_gb,
            max_shares: 1,
        });
        self
    }

    /// A storage profile's `managedDisk`, with the encryption set when the VM uses CMK.
    fn managed_disk(&self, sku: &str, id: &str) -> Value {
        let mut md = json!({"storageAccountType": sku, "id": id});
        if let Some(des) = &self.disk_encryption_set {
            md["diskEncryptionSet"] = json!({ "id": des });
        }
        md
    }

    fn disk_id(&self, rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}",
            self.subscription
        )
    }

    /// The VM document and the disk documents (no disk resource for an ephemeral OS disk).
    pub fn build(&self) -> (Value, Vec<Value>) {
        let vm_id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription, self.resource_group, self.name
        );
        let created = rfc3339(self.created);
        let os_name = format!(
            "{}_OsDisk_1_{}",
            self.name,
            &det_uuid(self.seed, &format!("{vm_id}/osdisk")).replace('-', "")
        );
        let os_disk_id = self.disk_id(&self.resource_group, &os_name);
        let os_type = if self.linux { "Linux" } else { "Windows" };
        let mut os_disk = json!({
            "osType": os_type,
            "name": os_name,
            "createOption": "FromImage",
            "caching": "ReadWrite",
            "managedDisk": self.managed_disk("Premium_LRS", &os_disk_id),
            "deleteOption": "Delete",
            "diskSizeGB": self.os_disk_size_gb
        });
        let mut disks = Vec::new();
        if self.ephemeral_os {
            os_disk["caching"] = json!("ReadOnly");
            os_disk["managedDisk"]["storageAccountType"] = json!("Standard_LRS");
            os_disk["diffDiskSettings"] = json!({"option": "Local", "placement": "CacheDisk"});
        } else {
            disks.push(self.disk_doc(
                &os_disk_id,
                &os_name,
                "Premium_LRS",
                self.os_disk_size_gb,
                1,
                Some(os_type),
                &vm_id,
            ));
        }
        let mut data = Vec::new();
        for d in &self.data_disks {
            let rg = d.resource_group.as_deref().unwrap_or(&self.resource_group);
            let id = self.disk_id(rg, &d.name);
            data.push(json!({
                "lun": d.lun,
                "name": d.name,
                "createOption": "Attach",
                "caching": if d.storage_account_type.starts_with("Premium_") { "ReadOnly" } else { "None" },
                "managedDisk": self.managed_disk(&d.storage_account_type, &id),
                "deleteOption": "Detach",
                "diskSizeGB": d.size_gb,
                "toBeDetached": false
            }));
            disks.push(self.disk_doc(
                &id,
                &d.name,
                &d.storage_account_type,
                d.size_gb,
                d.max_shares,
                None,
                &vm_id,
            ));
        }
        let (image, os_config) = if self.linux {
            (
                json!({"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}),
                json!({"linuxConfiguration": {"disablePasswordAuthentication": true, "provisionVMAgent": true,
                        "patchSettings": {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"}}}),
            )
        } else {
            (
                json!({"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer", "sku": "2022-datacenter-azure-edition", "version": "latest"}),
                json!({"windowsConfiguration": {"provisionVMAgent": true, "enableAutomaticUpdates": true,
                        "patchSettings": {"patchMode": "AutomaticByOS", "assessmentMode": "ImageDefault"}}}),
            )
        };
        let mut os_profile = json!({
            "computerName": self.name.chars().take(15).collect::<String>(),
            "adminUsername": "azureuser",
            "secrets": [],
            "allowExtensionOperations": true,
            "requireGuestProvisionSignal": true
        });
        if let (Some(p), Some(c)) = (os_profile.as_object_mut(), os_config.as_object()) {
            p.extend(c.clone());
        }
        let mut vm = json!({
            "name": self.name,
            "id": vm_id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.location,
            "tags": self.tags,
            "properties": {
                "vmId": det_uuid(self.seed, &format!("{vm_id}/vmId")),
                "hardwareProfile": {"vmSize": self.vm_size},
                "storageProfile": {
                    "imageReference": image,
                    "osDisk": os_disk,
                    "dataDisks": data,
                    "diskControllerType": "SCSI"
                },
                "osProfile": os_profile,
                "networkProfile": {"networkInterfaces": [{"id": format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic",
                    self.subscription, self.resource_group, self.name)}]},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}},
                "provisioningState": "Succeeded",
                "timeCreated": created
            }
        });
        if let Some(z) = &self.zones {
            vm["zones"] = json!(z);
        }
        (vm, disks)
    }

    #[allow(clippy::too_many_arguments)]
    fn disk_doc(
        &self,
        id: &str,
        name: &str,
        sku: &str,
        size_gb: i32,
        max_shares: i32,
        os_type: Option<&str>,
        vm_id: &str,
    ) -> Value {
        let mut props = json!({
            "diskSizeGB": size_gb,
            "diskState": "Attached",
            "provisioningState": "Succeeded",
            "timeCreated": rfc3339(self.created),
            "uniqueId": det_uuid(self.seed, &format!("{id}/uniqueId")),
            "creationData": {"createOption": if os_type.is_some() { "FromImage" } else { "Empty" }}
        });
        if max_shares > 1 {
            props["maxShares"] = json!(max_shares);
        }
        if let Some(des) = &self.disk_encryption_set {
            props["encryption"] =
                json!({"type": "EncryptionAtRestWithCustomerKey", "diskEncryptionSetId": des});
        }
        if let Some(os) = os_type {
            props["osType"] = json!(os);
        }
        // Disks carry their VM's tags (as tag-inheritance policies commonly arrange).
        let mut disk = json!({
            "name": name,
            "id": id,
            "type": "Microsoft.Compute/disks",
            "location": self.location,
            "tags": self.tags,
            "managedBy": vm_id,
            "sku": {"name": sku, "tier": sku.split('_').next().unwrap_or(sku)},
            "properties": props
        });
        if let Some(z) = &self.zones {
            disk["zones"] = json!(z);
        }
        disk
    }
}

/// A stable 64-bit hash of `(seed, text)`: FNV-1a then a splitmix64 finaliser (stable across
/// Rust versions, unlike `DefaultHasher`).
pub fn mix(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in text.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` derived from `(seed, text)`.
pub fn unit(seed: u64, text: &str) -> f64 {
    (mix(seed, text) >> 11) as f64 / (1u64 << 53) as f64
}

/// A version-4-shaped GUID derived from `(seed, text)`.
pub fn det_uuid(seed: u64, text: &str) -> String {
    let a = mix(seed, text);
    let b = mix(seed ^ 0x5bd1_e995, text);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::VirtualMachine;
    use time::macros::datetime;

    const T: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn same_seed_same_fleet_other_seed_other_fleet() {
        let spec = FleetSpec {
            count: 30,
            ..Default::default()
        };
        assert_eq!(generate(&spec, T), generate(&spec, T));
        let other = FleetSpec {
            seed: 2,
            ..spec.clone()
        };
        assert_ne!(generate(&spec, T).vms, generate(&other, T).vms);
    }

    #[test]
    fn fractions_shape_the_fleet() {
        let spec = FleetSpec {
            count: 200,
            subscriptions: 2,
            ephemeral_os_fraction: 1.0,
            shared_disk_fraction: 0.0,
            ultra_disk_fraction: 0.0,
            premium_v2_fraction: 0.0,
            tagged_fraction: 0.5,
            min_data_disks: 1,
            max_data_disks: 3,
            ..Default::default()
        };
        let fleet = generate(&spec, T);
        assert_eq!(fleet.subscriptions.len(), 2);
        assert_eq!(fleet.vms.len(), 200);
        let typed: Vec<VirtualMachine> = fleet
            .vms
            .iter()
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .collect();
        assert!(typed.iter().all(|vm| vm.disks()[0].ephemeral));
        let tagged = typed
            .iter()
            .filter(|vm| vm.tag("vmrp") == Some("on"))
            .count();
        assert!((60..140).contains(&tagged), "{tagged}");
        for vm in &typed {
            let n = vm.disks().len() - 1;
            assert!((1..=3).contains(&n));
        }
        // Ephemeral OS disks have no disk resource; every data disk has one.
        let data_disks: usize = typed.iter().map(|vm| vm.disks().len() - 1).sum();
        assert_eq!(fleet.disks.len(), data_disks);
    }

    #[test]
    fn special_disks_are_present() {
        let spec = FleetSpec {
            count: 10,
            ephemeral_os_fraction: 0.0,
            shared_disk_fraction: 1.0,
            ultra_disk_fraction: 1.0,
            premium_v2_fraction: 1.0,
            max_data_disks: 0,
            ..Default::default()
        };
        let fleet = generate(&spec, T);
        for vm in &fleet.vms {
            let skus: Vec<&str> = vm["properties"]["storageProfile"]["dataDisks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["managedDisk"]["storageAccountType"].as_str().unwrap())
                .collect();
            assert_eq!(skus, ["Premium_LRS", "UltraSSD_LRS", "PremiumV2_LRS"]);
        }
        assert!(fleet
            .disks
            .iter()
            .any(|d| d["properties"]["maxShares"] == json!(2)));
    }

    #[test]
    fn validate_names_the_field() {
        let bad = FleetSpec {
            tagged_fraction: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("taggedFraction"));
        assert_eq!(bad.sanitized().tagged_fraction, 1.0);
        let no_regions = FleetSpec {
            regions: vec![],
            ..Default::default()
        };
        assert!(no_regions.validate().unwrap_err().contains("regions"));
        let mars = FleetSpec {
            regions: vec!["mars".into()],
            ..FleetSpec::default()
        };
        assert!(mars.validate().unwrap_err().contains("mars"));
        assert!(FleetSpec::default().validate().is_ok());
        assert!(FleetSpec::empty().validate().is_ok());
    }

    #[test]
    fn det_uuid_is_stable_and_distinct() {
        assert_eq!(det_uuid(1, "a"), det_uuid(1, "A"));
        assert_ne!(det_uuid(1, "a"), det_uuid(2, "a"));
        assert_eq!(
            uuid::Uuid::parse_str(&det_uuid(1, "a"))
                .unwrap()
                .get_version_num(),
            4
        );
        let u = unit(3, "x");
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn cmk_fraction_encrypts_some_vms_and_leaves_the_rest_of_the_fleet_alone() {
        let plain = FleetSpec {
            count: 60,
            subscriptions: 2,
            ..Default::default()
        };
        let base = generate(&plain, T);
        assert!(base.encryption_sets.is_empty());
        assert!(base
            .disks
            .iter()
            .all(|d| d["properties"]["encryption"].is_null()));
        let cmk = generate(
            &FleetSpec {
                cmk_fraction: 0.5,
                ..plain.clone()
            },
            T,
        );
        // One set per (subscription, region), in that region.
        assert_eq!(cmk.encryption_sets.len(), 2 * plain.regions.len());
        for des in &cmk.encryption_sets {
            let id = des["id"].as_str().unwrap();
            assert!(id.ends_with(&format!("des-{}", des["location"].as_str().unwrap())));
        }
        let mut encrypted = 0;
        for (a, b) in base.vms.iter().zip(&cmk.vms) {
            // Same VM otherwise: names, regions, sizes and disk layout do not move.
            assert_eq!(a["id"], b["id"]);
            assert_eq!(a["location"], b["location"]);
            assert_eq!(
                a["properties"]["hardwareProfile"],
                b["properties"]["hardwareProfile"]
            );
            let des = &b["properties"]["storageProfile"]["osDisk"]["managedDisk"]
                ["diskEncryptionSet"]["id"];
            if let Some(des) = des.as_str() {
                encrypted += 1;
                let sub = b["id"].as_str().unwrap().split('/').nth(2).unwrap();
                assert_eq!(des, encryption_set_id(sub, b["location"].as_str().unwrap()));
                for d in b["properties"]["storageProfile"]["dataDisks"]
                    .as_array()
                    .unwrap()
                {
                    assert_eq!(
                        d["managedDisk"]["diskEncryptionSet"]["id"].as_str(),
                        Some(des)
                    );
                }
            } else {
                assert_eq!(a, b);
            }
        }
        assert!((15..=45).contains(&encrypted), "{encrypted} of 60");
    }
}
