//! The ARM client against a loopback fake: every official request/response example
//! (`reference/arm/examples/`), long-running operations, throttling, retries, paging,
//! CloudError parsing, origin checks, rate-limit headers. Set `VMRP_TRAFFIC_DIR` to record the
//! traffic for `scripts/validate-traffic.sh`.

mod azure_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_support::{
    assert_keeps, assert_subset, example, request_body, response_body, Canned, Fake, SUB,
};
use serde_json::{json, Value};
use url::Url;
use vmrp::azure::client::{ArmClient, ArmClientConfig};
use vmrp::azure::credential::StaticToken;
use vmrp::azure::http::{RetryConfig, Timeouts};
use vmrp::azure::lro::{LroOutcome, WaitOptions};
use vmrp::azure::models::{
    ConsistencyMode, RestorePoint, RestorePointCollection, RestorePointCollectionProperties,
    RestorePointCollectionSource, API_VERSION,
};
use vmrp::azure::{Arm, ResourceId, VmScope};

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

fn arm_client(fake: &Fake) -> (ArmClient, Arc<StaticToken>) {
    client_with(fake, fast_retry())
}

fn client_with(fake: &Fake, retry: RetryConfig) -> (ArmClient, Arc<StaticToken>) {
    let token = StaticToken::new("test-token", Duration::from_secs(3600));
    let record_traffic = std::env::var_os("VMRP_TRAFFIC_DIR").map(std::path::PathBuf::from);
    let client = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&format!("{}/", fake.base)).unwrap(),
        audience: Some("https://management.azure.com".into()),
        credential: token.clone(),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        retry,
        loopback_only: true,
        record_traffic,
    })
    .unwrap();
    (client, token)
}

fn id(s: &str) -> ResourceId {
    ResourceId::parse(s).unwrap()
}

fn rg_path(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute")
}

fn api_query(extra: &str) -> String {
    format!("api-version={API_VERSION}{extra}")
}

/// Asserts one request reached the fake with this method, path and query, the bearer token,
/// and returns it.
fn only_request(fake: &Fake, method: &str, path: &str, query: &str) -> azure_support::Seen {
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "requests: {seen:#?}");
    let s = seen.into_iter().next().unwrap();
    assert_eq!(s.method, method);
    assert_eq!(s.path, path);
    assert_eq!(s.query.as_deref(), Some(query));
    assert_eq!(s.header("authorization"), Some("Bearer test-token"));
    s
}

// ---------------------------------------------------------------------------------------------
// Restore point collections
// ---------------------------------------------------------------------------------------------

/// Builds the collection PUT body from typed fields, the way vmrp's handlers do.
fn collection_body(ex_req: &Value) -> RestorePointCollection {
    let mut body = RestorePointCollection::for_source(
        ex_req["location"].as_str().unwrap(),
        &id(ex_req["properties"]["source"]["id"].as_str().unwrap()),
        serde_json::from_value(ex_req["tags"].clone()).unwrap(),
    );
    body.properties.as_mut().unwrap().instant_access =
        ex_req["properties"]["instantAccess"].as_bool();
    body
}

const COLLECTION_FIELDS: &[&str] = &[
    "/id",
    "/name",
    "/type",
    "/location",
    "/tags",
    "/properties/source/id",
    "/properties/source/location",
    "/properties/provisioningState",
    "/properties/restorePointCollectionId",
];

async fn put_collection_example(file: &str, status: &str) {
    let ex = example(file);
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/myRpc",
        rg_path("myResourceGroup")
    );
    let want = response_body(&ex, status);
    fake.on(
        "PUT",
        &path,
        vec![Canned::json(status.parse().unwrap(), &want)],
    );
    let (client, _) = arm_client(&fake);
    let got = client
        .put_collection(&id(&path[..]), &collection_body(&request_body(&ex)))
        .await
        .unwrap();
    let seen = only_request(&fake, "PUT", &path, &api_query(""));
    assert_eq!(
        seen.json(),
        request_body(&ex),
        "request body equals the example's"
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, COLLECTION_FIELDS);
}

