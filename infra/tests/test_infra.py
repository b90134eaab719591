"""Structural tests of vmrp's Azure templates (infra/*.bicep).

The templates are parsed with pycep (the Bicep parser checkov itself uses), so every assertion
looks at a parsed resource, variable or output rather than at raw text. What is checked is what
matters for running vmrp safely: Entra-only access (no SAS, no shared keys), duplicate detection
on the three queues, the custom role equal to the ARM actions the code performs
(crates/vmrp-azure/src/operations.rs ARM_ACTIONS), the Event Grid filter, the app settings the binary reads,
a user-assigned identity, and no secrets in outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pycep import BicepParser

INFRA = Path(__file__).resolve().parent.parent
REPO = INFRA.parent
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

QUEUES = ["rp-create", "rp-copy", "rp-poll", "rp-plan"]
PARKING_QUEUE = "rp-failed"
DUPLICATE_WINDOW = "P7D"
FUNCTIONS = [
    "ScheduleRestorePoints",
    "PlanRestorePoints",
    "CreateRestorePoint",
    "StartCrossRegionCopy",
    "PollRestorePoint",
    "OnVmChanged",
]
# The settings the binary and the Functions host read (FUNCTIONS_WORKER_RUNTIME is covered by
# functionAppConfig.runtime on Flex Consumption, see test_runtime_is_custom_handler).
REQUIRED_APP_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "VMRP_SCHEDULE",
    "VMRP_DRILL_SCHEDULE",
    "VMRP_DRILL_TABLE_URL",
    "VMRP_POLICY",
    "ServiceBusConnection__fullyQualifiedNamespace",
    "ServiceBusConnection__credential",
    "ServiceBusConnection__clientId",
    "AZURE_CLIENT_ID",
    "RUST_LOG",
}


def parse(path: Path) -> dict:
    return BicepParser().parse(file_path=path)


@pytest.fixture(scope="module")
def templates() -> dict[str, dict]:
    return {str(p.relative_to(INFRA)): parse(p) for p in BICEP_FILES}


def body(resource: dict) -> dict:
    """A resource's own block, looking through `if (...)` and `[for ...]` wrappers."""
    config = resource["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def variable(template: dict, name: str):
    return template["variables"][name]["value"]


def resolve(template: dict, value):
    """A bare identifier naming a variable or a parameter default → its value."""
    if isinstance(value, str):
        if value in template.get("variables", {}):
            return variable(template, value)
        if value in template.get("parameters", {}):
            return template["parameters"][value]["default"]
    return value


def arm_actions_from_rust() -> list[str]:
    source = (REPO / "crates/vmrp-azure/src/operations.rs").read_text()
    match = re.search(r"pub const ARM_ACTIONS: &\[&str\] = &\[(.*?)\];", source, re.S)
    assert match, "ARM_ACTIONS not found in crates/vmrp-azure/src/operations.rs"
    without_comments = re.sub(r"//[^\n]*", "", match.group(1))
    return re.findall(r'"([^"]+)"', without_comments)


def test_every_template_parses(templates):
    assert set(templates) >= {
        "main.bicep",
        "modules/functionapp.bicep",
        "modules/servicebus.bicep",
        "modules/events.bicep",
        "modules/vm-role.bicep",
        "modules/storage.bicep",
    }
    for name, template in templates.items():
        assert template.get("resources") or template.get("modules"), f"{name} declares nothing"


def test_service_bus_is_standard_with_local_auth_disabled(templates):
    namespace = body(templates["modules/servicebus.bicep"]["resources"]["namespace"])
    assert namespace["sku"]["name"] in ("Standard", "Premium"), "duplicate detection needs Standard+"
    assert namespace["properties"]["disableLocalAuth"] is True
    assert namespace["properties"]["minimumTlsVersion"] == "1.2"


def test_three_queues_with_duplicate_detection(templates):
    template = templates["modules/servicebus.bicep"]
    queues = template["resources"]["queues"]
    loop = queues["config"]["loop_type"]["detail"]
    assert resolve(template, loop["array_name"]) == QUEUES
    # main.bicep must not override the queue list with something else.
    assert "queueNames" not in body(templates["main.bicep"]["modules"]["serviceBus"])["params"]
    properties = body(queues)["properties"]
    assert properties["requiresDuplicateDetection"] is True
    # The largest window Service Bus allows (7 days), so a create or copy replayed hours later
    # cannot start a second poll chain; the emulator models the same value.
    assert properties["duplicateDetectionHistoryTimeWindow"] == DUPLICATE_WINDOW
    assert 1 < properties["maxDeliveryCount"] <= 100
    assert properties["deadLetteringOnMessageExpiration"] is True
    assert re.fullmatch(r"PT\d+[MS]", properties["lockDuration"])
    assert properties["requiresSession"] is False
    # The window must cover every replay of a send: the invocation that sent it is redelivered
    # at most maxDeliveryCount times, each holding the lock at most lockDuration (docs/deploy.md,
    # servicebus.bicep). Derived from the template's own values, so PT1M fails and a longer
    # window (or other queue settings) is judged on the same rule.
    window = iso_seconds(properties["duplicateDetectionHistoryTimeWindow"])
    replays = properties["maxDeliveryCount"] * iso_seconds(properties["lockDuration"])
    assert window >= replays, (
        f"duplicate detection window {properties['duplicateDetectionHistoryTimeWindow']} is shorter "
        f"than maxDeliveryCount x lockDuration ({replays} s)"
    )


def iso_seconds(text: str) -> int:
    """Seconds of an ISO 8601 duration of days, hours, minutes, seconds (`P1D`, `PT1H30M`, `PT10M`)."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    assert m and text not in ("P", "PT") and not text.endswith("T"), f"not an ISO 8601 duration: {text}"
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def test_iso_seconds():
    assert iso_seconds("PT1H") == 3600
    assert iso_seconds("PT10M") == 600
    assert iso_seconds("PT5M") == 300
    assert iso_seconds("P1D") == 86400
    assert iso_seconds("P14D") == 14 * 86400
    assert iso_seconds("PT1H30M5S") == 5405
    for bad in ("1H", "PT", "P", "PTH", "PT1X"):
        with pytest.raises(AssertionError):
            iso_seconds(bad)


def test_parking_queue_keeps_each_failure_once(templates):
    template = templates["modules/servicebus.bicep"]
    parking = body(template["resources"]["parkingQueue"])
    assert parking["name"] == PARKING_QUEUE
    properties = parking["properties"]
    assert properties["requiresDuplicateDetection"] is True
    assert properties["duplicateDetectionHistoryTimeWindow"] == DUPLICATE_WINDOW
    assert properties["deadLetteringOnMessageExpiration"] is True
    # The handler sends to it through the same Rust sender (crates/vmrp-core/src/azure/mod.rs Queue::Failed).
    rust = (REPO / "crates/vmrp-core/src/azure/mod.rs").read_text()
    assert f'"{PARKING_QUEUE}"' in rust


def test_emulator_models_the_deployed_duplicate_window():
    rust = (REPO / "crates/vmrp-emulator/src/servicebus/mod.rs").read_text()
    match = re.search(r"pub const DUPLICATE_WINDOW: time::Duration = time::Duration::days\((\d+)\)", rust)
    assert match, "the emulator's DUPLICATE_WINDOW constant"
    assert f"P{match.group(1)}D" == DUPLICATE_WINDOW


def test_custom_role_grants_exactly_the_arm_actions(templates):
    template = templates["modules/vm-role.bicep"]
    role = body(template["resources"]["role"])
    permissions = role["properties"]["permissions"]
    assert len(permissions) == 1
    actions = resolve(template, permissions[0]["actions"])
    rust_actions = arm_actions_from_rust()
    assert len(rust_actions) >= 5, "ARM_ACTIONS parsed suspiciously short"
    assert len(actions) == len(set(actions)), "duplicate actions in the role"
    assert sorted(actions) == sorted(rust_actions)
    assert not any("*" in action for action in actions)
    # Least privilege: no documented source requires VM write for restore
    # points, and it would let the identity change any VM in scope.
    assert "Microsoft.Compute/virtualMachines/write" not in actions
    for empty in ("notActions", "dataActions", "notDataActions"):
        assert permissions[0][empty] == []
    assert role["properties"]["type"] == "CustomRole"


def rust_const_actions(name: str) -> list[str]:
    source = (REPO / "crates/vmrp-azure/src/operations.rs").read_text()
    match = re.search(rf"pub const {name}: &\[&str\] = &\[(.*?)\];", source, re.S)
    assert match, f"{name} not found in crates/vmrp-azure/src/operations.rs"
    return re.findall(r'"([^"]+)"', re.sub(r"//[^\n]*", "", match.group(1)))


def test_drill_role_grants_disk_write_and_delete_at_the_drill_group_only(templates):
    template = templates["modules/drill-role.bicep"]
    role = body(template["resources"]["role"])
    permissions = role["properties"]["permissions"]
    assert len(permissions) == 1
    actions = resolve(template, permissions[0]["actions"])
    assert sorted(actions) == sorted(rust_const_actions("DRILL_ACTIONS"))
    assert sorted(actions) == ["Microsoft.Compute/disks/delete", "Microsoft.Compute/disks/read", "Microsoft.Compute/disks/write"]
    for empty in ("notActions", "dataActions", "notDataActions"):
        assert permissions[0][empty] == []
    assert role["properties"]["assignableScopes"] == ["drillResourceGroupId"]
    # The main role stays without disk writes.
    main_role = resolve(templates["modules/vm-role.bicep"], body(templates["modules/vm-role.bicep"]["resources"]["role"])["properties"]["permissions"][0]["actions"])
    assert not any(a.startswith("Microsoft.Compute/disks/") and not a.endswith("/read") for a in main_role)
    modules = templates["main.bicep"]["modules"]
    assignment = modules["drillAssignment"]
    assert assignment["detail"]["path"] == "modules/vm-role-assignment-rg.bicep"
    assert body(assignment)["scope"]["function"]["type"] == "resource_group"
    assert set(body(assignment)["params"]) == {"roleGuid", "principalId"}
    assert body(assignment)["params"]["roleGuid"] == "drillRoleGuid"
    assert body(modules["drillRole"])["params"]["drillResourceGroupId"] == "drillResourceGroupId"


def test_role_is_assigned_at_subscription_and_resource_group_scopes(templates):
    main = templates["main.bicep"]
    assert main["globals"]["scope"]["value"] == "subscription"
    assert templates["modules/vm-role-assignment-sub.bicep"]["globals"]["scope"]["value"] == "subscription"
    assert templates["modules/vm-role-assignment-rg.bicep"]["globals"]["scope"]["value"] == "resourceGroup"
    modules = main["modules"]
    for name, path, scope_function, targets in [
        ("subscriptionAssignments", "modules/vm-role-assignment-sub.bicep", "subscription", "subscriptionIds"),
        ("resourceGroupAssignments", "modules/vm-role-assignment-rg.bicep", "resource_group", "resourceGroupIds"),
    ]:
        module = modules[name]
        assert module["detail"]["path"] == path
        loop = module["config"]["loop_type"]["detail"]
        assert loop["array_name"] == targets, f"{name} is not one assignment per target"
        assert body(module)["scope"]["function"]["type"] == scope_function
        assert set(body(module)["params"]) == {"roleGuid", "principalId"}
    # The role definition is assignable at every target (and this subscription, where it lives).
    role_module = body(modules["vmRole"])
    assignable = role_module["params"]["assignableScopes"]["function"]
    assert assignable["type"] == "union"
    union_args = [v for v in assignable["parameters"].values() if isinstance(v, str)]
    assert {"subscriptionScopes", "resourceGroupIds"} <= set(union_args)


def test_event_grid_delivers_only_vm_writes_and_deletes_to_on_vm_changed(templates):
    template = templates["modules/events.bicep"]
    topic = body(template["resources"]["systemTopic"])
    assert topic["properties"]["topicType"] == "Microsoft.Resources.Subscriptions"
    subscription = body(template["resources"]["vmChanges"])["properties"]

    event_filter = subscription["filter"]
    assert sorted(resolve(template, event_filter["includedEventTypes"])) == [
        "Microsoft.Resources.ResourceDeleteSuccess",
        "Microsoft.Resources.ResourceWriteSuccess",
    ]
    filters = event_filter["advancedFilters"]
    assert len(filters) == 1
    assert filters[0]["key"] == "data.operationName"
    assert filters[0]["operatorType"] == "StringIn"
    assert sorted(resolve(template, filters[0]["values"])) == [
        "Microsoft.Compute/virtualMachines/delete",
        "Microsoft.Compute/virtualMachines/write",
    ]

    destination = subscription["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"].endswith("/functions/OnVmChanged")
    assert subscription["retryPolicy"]["maxDeliveryAttempts"] >= 1
    dead_letter = subscription["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["endpointType"] == "StorageBlob"


def test_app_settings_come_from_one_object_with_every_name_the_binary_reads(templates):
    template = templates["modules/functionapp.bicep"]
    settings_resource = body(template["resources"]["functionApp__settings"])
    assert settings_resource["name"] == "appsettings"
    assert settings_resource["properties"] == "appSettings", "app settings not wired from `appSettings`"
    # No other resource sets app settings inline.
    site = body(template["resources"]["functionApp"])
    assert "appSettings" not in site["properties"].get("siteConfig", {})

    base = variable(template, "baseAppSettings")
    assert REQUIRED_APP_SETTINGS <= set(base)
    assert base["AzureWebJobsStorage__credential"] == "managedidentity"
    assert base["ServiceBusConnection__credential"] == "managedidentity"
    # The same identity everywhere: the identity's client id parameter.
    for name in ("AzureWebJobsStorage__clientId", "ServiceBusConnection__clientId", "AZURE_CLIENT_ID"):
        assert base[name] == "identityClientId", name
    # No key-based connection strings.
    assert "AzureWebJobsStorage" not in base
    for name, value in base.items():
        text = json.dumps(value)
        assert "AccountKey" not in text and "SharedAccessKey" not in text, name
    # The optional ARM endpoint is added by the same object.
    union = variable(template, "appSettings")["operator"]["operands"]["false_value"]["function"]
    assert union["parameters"]["arg_1"] == "baseAppSettings"
    assert set(union["parameters"]["arg_2"]) == {"VMRP_ARM_ENDPOINT"}


def test_runtime_is_custom_handler_on_flex_consumption(templates):
    template = templates["modules/functionapp.bicep"]
    plan = body(template["resources"]["plan"])
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = body(template["resources"]["functionApp"])
    assert site["kind"] == "functionapp,linux"
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "custom", "version": "1.0"}
    # On Flex Consumption FUNCTIONS_WORKER_RUNTIME is platform-set; setting it is deprecated.
    assert "FUNCTIONS_WORKER_RUNTIME" not in variable(template, "baseAppSettings")


def test_function_app_runs_as_the_user_assigned_identity(templates):
    site = body(templates["modules/functionapp.bicep"]["resources"]["functionApp"])
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    auth = site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert auth["type"] == "UserAssignedIdentity"


def test_storage_accepts_only_entra_over_tls12(templates):
    storage = body(templates["modules/storage.bicep"]["resources"]["storage"])["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True


def test_the_drill_table_is_in_the_app_storage_and_named_in_the_app_settings(templates):
    storage = templates["modules/storage.bicep"]
    table = body(storage["resources"]["drillTable"])
    assert table["name"] == "drillTableName"
    assert storage["outputs"]["tableEndpoint"]["value"]
    # main wires the table's URL into the app (and outputs it for `vmrp status --drill-table`).
    main = templates["main.bicep"]
    text = json.dumps(main)
    assert "drillTableUrl" in text and "VMRP_DRILL_TABLE_URL" in main["outputs"]
    assert variable(templates["modules/functionapp.bicep"], "baseAppSettings")["VMRP_DRILL_TABLE_URL"] == "drillTableUrl"
    # The app writes it with Storage Table Data Contributor on its storage account (not a key).
    roles = variable(templates["modules/app-rbac.bicep"], "roles")
    assert roles["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"


def test_app_identity_gets_the_data_roles_the_host_needs(templates):
    roles = variable(templates["modules/app-rbac.bicep"], "roles")
    assert set(roles.values()) == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
        "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",  # Azure Service Bus Data Sender
        "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",  # Azure Service Bus Data Receiver
        "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
    }


SECRET_NAME = re.compile(r"key|secret|password|token|sas|connectionstring", re.I)


def function_names(value) -> set[str]:
    """Every function called anywhere inside a parsed expression."""
    found = set()
    if isinstance(value, dict):
        if "function" in value and isinstance(value["function"], dict):
            found.add(value["function"].get("type", ""))
        for item in value.values():
            found |= function_names(item)
    elif isinstance(value, list):
        for item in value:
            found |= function_names(item)
    return found


def test_no_secrets_in_outputs(templates):
    monitoring = templates["modules/monitoring.bicep"]
    # The one allowed "connection string": Application Insights with local auth disabled, where
    # the instrumentation key it contains grants nothing.
    allowed = {("modules/monitoring.bicep", "applicationInsightsConnectionString")}
    component = body(monitoring["resources"]["applicationInsights"])
    assert component["properties"]["DisableLocalAuth"] is True

    for name, template in templates.items():
        for output_name, output in template.get("outputs", {}).items():
            assert not any(f.lower().startswith("list") for f in function_names(output["value"])), (
                f"{name}: output {output_name} calls a list*() function (keys)"
            )
            text = json.dumps(output["value"])
            assert "primaryKey" not in text and "secondaryKey" not in text, f"{name}: {output_name}"
            if (name, output_name) not in allowed:
                assert not SECRET_NAME.search(output_name), f"{name}: output {output_name} looks secret"
    for output_name in templates["main.bicep"]["outputs"]:
        assert not SECRET_NAME.search(output_name), output_name


def test_parameters_file_names_real_parameters(templates):
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = templates["main.bicep"]["parameters"]
    assert set(parameters) <= set(declared), set(parameters) - set(declared)
    for required in ("environmentName", "location", "targetSubscriptionIds", "targetResourceGroupIds"):
        assert required in parameters, required


def test_every_checkov_skip_gives_a_reason():
    pattern = re.compile(r"checkov:skip=(CKV2?_[A-Z]+_\d+)(.*)")
    seen = 0
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            match = pattern.search(line)
            if match:
                seen += 1
                reason = match.group(2).lstrip(":").strip()
                assert len(reason) >= 20, f"{path.name}: {match.group(1)} has no real reason"
    assert seen > 0


def test_azure_yaml_deploys_the_packaged_zip_built_without_the_emulator():
    config = yaml.safe_load((REPO / "azure.yaml").read_text())
    service = config["services"]["vmrp"]
    assert service["host"] == "function"
    assert service["language"] == "custom"
    assert service["dist"].endswith(".zip")
    hooks = json.dumps(service["hooks"])
    # The deploy binary is the handler crate's (crates/vmrp-handler: no emulator by construction).
    assert "-p vmrp-handler" in hooks
    assert "package" in hooks


# ------------------------------------------------------------------------------------------
# Alerts and workbook: the queries name only fields vmrp logs.
# ------------------------------------------------------------------------------------------

MONITORING = INFRA / "monitoring"
FIELDS = json.loads((MONITORING / "fields.json").read_text())


# `actionGroup.id` as pycep parses it.
ACTION_GROUP_ID = {
    "operator": {
        "type": "property_accessor",
        "operands": {"operand_1": "actionGroup", "operand_2": "id"},
    }
}


def load_text_path(value) -> str | None:
    """`loadTextContent('x')` as pycep parses it → 'x'."""
    if isinstance(value, dict) and value.get("function", {}).get("type") == "load_text_content":
        return value["function"]["parameters"]["file_path"]
    return None


def logged_queries() -> dict[str, str]:
    """Every KQL query infra/ deploys: the alert queries and the workbook's."""
    queries = {p.name: p.read_text() for p in sorted(MONITORING.glob("*.kql"))}
    workbook = json.loads((MONITORING / "workbook.json").read_text())
    for item in workbook["items"]:
        if item["type"] == 3:
            queries[f"workbook:{item['name']}"] = item["content"]["query"]
    return queries


def kql_code(query: str) -> str:
    """The query without // comments."""
    return "\n".join(line.split("//", 1)[0] for line in query.splitlines())


def test_queries_name_only_fields_vmrp_logs():
    span = set(FIELDS["span"])
    common = set(FIELDS["common"])
    for name, query in logged_queries().items():
        code = kql_code(query)
        targets = re.findall(r'tostring\(e\.target\)\s*==\s*"([^"]+)"', code)
        assert targets, f"{name}: filters on no vmrp event"
        allowed = set(common)
        for t in targets:
            assert t in FIELDS["events"], f"{name}: {t} is not an event vmrp logs"
            allowed |= set(FIELDS["events"][t]["fields"])
        used_span = set(re.findall(r"\be\.span\.(\w+)", code))
        assert used_span <= span, f"{name}: span fields {used_span - span} are not logged"
        used = set(re.findall(r"\be\.(\w+)", code)) - {"span"}
        assert used <= allowed, f"{name}: {sorted(used - allowed)} not logged by {targets}"
        # Values compared against must be values vmrp writes.
        for field, value in re.findall(r'tostring\(e\.(\w+)\)\s*(?:==|in)\s*\(?"([^"]+)"', code):
            if field == "target":
                continue
            known = set()
            for t in targets:
                known |= set(FIELDS["events"][t].get("values", {}).get(field, []))
            assert value in known, f"{name}: e.{field} is never {value!r}"
        for field, values in re.findall(r"tostring\(e\.(\w+)\)\s+in\s+\(([^)]*)\)", code):
            for value in re.findall(r'"([^"]+)"', values):
                known = set()
                for t in targets:
                    known |= set(FIELDS["events"][t].get("values", {}).get(field, []))
                assert value in known, f"{name}: e.{field} is never {value!r}"
        assert 'Category) == "Host.Function.Console"' in code, f"{name}: not the handler's console"


def test_the_field_check_catches_a_field_vmrp_does_not_log():
    # The control: a query naming a field no event has fails the rule above.
    code = 'tostring(e.target) == "vmrp::report" | where tostring(e.severity) == "x"'
    used = set(re.findall(r"\be\.(\w+)", code)) - {"span"}
    allowed = set(FIELDS["common"]) | set(FIELDS["events"]["vmrp::report"]["fields"])
    assert used - allowed == {"severity"}


def test_alerts_cover_given_up_coverage_timer_and_dead_letters(templates):
    alerts = templates["modules/alerts.bicep"]["resources"]
    rules = {n: r for n, r in alerts.items() if r["type"] == "Microsoft.Insights/scheduledQueryRules"}
    loaded = {n: load_text_path(body(r)["properties"]["criteria"]["allOf"][0]["query"]) for n, r in rules.items()}
    assert sorted(Path(p).name for p in loaded.values()) == [
        "coverage-below-target.kql",
        "given-up.kql",
        "timer-runs.kql",
    ]
    for name, path in loaded.items():
        assert (INFRA / "modules" / path).resolve().is_file(), f"{name}: {path} missing"
        props = body(rules[name])["properties"]
        assert props["actions"]["actionGroups"] == [ACTION_GROUP_ID], name
        assert props["autoMitigate"] is True, name
    timer = body(rules["timerSilent"])["properties"]["criteria"]["allOf"][0]
    assert (timer["operator"], timer["threshold"]) == ("LessThan", 1)
    dead = body(alerts["deadLetters"])
    assert alerts["deadLetters"]["type"] == "Microsoft.Insights/metricAlerts"
    assert dead["properties"]["criteria"]["allOf"][0]["metricName"] == "DeadletteredMessages"
    assert dead["properties"]["actions"] == [{"actionGroupId": ACTION_GROUP_ID}]
    # The email receiver is optional: no receiver without an address.
    receivers = body(alerts["actionGroup"])["properties"]["emailReceivers"]
    assert receivers["operator"]["type"] == "conditional"
    assert receivers["operator"]["operands"]["true_value"] == []
    assert templates["modules/alerts.bicep"]["parameters"]["alertEmail"]["default"] == ""


def test_workbook_is_deployed_and_shows_coverage_failures_and_copy_lag(templates):
    alerts = templates["modules/alerts.bicep"]["resources"]
    wb = body(alerts["workbook"])
    assert alerts["workbook"]["type"] == "Microsoft.Insights/workbooks"
    assert load_text_path(wb["properties"]["serializedData"]) == "../monitoring/workbook.json"
    items = {i["name"]: i for i in json.loads((MONITORING / "workbook.json").read_text())["items"]}
    assert {"coverage-per-vm", "coverage-per-rule", "failures", "copy-lag"} <= items.keys()
    main = templates["main.bicep"]["modules"]
    assert main["alerts"]["detail"]["path"] == "modules/alerts.bicep"
