// The Flex Consumption (FC1, Linux) plan and the function app running vmrp as a custom handler.
// Every app setting vmrp and the Functions host read is built in ONE place: `appSettings` below.
// The runtime is declared in functionAppConfig.runtime ('custom'); on Flex Consumption
// FUNCTIONS_WORKER_RUNTIME is a deprecated app setting and is set by the platform instead.

param location string
param tags object
param planName string
param appName string
@description('Resource id of the user-assigned identity the app runs as (ARM, Service Bus, storage, telemetry).')
param identityId string
@description('Client id of that identity (the `clientId` the token requests name).')
param identityClientId string
param storageAccountName string
param storageBlobEndpoint string
param deploymentContainerName string
param serviceBusFullyQualifiedNamespace string
param applicationInsightsConnectionString string
@description('NCRONTAB (six fields) of the timer that plans restore points.')
param schedule string
@description('NCRONTAB (six fields) of the restore drill timer, RunRestoreDrills (VMRP_DRILL_SCHEDULE): the policy\'s drills.schedule.')
param drillSchedule string = '0 30 2 * * *'
@description('URL of the table RunRestoreDrills records each drill in (VMRP_DRILL_TABLE_URL): https://<account>.table.core.windows.net/<table>.')
param drillTableUrl string
@description('The vmrp policy as inline JSON (VMRP_POLICY).')
param policyJson string
@description('Override of the ARM endpoint (sovereign clouds); empty = public cloud default.')
param armEndpoint string = ''
param rustLog string = 'info'
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// The single source of the app's settings. Names are the contract with src/ (config) and with
// the bindings in functions/*/function.json (connection "ServiceBusConnection").
var baseAppSettings = {
  // Host storage, identity-based (no connection string, no key).
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Service Bus trigger connection, identity-based.
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusFullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  // The identity vmrp itself uses for ARM and Service Bus data-plane tokens.
  AZURE_CLIENT_ID: identityClientId
  // Telemetry with Entra auth (local auth is disabled on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // vmrp itself.
  VMRP_SCHEDULE: schedule
  VMRP_DRILL_SCHEDULE: drillSchedule
  VMRP_DRILL_TABLE_URL: drillTableUrl
  VMRP_POLICY: policyJson
  RUST_LOG: rustLog
}
var appSettings = empty(armEndpoint) ? baseAppSettings : union(baseAppSettings, {
  VMRP_ARM_ENDPOINT: armEndpoint
})

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    //checkov:skip=CKV_AZURE_225: zone redundancy is a Premium/Dedicated plan setting; Flex Consumption places instances itself.
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  // azd finds the app to deploy the `vmrp` service to by this tag.
  tags: union(tags, {
    'azd-service-name': 'vmrp'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_222: Event Grid delivers VM events to the app's public endpoint; closing it needs VNet integration and private endpoints, which this template leaves out.
    //checkov:skip=CKV_AZURE_212: Flex Consumption scales out per function on demand; queue-driven work survives losing an instance (Service Bus redelivers), so paying for always-ready failover instances buys nothing.
    //checkov:skip=CKV_AZURE_213: there is no HTTP endpoint to probe; the Functions host supervises the handler process and restarts it.
    //checkov:skip=CKV_AZURE_17: client certificates would break Event Grid's AzureFunction delivery; there are no user-facing HTTP functions.
    //checkov:skip=CKV_AZURE_16: the app uses a user-assigned identity (checkov looks for the system-assigned kind).
    //checkov:skip=CKV_AZURE_71: the app uses a user-assigned identity (checkov looks for the system-assigned kind).
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }

  // checkov reads every sites/config child as the 'web' site config; this one is 'appsettings'
  // (name/value pairs), so the web-config checks below do not apply to it.
  resource settings 'config' = {
    //checkov:skip=CKV_AZURE_13: not the web config (see above); vmrp has no HTTP functions and App Service authentication is not supported on Flex Consumption.
    //checkov:skip=CKV_AZURE_63: not the web config; HTTP logging is an App Service web-server feature, the host's logs go to Application Insights.
    //checkov:skip=CKV_AZURE_65: not the web config; detailed error pages are an App Service web-server feature.
    //checkov:skip=CKV_AZURE_66: not the web config; failed request tracing is an App Service web-server feature.
    //checkov:skip=CKV_AZURE_80: not the web config; no .NET Framework is used.
    //checkov:skip=CKV_AZURE_88: not the web config; Flex Consumption has no content file share, the package is read from blob storage.
    //checkov:skip=CKV_AZURE_222: not the web config; public network access is discussed on the site above.
    name: 'appsettings'
    properties: appSettings
  }
}

// No keys or secrets leave this module: only names and ids.
output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
output appSettingNames array = [for setting in items(appSettings): setting.key]
