// vmrp on Azure: everything `azd up` creates. Deployed at subscription scope because it creates
// the resource group, the custom role and role assignments on whole target subscriptions.
//
//   resource group  ── user-assigned identity (vmrp runs as it)
//                   ── storage (host storage + deployment package + Event Grid dead letters)
//                   ── Log Analytics + Application Insights
//                   ── action group, alerts (given up, coverage, timer, dead letters), workbook
//                   ── Service Bus Standard: rp-create, rp-copy, rp-poll, rp-plan, rp-failed (parking)
//                   ── Flex Consumption plan + function app (custom handler)
//                   ── Event Grid system topic on this subscription → OnVmChanged
//   subscription    ── custom role "vmrp restore points" (ARM_ACTIONS only)
//   each target     ── that role assigned to the identity
//   drill group     ── custom role "vmrp drills" (DRILL_ACTIONS: disk write/delete) assigned there
//                      only, when `drillResourceGroupId` is set (docs/restore.md, drills)
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of the resource group and everything in it (a region that offers Flex Consumption).')
param location string

@description('Resource group name; default rg-vmrp-<environmentName>.')
param resourceGroupName string = ''

@description('Comma-separated subscription ids whose VMs vmrp protects (role assigned on the whole subscription). Prefer resource groups.')
param targetSubscriptionIds string = ''

@description('Comma-separated resource group ids (/subscriptions/<id>/resourceGroups/<name>) whose VMs vmrp protects.')
param targetResourceGroupIds string = ''

@description('The restore drills\' resource group id (/subscriptions/<id>/resourceGroups/<name>, an existing group; the policy\'s drills.resourceGroup). Empty: no drill role.')
param drillResourceGroupId string = ''
@description('The vmrp policy as JSON (VMRP_POLICY). Empty: daily points for VMs tagged vmrp=enabled in the target scopes, keep the last 7.')
param policyJson string = ''

@description('NCRONTAB (six fields, UTC) of the planning timer (VMRP_SCHEDULE).')
param schedule string = '0 0 2 * * *'

@description('NCRONTAB (six fields, UTC) of the restore drill timer (VMRP_DRILL_SCHEDULE): the policy\'s drills.schedule, whose default this is. Without a drills section the timer only logs a skip.')
param drillSchedule string = '0 30 2 * * *'

@description('Email address vmrp\'s alerts go to; empty: an action group without receivers.')
param alertEmail string = ''

@minValue(5)
@maxValue(1440)
@description('Minutes between two ticks of `schedule` (1440 for the daily default): how long coverage may stay below 100 % before the alert, and how long without a timer run.')
param schedulePeriodMinutes int = 1440

@description('RUST_LOG filter for the handler.')
param rustLog string = 'info'

@description('ARM endpoint override for sovereign clouds (VMRP_ARM_ENDPOINT); empty = public cloud.')
param armEndpoint string = ''

@description('Create the Event Grid subscription to OnVmChanged. Event Grid requires the function to exist, so azd sets this after the first code deploy (postdeploy hook).')
param subscribeToVmEvents bool = false

@minValue(40)
@maxValue(1000)
@description('Upper bound on instances. vmrp is bound by ARM write budgets, not CPU: keep it low.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'vmrp'
}

// Target scopes, whitespace-tolerant. Subscriptions may be given as ids or /subscriptions/<id>.
// (for-expressions, not lambdas: checkov's Bicep parser does not read lambdas.)
var subscriptionIdList = [for s in split(targetSubscriptionIds, ','): last(split(trim(s), '/'))]
var subscriptionScopeList = [for s in split(targetSubscriptionIds, ','): '/subscriptions/${last(split(trim(s), '/'))}']
var resourceGroupIdList = [for s in split(targetResourceGroupIds, ','): trim(s)]
var subscriptionIds = empty(targetSubscriptionIds) ? [] : subscriptionIdList
var subscriptionScopes = empty(targetSubscriptionIds) ? [] : subscriptionScopeList
var resourceGroupIds = empty(targetResourceGroupIds) ? [] : resourceGroupIdList

// The default policy covers exactly the scopes the role is assigned on, opt-in by tag.
var defaultPolicy = {
  rules: [
    {
      name: 'default'
      targets: {
        subscriptions: subscriptionIds
        resourceGroups: resourceGroupIds
        tags: {
          vmrp: 'enabled'
        }
      }
      retention: {
        keepLast: 7
      }
    }
  ]
}
var policy = empty(policyJson) ? string(defaultPolicy) : policyJson

