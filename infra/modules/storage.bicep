// The function app's host storage (AzureWebJobsStorage: timer schedule monitor, singleton locks,
// diagnostic events) and its Flex Consumption deployment container, plus the container Event Grid
// dead-letters undeliverable VM events into, and the drill table (one entity per VM and region:
// the last restore drill, docs/restore.md). Every client uses Entra ID: shared keys are off.

param location string
param tags object
param name string
@description('Blob container Flex Consumption reads the deployment package from.')
param deploymentContainerName string
@description('Blob container Event Grid writes undeliverable events to.')
param deadLetterContainerName string
@description('Table RunRestoreDrills records each drill in (VMRP_DRILL_TABLE_URL); vmrp status reads it.')
param drillTableName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    //checkov:skip=CKV_AZURE_206: host coordination data (timer locks, deployment package) is rebuilt by a redeploy; geo-replication buys nothing here.
    name: 'Standard_LRS'
  }
  properties: {
    //checkov:skip=CKV_AZURE_59: without VNet integration the Functions platform and Event Grid reach this account over its public endpoint; access is Entra-only (shared keys off).
    //checkov:skip=CKV_AZURE_35: a default-deny firewall would block the Flex Consumption platform, which has no fixed outbound addresses without VNet integration.
    // Microsoft-managed keys and no private endpoints: the data is coordination state, and
    // private endpoints would need VNet integration, which this template leaves out.
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Created here so its URL is known at deploy time; vmrp also creates it when missing.
resource drillTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: drillTableName
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
output deadLetterContainerName string = deadLetterContainer.name
output tableEndpoint string = storage.properties.primaryEndpoints.table
output drillTableName string = drillTable.name
