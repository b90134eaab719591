//! The Azure Functions custom-handler transport: the only module that knows the host's JSON
//! envelope (PROTOCOL.md). Decodes invocations into typed events, encodes outcomes, maps errors.
