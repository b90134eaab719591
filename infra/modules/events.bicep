// Event Grid: the subscription's ARM events (system topic) → OnVmChanged, filtered to VM writes
// and deletes. Undeliverable events are retried, then dead-lettered into blob storage with the
// system topic's own identity (the storage account accepts no keys).

param tags object
param systemTopicName string
@description('Resource id of the function app; the subscription delivers to its OnVmChanged function.')
param functionAppId string
param storageAccountName string
param deadLetterContainerName string
@description('Create the event subscription. Event Grid checks that the function exists, so this is false until the code is deployed (azure.yaml postdeploy hook).')
param subscribeToVmEvents bool

// The only event types and ARM operations vmrp reacts to (VM created/changed, VM deleted).
var includedEventTypes = [
  'Microsoft.Resources.ResourceWriteSuccess'
  'Microsoft.Resources.ResourceDeleteSuccess'
]
var vmOperations = [
  'Microsoft.Compute/virtualMachines/write'
  'Microsoft.Compute/virtualMachines/delete'
]
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource deadLetterContainer 'containers' existing = {
      name: deadLetterContainerName
    }
  }
}

// One system topic per source is allowed: if the subscription already has one for
// Microsoft.Resources.Subscriptions, point this at it instead (see docs/deploy.md).
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

// The topic writes dead letters as itself, and only into its own container.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage::blobService::deadLetterContainer
  name: guid(storage::blobService::deadLetterContainer.id, systemTopic.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource vmChanges 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribeToVmEvents) {
  parent: systemTopic
  name: 'vmrp-vm-changes'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/OnVmChanged'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: includedEventTypes
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: vmOperations
        }
      ]
    }
    // OnVmChanged is idempotent (debounced onboarding, orphan rule), so retrying for a day is
    // safe; the timer's next tick also catches anything that is finally dropped.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    deadLetterWriter
  ]
}

output systemTopicName string = systemTopic.name
output eventSubscriptionCreated bool = subscribeToVmEvents
