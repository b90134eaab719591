// The Service Bus namespace and vmrp's three work queues. Standard tier because duplicate
// detection (which makes the deterministic message ids of docs/architecture.md, "Idempotency" useful) needs Standard or
// Premium. SAS keys are disabled: senders and receivers authenticate with Entra ID only.

param location string
param tags object
param name string
@description('The queues vmrp sends to and is triggered by.')
param queueNames array = [
  'rp-create'
  'rp-copy'
  'rp-poll'
]

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    // Public endpoint: without VNet integration the Flex Consumption app reaches Service Bus over
    // it; with SAS disabled only Entra identities holding a data role get in. Customer-managed
    // keys would need Premium; the messages hold resource ids and timestamps only.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queueName in queueNames: {
  parent: namespace
  name: queueName
  properties: {
    // Message ids are deterministic, so a replayed send is dropped instead of doing the work twice.
    requiresDuplicateDetection: true
    // Replays come from redelivery of the invocation that sent them: at most maxDeliveryCount (10)
    // deliveries, each holding the lock at most lockDuration (5 min), i.e. under 50 minutes.
    // One hour covers that chain; a later replay is still harmless (idempotent PUTs, names from
    // the tick), it just costs an extra ARM read.
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    // Ten attempts ride out transient host or network trouble; a message that still fails
    // (malformed, or a handler bug) goes to the dead-letter queue for a human to look at.
    maxDeliveryCount: 10
    // The Standard-tier maximum; host.json renews the lock for longer invocations.
    lockDuration: 'PT5M'
    // Copies settle within the 14-day copy deadline; a message older than that is dead-lettered
    // (never silently dropped) so the loss is visible.
    defaultMessageTimeToLive: 'P14D'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}]

output name string = namespace.name
output id string = namespace.id
// `https://<ns>.servicebus.windows.net:443/` → `<ns>.servicebus.windows.net`, right in every cloud.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
output queueNames array = [for (queueName, i) in queueNames: queues[i].name]
