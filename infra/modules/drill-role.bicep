// The custom role of vmrp's restore drills: disk read, write and delete, nothing else
// (src/azure/operations.rs DRILL_ACTIONS; infra/tests/test_infra.py keeps the two equal). It is
// assignable and assigned at the drill resource group only (main.bicep `drillResourceGroupId`),
// so the identity can create and delete disks there and nowhere else; the main role
// (vm-role.bicep) stays without disk writes. Reading the points a drill restores is the main
// role's (restorePointCollections[/restorePoints]/read). Action names from Microsoft's Compute
// operation reference (https://learn.microsoft.com/azure/role-based-access-control/permissions/compute).
targetScope = 'subscription'

param roleGuid string
param roleName string
@description('The drill resource group id: the one scope the role may be assigned at.')
param drillResourceGroupId string

var drillActions = [
  // Reading the drill group's disks: the read-back of a restored disk and the sweep's list
  // (the main role reads disks only where the policy's targets are).
  'Microsoft.Compute/disks/read'
  'Microsoft.Compute/disks/write'
  'Microsoft.Compute/disks/delete'
]

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleGuid
  properties: {
    roleName: roleName
    description: 'vmrp drills: create, read and delete restored disks in the drill resource group (nothing else).'
    type: 'CustomRole'
    permissions: [
      {
        actions: drillActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      drillResourceGroupId
    ]
  }
}

output roleGuid string = role.name