var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'
// Restore drill results, one entity per VM and region (docs/restore.md).
var drillTableName = 'vmrpdrills'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-vmrp-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'vmrp-identity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'id-vmrp-${resourceToken}'
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'vmrp-monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-vmrp-${resourceToken}'
    applicationInsightsName: 'appi-vmrp-${resourceToken}'
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'vmrp-alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'vmrp-${resourceToken}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    serviceBusNamespaceId: serviceBus.outputs.id
    alertEmail: alertEmail
    schedulePeriodMinutes: schedulePeriodMinutes
  }
}

module storage 'modules/storage.bicep' = {
  name: 'vmrp-storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'stvmrp${resourceToken}'
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    drillTableName: drillTableName
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'vmrp-servicebus'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'sb-vmrp-${resourceToken}'
  }
}

module appRbac 'modules/app-rbac.bicep' = {
  name: 'vmrp-app-rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'vmrp-functionapp'
  scope: rg
  params: {
    location: location
    tags: tags
    planName: 'plan-vmrp-${resourceToken}'
    appName: 'func-vmrp-${resourceToken}'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    schedule: schedule
    drillSchedule: drillSchedule
    drillTableUrl: '${storage.outputs.tableEndpoint}${storage.outputs.drillTableName}'
    policyJson: policy
    armEndpoint: armEndpoint
    rustLog: rustLog
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host starts right away and needs its storage and queue roles.
  dependsOn: [
    appRbac
  ]
}

module events 'modules/events.bicep' = {
  name: 'vmrp-events'
  scope: rg
  params: {
    tags: tags
    systemTopicName: 'evgt-vmrp-${resourceToken}-arm'
    functionAppId: functionApp.outputs.id
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    subscribeToVmEvents: subscribeToVmEvents
  }
}

// The custom role, assignable where the targets are (assignability is not a grant; it is also
// assignable on this subscription because ARM creates the definition here).
var roleGuid = guid(subscription().id, 'vmrp-restore-points', environmentName)

module vmRole 'modules/vm-role.bicep' = {
  name: 'vmrp-vm-role'
  params: {
    roleGuid: roleGuid
    // Role names are unique per tenant: the token keeps two environments of the same name (in
    // different subscriptions or regions) apart.
    roleName: 'vmrp restore points (${environmentName}-${take(resourceToken, 6)})'
    assignableScopes: union([
      subscription().id
    ], subscriptionScopes, resourceGroupIds)
  }
}

module subscriptionAssignments 'modules/vm-role-assignment-sub.bicep' = [for subscriptionId in subscriptionIds: if (!empty(subscriptionId)) {
  name: 'vmrp-role-${uniqueString(subscriptionId, environmentName)}'
  scope: subscription(subscriptionId)
  params: {
    roleGuid: vmRole.outputs.roleGuid
    principalId: identity.outputs.principalId
  }
}]

module resourceGroupAssignments 'modules/vm-role-assignment-rg.bicep' = [for resourceGroupId in resourceGroupIds: if (!empty(resourceGroupId)) {
  name: 'vmrp-role-${uniqueString(resourceGroupId, environmentName)}'
  scope: resourceGroup(split(resourceGroupId, '/')[2], last(split(resourceGroupId, '/')))
  params: {
    roleGuid: vmRole.outputs.roleGuid
    principalId: identity.outputs.principalId
  }
}]

// The drill role: disk write/delete, assignable and assigned at the drill group only.
var drillRoleGuid = guid(subscription().id, 'vmrp-drills', environmentName)

module drillRole 'modules/drill-role.bicep' = if (!empty(drillResourceGroupId)) {
  name: 'vmrp-drill-role'
  params: {
    roleGuid: drillRoleGuid
    roleName: 'vmrp drills (${environmentName}-${take(resourceToken, 6)})'
    drillResourceGroupId: drillResourceGroupId
  }
}

module drillAssignment 'modules/vm-role-assignment-rg.bicep' = if (!empty(drillResourceGroupId)) {
  name: 'vmrp-drill-role-${uniqueString(drillResourceGroupId, environmentName)}'
  scope: resourceGroup(split(drillResourceGroupId, '/')[2], last(split(drillResourceGroupId, '/')))
  params: {
    roleGuid: drillRoleGuid
    principalId: identity.outputs.principalId
  }
  dependsOn: [
    drillRole
  ]
}

// Names and ids only: no keys, connection strings or tokens.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output VMRP_SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output VMRP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output VMRP_ROLE_DEFINITION_ID string = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', vmRole.outputs.roleGuid)
output VMRP_EVENT_SUBSCRIPTION_CREATED bool = events.outputs.eventSubscriptionCreated
// `vmrp status --drill-table` (the operator needs Storage Table Data Reader on it, docs/operations.md).
output VMRP_DRILL_TABLE_URL string = '${storage.outputs.tableEndpoint}${storage.outputs.drillTableName}'