#[tokio::test]
async fn example_restore_point_collection_create_or_update_201() {
    put_collection_example(
        "restore-points/RestorePointCollection_CreateOrUpdate.json",
        "201",
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_collection_create_or_update_200() {
    put_collection_example(
        "restore-points/RestorePointCollection_CreateOrUpdate.json",
        "200",
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_collection_create_or_update_for_cross_region_copy() {
    let file = "restore-points/RestorePointCollection_CreateOrUpdate_ForCrossRegionCopy.json";
    put_collection_example(file, "201").await;
    put_collection_example(file, "200").await;
}

async fn update_collection_example(file: &str) {
    let ex = example(file);
    let fake = Fake::start().await;
    let name = ex["parameters"]["restorePointCollectionName"]
        .as_str()
        .unwrap();
    let path = format!("{}/restorePointCollections/{name}", rg_path("rgcompute"));
    let want = response_body(&ex, "200");
    fake.on("PATCH", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let req = request_body(&ex);
    // Typed patch: only what the example sets.
    let patch = RestorePointCollection {
        tags: serde_json::from_value(req["tags"].clone()).ok(),
        properties: req
            .get("properties")
            .map(|p| RestorePointCollectionProperties {
                source: Some(RestorePointCollectionSource {
                    id: p["source"]["id"].as_str().map(str::to_string),
                    location: None,
                }),
                instant_access: p["instantAccess"].as_bool(),
                ..Default::default()
            }),
        ..Default::default()
    };
    let got = client.update_collection(&id(&path), &patch).await.unwrap();
    let seen = only_request(&fake, "PATCH", &path, &api_query(""));
    assert_eq!(seen.json(), req);
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, &["/location"]);
}

#[tokio::test]
async fn example_restore_point_collection_update_maximum_set() {
    update_collection_example("restore-points/RestorePointCollection_Update_MaximumSet_Gen.json")
        .await;
}

#[tokio::test]
async fn example_restore_point_collection_update_minimum_set() {
    update_collection_example("restore-points/RestorePointCollection_Update_MinimumSet_Gen.json")
        .await;
}

#[tokio::test]
async fn example_restore_point_collection_get() {
    let ex = example("restore-points/RestorePointCollection_Get.json");
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/myRpc",
        rg_path("myResourceGroup")
    );
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client
        .get_collection(&id(&path), false)
        .await
        .unwrap()
        .unwrap();
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, COLLECTION_FIELDS);
    assert_eq!(got.source_id(), want["properties"]["source"]["id"].as_str());
}

#[tokio::test]
async fn example_restore_point_collection_get_with_contained_restore_points() {
    let ex = example("restore-points/RestorePointCollection_Get_WithContainedRestorePoints.json");
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/rpcName",
        rg_path("myResourceGroup")
    );
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client
        .get_collection(&id(&path), true)
        .await
        .unwrap()
        .unwrap();
    only_request(&fake, "GET", &path, &api_query("&$expand=restorePoints"));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(
        &ours,
        &want,
        &[
            "/id",
            "/properties/source/id",
            "/properties/restorePoints/0/id",
            "/properties/restorePoints/0/name",
            "/properties/restorePoints/0/properties/provisioningState",
            "/properties/restorePoints/0/properties/consistencyMode",
            "/properties/restorePoints/0/properties/timeCreated",
            "/properties/restorePoints/0/properties/excludeDisks",
            "/properties/restorePoints/0/properties/sourceMetadata",
        ],
    );
    assert_eq!(
        got.restore_points().len(),
        want["properties"]["restorePoints"]
            .as_array()
            .unwrap()
            .len()
    );
}

#[tokio::test]
async fn example_restore_point_collection_list_by_resource_group() {
    let ex = example("restore-points/RestorePointCollection_ListByResourceGroup.json");
    let fake = Fake::start().await;
    let path = format!("{}/restorePointCollections", rg_path("myResourceGroup"));
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client
        .list_collections_in_group(SUB, "myResourceGroup")
        .await
        .unwrap();
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want["value"], "/value");
    assert_eq!(got.len(), want["value"].as_array().unwrap().len());
    assert_keeps(
        &ours,
        &want["value"],
        &["/0/id", "/0/properties/source/id", "/1/id"],
    );
}

#[tokio::test]
async fn example_restore_point_collection_list_by_subscription() {
    let ex = example("restore-points/RestorePointCollection_ListBySubscription.json");
    let fake = Fake::start().await;
    let path = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections");
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client.list_collections(SUB).await.unwrap();
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want["value"], "/value");
    assert_keeps(
        &ours,
        &want["value"],
        &["/0/id", "/0/location", "/0/properties/source/id", "/1/id"],
    );
}

/// The delete examples answer 200, 202 (+ location) or 204; the client reports each.
async fn delete_example(file: &str, rp: bool) {
    let ex = example(file);
    let p = &ex["parameters"];
    let rg = p["resourceGroupName"].as_str().unwrap();
    let mut path = format!(
        "{}/restorePointCollections/{}",
        rg_path(rg),
        p["restorePointCollectionName"].as_str().unwrap()
    );
    if rp {
        path.push_str(&format!(
            "/restorePoints/{}",
            p["restorePointName"].as_str().unwrap()
        ));
    }
    let location = ex["responses"]["202"]["headers"]["location"]
        .as_str()
        .unwrap();
    let fake = Fake::start().await;
    fake.on(
        "DELETE",
        &path,
        vec![
            Canned::empty(200),
            Canned::empty(202).header("location", location),
            Canned::empty(204),
        ],
    );
    let (client, _) = arm_client(&fake);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let accepted = if rp {
            client.delete_restore_point(&id(&path)).await.unwrap()
        } else {
            client.delete_collection(&id(&path)).await.unwrap()
        };
        if accepted.status == 202 {
            assert_eq!(accepted.lro.location.as_deref(), Some(location));
        } else {
            assert_eq!(accepted.lro.location, None);
        }
        statuses.push(accepted.status);
    }
    assert_eq!(statuses, vec![200, 202, 204]);
    assert!(fake
        .seen()
        .iter()
        .all(|s| s.method == "DELETE" && s.path == path));
}

