// The custom role vmrp's identity holds on the VMs it protects: exactly the ARM actions its
// client performs (src/azure/operations.rs ARM_ACTIONS; infra/tests/test_infra.py keeps the two
// equal). No wildcards, no data actions.
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
  'Microsoft.Compute/virtualMachines/write'
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
