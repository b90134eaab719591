//! The deploy files agree with the router: one `functions/<Name>/function.json` per routed
//! function, with the trigger type, binding name and queue the decoder expects, no output
//! bindings, and a host.json that starts `vmrp serve` with the settings docs/host.md explains.

use serde_json::Value;

use vmrp::azure::Queue;
use vmrp::host::router::{EVENT_GRID_BINDING, QUEUE_BINDING, TIMER_BINDING};
use vmrp::host::{functions, Trigger};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> Value {
    let full = format!("{ROOT}/{path}");
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}")))
        .unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// "hh:mm:ss" → seconds.
fn seconds(timespan: &str) -> u64 {
    timespan
        .split(':')
        .map(|p| p.parse::<f64>().unwrap())
        .fold(0.0, |acc, p| acc * 60.0 + p) as u64
}

#[test]
fn every_routed_function_has_a_matching_function_json() {
    let mut folders: Vec<String> = std::fs::read_dir(format!("{ROOT}/functions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut routed: Vec<String> = functions().iter().map(|f| f.name().to_string()).collect();
    routed.sort();
    assert_eq!(folders, routed);
    let mut all: Vec<String> = vmrp::functions::ALL.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(routed, all);

    for function in functions() {
        let json = read(&format!("functions/{}/function.json", function.name()));
        let bindings = json["bindings"].as_array().unwrap();
        assert_eq!(
            bindings.len(),
            1,
            "{}: only the trigger, no output bindings",
            function.name()
        );
        let trigger = &bindings[0];
        assert_eq!(trigger["direction"], "in");
        let (kind, name) = match function.trigger() {
            Trigger::Timer => ("timerTrigger", TIMER_BINDING),
            Trigger::Queue(queue) => {
                assert_eq!(trigger["queueName"], queue.name(), "{}", function.name());
                assert_eq!(trigger["connection"], "ServiceBusConnection");
                assert!(
                    trigger.get("dataType").is_none(),
                    "the decoder expects the string body"
                );
                ("serviceBusTrigger", QUEUE_BINDING)
            }
            Trigger::EventGrid => ("eventGridTrigger", EVENT_GRID_BINDING),
        };
        assert_eq!(trigger["type"], kind, "{}", function.name());
        assert_eq!(trigger["name"], name, "{}", function.name());
    }
    let timer = read("functions/ScheduleRestorePoints/function.json");
    assert_eq!(timer["bindings"][0]["schedule"], "%VMRP_SCHEDULE%");
    assert_eq!(timer["bindings"][0]["runOnStartup"], false);
    assert_eq!(timer["bindings"][0]["useMonitor"], true);
    // A failed timer run is not retried without a function-level policy (PROTOCOL §4.6): the
    // tick would be lost for the whole fleet. The tick is named from the schedule, so a retry
    // plans the same tick and its messages deduplicate.
    assert_eq!(timer["retry"]["strategy"], "exponentialBackoff");
    assert!(timer["retry"]["maxRetryCount"].as_u64().unwrap() >= 3);
    // The retries must end well before the next tick (the schedule is hours apart).
    assert_eq!(timer["retry"]["maximumInterval"], "00:05:00");
    // The drill timer has its own schedule setting (the policy's drills.schedule); a retried
    // run drills the same VMs into the same disk names (crates/vmrp-handler/src/functions/run_restore_drills.rs).
    let drills = read("functions/RunRestoreDrills/function.json");
    assert_eq!(drills["bindings"][0]["type"], "timerTrigger");
    assert_eq!(drills["bindings"][0]["schedule"], "%VMRP_DRILL_SCHEDULE%");
    assert_eq!(drills["bindings"][0]["runOnStartup"], false);
    assert_eq!(drills["retry"]["strategy"], "exponentialBackoff");
    let queues: Vec<Queue> = functions()
        .iter()
        .filter_map(|f| match f.trigger() {
            Trigger::Queue(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(
        queues.len(),
        Queue::ALL.len(),
        "each queue has exactly one consumer"
    );
}

#[test]
fn host_json_starts_vmrp_serve_with_safe_service_bus_settings() {
    let host = read("host.json");
    assert_eq!(host["version"], "2.0");
    let handler = &host["customHandler"];
    assert_eq!(handler["description"]["defaultExecutablePath"], "vmrp");
    assert_eq!(
        handler["description"]["arguments"],
        serde_json::json!(["serve"])
    );
    assert_eq!(handler["description"]["workingDirectory"], "");
    assert_eq!(handler["enableForwardingHttpRequest"], false);
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");

    let timeout = seconds(host["functionTimeout"].as_str().unwrap());
    assert!(timeout <= 600, "Consumption allows at most 10 minutes");
    let sb = &host["extensions"]["serviceBus"];
    assert_eq!(
        sb["autoCompleteMessages"], true,
        "a custom handler cannot settle messages"
    );
    assert_eq!(sb["prefetchCount"], 0);
    let lock = seconds(sb["maxAutoLockRenewalDuration"].as_str().unwrap());
    assert!(
        lock > timeout,
        "the lock must outlive the longest invocation"
    );
    let calls = sb["maxConcurrentCalls"].as_u64().unwrap();
    assert!(
        (1..=32).contains(&calls),
        "modest: ARM's write budget is the limit"
    );
}
