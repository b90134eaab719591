//! The ARM authorization actions vmrp's code needs: the custom role in `infra/` grants exactly
//! these (a test compares the two), and the client's tests check each call maps to one of them.
//!
//! Sources (least privilege):
//! - Microsoft's operation reference for Microsoft.Compute
//!   (https://learn.microsoft.com/azure/role-based-access-control/permissions/compute) names the
//!   action of each call: `restorePointCollections/write` "Creates a new restore point collection
//!   or updates an existing one", `restorePointCollections/restorePoints/write` "Creates a new
//!   restore point", `…/read` and `…/delete` likewise, `locations/operations/read` "Gets
//!   Operation Status". A cross-region copy is a restore point PUT into a collection in the target
//!   region (`sourceRestorePoint` set; learn.microsoft.com
//!   `virtual-machines/virtual-machines-restore-points-copy`), and its progress is the copy's GET
//!   (`instanceView.diskRestorePoints[].replicationStatus`): the same write/read actions.
//! - The documented permission set of a third-party tool that creates, lists and deletes Azure VM
//!   restore points (Google "Migrate to Virtual Machines", Azure source,
//!   https://docs.cloud.google.com/migrate/virtual-machines/docs/5.0/reference/roles-reference)
//!   lists `virtualMachines/read` and the six `restorePointCollections[/restorePoints]/{read,write,
//!   delete}` actions, and no `virtualMachines/write` (its `snapshots/*` and `diskRestorePoints/*`
//!   actions are for reading disk data, which vmrp never does).
//!
//! No source says a restore point create needs `virtualMachines/write`, which would let the
//! identity change any VM in scope, so the role no longer grants it.

/// Every `Microsoft.*` action the ARM client can perform, each needed by a call in
/// `client::ArmOperation::action` (a test checks the mapping both ways).
pub const ARM_ACTIONS: &[&str] = &[
    // Fleet discovery (list/get VMs) and the VM a collection's `source.id` names.
    "Microsoft.Compute/virtualMachines/read",
    // Disk facts for the support matrix (ephemeral/shared/Ultra/Premium SSD v2 exclusions).
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/restorePointCollections/read",
    "Microsoft.Compute/restorePointCollections/write",
    "Microsoft.Compute/restorePointCollections/delete",
    "Microsoft.Compute/restorePointCollections/restorePoints/read",
    // Both a create and a cross-region copy (a PUT with `sourceRestorePoint`).
    "Microsoft.Compute/restorePointCollections/restorePoints/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/delete",
    // Compute's operation status URL (`Azure-AsyncOperation`), polled by the LRO helper.
    "Microsoft.Compute/locations/operations/read",
];

/// What `vmrp restore` needs beyond reading, as the operator who runs it (never the app
/// identity: the deployed role stays without disk or VM writes). Names from Microsoft's
/// operation reference (https://learn.microsoft.com/azure/role-based-access-control/permissions/compute
/// and `…/permissions/networking`). docs/restore.md lists which mode needs which.
pub const RESTORE_ACTIONS: &[&str] = &[
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/deallocate/action",
    "Microsoft.Compute/virtualMachines/start/action",
    "Microsoft.Network/networkInterfaces/write",
];

/// What a restore drill needs in the drill group: disk read, write and delete, granted by
/// its own role (infra/modules/drill-role.bicep) at the drill resource group only, so the app
/// identity can create and delete disks there and nowhere else (docs/restore.md, drills).
pub const DRILL_ACTIONS: &[&str] = &[
    // The drill group's disks: read back after a create, and listed by the run's sweep (the
    // deployed role reads disks only in the policy's target scopes).
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
];
