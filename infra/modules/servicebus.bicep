// The Service Bus namespace, vmrp's four work queues and its parking queue `rp-failed`. Standard tier because duplicate
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
  // The timer's fan-out: one "plan this subscription for this tick" message per subscription
  // (docs/architecture.md, "Fan-out per subscription"). Deploy it before the code that sends to it.
  'rp-plan'
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
    // A create or copy replayed late (lock lost, app down, backlog) re-sends its first poll under
    // the same id: only inside this window is it dropped instead of starting a second poll chain.
    // 7 days is the Service Bus maximum (docs/lifecycle.md cites it); the emulator models it
    // (src/emulator/servicebus.rs DUPLICATE_WINDOW).
    duplicateDetectionHistoryTimeWindow: 'P7D'
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

// Messages that can never succeed (not a vmrp message, a newer major version, a VM outside the
// policy, a handler error classed permanent): the handler sends each here ONCE with its reason
// and the original body (src/host/park.rs), instead of failing 10 deliveries into the
// dead-letter queue. No function is triggered by it; an operator reads it (docs/lifecycle.md).
resource parkingQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: 'rp-failed'
  properties: {
    // Parked ids derive from the original message's, so a failure parked twice is kept once.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'P7D'
    maxDeliveryCount: 10
    lockDuration: 'PT5M'
    // Long enough for a person to get to it; then its own dead-letter queue keeps it.
    defaultMessageTimeToLive: 'P30D'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

output name string = namespace.name
output id string = namespace.id
// `https://<ns>.servicebus.windows.net:443/` → `<ns>.servicebus.windows.net`, right in every cloud.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
output queueNames array = [for (queueName, i) in queueNames: queues[i].name]
output parkingQueueName string = parkingQueue.name
