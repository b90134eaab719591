//! Fuzzes the custom-handler envelope and everything decoded from it: bindings, metadata, host
//! dates and the queue message inside a Service Bus body. Any panic is a bug: bad input must
//! become an `Err` naming the field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmrp::azure::Queue;
use vmrp::host::envelope::parse_host_time;
use vmrp::host::Envelope;
use vmrp::messages::QueueMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_host_time(text);
        let _ = QueueMessage::decode(text);
    }
    let Ok(envelope) = Envelope::parse(data) else {
        return;
    };
    let _ = envelope.utc_now();
    let _ = envelope.delivery_count();
    let _ = envelope.message_id();
    let _ = envelope.timer("timer");
    let _ = envelope.event_grid("eventGridEvent");
    if let Ok(trigger) = envelope.service_bus("msg") {
        for queue in Queue::ALL {
            let _ = QueueMessage::decode_for(queue, &trigger.body);
        }
    }
});
