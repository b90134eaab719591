//! The ARM authorization actions vmrp's code needs: the custom role in `infra/` grants exactly
//! these (a test compares the two), and the client's tests check each call maps to one of them.

/// Every `Microsoft.*` action the ARM client can perform.
pub const ARM_ACTIONS: &[&str] = &[
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/restorePointCollections/read",
    "Microsoft.Compute/restorePointCollections/write",
    "Microsoft.Compute/restorePointCollections/delete",
    "Microsoft.Compute/restorePointCollections/restorePoints/read",
    "Microsoft.Compute/restorePointCollections/restorePoints/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/delete",
    // Creating a restore point acts on the VM and its disks' snapshots (documented RBAC for restore points).
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/locations/operations/read",
];
