// What tells the operations team: an action group (email optional), four alerts and a workbook.
// The queries live in infra/monitoring/*.kql (loaded here) and name only the fields listed in
// infra/monitoring/fields.json, which tests/operations.rs checks against what vmrp logs.
// docs/operations.md explains each alert.
//
//   given up           any vmrp::report with outcome given_up                (log alert, sev 1)
//   coverage below     the last two coverage events of a rule/region/role
//                      both show uncovered VMs (> one schedule period)        (log alert, sev 2)
//   timer did not run  no vmrp::coverage event for one period + 1 h           (log alert, sev 1)
//   dead letters       Service Bus DeadletteredMessages > 0 on any queue      (metric alert, sev 2)

param location string
param tags object
param namePrefix string
param applicationInsightsId string
param serviceBusNamespaceId string

@description('Email address alerts go to; empty: the action group has no receiver (add one in the portal).')
param alertEmail string = ''

@minValue(5)
@maxValue(1440)
@description('Minutes between timer ticks (VMRP_SCHEDULE): the coverage and timer alerts wait this long.')
param schedulePeriodMinutes int = 1440

// A log alert's window is at most two days.
var coverageWindowMinutes = min(2 * schedulePeriodMinutes + 60, 2880)
var timerWindowMinutes = min(schedulePeriodMinutes + 60, 2880)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'vmrp-ops'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operations'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource givenUp 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-given-up'
  location: location
  tags: tags
  properties: {
    displayName: 'vmrp gave up on restore points'
    description: 'A restore point failed with no retries left or passed its deadline: the VM misses this tick. The reason is in the alert rows.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('../monitoring/given-up.kql')
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource coverageBelow 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-coverage-below-target'
  location: location
  tags: tags
  properties: {
    displayName: 'vmrp coverage below 100 % for more than one schedule period'
    description: 'For two timer runs in a row, some VMs of a rule and region had no settled point from the tick that is due.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT${coverageWindowMinutes}M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('../monitoring/coverage-below-target.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'uncovered'
          dimensions: [
            {
              name: 'rule'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'region'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'role'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource timerSilent 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-timer-did-not-run'
  location: location
  tags: tags
  properties: {
    displayName: 'vmrp timer did not run'
    description: 'No timer run measured coverage for one schedule period plus an hour: no points are being planned.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT${timerWindowMinutes}M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('../monitoring/timer-runs.kql')
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-dead-letters'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages in a vmrp queue\'s dead-letter queue: a create, copy or poll was delivered too often without completing. Inspect them with Service Bus Explorer.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, namePrefix, 'vmrp-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'vmrp coverage'
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: loadTextContent('../monitoring/workbook.json')
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
