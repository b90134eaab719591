//! Tests of the ARM client: operations and actions, URL checks, paging, retries and recording.

use super::*;
use crate::operations::ARM_ACTIONS;

#[test]
fn every_operation_maps_to_a_granted_action() {
    for op in ArmOperation::ALL {
        assert!(
            ARM_ACTIONS.contains(&op.action()),
            "{op:?} needs {} which ARM_ACTIONS lacks",
            op.action()
        );
    }
}

/// Least privilege: the role grants nothing the client never asks for
/// (the old role's `virtualMachines/write` fails this).
#[test]
fn every_granted_action_is_used_by_an_operation() {
    for action in ARM_ACTIONS {
        assert!(
            ArmOperation::ALL.iter().any(|op| op.action() == *action),
            "ARM_ACTIONS grants {action}, which no ARM operation needs"
        );
    }
}

/// The restore's writes need the operator's actions, none of which the deployed role has.
#[test]
fn restore_operations_need_the_operators_actions_only() {
    use crate::operations::RESTORE_ACTIONS;
    for op in ArmOperation::RESTORE {
        assert!(RESTORE_ACTIONS.contains(&op.action()), "{op:?}");
        assert!(
            !ARM_ACTIONS.contains(&op.action()),
            "{op:?} is in the app's role"
        );
        assert!(!ArmOperation::ALL.contains(&op));
    }
}

#[test]
fn scope_follows_endpoint_or_audience() {
    let cred: Arc<dyn TokenCredential> =
        crate::credential::StaticToken::new("t", std::time::Duration::from_secs(3600));
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[],
            "https://management.azure.com/",
            "https://management.azure.com/.default",
        ),
        (
            &[("VMRP_ARM_ENDPOINT", "http://127.0.0.1:7071/")],
            "http://127.0.0.1:7071/",
            "http://127.0.0.1:7071/.default",
        ),
        (
            &[
                ("VMRP_ARM_ENDPOINT", "http://127.0.0.1:7071"),
                ("VMRP_ARM_AUDIENCE", "https://management.azure.com/"),
            ],
            "http://127.0.0.1:7071/",
            "https://management.azure.com/.default",
        ),
        (
            &[("VMRP_ARM_ENDPOINT", "https://management.usgovcloudapi.net")],
            "https://management.usgovcloudapi.net/",
            "https://management.usgovcloudapi.net/.default",
        ),
    ];
    for (pairs, endpoint, scope) in cases {
        let lookup = env(pairs);
        let cfg = ArmClientConfig::from_env(&lookup, cred.clone()).unwrap();
        assert_eq!(cfg.endpoint.as_str(), *endpoint);
        assert_eq!(cfg.scope(), *scope);
    }
    let lookup = env(&[("VMRP_ARM_ENDPOINT", "management.azure.com")]);
    let err = ArmClientConfig::from_env(&lookup, cred).unwrap_err();
    assert!(err.to_string().contains("VMRP_ARM_ENDPOINT"), "{err}");
}

#[test]
fn urls_are_built_under_the_endpoint_with_api_version() {
    let cred: Arc<dyn TokenCredential> =
        crate::credential::StaticToken::new("t", std::time::Duration::from_secs(3600));
    for base in ["http://127.0.0.1:9/arm/", "http://127.0.0.1:9/arm"] {
        let client = ArmClient::new(ArmClientConfig {
            endpoint: Url::parse(base).unwrap(),
            audience: None,
            credential: cred.clone(),
            timeouts: Timeouts::default(),
            retry: RetryConfig::default(),
            loopback_only: true,
            record_traffic: None,
        })
        .unwrap();
        let url = client.url_for(
            "/subscriptions/s/x",
            API_VERSION,
            &[("$expand", "restorePoints")],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/arm/subscriptions/s/x?api-version=2025-04-01&$expand=restorePoints"
        );
    }
}

#[test]
fn loopback_only_refuses_a_remote_endpoint_at_construction() {
    let cred: Arc<dyn TokenCredential> =
        crate::credential::StaticToken::new("t", std::time::Duration::from_secs(3600));
    let err = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(DEFAULT_ENDPOINT).unwrap(),
        audience: None,
        credential: cred,
        timeouts: Timeouts::default(),
        retry: RetryConfig::default(),
        loopback_only: true,
        record_traffic: None,
    })
    .unwrap_err();
    assert!(matches!(err, ArmConfigError::NotLoopback(_)), "{err}");
}
