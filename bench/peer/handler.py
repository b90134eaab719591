"""PollRestorePoint written the way most teams would today: Python, Microsoft's SDKs
(azure-identity, azure-mgmt-compute, azure-servicebus) behind a minimal Azure Functions
custom-handler HTTP server. It is vmrp's benchmark peer (bench/run.sh), pointed at the same
emulator and fed the same messages, so the two are measured doing the same work.

Behaviour mirrors vmrp's PollRestorePoint: one GET of the restore point with instanceView, then
requeue with backoff (a scheduled Service Bus message), or settle (local: one copy message per
copy region), or report a failure.

Service Bus: in production this would call ServiceBusSender.schedule_messages over AMQP. The
emulator models Service Bus's REST API, not AMQP, so when VMRP_SERVICEBUS_ENDPOINT is set the
peer sends the same scheduled message through the REST API with a SAS token (what the SDK's
credential would sign). azure.servicebus is imported either way, so start-up cost and memory are
those of the real deployment.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.servicebus import ServiceBusClient, ServiceBusMessage  # noqa: F401  (production path)

ARM_ENDPOINT = os.environ.get("VMRP_ARM_ENDPOINT", "https://management.azure.com").rstrip("/")
ARM_AUDIENCE = os.environ.get("VMRP_ARM_AUDIENCE", "https://management.azure.com")
SB_ENDPOINT = os.environ.get("VMRP_SERVICEBUS_ENDPOINT")
# The Compute API version vmrp speaks (azure::models::API_VERSION); the SDK's own default is newer
# than what the emulator (and vmrp) implement.
COMPUTE_API_VERSION = os.environ.get("VMRP_COMPUTE_API_VERSION", "2025-04-01")
INSECURE = ARM_ENDPOINT.startswith("http://")

_credential = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID"))
_clients = {}
_http = requests.Session()


def compute(subscription):
    client = _clients.get(subscription)
    if client is None:
        client = ComputeManagementClient(
            _credential,
            subscription,
            base_url=ARM_ENDPOINT,
            credential_scopes=[ARM_AUDIENCE + "/.default"],
        )
        _clients[subscription] = client
    return client


def parse_connection_string(text):
    parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
    return parts["Endpoint"], parts["SharedAccessKeyName"], parts["SharedAccessKey"]


def sas_token(uri, key_name, key):
    expiry = str(int(time.time()) + 3600)
    sr = urllib.parse.quote_plus(uri)
    sig = base64.b64encode(hmac.new(key.encode(), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest())
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote_plus(sig)}&se={expiry}&skn={key_name}"


def send(queue, body, message_id, not_before):
    endpoint, key_name, key = parse_connection_string(os.environ["ServiceBusConnection"])
    namespace_url = endpoint.replace("sb://", "https://").rstrip("/")
    broker = {"MessageId": message_id}
    if not_before is not None:
        broker["ScheduledEnqueueTimeUtc"] = format_datetime(not_before, usegmt=True)
    url = f"{(SB_ENDPOINT or namespace_url).rstrip('/')}/{queue}/messages"
    response = _http.post(
        url,
        data=json.dumps(body),
        headers={
            "Authorization": sas_token(f"{namespace_url}/{queue}/messages", key_name, key),
            "BrokerProperties": json.dumps(broker),
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    response.raise_for_status()


def message_id(kind, target, tick, attempt):
    h = hashlib.sha256()
    h.update(kind.encode() + b"\0" + target.lower().encode() + b"\0")
    h.update(int(tick.timestamp()).to_bytes(8, "big", signed=True) + b"\0" + attempt.to_bytes(4, "big"))
    return h.hexdigest()[:32]


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def backoff(role, attempt):
    if role == "copy":
        return timedelta(minutes=2) if attempt <= 1 else timedelta(minutes=10)
    return timedelta(seconds=min(15 * 2 ** (attempt - 1), 300))


def poll(msg, now):
    target = msg["target"]
    parts = target.strip("/").split("/")
    sub, rg, rpc, rp = parts[1], parts[3], parts[7], parts[9]
    point = compute(sub).restore_points.get(
        rg, rpc, rp, expand="instanceView", api_version=COMPUTE_API_VERSION, enforce_https=not INSECURE
    )
    state = point.provisioning_state or "Succeeded"
    percents = [
        (d.replication_status.completion_percent or 0)
        for d in ((point.instance_view and point.instance_view.disk_restore_points) or [])
        if d.replication_status is not None
    ]
    tick = parse_time(msg["tick"])
    if state == "Failed":
        return "reported", []
    settled = state == "Succeeded" and (msg["role"] != "copy" or all(p >= 100 for p in percents))
    if not settled:
        if now > parse_time(msg["deadline"]):
            return "reported", []
        after = backoff(msg["role"], msg["attempt"])
        follow = dict(msg, attempt=msg["attempt"] + 1)
        mid = message_id("poll", target, tick, msg["attempt"] + 1)
        send("rp-poll", follow, mid, now + after)
        return "rescheduled", [mid]
    sent = []
    if msg["role"] == "local":
        for region in msg.get("copyTo", []):
            body = {"v": 1, "kind": "copy", "source": target, "targetRegion": region, "vm": msg["vm"]}
            mid = message_id("copy", target + "/" + region, tick, 0)
            send("rp-copy", body, mid, None)
            sent.append(mid)
    return "done", sent


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply(200, {})

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.strip("/") != "PollRestorePoint":
            self._reply(404, {"error": "unknown function"})
            return
        try:
            envelope = json.loads(body)
            raw = envelope["Data"]["msg"]
            text = json.loads(raw) if isinstance(raw, str) and raw.startswith('"') else raw
            msg = json.loads(text) if isinstance(text, str) else text
            now = parse_time(envelope["Metadata"]["sys"]["UtcNow"])
            status, sent = poll(msg, now)
            self._reply(200, {"Outputs": {}, "Logs": [f"{status} {msg['target']}"], "ReturnValue": {"status": status, "sent": sent}})
        except Exception as exc:  # the invocation fails; Service Bus redelivers
            self._reply(500, {"Outputs": {}, "Logs": [f"failed: {exc!r}"], "ReturnValue": None})


def main():
    port = int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"peer listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