#[tokio::test]
async fn example_restore_point_collection_delete_maximum_set() {
    delete_example(
        "restore-points/RestorePointCollection_Delete_MaximumSet_Gen.json",
        false,
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_collection_delete_minimum_set() {
    delete_example(
        "restore-points/RestorePointCollection_Delete_MinimumSet_Gen.json",
        false,
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_delete_maximum_set() {
    delete_example(
        "restore-points/RestorePoint_Delete_MaximumSet_Gen.json",
        true,
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_delete_minimum_set() {
    delete_example(
        "restore-points/RestorePoint_Delete_MinimumSet_Gen.json",
        true,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Restore points
// ---------------------------------------------------------------------------------------------

const RESTORE_POINT_FIELDS: &[&str] = &[
    "/id",
    "/name",
    "/properties/provisioningState",
    "/properties/timeCreated",
    "/properties/sourceMetadata",
];

async fn create_restore_point_example(file: &str, body: RestorePoint, extra_fields: &[&str]) {
    let ex = example(file);
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/rpcName/restorePoints/rpName",
        rg_path("myResourceGroup")
    );
    let op_url = fake.url(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/op-1"
    ));
    let want = response_body(&ex, "201");
    fake.on(
        "PUT",
        &path,
        vec![Canned::json(201, &want)
            .header(
                "Azure-AsyncOperation",
                &format!("{op_url}?api-version={API_VERSION}"),
            )
            .header(
                "Location",
                &format!("{op_url}?monitor=true&api-version={API_VERSION}"),
            )
            .header("Retry-After", "10")],
    );
    let (client, _) = arm_client(&fake);
    let accepted = client
        .create_restore_point(&id(&path), &body)
        .await
        .unwrap();
    let seen = only_request(&fake, "PUT", &path, &api_query(""));
    assert_eq!(
        seen.json(),
        request_body(&ex),
        "request body equals the example's"
    );
    assert_eq!(accepted.status, 201);
    assert_eq!(
        accepted.lro.async_operation.as_deref(),
        Some(&*format!("{op_url}?api-version={API_VERSION}"))
    );
    assert_eq!(
        accepted.lro.location.as_deref(),
        Some(&*format!("{op_url}?monitor=true&api-version={API_VERSION}"))
    );
    assert_eq!(accepted.lro.retry_after, Some(Duration::from_secs(10)));
    let ours = serde_json::to_value(accepted.body.unwrap()).unwrap();
    assert_subset(&ours, &want, "");
    let mut fields = RESTORE_POINT_FIELDS.to_vec();
    fields.extend_from_slice(extra_fields);
    fields.retain(|f| want.pointer(f).is_some());
    assert_keeps(&ours, &want, &fields);
}

#[tokio::test]
async fn example_restore_point_create() {
    let mut body = RestorePoint::local(
        None,
        &[id(&format!("{}/disks/disk123", rg_path("myResourceGroup")))],
    );
    body.properties
        .as_mut()
        .unwrap()
        .instant_access_duration_minutes = Some(120);
    create_restore_point_example(
        "restore-points/RestorePoint_Create.json",
        body,
        &["/properties/excludeDisks", "/properties/consistencyMode"],
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_copy_between_regions() {
    let source = id(&format!(
        "{}/restorePointCollections/sourceRpcName/restorePoints/sourceRpName",
        rg_path("myResourceGroup")
    ));
    create_restore_point_example(
        "restore-points/RestorePoint_Copy_BetweenRegions.json",
        RestorePoint::copy_of(&source),
        &["/properties/sourceRestorePoint"],
    )
    .await;
}

#[tokio::test]
async fn example_restore_point_get() {
    let ex = example("restore-points/RestorePoint_Get.json");
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/rpcName/restorePoints/rpName",
        rg_path("myResourceGroup")
    );
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client
        .get_restore_point(&id(&path), false)
        .await
        .unwrap()
        .unwrap();
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, RESTORE_POINT_FIELDS);
    assert_eq!(
        got.properties.unwrap().consistency_mode,
        Some(ConsistencyMode::ApplicationConsistent)
    );
}

#[tokio::test]
async fn example_restore_point_get_with_instance_view() {
    let ex = example("restore-points/RestorePoint_Get_WithInstanceView.json");
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/rpcName/restorePoints/rpName",
        rg_path("myResourceGroup")
    );
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client
        .get_restore_point(&id(&path), true)
        .await
        .unwrap()
        .unwrap();
    only_request(&fake, "GET", &path, &api_query("&$expand=instanceView"));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, &["/properties/instanceView"]);
    let percents: Vec<i32> = want["properties"]["instanceView"]["diskRestorePoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["replicationStatus"]["completionPercent"]
                .as_i64()
                .unwrap() as i32
        })
        .collect();
    assert_eq!(got.replication_percents(), percents);
}

// ---------------------------------------------------------------------------------------------
// Virtual machines
// ---------------------------------------------------------------------------------------------

const VM_FIELDS: &[&str] = &[
    "/id",
    "/name",
    "/location",
    "/tags",
    "/properties/vmId",
    "/properties/provisioningState",
    "/properties/storageProfile/osDisk/managedDisk/id",
    "/properties/storageProfile/dataDisks",
];

#[tokio::test]
async fn example_virtual_machine_get() {
    // The example asks for `$expand=userData`; vmrp never needs user data, so the client sends
    // the plain GET and must still read the full response.
    let ex = example("virtual-machines/VirtualMachine_Get.json");
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines/myVM", rg_path("myResourceGroup"));
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = client.get_vm(&id(&path)).await.unwrap().unwrap();
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want, "");
    assert_keeps(&ours, &want, VM_FIELDS);
    assert_eq!(got.disks().len(), 3, "OS disk + 2 data disks");
}

#[tokio::test]
async fn example_virtual_machine_get_instance_view_via_expand() {
    // The example is the `/instanceView` body; ARM returns the same object under
    // `properties.instanceView` for `$expand=instanceView`, which is the call vmrp makes
    // (covered by virtualMachines/read).
    let ex = example("virtual-machines/VirtualMachine_Get_InstanceView.json");
    let view = response_body(&ex, "200");
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines/myVM", rg_path("myResourceGroup"));
    let vm = json!({"id": path, "name": "myVM", "location": "westus",
                    "properties": {"vmId": "v1", "instanceView": view}});
    fake.on("GET", &path, vec![Canned::json(200, &vm)]);
    let (client, _) = arm_client(&fake);
    let (got_vm, got_view) = client
        .get_vm_with_instance_view(&id(&path))
        .await
        .unwrap()
        .unwrap();
    only_request(&fake, "GET", &path, &api_query("&$expand=instanceView"));
    assert_eq!(got_vm.properties.unwrap().vm_id.as_deref(), Some("v1"));
    let ours = serde_json::to_value(&got_view).unwrap();
    assert_subset(&ours, &view, "");
    assert_keeps(&ours, &view, &["/statuses", "/computerName", "/osName"]);
    assert_eq!(got_view.power_state(), Some("running"));
}

async fn list_vms_example(
    file: &str,
    path: String,
    call: impl AsyncFnOnce(&ArmClient) -> Vec<vmrp::azure::models::VirtualMachine>,
) {
    let ex = example(file);
    let fake = Fake::start().await;
    let want = response_body(&ex, "200");
    fake.on("GET", &path, vec![Canned::json(200, &want)]);
    let (client, _) = arm_client(&fake);
    let got = call(&client).await;
    only_request(&fake, "GET", &path, &api_query(""));
    let ours = serde_json::to_value(&got).unwrap();
    assert_subset(&ours, &want["value"], "/value");
    assert_eq!(got.len(), want["value"].as_array().unwrap().len());
    assert_keeps(&ours, &want["value"], &["/0/id", "/0/location"]);
}

#[tokio::test]
async fn example_virtual_machine_list_all_minimum_set() {
    list_vms_example(
        "virtual-machines/VirtualMachine_ListAll_MinimumSet_Gen.json",
        format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"),
        async |c| {
            c.list_vms(&VmScope::Subscription(SUB.into()))
                .await
                .unwrap()
        },
    )
    .await;
}

#[tokio::test]
async fn example_virtual_machine_list_minimum_set() {
    list_vms_example(
        "virtual-machines/VirtualMachine_List_MinimumSet_Gen.json",
        format!("{}/virtualMachines", rg_path("rgcompute")),
        async |c| {
            c.list_vms(&VmScope::ResourceGroup {
                subscription: SUB.into(),
                resource_group: "rgcompute".into(),
            })
            .await
            .unwrap()
        },
    )
    .await;
}

#[tokio::test]
async fn example_virtual_machine_list_by_subscription_by_location() {
    list_vms_example(
        "virtual-machines/VirtualMachine_ListBySubscription_ByLocation.json",
        format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/virtualMachines"
        ),
        async |c| c.list_vms_in_location(SUB, "eastus").await.unwrap(),
    )
    .await;
}

#[tokio::test]
async fn disk_get_uses_the_disks_api_version() {
    let fake = Fake::start().await;
    let path = format!("{}/disks/data1", rg_path("rg"));
    let body = json!({"id": path, "name": "data1", "location": "westus",
                      "sku": {"name": "Premium_LRS"}, "properties": {"maxShares": 2, "diskSizeGB": 64}});
    fake.on("GET", &path, vec![Canned::json(200, &body)]);
    let (client, _) = arm_client(&fake);
    let disk = client.get_disk(&id(&path)).await.unwrap().unwrap();
    only_request(&fake, "GET", &path, "api-version=2024-03-02");
    assert_eq!(disk.properties.unwrap().max_shares, Some(2));
    assert_eq!(disk.sku.unwrap().name.as_deref(), Some("Premium_LRS"));
}

// ---------------------------------------------------------------------------------------------
// Behaviour
// ---------------------------------------------------------------------------------------------

fn rp_path() -> String {
    format!(
        "{}/restorePointCollections/rpc/restorePoints/rp1",
        rg_path("rg")
    )
}

fn op_path() -> String {
    format!("/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/op-9")
}

fn fast_wait() -> WaitOptions {
    WaitOptions {
        default_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_total: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn lro_via_azure_async_operation_until_succeeded() {
    let fake = Fake::start().await;
    fake.on(
        "PUT",
        &rp_path(),
        vec![Canned::json(
            201,
            &json!({"name": "rp1", "properties": {"provisioningState": "Creating"}}),
        )
        .header("Azure-AsyncOperation", &fake.url(&op_path()))
        .header("Location", &fake.url("/never-polled"))
        .header("Retry-After", "0")],
    );
    fake.on(
        "GET",
        &op_path(),
        vec![
            Canned::json(200, &json!({"status": "InProgress", "name": "op-9"}))
                .header("Retry-After", "0"),
            Canned::json(200, &json!({"status": "InProgress"})),
            Canned::json(
                200,
                &json!({"status": "Succeeded", "endTime": "2026-11-25T21:30:15Z"}),
            ),
        ],
    );
    let (client, _) = arm_client(&fake);
    let accepted = client
        .create_restore_point(
            &id(&rp_path()),
            &RestorePoint::local(Some(ConsistencyMode::CrashConsistent), &[]),
        )
        .await
        .unwrap();
    let outcome = client
        .wait_for_with(&accepted.lro, fast_wait())
        .await
        .unwrap();
    assert_eq!(outcome, LroOutcome::Succeeded);
    let polls: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert_eq!(polls.len(), 3);
    assert!(
        polls.iter().all(|p| p.path == op_path()),
        "Azure-AsyncOperation preferred over Location"
    );
}

#[tokio::test]
async fn lro_via_azure_async_operation_reports_failure() {
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &op_path(),
        vec![Canned::json(200, &json!({"status": "Failed", "error": {"code": "VMRestorePointClientError", "message": "concurrent create"}}))],
    );
    let (client, _) = arm_client(&fake);
    let handle = vmrp::azure::LroHandle {
        async_operation: Some(fake.url(&op_path())),
        location: None,
        retry_after: Some(Duration::ZERO),
    };
    match client.wait_for_with(&handle, fast_wait()).await.unwrap() {
        LroOutcome::Failed(Some(e)) => {
            assert_eq!(e.code.as_deref(), Some("VMRestorePointClientError"));
            assert_eq!(e.message.as_deref(), Some("concurrent create"));
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn lro_via_location_202_then_200() {
    let fake = Fake::start().await;
    let coll = format!("{}/restorePointCollections/rpc", rg_path("rg"));
    let loc = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/del-1"
    );
    fake.on(
        "DELETE",
        &coll,
        vec![Canned::empty(202)
            .header("Location", &fake.url(&loc))
            .header("Retry-After", "0")],
    );
    fake.on(
        "GET",
        &loc,
        vec![
            Canned::empty(202).header("Retry-After", "0"),
            Canned::empty(202),
            Canned::empty(200),
        ],
    );
    let (client, _) = arm_client(&fake);
    let accepted = client.delete_collection(&id(&coll)).await.unwrap();
    assert_eq!(accepted.status, 202);
    assert_eq!(
        client
            .wait_for_with(&accepted.lro, fast_wait())
            .await
            .unwrap(),
        LroOutcome::Succeeded
    );
    assert_eq!(fake.seen().iter().filter(|s| s.path == loc).count(), 3);
}

#[tokio::test]
async fn lro_gives_up_after_the_total_time() {
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &op_path(),
        vec![Canned::json(200, &json!({"status": "InProgress"}))],
    );
    let (client, _) = arm_client(&fake);
    let handle = vmrp::azure::LroHandle {
        async_operation: Some(fake.url(&op_path())),
        ..Default::default()
    };
    let opts = WaitOptions {
        default_interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(20),
        max_total: Duration::from_millis(200),
    };
    let started = Instant::now();
    let err = client.wait_for_with(&handle, opts).await.unwrap_err();
    assert_eq!(err.code, "LroTimeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(fake.seen().len() >= 3);
}

#[tokio::test]
async fn operation_url_on_another_host_is_refused_before_io() {
    let fake = Fake::start().await;
    let (client, _) = arm_client(&fake);
    for url in ["https://foo.com/operationstatus", "http://127.0.0.2:1/op"] {
        let handle = vmrp::azure::LroHandle {
            location: Some(url.into()),
            retry_after: Some(Duration::ZERO),
            ..Default::default()
        };
        let err = client
            .wait_for_with(&handle, fast_wait())
            .await
            .unwrap_err();
        assert_eq!(err.code, "HostRefused", "{url}: {err}");
        assert!(!err.is_transient());
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn throttled_429_honours_retry_after() {
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines/vm1", rg_path("rg"));
    fake.on(
        "GET",
        &path,
        vec![
            Canned::json(
                429,
                &json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
            )
            .header("Retry-After", "1"),
            Canned::json(200, &json!({"id": path, "location": "westus"})),
        ],
    );
    let (client, _) = arm_client(&fake);
    let vm = client.get_vm(&id(&path)).await.unwrap().unwrap();
    assert_eq!(vm.location.as_deref(), Some("westus"));
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "waited {gap:?}, Retry-After said 1 s"
    );
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_cap_is_handed_back_not_slept_short() {
    // Regression: a `Retry-After` over the cap was slept for the cap and the call asked again
    // (3 × 429 per copy over Compute's in-flight limit, which says 600 s); now the error goes
    // back at once with ARM's `Retry-After`, and the handler puts its message back for then.
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines/vm1", rg_path("rg"));
    fake.on(
        "GET",
        &path,
        vec![
            Canned::empty(503).header("Retry-After", "3600"),
            Canned::json(200, &json!({"id": path})),
        ],
    );
    let mut retry = fast_retry();
    retry.max_retry_after = Duration::from_millis(100);
    let (client, _) = client_with(&fake, retry);
    let started = Instant::now();
    let err = client.get_vm(&id(&path)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.seen().len(), 1, "asked once");
    assert_eq!(err.status, Some(503));
    assert_eq!(err.retry_after, Some(Duration::from_secs(3600)));
    assert!(err.is_transient());
    // (A Retry-After within the cap is slept: `throttled_429_honours_retry_after`.)
}

#[tokio::test]
async fn server_errors_are_retried_then_surfaced() {
    let fake = Fake::start().await;
    let path = format!("{}/restorePointCollections/rpc", rg_path("rg"));
    fake.on(
        "GET",
        &path,
        vec![Canned::json(
            503,
            &json!({"error": {"code": "ServiceUnavailable", "message": "try later"}}),
        )
        .header("x-ms-request-id", "req-503")],
    );
    let (client, _) = arm_client(&fake);
    let err = client.get_collection(&id(&path), false).await.unwrap_err();
    assert_eq!(fake.seen().len(), 3, "3 attempts");
    assert_eq!(err.status, Some(503));
    assert_eq!(err.code, "ServiceUnavailable");
    assert_eq!(err.request_id.as_deref(), Some("req-503"));
    assert!(err.is_transient());

    // And a blip heals within the attempts.
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &path,
        vec![
            Canned::empty(500),
            Canned::empty(502),
            Canned::json(200, &json!({"id": path})),
        ],
    );
    let (client, _) = arm_client(&fake);
    assert!(client
        .get_collection(&id(&path), false)
        .await
        .unwrap()
        .is_some());
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn permanent_errors_are_not_retried_and_carry_cloud_error() {
    let fake = Fake::start().await;
    let path = format!("{}/restorePointCollections/rpc", rg_path("rg"));
    fake.on(
        "PUT",
        &path,
        vec![Canned::json(
            400,
            &json!({"error": {"code": "InvalidParameter", "message": "location is required", "target": "location",
                              "details": [{"code": "X", "message": "y"}]}}),
        )
        .header("x-ms-request-id", "11111111-2222")],
    );
    let (client, _) = arm_client(&fake);
    let err = client
        .put_collection(&id(&path), &RestorePointCollection::default())
        .await
        .unwrap_err();
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(err.status, Some(400));
    assert_eq!(err.code, "InvalidParameter");
    assert_eq!(err.message, "location is required");
    assert_eq!(err.request_id.as_deref(), Some("11111111-2222"));
    assert!(!err.is_transient());
    let shown = err.to_string();
    assert!(
        shown.contains("InvalidParameter") && shown.contains("11111111-2222"),
        "{shown}"
    );
}

#[tokio::test]
async fn not_found_is_none_for_gets() {
    let fake = Fake::start().await;
    let (client, _) = arm_client(&fake);
    let vm = id(&format!("{}/virtualMachines/gone", rg_path("rg")));
    assert_eq!(client.get_vm(&vm).await.unwrap(), None);
    let rp = id(&rp_path());
    assert_eq!(client.get_restore_point(&rp, true).await.unwrap(), None);
}

#[tokio::test]
async fn paging_follows_next_links_across_three_pages() {
    let ex = example("restore-points/RestorePointCollection_ListBySubscription.json");
    let items = response_body(&ex, "200")["value"]
        .as_array()
        .unwrap()
        .clone();
    let fake = Fake::start().await;
    let first = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections");
    // nextLinks are absolute and carry their own query (skip tokens).
    fake.on(
        "GET",
        &first,
        vec![Canned::json(200, &json!({"value": [items[0]], "nextLink": fake.url("/page2?api-version=2025-04-01&$skiptoken=a")}))],
    );
    fake.on(
        "GET",
        "/page2",
        vec![Canned::json(200, &json!({"value": [items[1]], "nextLink": fake.url("/page3?api-version=2025-04-01&$skiptoken=b")}))],
    );
    fake.on(
        "GET",
        "/page3",
        vec![Canned::json(200, &json!({"value": [items[0]]}))],
    );
    let (client, _) = arm_client(&fake);
    let all = client.list_collections(SUB).await.unwrap();
    assert_eq!(all.len(), 3);
    let seen = fake.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, vec![first.as_str(), "/page2", "/page3"]);
    assert_eq!(
        seen[2].query.as_deref(),
        Some("api-version=2025-04-01&$skiptoken=b"),
        "followed as given"
    );
}

/// A listing pauses between pages while ARM reports its read bucket nearly empty, and not
/// otherwise.
#[tokio::test]
async fn a_listing_pauses_while_reads_run_low() {
    let fake = Fake::start().await;
    let first = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/disks");
    let page = |next: Option<String>, left: &str| {
        let mut body = json!({"value": []});
        if let Some(n) = next {
            body["nextLink"] = json!(n);
        }
        Canned::json(200, &body).header("x-ms-ratelimit-remaining-subscription-reads", left)
    };
    fake.on(
        "GET",
        &first,
        vec![page(Some(fake.url("/p2?api-version=2024-03-02")), "10")],
    );
    fake.on(
        "GET",
        "/p2",
        vec![page(Some(fake.url("/p3?api-version=2024-03-02")), "900")],
    );
    fake.on("GET", "/p3", vec![page(None, "5")]);
    let (client, _) = arm_client(&fake);
    let started = std::time::Instant::now();
    client
        .list_disks(&VmScope::Subscription(SUB.into()))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(fake.seen().len(), 3);
    // One pause (after page 1, 10 reads left); none after page 2 (900 left) or the last page.
    assert!(
        took >= std::time::Duration::from_millis(950)
            && took < std::time::Duration::from_millis(1900),
        "{took:?}"
    );
}

#[tokio::test]
async fn next_link_to_another_host_is_refused() {
    let fake = Fake::start().await;
    let first = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines");
    fake.on(
        "GET",
        &first,
        vec![Canned::json(
            200,
            &json!({"value": [], "nextLink": "https://management.azure.com/next?x=1"}),
        )],
    );
    let (client, _) = arm_client(&fake);
    let err = client
        .list_vms(&VmScope::Subscription(SUB.into()))
        .await
        .unwrap_err();
    assert_eq!(err.code, "HostRefused", "{err}");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn mixed_case_ids_round_trip() {
    let fake = Fake::start().await;
    // The caller spells the id one way; ARM answers with another casing.
    let asked = format!("/subscriptions/{SUB}/resourcegroups/RG-App/providers/microsoft.compute/virtualMachines/VM-01");
    let answered = format!("/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-01");
    fake.on(
        "GET",
        &asked,
        vec![Canned::json(200, &json!({"id": answered, "name": "vm-01"}))],
    );
    let (client, _) = arm_client(&fake);
    let vm = client.get_vm(&id(&asked)).await.unwrap().unwrap();
    assert_eq!(
        fake.seen()[0].path,
        asked,
        "the caller's spelling goes on the wire"
    );
    assert_eq!(vm.resource_id().unwrap(), id(&asked));
    assert_eq!(
        vm.id.as_deref(),
        Some(answered.as_str()),
        "ARM's spelling is kept"
    );
}

#[tokio::test]
async fn rate_limit_headers_are_exposed() {
    let fake = Fake::start().await;
    let vm = format!("{}/virtualMachines/vm1", rg_path("rg"));
    let coll = format!("{}/restorePointCollections/rpc", rg_path("rg"));
    fake.on(
        "GET",
        &vm,
        vec![Canned::json(200, &json!({"id": vm}))
            .header("x-ms-ratelimit-remaining-subscription-reads", "11998")],
    );
    fake.on(
        "DELETE",
        &coll,
        vec![Canned::empty(204).header("x-ms-ratelimit-remaining-subscription-deletes", "14999")],
    );
    let (client, _) = arm_client(&fake);
    assert_eq!(client.rate_limits(), vmrp::azure::RateLimits::default());
    client.get_vm(&id(&vm)).await.unwrap();
    client.delete_collection(&id(&coll)).await.unwrap();
    let limits = client.rate_limits();
    assert_eq!(limits.remaining_reads, Some(11998));
    assert_eq!(limits.remaining_deletes, Some(14999));
    assert_eq!(limits.remaining_writes, None);
}

/// ARM's buckets are per subscription: one subscription's remaining-reads header must not
/// overwrite what another's said (the old client kept one value for all).
#[tokio::test]
async fn rate_limits_are_kept_per_subscription() {
    let fake = Fake::start().await;
    let vm_in = |sub: &str| {
        format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1")
    };
    let (a, b) = (vm_in("sub-a"), vm_in("SUB-B"));
    fake.on(
        "GET",
        &a,
        vec![Canned::json(200, &json!({"id": a}))
            .header("x-ms-ratelimit-remaining-subscription-reads", "12")],
    );
    fake.on(
        "GET",
        &b,
        vec![Canned::json(200, &json!({"id": b}))
            .header("x-ms-ratelimit-remaining-subscription-reads", "11999")],
    );
    let (client, _) = arm_client(&fake);
    client.get_vm(&id(&a)).await.unwrap();
    client.get_vm(&id(&b)).await.unwrap();
    assert_eq!(client.rate_limits_for("sub-a").remaining_reads, Some(12));
    assert_eq!(client.rate_limits_for("sub-b").remaining_reads, Some(11999));
    assert_eq!(client.rate_limits_for("sub-c").remaining_reads, None);
    // The last response's reading, whatever its subscription.
    assert_eq!(client.rate_limits().remaining_reads, Some(11999));
}

/// A poll's GET hands back ARM's `Retry-After` with the point (and none when absent; a 404 is
/// no point).
#[tokio::test]
async fn a_poll_get_carries_retry_after() {
    let fake = Fake::start().await;
    let rp = rp_path();
    fake.on(
        "GET",
        &rp,
        vec![
            Canned::json(
                200,
                &json!({"id": rp, "properties": {"provisioningState": "Creating"}}),
            )
            .header("retry-after", "120"),
            Canned::json(200, &json!({"id": rp})),
            Canned::json(
                404,
                &json!({"error": {"code": "NotFound", "message": "gone"}}),
            ),
        ],
    );
    let (client, _) = arm_client(&fake);
    let (point, after) = client.poll_restore_point(&id(&rp), true).await.unwrap();
    assert!(point.is_some());
    assert_eq!(after, Some(Duration::from_secs(120)));
    let (point, after) = client.poll_restore_point(&id(&rp), true).await.unwrap();
    assert!(point.is_some());
    assert_eq!(after, None);
    let (point, after) = client.poll_restore_point(&id(&rp), true).await.unwrap();
    assert!(point.is_none() && after.is_none());
    assert!(fake.seen().iter().all(|s| s
        .query
        .as_deref()
        .is_some_and(|q| q.contains("expand=instanceView"))));
}

#[tokio::test]
async fn wrong_resource_type_is_refused_before_io() {
    let fake = Fake::start().await;
    let (client, token) = arm_client(&fake);
    let disk = id(&format!("{}/disks/d1", rg_path("rg")));
    let err = client.get_vm(&disk).await.unwrap_err();
    assert_eq!(err.code, "InvalidRequest");
    assert!(err.message.contains("virtualMachines"), "{}", err.message);
    assert!(fake.seen().is_empty());
    assert_eq!(token.calls(), 0);
}

/// vmrp never writes to or deletes in Azure Backup's resource groups and collections: the
/// client refuses before any request (no token, nothing sent), reads still go through.
#[tokio::test]
async fn azure_backup_collections_are_never_written_or_deleted() {
    let fake = Fake::start().await;
    let (client, token) = arm_client(&fake);
    let sub = "/subscriptions/00000000-0000-0000-0000-000000000001";
    let rpc = "providers/Microsoft.Compute/restorePointCollections";
    let in_backup_rg = id(&format!(
        "{sub}/resourceGroups/AzureBackupRG_westeurope_1/{rpc}/AzureBackup_vm1_12345678901"
    ));
    let backup_point = id(&format!("{in_backup_rg}/restorePoints/p1"));
    let backup_name_elsewhere = id(&format!("{sub}/resourceGroups/rg/{rpc}/AzureBackup_vm1_1"));
    let errors = [
        client
            .delete_restore_point(&backup_point)
            .await
            .unwrap_err(),
        client
            .create_restore_point(&backup_point, &RestorePoint::default())
            .await
            .unwrap_err(),
        client.delete_collection(&in_backup_rg).await.unwrap_err(),
        client
            .delete_collection(&backup_name_elsewhere)
            .await
            .unwrap_err(),
        client
            .put_collection(&in_backup_rg, &RestorePointCollection::default())
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code, "InvalidRequest", "{err}");
        assert!(err.message.contains("Azure Backup"), "{}", err.message);
        assert!(!err.is_transient());
    }
    assert!(fake.seen().is_empty(), "nothing was sent");
    assert_eq!(token.calls(), 0);
}

#[tokio::test]
async fn traffic_recording_writes_oav_pairs_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start().await;
    let path = format!(
        "{}/restorePointCollections/rpc/restorePoints/rp1",
        rg_path("rg")
    );
    fake.on(
        "PUT",
        &path,
        vec![Canned::json(
            201,
            &json!({"name": "rp1", "id": path, "properties": {"provisioningState": "Creating"}}),
        )
        .header("Azure-AsyncOperation", &fake.url(&op_path()))],
    );
    let token = StaticToken::new("super-secret-token", Duration::from_secs(3600));
    let client = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&fake.base).unwrap(),
        audience: None,
        credential: token,
        timeouts: Timeouts::default(),
        retry: fast_retry(),
        loopback_only: true,
        record_traffic: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    client
        .create_restore_point(
            &id(&path),
            &RestorePoint::local(Some(ConsistencyMode::CrashConsistent), &[]),
        )
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("super-secret-token"));
    let pair: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pair["liveRequest"]["method"], "PUT");
    assert_eq!(
        pair["liveRequest"]["body"],
        json!({"properties": {"consistencyMode": "CrashConsistent"}})
    );
    assert!(pair["liveRequest"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/rp1?api-version=2025-04-01"));
    assert_eq!(pair["liveResponse"]["statusCode"], "201");
    assert_eq!(
        pair["liveResponse"]["body"]["properties"]["provisioningState"],
        "Creating"
    );
    assert!(pair["liveResponse"]["headers"]["azure-asyncoperation"].is_string());
}

#[tokio::test]
async fn token_is_requested_for_the_configured_scope() {
    #[derive(Debug, Default)]
    struct ScopeSpy(std::sync::Mutex<Vec<String>>);
    #[async_trait::async_trait]
    impl azure_core::credentials::TokenCredential for ScopeSpy {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            self.0
                .lock()
                .unwrap()
                .extend(scopes.iter().map(|s| s.to_string()));
            Ok(azure_core::credentials::AccessToken::new(
                "tok",
                time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
            ))
        }
    }
    let fake = Fake::start().await;
    let spy = Arc::new(ScopeSpy::default());
    let env = |k: &str| match k {
        "VMRP_ARM_ENDPOINT" => Some(format!("{}/", fake.base)),
        _ => None,
    };
    let mut cfg = ArmClientConfig::from_env(&env, spy.clone()).unwrap();
    cfg.loopback_only = true;
    let client = ArmClient::new(cfg).unwrap();
    let _ = client.list_collections(SUB).await;
    assert_eq!(
        *spy.0.lock().unwrap(),
        vec![format!("{}/.default", fake.base)]
    );
}

/// The RBAC action a request needs, derived from its method and path alone (independently of
/// the client's own table): resource types after `providers/{namespace}`, plus the verb.
fn action_for(method: &str, path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let p = parts
        .iter()
        .position(|s| s.eq_ignore_ascii_case("providers"))
        .expect("a provider path");
    let namespace = parts[p + 1];
    let rest = &parts[p + 2..];
    // Types sit at even offsets: type/name/type/name[/type].
    let mut types: Vec<&str> = rest.iter().step_by(2).copied().collect();
    // Listing VMs by location is a read of virtualMachines.
    if types == ["locations", "virtualMachines"] {
        types = vec!["virtualMachines"];
    }
    let verb = match method {
        "GET" => "read",
        "PUT" | "PATCH" => "write",
        "DELETE" => "delete",
        other => panic!("unexpected method {other}"),
    };
    format!("{namespace}/{}/{verb}", types.join("/"))
}

#[test]
fn action_derivation_table() {
    let cases = [
        ("GET", "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v", "Microsoft.Compute/virtualMachines/read"),
        ("PUT", "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/p", "Microsoft.Compute/restorePointCollections/restorePoints/write"),
        ("GET", "/subscriptions/s/providers/Microsoft.Compute/locations/westus/operations/o", "Microsoft.Compute/locations/operations/read"),
        ("GET", "/subscriptions/s/providers/Microsoft.Compute/locations/eastus/virtualMachines", "Microsoft.Compute/virtualMachines/read"),
    ];
    for (m, p, want) in cases {
        assert_eq!(action_for(m, p), want);
    }
}

#[tokio::test]
async fn every_request_on_the_wire_maps_to_a_granted_action() {
    use vmrp::azure::operations::ARM_ACTIONS;
    let fake = Fake::start().await;
    let rg = rg_path("rg");
    let vm = format!("{rg}/virtualMachines/vm1");
    let disk = format!("{rg}/disks/d1");
    let coll = format!("{rg}/restorePointCollections/rpc");
    let rp = format!("{coll}/restorePoints/rp1");
    let ok = |v: Value| vec![Canned::json(200, &v)];
    fake.on("GET", &vm, ok(json!({"id": vm})));
    fake.on("GET", &disk, ok(json!({"id": disk})));
    fake.on(
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"),
        ok(json!({"value": []})),
    );
    fake.on(
        "GET",
        &format!("{rg}/virtualMachines"),
        ok(json!({"value": []})),
    );
    fake.on(
        "GET",
        &format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/virtualMachines"
        ),
        ok(json!({"value": []})),
    );
    fake.on("PUT", &coll, ok(json!({"id": coll})));
    fake.on("PATCH", &coll, ok(json!({"id": coll})));
    fake.on("GET", &coll, ok(json!({"id": coll})));
    fake.on(
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections"),
        ok(json!({"value": []})),
    );
    fake.on(
        "GET",
        &format!("{rg}/restorePointCollections"),
        ok(json!({"value": []})),
    );
    fake.on("DELETE", &coll, vec![Canned::empty(204)]);
    fake.on(
        "PUT",
        &rp,
        vec![Canned::json(201, &json!({"id": rp}))
            .header("Azure-AsyncOperation", &fake.url(&op_path()))],
    );
    fake.on("GET", &rp, ok(json!({"id": rp})));
    fake.on("DELETE", &rp, vec![Canned::empty(204)]);
    fake.on("GET", &op_path(), ok(json!({"status": "Succeeded"})));

    let (c, _) = arm_client(&fake);
    c.get_vm(&id(&vm)).await.unwrap();
    c.get_vm_with_instance_view(&id(&vm)).await.unwrap();
    c.get_disk(&id(&disk)).await.unwrap();
    c.list_vms(&VmScope::Subscription(SUB.into()))
        .await
        .unwrap();
    c.list_vms(&VmScope::ResourceGroup {
        subscription: SUB.into(),
        resource_group: "rg".into(),
    })
    .await
    .unwrap();
    c.list_vms_in_location(SUB, "westus").await.unwrap();
    c.put_collection(&id(&coll), &RestorePointCollection::default())
        .await
        .unwrap();
    c.update_collection(&id(&coll), &RestorePointCollection::default())
        .await
        .unwrap();
    c.get_collection(&id(&coll), true).await.unwrap();
    c.list_collections(SUB).await.unwrap();
    c.list_collections_in_group(SUB, "rg").await.unwrap();
    c.delete_collection(&id(&coll)).await.unwrap();
    let accepted = c
        .create_restore_point(&id(&rp), &RestorePoint::default())
        .await
        .unwrap();
    c.wait_for_with(&accepted.lro, fast_wait()).await.unwrap();
    c.get_restore_point(&id(&rp), true).await.unwrap();
    c.delete_restore_point(&id(&rp)).await.unwrap();

    let seen = fake.seen();
    assert_eq!(seen.len(), 16, "every call reached the fake: {seen:#?}");
    for s in seen {
        let action = action_for(&s.method, &s.path);
        assert!(
            ARM_ACTIONS.contains(&action.as_str()),
            "{} {} needs {action}, missing from ARM_ACTIONS",
            s.method,
            s.path
        );
    }
}

#[tokio::test]
async fn slow_answers_time_out_as_transient_and_are_retried() {
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines/slow", rg_path("rg"));
    fake.on(
        "GET",
        &path,
        vec![
            Canned::json(200, &json!({"id": path})).delayed(Duration::from_secs(3)),
            Canned::json(200, &json!({"id": path, "location": "westus"})),
        ],
    );
    let client = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&fake.base).unwrap(),
        audience: None,
        credential: StaticToken::new("t", Duration::from_secs(3600)),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        },
        retry: fast_retry(),
        loopback_only: true,
        record_traffic: None,
    })
    .unwrap();
    let started = Instant::now();
    let vm = client.get_vm(&id(&path)).await.unwrap().unwrap();
    assert_eq!(
        vm.location.as_deref(),
        Some("westus"),
        "second attempt answered"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.seen().len(), 2);

    // With one attempt only, the timeout surfaces as a transient error without a status.
    let mut once = fast_retry();
    once.max_attempts = 1;
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &path,
        vec![Canned::json(200, &json!({"id": path})).delayed(Duration::from_secs(3))],
    );
    let client = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&fake.base).unwrap(),
        audience: None,
        credential: StaticToken::new("t", Duration::from_secs(3600)),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        },
        retry: once,
        loopback_only: true,
        record_traffic: None,
    })
    .unwrap();
    let err = client.get_vm(&id(&path)).await.unwrap_err();
    assert_eq!(err.status, None);
    assert_eq!(err.code, "Timeout", "{err}");
    assert!(err.is_transient());
}
