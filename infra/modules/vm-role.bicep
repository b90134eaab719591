// The custom role vmrp's identity holds on the VMs it protects: exactly the ARM actions its
// client performs (src/azure/operations.rs ARM_ACTIONS; infra/tests/test_infra.py keeps the two
// equal). No wildcards, no data actions.
//
// Sources for the set: Microsoft's Compute operation reference
// (https://learn.microsoft.com/azure/role-based-access-control/permissions/compute) names the action
// of each call vmrp makes; a cross-region copy is a restore point PUT in the target region
// (restorePoints/write) and its progress that point's GET (restorePoints/read); the documented set
// for a tool that creates, lists and deletes Azure VM restore points
// (https://docs.cloud.google.com/migrate/virtual-machines/docs/5.0/reference/roles-reference) is
// virtualMachines/read plus restorePointCollections[/restorePoints]/{read,write,delete}. No source
// requires Microsoft.Compute/virtualMachines/write, which would let the identity change any VM in
// scope: it is not granted.
targetScope = 'subscription'

param roleGuid string
param roleName string
@description('Where the role may be assigned (assignability only; the grants are the role assignments).')
param assignableScopes array

var vmrpActions = [
  'Microsoft.Compute/virtualMachines/read'
  'Microsoft.Compute/disks/read'
  'Microsoft.Compute/restorePointCollections/read'
  'Microsoft.Compute/restorePointCollections/write'
  'Microsoft.Compute/restorePointCollections/delete'
  'Microsoft.Compute/restorePointCollections/restorePoints/read'
  'Microsoft.Compute/restorePointCollections/restorePoints/write'
  'Microsoft.Compute/restorePointCollections/restorePoints/delete'
  'Microsoft.Compute/locations/operations/read'
]

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleGuid
  properties: {
    roleName: roleName
    description: 'vmrp: create, copy, list and prune VM restore points (nothing else).'
    type: 'CustomRole'
    permissions: [
      {
        actions: vmrpActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

output roleGuid string = role.name
