//! The ARM emulator over real HTTP on 127.0.0.1: every official example replayed, each platform
//! rule and fault kind enforced, throttling, paging, seeding, and recorded traffic validated
//! with oav (when `VMRP_OAV` points at an oav 4.0.3 binary).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use vmrp::emulator::arm::{
    ArmConfig, ArmEmulator, ConcurrentCreateMode, FleetSpec, RuleSwitches, ThrottleConfig, VmSeed,
};
use vmrp::emulator::clock::VirtualClock;
use vmrp::emulator::faults::{Dice, FaultConfig};

const SUB: &str = "00000000-0000-0000-0000-000000000001";
const T0: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);
const V: &str = "api-version=2025-04-01";

fn reference() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/reference"))
}
fn spec_dir() -> PathBuf {
    reference().join("arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01")
}

struct Harness {
    emu: Arc<ArmEmulator>,
    clock: Arc<VirtualClock>,
    base: String,
    http: reqwest::Client,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn start_with(mut config: ArmConfig, faults: FaultConfig) -> Harness {
    // `VMRP_RECORD_ALL=DIR` records every harness's traffic (one sub-directory each) for a manual
    // `scripts/validate-traffic.sh` run over the example replays.
    if let (Ok(root), None) = (std::env::var("VMRP_RECORD_ALL"), &config.record_traffic) {
        config.record_traffic = Some(Path::new(&root).join(uuid::Uuid::new_v4().to_string()));
    }
    // Virtual time practically frozen: tests move it with `advance`.
    let clock = Arc::new(VirtualClock::new(T0, 1e-9));
    let emu = ArmEmulator::new(
        config,
        clock.clone(),
        Arc::new(Dice::new(42)),
        Arc::new(faults),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = emu.router();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Harness {
        emu,
        clock,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

async fn start(rules: RuleSwitches) -> Harness {
    start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            rules,
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await
}

impl Harness {
    /// Every item of a paged list, following `nextLink`, and how many pages it took.
    async fn list_pages(&self, first: String) -> (Vec<Value>, usize) {
        let (mut url, mut items, mut pages) = (first, Vec::new(), 0);
        loop {
            let r = self.get(&url).await;
            assert_eq!(r.status, 200, "{}", r.body);
            pages += 1;
            items.extend(r.body["value"].as_array().unwrap().iter().cloned());
            match r.body["nextLink"].as_str() {
                Some(n) => url = n.to_string(),
                None => return (items, pages),
            }
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        // ARM refuses a request without a bearer token (the emulator too, by default).
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth("emulator-test-token");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Resp {
            status,
            headers,
            body,
        }
    }
    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }
    async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }
    fn advance(&self, secs: i64) {
        self.clock.advance(Duration::seconds(secs));
    }

    fn vm(
        &self,
        rg: &str,
        name: &str,
        location: &str,
        customise: impl FnOnce(VmSeed) -> VmSeed,
    ) -> String {
        let seed = customise(
            VmSeed::new(SUB, rg, name, location).with_data_disk(0, &format!("{name}_DataDisk_0")),
        );
        self.emu.add_vm_seed(&seed).unwrap().to_string()
    }
    async fn collection(&self, rg: &str, name: &str, location: &str, source: &str) -> Resp {
        self.put(
            &rpc(rg, name),
            json!({"location": location, "properties": {"source": {"id": source}}}),
        )
        .await
    }
    async fn point(&self, rg: &str, coll: &str, name: &str, props: Value) -> Resp {
        self.put(&rp(rg, coll, name), json!({ "properties": props }))
            .await
    }
}

fn rpc_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/restorePointCollections/{name}")
}
fn rpc(rg: &str, name: &str) -> String {
    format!("{}?{V}", rpc_id(rg, name))
}
fn rp_id(rg: &str, coll: &str, name: &str) -> String {
    format!("{}/restorePoints/{name}", rpc_id(rg, coll))
}
fn rp(rg: &str, coll: &str, name: &str) -> String {
    format!("{}?{V}", rp_id(rg, coll, name))
}
fn vm_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}
fn disk_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}")
}

// ---------------------------------------------------------------------------------------------
// Example replay
// ---------------------------------------------------------------------------------------------

fn example(dir: &str, file: &str) -> Value {
    let path = reference().join("arm/examples").join(dir).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text.replace("{subscription-id}", SUB)).unwrap()
}

/// Every key of `expected` must be in `actual` with the same JSON type, recursively (arrays:
/// element-wise up to the shorter length); `ignore` lists dotted paths to skip.
fn shape_diff(
    actual: &Value,
    expected: &Value,
    path: &str,
    ignore: &[&str],
    out: &mut Vec<String>,
) {
    if ignore.contains(&path) {
        return;
    }
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if ignore.contains(&p.as_str()) {
                    continue;
                }
                match a.get(k) {
                    Some(av) => shape_diff(av, ev, &p, ignore, out),
                    None => out.push(format!("missing {p}")),
                }
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() < e.len() {
                out.push(format!(
                    "{path}: {} items, example has {}",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                shape_diff(av, ev, &format!("{path}[{i}]"), ignore, out);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (a, e) => {
            let kind = |v: &Value| match v {
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                _ => "other",
            };
            if kind(a) != kind(e) {
                out.push(format!("{path}: {} vs example {}", kind(a), kind(e)));
            }
        }
    }
}

fn assert_shape(actual: &Value, expected: &Value, ignore: &[&str]) {
    let mut diffs = Vec::new();
    shape_diff(actual, expected, "", ignore, &mut diffs);
    assert!(
        diffs.is_empty(),
        "shape differs from the example: {diffs:#?}\nactual: {actual:#}"
    );
}

fn assert_fields(actual: &Value, expected: &Value, paths: &[&str]) {
    for p in paths {
        let ptr = format!("/{}", p.replace('.', "/"));
        assert_eq!(
            actual.pointer(&ptr),
            expected.pointer(&ptr),
            "field {p}\nactual: {actual:#}"
        );
    }
}

/// A Windows VM like the examples' (osProfile, diagnostics, NVMe controller, userData).
fn example_vm(
    h: &Harness,
    rg: &str,
    name: &str,
    location: &str,
    extra_disks: &[(&str, &str)],
) -> String {
    let mut seed = VmSeed::new(SUB, rg, name, location);
    seed.data_disks
        .push(vmrp::emulator::arm::fleet::DataDiskSeed {
            lun: 1,
            name: "dataDisk123".into(),
            resource_group: Some("userdata".into()),
            storage_account_type: "Standard_LRS".into(),
            size_gb: 24,
            max_shares: 1,
        });
    for (i, (disk_rg, disk)) in extra_disks.iter().enumerate() {
        seed.data_disks
            .push(vmrp::emulator::arm::fleet::DataDiskSeed {
                lun: 2 + i as i32,
                name: disk.to_string(),
                resource_group: Some(disk_rg.to_string()),
                storage_account_type: "Standard_LRS".into(),
                size_gb: 32,
                max_shares: 1,
            });
    }
    let (mut doc, disks) = seed.build();
    doc["properties"]["storageProfile"]["diskControllerType"] = json!("NVMe");
    doc["properties"]["userData"] = json!("c2FtcGxlIHVzZXJEYXRh");
    for d in disks {
        h.emu.add_disk(d).unwrap();
    }
    h.emu.add_vm(doc).unwrap().to_string()
}

#[tokio::test]
async fn example_collection_create_or_update_201_then_200() {
    let h = start(RuleSwitches::default()).await;
    example_vm(&h, "myResourceGroup", "myVM", "norwayeast", &[]);
    let ex = example(
        "restore-points",
        "RestorePointCollection_CreateOrUpdate.json",
    );
    let body = ex["parameters"]["parameters"].clone();
    let created = h.put(&rpc("myResourceGroup", "myRpc"), body.clone()).await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let want = &ex["responses"]["201"]["body"];
    assert_shape(&created.body, want, &[]);
    assert_fields(
        &created.body,
        want,
        &[
            "name",
            "id",
            "type",
            "location",
            "tags",
            "properties.source.id",
            "properties.instantAccess",
            "properties.provisioningState",
        ],
    );
    // The example's source.location (eastus) contradicts its own same-region rule; ours is the VM's.
    assert_eq!(
        created.body["properties"]["source"]["location"],
        "norwayeast"
    );
    uuid::Uuid::parse_str(
        created.body["properties"]["restorePointCollectionId"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let again = h.put(&rpc("myResourceGroup", "myRpc"), body).await;
    assert_eq!(again.status, 200);
    assert_shape(&again.body, &ex["responses"]["200"]["body"], &[]);
    assert_eq!(
        again.body["properties"]["restorePointCollectionId"],
        created.body["properties"]["restorePointCollectionId"]
    );
}

#[tokio::test]
async fn example_collection_for_cross_region_copy() {
    let h = start(RuleSwitches::default()).await;
    let vm = example_vm(&h, "myResourceGroup", "myVM", "eastus", &[]);
    assert_eq!(
        h.collection("myResourceGroup", "sourceRpcName", "eastus", &vm)
            .await
            .status,
        201
    );
    let ex = example(
        "restore-points",
        "RestorePointCollection_CreateOrUpdate_ForCrossRegionCopy.json",
    );
    let r = h
        .put(
            &rpc("myResourceGroup", "myRpc"),
            ex["parameters"]["parameters"].clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    let want = &ex["responses"]["201"]["body"];
    assert_shape(&r.body, want, &[]);
    assert_fields(
        &r.body,
        want,
        &[
            "name",
            "type",
            "location",
            "tags",
            "properties.source.location",
            "properties.provisioningState",
        ],
    );
    assert_eq!(
        r.body["properties"]["source"]["id"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
        want["properties"]["source"]["id"]
            .as_str()
            .unwrap()
            .trim_start_matches('/')
    );
}

#[tokio::test]
async fn example_collection_get_and_with_contained_points() {
    let h = start(RuleSwitches::default()).await;
    let excluded = "vm8768_disk2_fe6ffde4f69b491ca33fb984d5bcd89f";
    let vm = example_vm(
        &h,
        "myResourceGroup",
        "myVM",
        "westus",
        &[("myResourceGroup", excluded)],
    );
    let r = h
        .put(&rpc("myResourceGroup", "myRpc"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": vm}, "instantAccess": true}}))
        .await;
    assert_eq!(r.status, 201);
    let ex = example("restore-points", "RestorePointCollection_Get.json");
    let got = h.get(&rpc("myResourceGroup", "myRpc")).await;
    assert_eq!(got.status, 200);
    assert_shape(&got.body, &ex["responses"]["200"]["body"], &[]);
    assert_fields(
        &got.body,
        &ex["responses"]["200"]["body"],
        &[
            "name",
            "id",
            "type",
            "location",
            "tags",
            "properties.instantAccess",
            "properties.provisioningState",
        ],
    );

    let ex = example(
        "restore-points",
        "RestorePointCollection_Get_WithContainedRestorePoints.json",
    );
    let want = &ex["responses"]["200"]["body"];
    h.put(&rpc("myResourceGroup", "rpcName"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": vm}, "instantAccess": true}})).await;
    let p = h
        .point("myResourceGroup", "rpcName", "restorePointName", json!({"excludeDisks": [{"id": disk_id("myResourceGroup", excluded)}], "instantAccessDurationMinutes": 120}))
        .await;
    assert_eq!(p.status, 201, "{:#}", p.body);
    h.advance(600);
    let got = h
        .get(&format!(
            "{}&$expand=restorePoints",
            rpc("myResourceGroup", "rpcName")
        ))
        .await;
    assert_eq!(got.status, 200);
    assert_shape(&got.body, want, &[]);
    let point = &got.body["properties"]["restorePoints"][0];
    assert_fields(
        point,
        &want["properties"]["restorePoints"][0],
        &[
            "name",
            "id",
            "properties.excludeDisks",
            "properties.provisioningState",
            "properties.consistencyMode",
            "properties.instantAccessDurationMinutes",
        ],
    );
    // The excluded disk is left out of the captured storage profile.
    assert!(!point["properties"]["sourceMetadata"]["storageProfile"]
        .to_string()
        .contains(excluded));
}

#[tokio::test]
async fn example_collection_lists_by_resource_group_and_subscription() {
    let h = start(RuleSwitches::default()).await;
    let vm1 = example_vm(&h, "myResourceGroup", "myVM", "westus", &[]);
    let vm2 = example_vm(&h, "myResourceGroup", "myVM2", "westus", &[]);
    h.put(&rpc("myResourceGroup", "restorePointCollection1"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": vm1}, "instantAccess": true}})).await;
    h.put(&rpc("myResourceGroup", "restorePointCollection2"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": vm2}}})).await;
    assert_eq!(
        h.delete(&rpc("myResourceGroup", "restorePointCollection2"))
            .await
            .status,
        202
    );
    let ex = example(
        "restore-points",
        "RestorePointCollection_ListByResourceGroup.json",
    );
    let got = h.get(&format!("/subscriptions/{SUB}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/restorePointCollections?{V}")).await;
    assert_eq!(got.status, 200);
    let want = &ex["responses"]["200"]["body"];
    assert_shape(&got.body, want, &[]);
    for i in 0..2 {
        assert_fields(
            &got.body["value"][i],
            &want["value"][i],
            &[
                "name",
                "id",
                "type",
                "location",
                "tags",
                "properties.source.id",
                "properties.source.location",
                "properties.provisioningState",
            ],
        );
    }

    let ex = example(
        "restore-points",
        "RestorePointCollection_ListBySubscription.json",
    );
    let want = &ex["responses"]["200"]["body"];
    let test_vm = example_vm(&h, "myResourceGroup", "VM_Test", "westus", &[]);
    let prod_vm = example_vm(&h, "myResourceGroup", "VM_Prod", "westus", &[]);
    h.emu.add_resource_group(SUB, "resourceGroup1", "westus");
    h.emu.add_resource_group(SUB, "resourceGroup2", "westus");
    h.advance(3600); // the earlier deletion completes
    h.delete(&rpc("myResourceGroup", "restorePointCollection1"))
        .await;
    h.advance(3600);
    h.put(&rpc("resourceGroup1", "restorePointCollection1"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": test_vm}, "instantAccess": true}})).await;
    h.put(&rpc("resourceGroup2", "restorePointCollection2"), json!({"location": "westus", "tags": {"myTag1": "tagValue1"}, "properties": {"source": {"id": prod_vm}}})).await;
    h.delete(&rpc("resourceGroup2", "restorePointCollection2"))
        .await;
    let got = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections?{V}"
        ))
        .await;
    assert_eq!(got.status, 200);
    assert_shape(&got.body, want, &[]);
    for i in 0..2 {
        assert_fields(
            &got.body["value"][i],
            &want["value"][i],
            &[
                "name",
                "id",
                "type",
                "location",
                "tags",
                "properties.source.id",
                "properties.provisioningState",
            ],
        );
    }
}

#[tokio::test]
async fn example_collection_update_and_deletes() {
    let h = start(RuleSwitches::default()).await;
    let vm = example_vm(&h, "myResourceGroup", "myVM", "norwayeast", &[]);
    h.emu.add_resource_group(SUB, "rgcompute", "norwayeast");
    for (file, name) in [
        (
            "RestorePointCollection_Update_MaximumSet_Gen.json",
            "aaaaaaaaaaaaaaaaaaaa",
        ),
        (
            "RestorePointCollection_Update_MinimumSet_Gen.json",
            "aaaaaaaaaaaaaaaaaa",
        ),
    ] {
        let ex = example("restore-points", file);
        assert_eq!(
            h.collection("rgcompute", name, "norwayeast", &vm)
                .await
                .status,
            201
        );
        let r = h
            .send(
                Method::PATCH,
                &rpc("rgcompute", name),
                Some(ex["parameters"]["parameters"].clone()),
            )
            .await;
        assert_eq!(r.status, 200, "{file}: {:#}", r.body);
        // The generated example's response carries restore points and a made-up state; the shape
        // of the collection itself must match.
        assert_shape(
            &r.body,
            &ex["responses"]["200"]["body"],
            &["properties.restorePoints", "tags", "id", "name"],
        );
        assert_eq!(r.body["location"], "norwayeast");
    }
    let patched = h.get(&rpc("rgcompute", "aaaaaaaaaaaaaaaaaaaa")).await;
    assert_eq!(
        patched.body["tags"],
        json!({"key8536": "aaaaaaaaaaaaaaaaaaa"})
    );
    assert_eq!(patched.body["properties"]["instantAccess"], true);

    for (file, name) in [
        (
            "RestorePointCollection_Delete_MaximumSet_Gen.json",
            "aaaaaaaaaaaaaaaaa",
        ),
        (
            "RestorePointCollection_Delete_MinimumSet_Gen.json",
            "aaaaaaaaaaaaaaaaaaaa",
        ),
    ] {
        let ex = example("restore-points", file);
        assert!(ex["responses"]["202"]["headers"]["location"].is_string());
        if name == "aaaaaaaaaaaaaaaaa" {
            h.collection("rgcompute", name, "norwayeast", &vm).await;
        }
        let r = h.delete(&rpc("rgcompute", name)).await;
        assert_eq!(r.status, 202, "{file}");
        assert!(
            r.header("location").is_some()
                && r.header("azure-asyncoperation").is_some()
                && r.header("retry-after").is_some()
        );
        assert_eq!(
            h.get(&rpc("rgcompute", name)).await.body["properties"]["provisioningState"],
            "Deleting"
        );
        h.advance(120);
        assert_eq!(h.get(&rpc("rgcompute", name)).await.status, 404);
        // Deleting what is gone: 204 (ARM's convention, declared by the spec).
        assert_eq!(h.delete(&rpc("rgcompute", name)).await.status, 204);
    }
}

#[tokio::test]
async fn example_restore_point_create_get_and_instance_view() {
    let h = start(RuleSwitches::default()).await;
    let vm = example_vm(
        &h,
        "myResourceGroup",
        "myVM",
        "westus",
        &[("myResourceGroup", "disk123")],
    );
    h.collection("myResourceGroup", "rpcName", "westus", &vm)
        .await;
    let ex = example("restore-points", "RestorePoint_Create.json");
    let r = h
        .put(
            &rp("myResourceGroup", "rpcName", "rpName"),
            ex["parameters"]["parameters"].clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    let want = &ex["responses"]["201"]["body"];
    assert_shape(&r.body, want, &[]);
    assert_fields(
        &r.body,
        want,
        &[
            "name",
            "id",
            "properties.excludeDisks",
            "properties.consistencyMode",
            "properties.instantAccessDurationMinutes",
            "properties.sourceMetadata.userData",
            "properties.sourceMetadata.storageProfile.diskControllerType",
        ],
    );
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    h.advance(600);

    let ex = example("restore-points", "RestorePoint_Get.json");
    let got = h.get(&rp("myResourceGroup", "rpcName", "rpName")).await;
    assert_eq!(got.status, 200);
    assert_shape(
        &got.body,
        &ex["responses"]["200"]["body"],
        &["properties.excludeDisks"],
    );
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert!(got.body["properties"].get("instanceView").is_none());

    let ex = example("restore-points", "RestorePoint_Get_WithInstanceView.json");
    let got = h
        .get(&format!(
            "{}&$expand=instanceView",
            rp("myResourceGroup", "rpcName", "rpName")
        ))
        .await;
    assert_eq!(got.status, 200);
    let want = &ex["responses"]["200"]["body"];
    assert_shape(&got.body, want, &["properties.excludeDisks"]);
    assert_fields(
        &got.body,
        want,
        &[
            "properties.instanceView.statuses",
            "properties.instanceView.diskRestorePoints.0.replicationStatus",
        ],
    );
    let disk_points = got.body["properties"]["instanceView"]["diskRestorePoints"]
        .as_array()
        .unwrap();
    // osDisk123 and dataDisk123; disk123 was excluded.
    assert_eq!(disk_points.len(), 2);
}

#[tokio::test]
async fn example_restore_point_copy_between_regions() {
    let h = start(RuleSwitches::default()).await;
    let vm = example_vm(&h, "myResourceGroup", "myVM", "westus", &[]);
    h.collection("myResourceGroup", "sourceRpcName", "westus", &vm)
        .await;
    assert_eq!(
        h.point(
            "myResourceGroup",
            "sourceRpcName",
            "sourceRpName",
            json!({})
        )
        .await
        .status,
        201
    );
    h.advance(600);
    h.collection(
        "myResourceGroup",
        "rpcName",
        "eastus",
        &rpc_id("myResourceGroup", "sourceRpcName"),
    )
    .await;
    let ex = example("restore-points", "RestorePoint_Copy_BetweenRegions.json");
    let r = h
        .put(
            &rp("myResourceGroup", "rpcName", "rpName"),
            ex["parameters"]["parameters"].clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    let want = &ex["responses"]["201"]["body"];
    assert_shape(&r.body, want, &[]);
    assert_fields(
        &r.body,
        want,
        &[
            "name",
            "id",
            "properties.sourceRestorePoint",
            "properties.provisioningState",
            "properties.consistencyMode",
        ],
    );
}

#[tokio::test]
async fn example_restore_point_deletes() {
    let h = start(RuleSwitches::all_off()).await;
    let vm = h.vm("rgcompute", "vm1", "westus", |s| s);
    for (file, coll, name) in [
        (
            "RestorePoint_Delete_MaximumSet_Gen.json",
            "aaaaaaaaaaaaaaaaaaaaaa",
            "a",
        ),
        (
            "RestorePoint_Delete_MinimumSet_Gen.json",
            "aaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ] {
        let ex = example("restore-points", file);
        assert!(ex["responses"]["202"]["headers"]["location"].is_string());
        h.collection("rgcompute", coll, "westus", &vm).await;
        assert_eq!(
            h.point("rgcompute", coll, name, json!({})).await.status,
            201
        );
        // Not while it is being created.
        let early = h.delete(&rp("rgcompute", coll, name)).await;
        assert_eq!(early.status, 409);
        h.advance(600);
        let r = h.delete(&rp("rgcompute", coll, name)).await;
        assert_eq!(r.status, 202, "{file}");
        assert!(r.header("location").is_some());
        assert_eq!(
            h.get(&rp("rgcompute", coll, name)).await.body["properties"]["provisioningState"],
            "Deleting"
        );
        h.advance(120);
        assert_eq!(h.get(&rp("rgcompute", coll, name)).await.status, 404);
        assert_eq!(h.delete(&rp("rgcompute", coll, name)).await.status, 204);
    }
}

#[tokio::test]
async fn example_virtual_machines() {
    let h = start(RuleSwitches::default()).await;
    let ex = example("virtual-machines", "VirtualMachine_Get.json");
    let want = ex["responses"]["200"]["body"].clone();
    h.emu.add_vm(want.clone()).unwrap();
    let got = h
        .get(&format!(
            "{}?{V}&$expand=userData",
            vm_id("myResourceGroup", "myVM")
        ))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, want, "the stored example comes back unchanged");
    let plain = h
        .get(&format!("{}?{V}", vm_id("myResourceGroup", "myVM")))
        .await;
    assert!(
        plain.body["properties"].get("userData").is_none(),
        "userData only with $expand=userData"
    );
    let bad = h
        .get(&format!(
            "{}?{V}&$expand=everything",
            vm_id("myResourceGroup", "myVM")
        ))
        .await;
    assert_eq!((bad.status, bad.code()), (400, "InvalidParameter"));

    let ex = example("virtual-machines", "VirtualMachine_Get_InstanceView.json");
    let iv = h
        .get(&format!(
            "{}/instanceView?{V}",
            vm_id("myResourceGroup", "myVM")
        ))
        .await;
    assert_eq!(iv.status, 200);
    assert_shape(
        &iv.body,
        &ex["responses"]["200"]["body"],
        &[
            "vmAgent.extensionHandlers",
            "bootDiagnostics",
            "extensions",
            "patchStatus",
            "disks",
        ],
    );
    assert_eq!(iv.body["statuses"][1]["code"], "PowerState/running");
    let expanded = h
        .get(&format!(
            "{}?{V}&$expand=instanceView",
            vm_id("myResourceGroup", "myVM")
        ))
        .await;
    assert_eq!(
        expanded.body["properties"]["instanceView"]["statuses"],
        iv.body["statuses"]
    );

    for i in 0..2 {
        h.vm("rgcompute", &format!("vm{i}"), "eastus", |s| s);
    }
    let ex = example(
        "virtual-machines",
        "VirtualMachine_List_MinimumSet_Gen.json",
    );
    let list = h.get(&format!("/subscriptions/{SUB}/resourceGroups/rgcompute/providers/Microsoft.Compute/virtualMachines?{V}")).await;
    assert_eq!(list.status, 200);
    assert_shape(&list.body, &ex["responses"]["200"]["body"], &[]);

    let ex = example(
        "virtual-machines",
        "VirtualMachine_ListAll_MinimumSet_Gen.json",
    );
    let all = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{V}"
        ))
        .await;
    assert_eq!(all.status, 200);
    assert_shape(&all.body, &ex["responses"]["200"]["body"], &[]);
    assert_eq!(all.body["value"].as_array().unwrap().len(), 3);

    let ex = example(
        "virtual-machines",
        "VirtualMachine_ListBySubscription_ByLocation.json",
    );
    let by_loc = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/virtualMachines?{V}"
        ))
        .await;
    assert_eq!(by_loc.status, 200);
    assert_shape(
        &by_loc.body,
        &ex["responses"]["200"]["body"],
        &[
            "value[0].properties.availabilitySet",
            "value[1].properties.availabilitySet",
            "value[0].properties.storageProfile.osDisk.vhd",
            "value[1].properties.storageProfile.osDisk.vhd",
            "value[0].tags",
            "value[1].tags",
        ],
    );
    assert_eq!(
        by_loc.body["value"].as_array().unwrap().len(),
        2,
        "myVM is in West US"
    );
}

/// Every example file under `examples/` is replayed by one of the tests above: the list comes
/// from the directories (a new example cannot be missed), and each file must be named, as a
/// string literal, by a replay in this file's source (every replay loads its example through
/// `example(dir, "NAME.json")`, directly or from a list it loops over). This test names none.
#[test]
fn every_official_example_is_replayed() {
    let source = include_str!("emulator_arm.rs");
    let mut present = Vec::new();
    for dir in ["restore-points", "virtual-machines"] {
        for e in std::fs::read_dir(reference().join("arm/examples").join(dir)).unwrap() {
            present.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    assert!(present.len() >= 20, "{present:?}");
    let missing: Vec<&String> = present
        .iter()
        .filter(|name| !source.contains(&format!("\"{name}\"")))
        .collect();
    assert!(missing.is_empty(), "examples no test replays: {missing:?}");
}

/// Authorization is on by default, as in Azure; switched off, tools may poke without a token.
#[tokio::test]
async fn authorization_is_required_by_default() {
    let h = start(RuleSwitches::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let anonymous = h
        .http
        .get(format!("{}{vm}?{V}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    let r = h
        .http
        .get(format!("{}{vm}?{V}", h.base))
        .bearer_auth("token-from-msi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let open = start(RuleSwitches {
        require_authorization: false,
        ..Default::default()
    })
    .await;
    let vm = open.vm("rg", "vm1", "westus", |s| s);
    let r = open
        .http
        .get(format!("{}{vm}?{V}", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "switched off");
}

/// Role actions: by default the emulator grants exactly the role vmrp deploys
/// (`ARM_ACTIONS`); a call whose RBAC action the role lacks is refused before the provider sees
/// it, 403 `AuthorizationFailed` naming the action (ARM's body, github.com/Azure/ARO-RP/issues/66).
/// A narrower role refuses what it drops; `roleActions: null` allows every action.
#[tokio::test]
async fn calls_outside_the_role_actions_are_refused_403() {
    let h = start(RuleSwitches::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    assert_eq!(h.get(&format!("{vm}?{V}")).await.status, 200);
    // VM write is not in the deployed role any more: ARM answers 403, not the provider's 405.
    let write = h
        .put(&format!("{vm}?{V}"), json!({"location": "westus"}))
        .await;
    assert_eq!((write.status, write.code()), (403, "AuthorizationFailed"));
    let message = write.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("perform action 'Microsoft.Compute/virtualMachines/write'")
            && message.contains(&format!("over scope '{vm}'")),
        "{message}"
    );
    assert_eq!(
        h.delete(&format!("{vm}?{V}")).await.code(),
        "AuthorizationFailed"
    );
    let disk = format!("{}?{V}", disk_id("rg", "vm1_DataDisk_0"));
    assert_eq!(h.get(&disk).await.status, 200);
    assert_eq!(
        h.put(&disk, json!({"location": "westus"})).await.code(),
        "AuthorizationFailed"
    );
    // The whole restore point lifecycle is inside the deployed role.
    assert_eq!(h.collection("rg", "c", "westus", &vm).await.status, 201);
    assert_eq!(h.point("rg", "c", "p1", json!({})).await.status, 201);
    assert_eq!(h.get(&rp("rg", "c", "p1")).await.status, 200);

    // A role without restorePoints/delete cannot prune.
    let mut narrow = RuleSwitches::default();
    narrow
        .role_actions
        .as_mut()
        .unwrap()
        .retain(|a| !a.ends_with("restorePoints/delete"));
    let h2 = start(narrow).await;
    let vm2 = h2.vm("rg", "vm1", "westus", |s| s);
    assert_eq!(h2.collection("rg", "c", "westus", &vm2).await.status, 201);
    assert_eq!(h2.point("rg", "c", "p1", json!({})).await.status, 201);
    let delete = h2.delete(&rp("rg", "c", "p1")).await;
    assert_eq!((delete.status, delete.code()), (403, "AuthorizationFailed"));
    assert!(delete.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'Microsoft.Compute/restorePointCollections/restorePoints/delete'"));
    assert_eq!(
        h2.get(&rp("rg", "c", "p1")).await.status,
        200,
        "not deleted"
    );

    // `roleActions: null` in a config: every action (the provider answers for itself).
    let open: RuleSwitches = serde_json::from_value(json!({"roleActions": null})).unwrap();
    assert_eq!(open.role_actions, None);
    let h3 = start(open).await;
    let vm3 = h3.vm("rg", "vm1", "westus", |s| s);
    // The provider answers for itself: a VM PUT (served since `vmrp restore`) without a
    // location is its own 400, not an authorization refusal.
    let open_put = h3.put(&format!("{vm3}?{V}"), json!({})).await;
    assert_eq!(
        (open_put.status, open_put.code()),
        (400, "LocationRequired")
    );
}

/// Role scope: with `roleScopes` set, a request outside the assigned scopes is
/// refused as ARM's RBAC check refuses it: 403 `AuthorizationFailed`, naming the action and the
/// scope (body shape of a real answer: github.com/Azure/ARO-RP/issues/66). A resource-group
/// assignment covers that group only; a subscription-wide list is outside it.
#[tokio::test]
async fn requests_outside_the_role_scopes_are_refused_403() {
    let rules = RuleSwitches {
        role_scopes: Some(vec![format!("/subscriptions/{SUB}/resourceGroups/RG")]),
        ..Default::default()
    };
    let h = start(rules).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.vm("other", "vm2", "westus", |s| s);
    assert_eq!(h.get(&format!("{vm}?{V}")).await.status, 200);
    assert_eq!(
        h.collection("rg", "rpc-vm1", "westus", &vm).await.status,
        201
    );
    let in_group = h
        .get(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections?{V}"
        ))
        .await;
    assert_eq!(in_group.status, 200);

    let all = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections?{V}"
        ))
        .await;
    assert_eq!((all.status, all.code()), (403, "AuthorizationFailed"));
    let message = all.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not have authorization to perform action 'Microsoft.Compute/restorePointCollections/read'")
            && message.contains(&format!("over scope '/subscriptions/{SUB}'")),
        "{message}"
    );
    let other = h.get(&format!("{}?{V}", vm_id("other", "vm2"))).await;
    assert_eq!((other.status, other.code()), (403, "AuthorizationFailed"));
    let delete = h.delete(&format!("{}?{V}", rpc_id("other", "x"))).await;
    assert_eq!((delete.status, delete.code()), (403, "AuthorizationFailed"));
    assert!(delete.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'Microsoft.Compute/restorePointCollections/delete'"));
}

// ---------------------------------------------------------------------------------------------
// Protocol: api-version, 404s, headers, LRO status
// ---------------------------------------------------------------------------------------------

/// API versions: the emulator answers the 2025-04-01 it is built from and
/// 2025-11-01 (what today's SDKs and CLI send), so a user's own tooling works against
/// `vmrp emulate`; any other version is refused as ARM refuses it: 400
/// `InvalidApiVersionParameter`, "The api-version '…' is invalid. The supported versions are
/// '…'." (newest first, comma-separated: the shape of real answers quoted in docs/emulator-arm.md).
#[tokio::test]
async fn newer_sdk_api_versions_are_served_and_others_refused_as_arm_does() {
    let h = start(RuleSwitches::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let v11 = "api-version=2025-11-01";
    assert_eq!(h.get(&format!("{vm}?{v11}")).await.status, 200);
    let created = h
        .put(
            &format!("{}?{v11}", rpc_id("rg", "c")),
            json!({"location": "westus", "properties": {"source": {"id": vm}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let point = h
        .put(
            &format!("{}?{v11}", rp_id("rg", "c", "p1")),
            json!({"properties": {}}),
        )
        .await;
    assert_eq!(point.status, 201, "{}", point.body);
    // The same resource, read with vmrp's own version.
    assert_eq!(h.get(&rp("rg", "c", "p1")).await.status, 200);
    for refused in ["2024-11-01", "2025-06-01", "2026-01-01", "latest"] {
        let r = h
            .get(&format!("{}?api-version={refused}", rpc_id("rg", "c")))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "InvalidApiVersionParameter"),
            "{refused}"
        );
        assert_eq!(
            r.body["error"]["message"],
            format!(
                "The api-version '{refused}' is invalid. The supported versions are \
                 '2025-11-01,2025-04-01'."
            )
        );
    }
}

#[tokio::test]
async fn api_version_and_not_found_errors_are_cloud_errors() {
    let h = start(RuleSwitches::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let path = vm.clone();
    let missing = h.get(&path).await;
    assert_eq!(
        (missing.status, missing.code()),
        (400, "MissingApiVersionParameter")
    );
    let wrong = h.get(&format!("{path}?api-version=2024-07-01")).await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (400, "InvalidApiVersionParameter")
    );
    assert!(wrong.header("x-ms-request-id").is_some());
    // Disks take their own api-version.
    let disk = h
        .get(&format!(
            "{}?api-version=2024-03-02",
            disk_id("rg", "vm1_DataDisk_0")
        ))
        .await;
    assert_eq!(disk.status, 200);
    assert_eq!(disk.body["sku"]["name"], "Premium_LRS");
    assert!(disk.body["properties"]["diskSizeGB"].is_number());
    assert!(disk.body["tags"].is_object());
    assert!(
        disk.body["properties"].get("maxShares").is_none(),
        "not a shared disk"
    );

    let no_rpc = h.get(&rpc("rg", "nope")).await;
    assert_eq!((no_rpc.status, no_rpc.code()), (404, "ResourceNotFound"));
    let no_rg = h.get(&rpc("nope", "x")).await;
    assert_eq!((no_rg.status, no_rg.code()), (404, "ResourceGroupNotFound"));
    let no_sub = h.get(&format!("/subscriptions/ffffffff-0000-0000-0000-000000000000/providers/Microsoft.Compute/virtualMachines?{V}")).await;
    assert_eq!(
        (no_sub.status, no_sub.code()),
        (404, "SubscriptionNotFound")
    );
    h.collection("rg", "c", "westus", &vm).await;
    let no_rp = h.get(&rp("rg", "c", "nope")).await;
    assert_eq!((no_rp.status, no_rp.code()), (404, "NotFound"));
    let no_loc = h
        .put(
            &rpc("rg", "c2"),
            json!({"properties": {"source": {"id": vm}}}),
        )
        .await;
    assert_eq!((no_loc.status, no_loc.code()), (400, "LocationRequired"));
    let wrong_region = h.collection("rg", "c3", "eastus", &vm).await;
    assert_eq!(
        (wrong_region.status, wrong_region.code()),
        (400, "InvalidParameter")
    );
    let post = h.send(Method::POST, &rpc("rg", "c"), Some(json!({}))).await;
    assert_eq!(post.status, 405);
    // Only tags may change on an existing collection.
    let retag = h.put(&rpc("rg", "c"), json!({"location": "West US", "tags": {"a": "b"}, "properties": {"source": {"id": vm}}})).await;
    assert_eq!(retag.status, 200);
    assert_eq!(retag.body["tags"], json!({"a": "b"}));
    let other_vm = h.vm("rg", "vm2", "westus", |s| s);
    let change = h
        .put(
            &rpc("rg", "c"),
            json!({"location": "westus", "properties": {"source": {"id": other_vm}}}),
        )
        .await;
    assert_eq!(
        (change.status, change.code()),
        (409, "PropertyChangeNotAllowed")
    );
    let moved = h.put(&rpc("rg", "c"), json!({"location": "eastus"})).await;
    assert_eq!(
        (moved.status, moved.code()),
        (409, "InvalidResourceLocation")
    );
}

#[tokio::test]
async fn restore_point_lifecycle_and_operation_status() {
    let h = start(RuleSwitches::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    let r = h
        .point(
            "rg",
            "c",
            "rp1",
            json!({"consistencyMode": "CrashConsistent"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    assert_eq!(r.body["properties"]["consistencyMode"], "CrashConsistent");
    let async_url = r.header("azure-asyncoperation").unwrap().to_string();
    let location_url = r.header("location").unwrap().to_string();
    assert!(async_url.starts_with(&format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/",
        h.base
    )));
    assert_eq!(r.header("retry-after"), Some("10"));
    let running = h.get(&async_url).await;
    assert_eq!(running.body["status"], "InProgress");
    assert!(running.body["startTime"].is_string() && running.body.get("endTime").is_none());
    assert_eq!(h.get(&location_url).await.status, 202);
    let iv = h
        .get(&format!("{}&$expand=instanceView", rp("rg", "c", "rp1")))
        .await;
    assert_eq!(
        iv.body["properties"]["instanceView"]["diskRestorePoints"][0]["snapshotAccessState"],
        "Pending"
    );

    h.advance(90);
    let done = h.get(&async_url).await;
    assert_eq!(done.body["status"], "Succeeded");
    assert!(done.body["endTime"].is_string());
    let loc = h.get(&location_url).await;
    assert_eq!(loc.status, 200);
    assert_eq!(loc.body["properties"]["provisioningState"], "Succeeded");
    // Identical re-PUT: idempotent 201 with the current state; a different one: refused.
    let again = h
        .point(
            "rg",
            "c",
            "rp1",
            json!({"consistencyMode": "CrashConsistent", "provisioningState": "ignored"}),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["properties"]["provisioningState"], "Succeeded");
    let changed = h
        .point(
            "rg",
            "c",
            "rp1",
            json!({"consistencyMode": "CrashConsistent", "instantAccessDurationMinutes": 60}),
        )
        .await;
    assert_eq!(
        (changed.status, changed.code()),
        (409, "OperationNotAllowed")
    );
    assert!(changed.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot be updated"));
    let bogus = h
        .point("rg", "c", "rp2", json!({"consistencyMode": "Sometimes"}))
        .await;
    assert_eq!((bogus.status, bogus.code()), (400, "InvalidParameter"));
    let unknown = h.point("rg", "c", "rp2", json!({"colour": "red"})).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (400, "InvalidRequestContent")
    );
    let not_mine = h
        .point(
            "rg",
            "c",
            "rp2",
            json!({"excludeDisks": [{"id": disk_id("rg", "someone_elses")}]}),
        )
        .await;
    assert_eq!(
        (not_mine.status, not_mine.code()),
        (400, "InvalidParameter")
    );
    // Windows default is application-consistent (RestorePoint_Create.json).
    let default_mode = h.point("rg", "c", "rp3", json!({})).await;
    assert_eq!(
        default_mode.body["properties"]["consistencyMode"],
        "ApplicationConsistent"
    );
    let headers = [
        "x-ms-request-id",
        "x-ms-ratelimit-remaining-subscription-writes",
    ];
    for name in headers {
        assert!(default_mode.header(name).is_some(), "{name}");
    }
    assert!(h
        .get(&rpc("rg", "c"))
        .await
        .header("x-ms-ratelimit-remaining-subscription-reads")
        .is_some());
    assert!(h
        .delete(&rp("rg", "c", "rp1"))
        .await
        .header("x-ms-ratelimit-remaining-subscription-deletes")
        .is_some());
    let summary = h.emu.restore_points();
    assert_eq!(summary.len(), 2);
}

#[tokio::test]
async fn cross_region_copy_replicates_in_ten_minute_steps() {
    let config = ArmConfig {
        fleet: FleetSpec::empty(),
        timings: vmrp::emulator::arm::Timings {
            copy_duration_secs: (6000.0, 6000.0),
            copy_start_secs: (60.0, 60.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(config, FaultConfig::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| {
        s.with_data_disk(1, "vm1_DataDisk_1")
    });
    h.collection("rg", "src", "westus", &vm).await;
    h.point("rg", "src", "rp1", json!({})).await;
    h.advance(120);
    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    let r = h
        .point(
            "rg",
            "dst",
            "rp1",
            json!({"sourceRestorePoint": {"id": rp_id("rg", "src", "rp1")}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    let view = |b: &Value| -> (String, Vec<i64>, String) {
        let p = &b["properties"];
        let pcts = p["instanceView"]["diskRestorePoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["replicationStatus"]["completionPercent"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        (
            p["provisioningState"].as_str().unwrap().into(),
            pcts,
            p["instanceView"]["statuses"][0]["code"]
                .as_str()
                .unwrap()
                .into(),
        )
    };
    let url = format!("{}&$expand=instanceView", rp("rg", "dst", "rp1"));
    let (state, pcts, code) = view(&h.get(&url).await.body);
    assert_eq!(
        (state.as_str(), pcts, code.as_str()),
        ("Creating", vec![0, 0, 0], "ProvisioningState/creating")
    );
    h.advance(60);
    // Succeeded means the copy started, not that it finished.
    let (state, pcts, code) = view(&h.get(&url).await.body);
    assert_eq!(
        (state.as_str(), pcts, code.as_str()),
        ("Succeeded", vec![0, 0, 0], "ReplicationState/inProgress")
    );
    h.advance(600 - 60);
    assert_eq!(view(&h.get(&url).await.body).1, vec![10, 10, 10]);
    h.advance(599);
    assert_eq!(
        view(&h.get(&url).await.body).1,
        vec![10, 10, 10],
        "progress moves in 10-minute steps"
    );
    h.advance(1);
    assert_eq!(view(&h.get(&url).await.body).1, vec![20, 20, 20]);
    h.advance(6000);
    let body = h.get(&url).await.body;
    let (state, pcts, code) = view(&body);
    assert_eq!(
        (state.as_str(), pcts, code.as_str()),
        (
            "Succeeded",
            vec![100, 100, 100],
            "ReplicationState/succeeded"
        )
    );
    let d0 = &body["properties"]["instanceView"]["diskRestorePoints"][0];
    assert_eq!(
        d0["replicationStatus"]["status"]["code"],
        "ReplicationState/succeeded"
    );
    assert_eq!(d0["snapshotAccessState"], "Available");
    let meta_disk =
        &body["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]["diskRestorePoint"];
    assert!(meta_disk["id"]
        .as_str()
        .unwrap()
        .starts_with(&rp_id("rg", "dst", "rp1")));
    assert!(meta_disk["sourceDiskRestorePoint"]["id"]
        .as_str()
        .unwrap()
        .starts_with(&rp_id("rg", "src", "rp1")));
    assert!(h.emu.restore_points().iter().all(|p| p.is_settled()));
}

// ---------------------------------------------------------------------------------------------
// Platform rules
// ---------------------------------------------------------------------------------------------

fn only(f: impl FnOnce(&mut RuleSwitches)) -> RuleSwitches {
    let mut r = RuleSwitches::all_off();
    f(&mut r);
    r
}

#[tokio::test]
async fn rule_one_create_per_vm_409_or_async_failure() {
    let h = start(only(|r| r.one_create_per_vm = true)).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    h.collection("rg", "c2", "westus", &vm).await;
    assert_eq!(h.point("rg", "c", "rp1", json!({})).await.status, 201);
    let second = h.point("rg", "c2", "rp2", json!({})).await;
    assert_eq!(
        (second.status, second.code()),
        (409, "VMRestorePointClientError")
    );
    assert!(second.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent 'Create RestorePoint'"));
    h.advance(600);
    assert_eq!(h.point("rg", "c2", "rp2", json!({})).await.status, 201);
    assert_eq!(h.emu.counters().rule_refusals["oneCreatePerVm"], 1);

    let h = start(only(|r| {
        r.one_create_per_vm = true;
        r.concurrent_create_mode = ConcurrentCreateMode::FailAsync;
    }))
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    h.point("rg", "c", "rp1", json!({})).await;
    let second = h.point("rg", "c", "rp2", json!({})).await;
    assert_eq!(second.status, 201);
    h.advance(600);
    let got = h
        .get(&format!("{}&$expand=instanceView", rp("rg", "c", "rp2")))
        .await;
    assert_eq!(got.body["properties"]["provisioningState"], "Failed");
    assert!(
        got.body["properties"]["instanceView"]["statuses"][0]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent")
    );
}

#[tokio::test]
async fn rule_three_creates_per_vm_per_hour() {
    let h = start(only(|r| r.hourly_create_limit = true)).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    for i in 0..3 {
        assert_eq!(
            h.point("rg", "c", &format!("rp{i}"), json!({}))
                .await
                .status,
            201
        );
        h.advance(600);
    }
    let fourth = h.point("rg", "c", "rp3", json!({})).await;
    // Compute's throttling body: `OperationNotAllowed` with the
    // `TooManyRequests` detail, as the `429` fault answers.
    assert_eq!((fourth.status, fourth.code()), (429, "OperationNotAllowed"));
    assert_eq!(
        fourth.body["error"]["details"][0]["code"],
        "TooManyRequests"
    );
    // The first create (at 0 s) leaves the window at 3600 s; now is 1800 s.
    assert_eq!(fourth.header("retry-after"), Some("1800"));
    h.advance(1800);
    assert_eq!(h.point("rg", "c", "rp3", json!({})).await.status, 201);
}

#[tokio::test]
async fn rule_500_points_per_vm() {
    let h = start(only(|r| {
        r.points_per_vm_cap = true;
        r.max_points_per_vm = 3;
    }))
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "a", "westus", &vm).await;
    h.collection("rg", "b", "westus", &vm).await;
    for (c, n) in [("a", "1"), ("a", "2"), ("b", "3")] {
        assert_eq!(h.point("rg", c, n, json!({})).await.status, 201);
    }
    let over = h.point("rg", "b", "4", json!({})).await;
    assert_eq!(
        (over.status, over.code()),
        (400, "VMRestorePointClientError")
    );
    assert!(over.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum allowed snapshot limit"));
    assert_eq!(
        vmrp::emulator::arm::RuleSwitches::default().max_points_per_vm,
        500
    );
}

/// Only `CrashConsistent` is accepted as `consistencyMode` input (2025-04-01
/// `restorePoint.json`); other values are refused naming the property, before anything exists.
#[tokio::test]
async fn rule_consistency_mode_input_is_crash_consistent_or_absent() {
    let h = start(only(|r| r.consistency_input_crash_only = true)).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    assert_eq!(h.collection("rg", "c", "westus", &vm).await.status, 201);
    for mode in ["ApplicationConsistent", "FileSystemConsistent"] {
        let r = h
            .point("rg", "c", "rp1", json!({ "consistencyMode": mode }))
            .await;
        assert_eq!((r.status, r.code()), (400, "InvalidParameter"), "{mode}");
        assert_eq!(r.body["error"]["target"], "properties.consistencyMode");
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("consistencyMode"));
    }
    assert!(h.emu.restore_points().is_empty(), "nothing created");
    let crash = h
        .point(
            "rg",
            "c",
            "rp1",
            json!({"consistencyMode": "CrashConsistent"}),
        )
        .await;
    assert_eq!(crash.status, 201);
    h.advance(4 * 3600);
    // Absent: Azure's default (application-consistent on Windows).
    let absent = h.point("rg", "c", "rp2", json!({})).await;
    assert_eq!(absent.status, 201);
    assert_eq!(
        absent.body["properties"]["consistencyMode"],
        "ApplicationConsistent"
    );
}

/// Collection names follow ARM's naming rule and locations must be ones ARM offers
/// (`LocationNotAvailableForResourceType`), sovereign-cloud regions included.
#[tokio::test]
async fn rule_collection_names_and_locations() {
    let h = start(only(|r| {
        r.collection_name_rules = true;
        r.known_locations_only = true;
    }))
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    for bad in [
        "rpc-vm1-sweden%20central",
        "rpc-vm1-",
        "-rpc",
        "rpc.",
        "rpc%2Fx",
    ] {
        let r = h.collection("rg", bad, "westus", &vm).await;
        assert_eq!((r.status, r.code()), (400, "InvalidResourceName"), "{bad}");
    }
    let long = "x".repeat(81);
    let r = h.collection("rg", &long, "westus", &vm).await;
    assert_eq!((r.status, r.code()), (400, "InvalidResourceName"));

    let mars = h.collection("rg", "rpc-vm1", "mars", &vm).await;
    assert_eq!(
        (mars.status, mars.code()),
        (400, "LocationNotAvailableForResourceType")
    );
    let message = mars.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "The provided location 'mars' is not available for resource type \
             'Microsoft.Compute/restorePointCollections'. List of available regions"
        ),
        "{message}"
    );
    assert!(message.contains("usgovvirginia") && message.contains("chinaeast2"));
    assert!(h.emu.collections().is_empty(), "nothing created");

    let ok = h.collection("rg", "rpc-vm1-0a1b2c3d", "West US", &vm).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let copy = h
        .collection(
            "rg",
            "rpc-vm1-0a1b2c3d_mars",
            "mars",
            &rpc_id("rg", "rpc-vm1-0a1b2c3d"),
        )
        .await;
    assert_eq!(copy.code(), "LocationNotAvailableForResourceType");
    let gov = h.vm("rg-gov", "vm2", "usgovvirginia", |s| s);
    let gov_local = h
        .collection("rg-gov", "rpc-vm2-0a1b2c3d", "usgovvirginia", &gov)
        .await;
    assert_eq!(gov_local.status, 201, "{}", gov_local.body);
    let gov_copy = h
        .collection(
            "rg-gov",
            "rpc-vm2-0a1b2c3d_usgovarizona",
            "usgovarizona",
            &rpc_id("rg-gov", "rpc-vm2-0a1b2c3d"),
        )
        .await;
    assert_eq!(gov_copy.status, 201, "{}", gov_copy.body);
}

#[tokio::test]
async fn rule_spacing_between_points() {
    let h = start(only(|r| r.spacing = true)).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    assert_eq!(h.point("rg", "c", "app1", json!({})).await.status, 201);
    assert_eq!(
        h.point(
            "rg",
            "c",
            "crash1",
            json!({"consistencyMode": "CrashConsistent"})
        )
        .await
        .status,
        201
    );
    h.advance(3599);
    let crash = h
        .point(
            "rg",
            "c",
            "crash2",
            json!({"consistencyMode": "CrashConsistent"}),
        )
        .await;
    assert_eq!((crash.status, crash.code()), (400, "OperationNotAllowed"));
    h.advance(1);
    assert_eq!(
        h.point(
            "rg",
            "c",
            "crash2",
            json!({"consistencyMode": "CrashConsistent"})
        )
        .await
        .status,
        201
    );
    let app = h.point("rg", "c", "app2", json!({})).await;
    assert_eq!(app.status, 400);
    assert!(app.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("180 minutes"));
    h.advance(2 * 3600);
    assert_eq!(h.point("rg", "c", "app2", json!({})).await.status, 201);
}

#[tokio::test]
async fn rule_unsupported_disks_must_be_excluded() {
    let h = start(only(|r| r.unsupported_disks_excluded = true)).await;
    let shared = h.vm("rg", "vmshared", "westus", |mut s| {
        s.data_disks.push(vmrp::emulator::arm::fleet::DataDiskSeed {
            lun: 1,
            name: "shared1".into(),
            resource_group: None,
            storage_account_type: "Premium_LRS".into(),
            size_gb: 64,
            max_shares: 2,
        });
        s
    });
    h.collection("rg", "c", "westus", &shared).await;
    let r = h.point("rg", "c", "rp1", json!({})).await;
    assert_eq!((r.status, r.code()), (400, "OperationNotAllowed"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'shared1'"));
    assert_eq!(
        h.point(
            "rg",
            "c",
            "rp1",
            json!({"excludeDisks": [{"id": disk_id("rg", "shared1")}]})
        )
        .await
        .status,
        201
    );

    let eph = h.vm("rg", "vmeph", "westus", |mut s| {
        s.ephemeral_os = true;
        s
    });
    h.collection("rg", "e", "westus", &eph).await;
    let r = h.point("rg", "e", "rp1", json!({})).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ephemeral"));

    let ultra = h.vm("rg", "vmultra", "westus", |mut s| {
        s.data_disks.push(vmrp::emulator::arm::fleet::DataDiskSeed {
            lun: 1,
            name: "ultra1".into(),
            resource_group: None,
            storage_account_type: "UltraSSD_LRS".into(),
            size_gb: 64,
            max_shares: 1,
        });
        s
    });
    h.collection("rg", "u", "westus", &ultra).await;
    let crash = h
        .point(
            "rg",
            "u",
            "rp1",
            json!({"consistencyMode": "CrashConsistent"}),
        )
        .await;
    assert_eq!(crash.status, 400);
    assert!(crash.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'ultra1'"));
    // Application-consistent points support Ultra disks (current support matrix).
    assert_eq!(h.point("rg", "u", "rp2", json!({})).await.status, 201);
}

/// The support matrix's VM-level rules (learn.microsoft.com virtual-machines/
/// concepts-restore-points and virtual-machines-create-restore-points): no points of a
/// confidential VM in any mode; crash-consistent points only on sizes with Premium storage and
/// without write-accelerated disks; Trusted Launch VMs are supported. The emulator accepted all
/// of these before.
#[tokio::test]
async fn rule_unsupported_vms_and_write_accelerated_disks() {
    let h = start(only(|r| {
        r.unsupported_vms = true;
        r.unsupported_disks_excluded = true;
    }))
    .await;
    // A VM from a seed, its document changed by `edit`.
    let vm = |name: &str, edit: &dyn Fn(&mut Value)| -> String {
        let seed =
            VmSeed::new(SUB, "rg", name, "westus").with_data_disk(0, &format!("{name}_DataDisk_0"));
        let (mut doc, disks) = seed.build();
        edit(&mut doc);
        for d in disks {
            h.emu.add_disk(d).unwrap();
        }
        h.emu.add_vm(doc).unwrap().to_string()
    };
    let crash = json!({"consistencyMode": "CrashConsistent"});
    // (VM, edit, crash refused, app refused, message part)
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, bool, bool, &str)> = vec![
        (
            "cvm",
            Box::new(|d: &mut Value| {
                d["properties"]["hardwareProfile"]["vmSize"] = json!("Standard_DC4as_v5");
                d["properties"]["securityProfile"] = json!({"securityType": "ConfidentialVM"});
            }),
            true,
            true,
            "confidential",
        ),
        (
            "tl",
            Box::new(|d: &mut Value| {
                d["properties"]["securityProfile"] = json!({"securityType": "TrustedLaunch",
                    "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}});
            }),
            false,
            false,
            "",
        ),
        (
            "nopremium",
            Box::new(|d: &mut Value| {
                d["properties"]["hardwareProfile"]["vmSize"] = json!("Standard_D4_v5");
            }),
            true,
            false,
            "Premium storage",
        ),
        (
            "wa",
            Box::new(|d: &mut Value| {
                d["properties"]["hardwareProfile"]["vmSize"] = json!("Standard_M8ms");
                d["properties"]["storageProfile"]["dataDisks"][0]["writeAcceleratorEnabled"] =
                    json!(true);
            }),
            true,
            false,
            "write-accelerated",
        ),
    ];
    for (name, edit, crash_refused, app_refused, part) in cases {
        let id = vm(name, &*edit);
        h.collection("rg", name, "westus", &id).await;
        let r = h.point("rg", name, "crash", crash.clone()).await;
        assert_eq!(r.status == 400, crash_refused, "{name} crash: {:?}", r.body);
        if crash_refused {
            assert_eq!(r.code(), "OperationNotAllowed", "{name}");
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(part), "{name}: {message}");
        } else {
            assert_eq!(r.status, 201, "{name}: {:?}", r.body);
        }
        // Application-consistent, hours later (spacing).
        h.advance(4 * 3600);
        let r = h.point("rg", name, "app", json!({})).await;
        assert_eq!(r.status == 400, app_refused, "{name} app: {:?}", r.body);
        if !app_refused {
            assert_eq!(r.status, 201, "{name}: {:?}", r.body);
        }
    }
    // Excluding the write-accelerated disk makes the crash-consistent point possible.
    h.advance(4 * 3600);
    let r = h
        .point(
            "rg",
            "wa",
            "crash2",
            json!({"consistencyMode": "CrashConsistent",
                   "excludeDisks": [{"id": disk_id("rg", "wa_DataDisk_0")}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// A source point `rg/src/{name}` that has succeeded, on a fresh VM per call.
async fn source_point(h: &Harness, name: &str) -> String {
    h.point("rg", "src", name, json!({})).await;
    h.advance(120);
    rp_id("rg", "src", name)
}

#[tokio::test]
async fn rule_copies_serial_and_in_order() {
    let h = start(only(|r| r.copies_serial_in_order = true)).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "src", "westus", &vm).await;
    let first = source_point(&h, "rp1").await;
    let second = source_point(&h, "rp2").await;
    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    assert_eq!(
        h.point(
            "rg",
            "dst",
            "rp2",
            json!({"sourceRestorePoint": {"id": second}})
        )
        .await
        .status,
        201
    );
    let busy = h
        .point(
            "rg",
            "dst",
            "rp1",
            json!({"sourceRestorePoint": {"id": first}}),
        )
        .await;
    assert_eq!((busy.status, busy.code()), (409, "OperationNotAllowed"));
    assert!(busy.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("in progress"));
    h.advance(3 * 3600);
    let out_of_order = h
        .point(
            "rg",
            "dst",
            "rp1",
            json!({"sourceRestorePoint": {"id": first}}),
        )
        .await;
    assert_eq!(out_of_order.status, 409);
    assert!(out_of_order.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("creation order"));
    let third = source_point(&h, "rp3").await;
    assert_eq!(
        h.point(
            "rg",
            "dst",
            "rp3",
            json!({"sourceRestorePoint": {"id": third}})
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn rule_three_copies_per_collection_per_hour() {
    let config = ArmConfig {
        fleet: FleetSpec::empty(),
        rules: only(|r| r.hourly_copy_limit = true),
        timings: vmrp::emulator::arm::Timings {
            copy_duration_secs: (60.0, 60.0),
            copy_start_secs: (10.0, 10.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(config, FaultConfig::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "src", "westus", &vm).await;
    let mut sources = Vec::new();
    for i in 0..4 {
        sources.push(source_point(&h, &format!("rp{i}")).await);
    }
    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    for (i, s) in sources.iter().take(3).enumerate() {
        assert_eq!(
            h.point(
                "rg",
                "dst",
                &format!("rp{i}"),
                json!({"sourceRestorePoint": {"id": s}})
            )
            .await
            .status,
            201
        );
        h.advance(120);
    }
    let fourth = h
        .point(
            "rg",
            "dst",
            "rp3",
            json!({"sourceRestorePoint": {"id": sources[3]}}),
        )
        .await;
    assert_eq!((fourth.status, fourth.code()), (429, "OperationNotAllowed"));
    assert_eq!(
        fourth.body["error"]["details"][0]["code"],
        "TooManyRequests"
    );
    assert!(fourth.header("retry-after").is_some());
}

#[tokio::test]
async fn rule_no_copy_of_copy_and_target_must_reference_source() {
    let h = start(only(|r| {
        r.no_copy_of_copy = true;
        r.target_must_reference_source = true;
    }))
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let vm2 = h.vm("rg", "vm2", "westus", |s| s);
    h.collection("rg", "src", "westus", &vm).await;
    h.collection("rg", "other", "westus", &vm2).await;
    let source = source_point(&h, "rp1").await;
    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    h.collection("rg", "wrong", "eastus", &rpc_id("rg", "other"))
        .await;
    let wrong = h
        .point(
            "rg",
            "wrong",
            "rp1",
            json!({"sourceRestorePoint": {"id": source}}),
        )
        .await;
    assert_eq!((wrong.status, wrong.code()), (400, "InvalidParameter"));
    assert_eq!(
        h.point(
            "rg",
            "dst",
            "rp1",
            json!({"sourceRestorePoint": {"id": source}})
        )
        .await
        .status,
        201
    );
    h.advance(3 * 3600);
    // A copy of the copy, into a third region whose collection references the copy collection:
    // refused when the collection is created already.
    let chained = h
        .collection("rg", "third", "northeurope", &rpc_id("rg", "dst"))
        .await;
    assert_eq!(
        (chained.status, chained.code()),
        (400, "OperationNotAllowed")
    );
    assert_eq!(h.emu.counters().rule_refusals["noCopyOfCopy"], 1);
    // And a point naming a copy as its source is refused too.
    h.collection("rg", "back", "northeurope", &rpc_id("rg", "src"))
        .await;
    let copy_of_copy = h
        .point(
            "rg",
            "back",
            "rp1",
            json!({"sourceRestorePoint": {"id": rp_id("rg", "dst", "rp1")}}),
        )
        .await;
    assert_eq!(
        (copy_of_copy.status, copy_of_copy.code()),
        (400, "OperationNotAllowed")
    );
    assert!(copy_of_copy.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("itself a cross-region copy"));
    // A same-region "copy" collection is refused.
    let same_region = h
        .collection("rg", "same", "westus", &rpc_id("rg", "src"))
        .await;
    assert_eq!(same_region.status, 400);
}

// ---------------------------------------------------------------------------------------------
// Throttling, faults, paging, seeding
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn throttling_drains_refuses_and_refills_on_virtual_time() {
    let config = ArmConfig {
        fleet: FleetSpec::empty(),
        throttle: ThrottleConfig {
            reads: vmrp::emulator::arm::throttle::BucketSpec {
                capacity: 5.0,
                refill_per_sec: 0.5,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(config, FaultConfig::default()).await;
    h.vm("rg", "vm1", "westus", |s| s);
    let path = format!("{}?{V}", vm_id("rg", "vm1"));
    for want in (0..5).rev() {
        let r = h.get(&path).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ms-ratelimit-remaining-subscription-reads"),
            Some(want.to_string().as_str())
        );
    }
    let refused = h.get(&path).await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "SubscriptionRequestsThrottled")
    );
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(
        refused.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("0")
    );
    // Writes have their own bucket.
    assert_eq!(
        h.collection("rg", "c", "westus", &vm_id("rg", "vm1"))
            .await
            .status,
        201
    );
    h.advance(2);
    assert_eq!(h.get(&path).await.status, 200);
    assert_eq!(h.emu.counters().throttled, 1);
}

#[tokio::test]
async fn faults_5xx_429_failed_provisioning_per_operation() {
    let faults = FaultConfig::from_json(
        r#"{"arm": {"operations": {
        "PUT restorePoints": {"5xx": 1.0},
        "GET restorePointCollections": {"429": 1.0},
        "GET virtualMachines": {"failedProvisioning": 0.0}}}}"#,
    )
    .unwrap();
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        faults,
    )
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    assert_eq!(h.collection("rg", "c", "westus", &vm).await.status, 201);
    let put = h.point("rg", "c", "rp1", json!({})).await;
    assert!(put.status == 500 || put.status == 503, "{}", put.status);
    assert!(["InternalExecutionError", "ServiceUnavailable"].contains(&put.code()));
    let get = h.get(&rpc("rg", "c")).await;
    assert_eq!((get.status, get.code()), (429, "OperationNotAllowed"));
    assert!(get.header("retry-after").is_some());
    assert_eq!(get.body["error"]["details"][0]["code"], "TooManyRequests");
    // Other operations are untouched.
    assert_eq!(
        h.get(&format!("{}?{V}", vm_id("rg", "vm1"))).await.status,
        200
    );
    let c = h.emu.counters();
    assert_eq!((c.faults_injected["5xx"], c.faults_injected["429"]), (1, 1));
    assert!(
        h.emu.restore_points().is_empty(),
        "a 5xx fault is not processed"
    );

    let faults = FaultConfig::from_json(r#"{"arm": {"failedProvisioning": 1.0}}"#).unwrap();
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        faults,
    )
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "c", "westus", &vm).await;
    let r = h.point("rg", "c", "rp1", json!({})).await;
    assert_eq!(r.status, 201);
    let op = r.header("azure-asyncoperation").unwrap().to_string();
    h.advance(600);
    let got = h
        .get(&format!("{}&$expand=instanceView", rp("rg", "c", "rp1")))
        .await;
    assert_eq!(got.body["properties"]["provisioningState"], "Failed");
    let status = &got.body["properties"]["instanceView"]["statuses"][0];
    assert_eq!(status["level"], "Error");
    assert_eq!(
        status["code"],
        "ProvisioningState/failed/VMRestorePointInternalError"
    );
    let op = h.get(&op).await;
    assert_eq!(op.body["status"], "Failed");
    assert_eq!(op.body["error"]["code"], "VMRestorePointInternalError");
    assert_eq!(h.emu.counters().faults_injected["failedProvisioning"], 1);
}

#[tokio::test]
async fn fault_drop_processes_then_closes_the_connection() {
    let faults = FaultConfig::from_json(
        r#"{"arm": {"operations": {"PUT restorePointCollections": {"drop": 1.0}}}}"#,
    )
    .unwrap();
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        faults,
    )
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let err = h
        .http
        .put(format!("{}{}", h.base, rpc("rg", "c")))
        .bearer_auth("emulator-test-token")
        .json(&json!({"location": "westus", "properties": {"source": {"id": vm}}}))
        .send()
        .await
        .expect_err("the connection is dropped before any response");
    assert!(!err.is_status(), "{err:?}");
    // The request was processed nevertheless.
    assert_eq!(h.get(&rpc("rg", "c")).await.status, 200);
    assert_eq!(h.emu.counters().faults_injected["drop"], 1);
}

#[tokio::test]
async fn latency_fault_sleeps_really() {
    let faults = FaultConfig::from_json(r#"{"arm": {"latencyMs": 150}}"#).unwrap();
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        faults,
    )
    .await;
    h.vm("rg", "vm1", "westus", |s| s);
    let t = std::time::Instant::now();
    assert_eq!(
        h.get(&format!("{}?{V}", vm_id("rg", "vm1"))).await.status,
        200
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn same_fault_seed_replays_the_same_faults() {
    async fn run() -> Vec<u16> {
        let faults = FaultConfig::from_json(r#"{"arm": {"5xx": 0.3, "429": 0.2}}"#).unwrap();
        let h = start_with(
            ArmConfig {
                fleet: FleetSpec {
                    count: 3,
                    ..Default::default()
                },
                ..Default::default()
            },
            faults,
        )
        .await;
        let sub = h.emu.subscriptions()[0].clone();
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(
                h.get(&format!(
                    "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{V}"
                ))
                .await
                .status,
            );
        }
        out
    }
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(
        a.contains(&200) && a.iter().any(|s| *s >= 500) && a.contains(&429),
        "{a:?}"
    );
}

#[tokio::test]
async fn paging_follows_absolute_next_links_on_our_host() {
    let rules = RuleSwitches {
        list_page_size: 2,
        ..Default::default()
    };
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec {
                count: 5,
                subscriptions: 1,
                ..Default::default()
            },
            rules,
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    let sub = h.emu.subscriptions()[0].clone();
    let mut url = format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{V}");
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let r = h.get(&url).await;
        assert_eq!(r.status, 200);
        pages += 1;
        for v in r.body["value"].as_array().unwrap() {
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&h.base), "{next}");
                assert!(next.contains("api-version=2025-04-01"));
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: std::collections::BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!((ids.len(), unique.len()), (5, 5));
    let bad = h
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{V}&$skiptoken=abc"
        ))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn same_seed_same_fleet() {
    let spec = FleetSpec {
        count: 25,
        subscriptions: 2,
        seed: 9,
        ..Default::default()
    };
    let a = start_with(
        ArmConfig {
            fleet: spec.clone(),
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    let b = start_with(
        ArmConfig {
            fleet: spec.clone(),
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    let c = start_with(
        ArmConfig {
            fleet: FleetSpec { seed: 10, ..spec },
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    assert_eq!(a.emu.subscriptions(), b.emu.subscriptions());
    assert_eq!(
        a.emu.dump()["virtualMachines"],
        b.emu.dump()["virtualMachines"]
    );
    assert_eq!(a.emu.dump()["disks"], b.emu.dump()["disks"]);
    assert_ne!(
        a.emu.dump()["virtualMachines"],
        c.emu.dump()["virtualMachines"]
    );
    assert_eq!(a.emu.list_vms().len(), 25);
    let sub = a.emu.subscriptions()[1].clone();
    let listed = a
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{V}"
        ))
        .await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 12);
}

// ---------------------------------------------------------------------------------------------
// Recorded traffic, validated by oav
// ---------------------------------------------------------------------------------------------

async fn record_scenario(dir: &Path) {
    let faults = FaultConfig::from_json(
        r#"{"arm": {"operations": {"PATCH restorePointCollections": {"429": 1.0}}}}"#,
    )
    .unwrap();
    let config = ArmConfig {
        fleet: FleetSpec::empty(),
        record_traffic: Some(dir.to_path_buf()),
        throttle: ThrottleConfig {
            deletes: vmrp::emulator::arm::throttle::BucketSpec {
                capacity: 3.0,
                refill_per_sec: 0.001,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(config, faults).await;
    let vm = h.vm("rg1", "vm1", "westeurope", |s| {
        s.with_data_disk(1, "vm1_DataDisk_1")
    });
    h.get(&format!("{vm}?{V}")).await;
    h.get(&format!("{vm}?{V}&$expand=instanceView")).await;
    h.get(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{V}"
    ))
    .await;
    h.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines?{V}"
    ))
    .await;
    h.get(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/virtualMachines?{V}"
    ))
    .await;
    h.get(&format!("{vm}/instanceView?{V}")).await;
    h.put(&rpc("rg1", "rpc-vm1"), json!({"location": "westeurope", "tags": {"vmrp": "on"}, "properties": {"source": {"id": vm}}})).await;
    h.put(&rpc("rg1", "rpc-vm1"), json!({"location": "westeurope", "tags": {"vmrp": "on", "rule": "daily"}, "properties": {"source": {"id": vm}}})).await;
    let created = h.point("rg1", "rpc-vm1", "rp-20260301T0000Z", json!({"consistencyMode": "CrashConsistent", "excludeDisks": [{"id": disk_id("rg1", "vm1_DataDisk_1")}]})).await;
    assert_eq!(created.status, 201);
    h.get(created.header("azure-asyncoperation").unwrap()).await;
    h.get(&format!(
        "{}&$expand=instanceView",
        rp("rg1", "rpc-vm1", "rp-20260301T0000Z")
    ))
    .await;
    h.advance(120);
    h.get(&format!(
        "{}&$expand=instanceView",
        rp("rg1", "rpc-vm1", "rp-20260301T0000Z")
    ))
    .await;
    h.put(&rpc("rg1", "rpc-vm1-northeurope"), json!({"location": "northeurope", "properties": {"source": {"id": rpc_id("rg1", "rpc-vm1")}}})).await;
    let copy = h
        .point(
            "rg1",
            "rpc-vm1-northeurope",
            "rp-20260301T0000Z",
            json!({"sourceRestorePoint": {"id": rp_id("rg1", "rpc-vm1", "rp-20260301T0000Z")}}),
        )
        .await;
    assert_eq!(copy.status, 201, "{:#}", copy.body);
    h.advance(1800);
    h.get(&format!(
        "{}&$expand=instanceView",
        rp("rg1", "rpc-vm1-northeurope", "rp-20260301T0000Z")
    ))
    .await;
    h.advance(3 * 3600);
    h.get(&format!(
        "{}&$expand=instanceView",
        rp("rg1", "rpc-vm1-northeurope", "rp-20260301T0000Z")
    ))
    .await;
    h.get(&format!("{}&$expand=restorePoints", rpc("rg1", "rpc-vm1")))
        .await;
    h.get(&format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/restorePointCollections?{V}")).await;
    h.get(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/restorePointCollections?{V}"
    ))
    .await;
    // CloudErrors: a rule refusal, a 404, a fault 429 and an ARM throttling 429.
    let again = h.point("rg1", "rpc-vm1", "rp-second", json!({"consistencyMode": "CrashConsistent", "excludeDisks": [{"id": disk_id("rg1", "vm1_DataDisk_1")}]})).await;
    assert_eq!(again.status, 201);
    let refused = h
        .point(
            "rg1",
            "rpc-vm1",
            "rp-third",
            json!({"consistencyMode": "CrashConsistent"}),
        )
        .await;
    assert_eq!(refused.status, 409);
    assert_eq!(h.get(&rp("rg1", "rpc-vm1", "missing")).await.status, 404);
    assert_eq!(
        h.send(
            Method::PATCH,
            &rpc("rg1", "rpc-vm1"),
            Some(json!({"tags": {"x": "y"}}))
        )
        .await
        .status,
        429
    );
    h.advance(600);
    assert_eq!(
        h.delete(&rp("rg1", "rpc-vm1-northeurope", "rp-20260301T0000Z"))
            .await
            .status,
        202
    );
    assert_eq!(
        h.delete(&rp("rg1", "rpc-vm1", "rp-second")).await.status,
        202
    );
    assert_eq!(h.delete(&rpc("rg1", "rpc-vm1")).await.status, 202);
    assert_eq!(
        h.delete(&rpc("rg1", "rpc-vm1-northeurope")).await.status,
        429
    );
    h.get(&format!(
        "{}?api-version=2024-03-02",
        disk_id("rg1", "vm1_DataDisk_1")
    ))
    .await;
}

#[tokio::test]
async fn recorded_traffic_is_valid_per_oav() {
    let dir = tempfile::tempdir().unwrap();
    record_scenario(dir.path()).await;
    // Keep a copy for inspection (e.g. with scripts/validate-traffic.sh) when asked.
    if let Ok(keep) = std::env::var("VMRP_KEEP_TRAFFIC") {
        std::fs::create_dir_all(&keep).unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), Path::new(&keep).join(e.file_name())).unwrap();
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let validatable: Vec<&String> = files.iter().filter(|f| f.ends_with(".json")).collect();
    assert!(validatable.len() >= 25, "{files:#?}");
    assert!(files
        .iter()
        .any(|f| f.contains("Operations_Get") && f.ends_with(".skipped")));
    assert!(files.iter().any(|f| f.contains("-429.json")));
    for f in &validatable {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(f)).unwrap()).unwrap();
        assert!(doc["liveRequest"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://management.azure.com/subscriptions/"));
        assert!(doc["liveResponse"]["statusCode"].is_string());
    }
    let Ok(oav) = std::env::var("VMRP_OAV") else {
        // A skip that reports as a pass is a check that cannot fail: where the validation is
        // required (GitHub sets CI; scripts/test.sh sets VMRP_REQUIRE_OAV), a missing oav fails.
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("VMRP_REQUIRE_OAV").is_none(),
            "oav is required here (CI or VMRP_REQUIRE_OAV is set) but VMRP_OAV is not: run scripts/setup.sh and set VMRP_OAV to its oav"
        );
        println!("skipped oav validation: set VMRP_OAV to an oav 4.0.3 binary (scripts/validate-traffic.sh installs one)");
        return;
    };
    let out = std::process::Command::new(&oav)
        .arg("validate-traffic")
        .arg(dir.path())
        .arg(spec_dir())
        .args(["--report", ""])
        .output()
        .expect("run oav");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("No errors"),
        "oav found errors:\n{text}"
    );
}

#[tokio::test]
async fn a_large_fleet_lists_completely_across_subscriptions() {
    let fleet = FleetSpec {
        count: 2000,
        subscriptions: 2,
        regions: vec!["westeurope".into(), "northeurope".into(), "eastus".into()],
        ..Default::default()
    };
    let h = start_with(
        ArmConfig {
            fleet,
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    let started = std::time::Instant::now();
    let mut total = 0;
    for sub in h.emu.subscriptions() {
        let (vms, _) = h
            .list_pages(format!(
                "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{V}"
            ))
            .await;
        total += vms.len();
    }
    assert_eq!(total, 2000);
    println!("listed 2000 VMs in 40 pages in {:?}", started.elapsed());
}

/// `Disks_List` and `Disks_ListByResourceGroup` page through the same documents `Disks_Get`
/// returns, and count as disk reads.
#[tokio::test]
async fn disks_list_by_subscription_and_resource_group_page_like_get() {
    let fleet = FleetSpec {
        count: 120,
        min_data_disks: 1,
        max_data_disks: 2,
        ..Default::default()
    };
    let h = start_with(
        ArmConfig {
            fleet,
            ..Default::default()
        },
        FaultConfig::default(),
    )
    .await;
    let sub = h.emu.subscriptions()[0].clone();
    let (all, pages) = h
        .list_pages(format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/disks?api-version=2024-03-02"
        ))
        .await;
    // Every VM has an OS disk and at least one data disk.
    assert!(all.len() >= 240, "{} disks", all.len());
    assert!(pages > 1, "paged");
    let first = &all[0];
    let id = first["id"].as_str().unwrap();
    let got = h.get(&format!("{id}?api-version=2024-03-02")).await;
    assert_eq!(&got.body, first, "a listed disk is what Disks_Get returns");
    let rg = id.split('/').nth(4).unwrap();
    let (in_rg, _) = h.list_pages(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks?api-version=2024-03-02"
    ))
    .await;
    assert!(!in_rg.is_empty() && in_rg.len() < all.len());
    assert!(in_rg.iter().all(|d| d["id"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase()
        .contains(&format!("/resourcegroups/{}/", rg.to_ascii_lowercase()))));
    let counters = h.emu.counters();
    assert_eq!(
        counters.requests_by_operation.get("Disks_List").copied(),
        Some(pages as u64)
    );
    assert!(counters
        .requests_by_operation
        .contains_key("Disks_ListByResourceGroup"));
}

/// Every answer carries ARM's `Date`, from the virtual clock (the timer paces its sends from it).
#[tokio::test]
async fn responses_are_dated_by_the_virtual_clock() {
    let h = start(RuleSwitches::default()).await;
    h.clock.advance(time::Duration::seconds(3600 + 65));
    let r = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{V}"
        ))
        .await;
    let date = r.header("date").expect("a Date header");
    let parsed =
        time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822).unwrap();
    let want = T0 + time::Duration::seconds(3665);
    assert!(
        (parsed - want).abs() < time::Duration::SECOND,
        "{date} vs {want}"
    );
    assert!(date.ends_with(" GMT"), "IMF-fixdate: {date}");
}

/// A copy inherits its source's excluded disks; a replay of the same copy PUT (a duplicate
/// delivery racing the first) is idempotent, while naming another source is still refused.
#[tokio::test]
async fn a_repeated_copy_put_of_a_point_that_excludes_a_disk_is_idempotent() {
    let h = start(RuleSwitches::all_off()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    h.collection("rg", "src", "westus", &vm).await;
    let excluded = json!({"excludeDisks": [{"id": disk_id("rg", "vm1_DataDisk_0")}]});
    assert_eq!(
        h.point("rg", "src", "rp1", excluded.clone()).await.status,
        201
    );
    assert_eq!(h.point("rg", "src", "rp2", excluded).await.status, 201);
    h.advance(120);
    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    let copy = json!({"sourceRestorePoint": {"id": rp_id("rg", "src", "rp1")}});
    let first = h.point("rg", "dst", "rp1", copy.clone()).await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    assert_eq!(
        first.body["properties"]["excludeDisks"][0]["id"]
            .as_str()
            .map(str::to_ascii_lowercase),
        Some(disk_id("rg", "vm1_DataDisk_0").to_ascii_lowercase()),
        "the copy shows the source's excluded disk"
    );
    let replay = h.point("rg", "dst", "rp1", copy).await;
    assert_eq!(replay.status, 201, "{:#}", replay.body);
    let other = h
        .point(
            "rg",
            "dst",
            "rp1",
            json!({"sourceRestorePoint": {"id": rp_id("rg", "src", "rp2")}}),
        )
        .await;
    assert_eq!((other.status, other.code()), (409, "OperationNotAllowed"));
}

// ---------------------------------------------------------------------------------------------
// Premium SSD v2 / Ultra disks: snapshotAccessState, background copy, instant access
// ---------------------------------------------------------------------------------------------

/// The `snapshotAccessState` and `completionPercent` of each disk restore point, by disk name.
async fn access_states(h: &Harness, coll: &str, point: &str) -> Vec<(String, String, i64)> {
    let url = format!("{}&$expand=instanceView", rp("rg", coll, point));
    let body = h.get(&url).await.body;
    body["properties"]["instanceView"]["diskRestorePoints"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| {
            let id = d["id"].as_str().unwrap();
            let name = id.rsplit('/').next().unwrap();
            // `{disk}_{guid}`: keep the disk's name.
            let disk = name.rsplit_once('_').map_or(name, |(n, _)| n).to_string();
            (
                disk,
                d["snapshotAccessState"].as_str().unwrap_or("-").to_string(),
                d["replicationStatus"]["completionPercent"]
                    .as_i64()
                    .unwrap_or(-1),
            )
        })
        .collect()
}

fn state_of<'a>(states: &'a [(String, String, i64)], disk: &str) -> &'a str {
    states
        .iter()
        .find(|(d, _, _)| d == disk)
        .map(|(_, s, _)| s.as_str())
        .unwrap_or_else(|| panic!("no disk restore point of {disk} in {states:?}"))
}

fn fast_disk_config(rules: RuleSwitches) -> ArmConfig {
    ArmConfig {
        fleet: FleetSpec::empty(),
        rules,
        timings: vmrp::emulator::arm::Timings {
            local_create_secs: (60.0, 60.0),
            background_copy_secs: (600.0, 600.0),
            background_copy_secs_per_gib: 1.0,
            copy_start_secs: (60.0, 60.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn premium_v2_point_is_pending_until_its_background_copy_and_refuses_early_copies() {
    let h = start_with(
        fast_disk_config(only(|r| r.copy_needs_copyable_source = true)),
        FaultConfig::default(),
    )
    .await;
    // 1000 GiB: the background copy takes 600 s + 1000 × 1 s.
    let vm = h.vm("rg", "vm1", "westus", |s| {
        s.with_data_disk_sku(1, "vm1_v2", "PremiumV2_LRS", 1000)
    });
    h.collection("rg", "src", "westus", &vm).await;
    assert_eq!(h.point("rg", "src", "rp1", json!({})).await.status, 201);
    let states = access_states(&h, "src", "rp1").await;
    assert!(states.iter().all(|(_, s, _)| s == "Pending"), "{states:?}");
    h.advance(60);
    let states = access_states(&h, "src", "rp1").await;
    // Premium SSD snapshots are usable at once; the Premium SSD v2 one waits for its copy.
    assert_eq!(state_of(&states, "vm1_DataDisk_0"), "Available");
    assert_eq!(state_of(&states, "vm1_v2"), "Pending");
    assert!(states.iter().any(|(d, _, p)| d == "vm1_v2" && *p < 100));

    h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
        .await;
    let copy = json!({"sourceRestorePoint": {"id": rp_id("rg", "src", "rp1")}});
    let r = h.point("rg", "dst", "rp1", copy.clone()).await;
    assert_eq!(r.status, 409, "{:#}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'Pending'") && message.contains("in progress"),
        "{message}"
    );

    // 1 s before the copy completes (1600 s after the create): still Pending; then
    // Available, 100 %, and copyable.
    h.advance(600 + 1000 - 60 - 1);
    assert_eq!(
        state_of(&access_states(&h, "src", "rp1").await, "vm1_v2"),
        "Pending"
    );
    h.advance(1);
    let states = access_states(&h, "src", "rp1").await;
    assert_eq!(state_of(&states, "vm1_v2"), "Available");
    assert!(states.iter().all(|(_, _, p)| *p == 100), "{states:?}");
    let r = h.point("rg", "dst", "rp1", copy).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
}

#[tokio::test]
async fn instant_access_restores_at_once_copies_only_after_the_background_copy() {
    let h = start_with(
        fast_disk_config(only(|r| {
            r.copy_needs_copyable_source = true;
            r.instant_access_duration_range = true;
        })),
        FaultConfig::default(),
    )
    .await;
    // vm1: 6600 GiB, copy 7200 s, instant access for 60 min; vm2: 100 GiB, copy 700 s, default.
    let vm1 = h.vm("rg", "vm1", "westus", |s| {
        s.with_data_disk_sku(1, "vm1_v2", "PremiumV2_LRS", 6600)
    });
    let vm2 = h.vm("rg", "vm2", "westus", |s| {
        s.with_data_disk_sku(1, "vm2_ultra", "UltraSSD_LRS", 100)
    });
    for (coll, vm) in [("ia1", &vm1), ("ia2", &vm2)] {
        let r = h
            .put(
                &rpc("rg", coll),
                json!({"location": "westus", "properties": {"source": {"id": vm}, "instantAccess": true}}),
            )
            .await;
        assert_eq!(r.status, 201, "{:#}", r.body);
    }
    for bad in [59, 301] {
        let r = h
            .point(
                "rg",
                "ia1",
                "rp0",
                json!({"instantAccessDurationMinutes": bad}),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {:#}", r.body);
        assert_eq!(r.body["error"]["code"], "InvalidParameter");
        assert_eq!(
            r.body["error"]["target"],
            "properties.instantAccessDurationMinutes"
        );
    }
    assert_eq!(
        h.point(
            "rg",
            "ia1",
            "rp1",
            json!({"instantAccessDurationMinutes": 60})
        )
        .await
        .status,
        201
    );
    assert_eq!(h.point("rg", "ia2", "rp1", json!({})).await.status, 201);
    h.advance(60);
    assert_eq!(
        state_of(&access_states(&h, "ia1", "rp1").await, "vm1_v2"),
        "InstantAccess"
    );
    assert_eq!(
        state_of(&access_states(&h, "ia2", "rp1").await, "vm2_ultra"),
        "InstantAccess"
    );
    // Restorable, not copyable.
    h.collection("rg", "dst1", "eastus", &rpc_id("rg", "ia1"))
        .await;
    let copy1 = json!({"sourceRestorePoint": {"id": rp_id("rg", "ia1", "rp1")}});
    let r = h.point("rg", "dst1", "rp1", copy1.clone()).await;
    assert_eq!(r.status, 409, "{:#}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'InstantAccess'"));
    // vm2's copy is done at 700 s, within its 300 minutes of instant access.
    h.advance(700);
    assert_eq!(
        state_of(&access_states(&h, "ia2", "rp1").await, "vm2_ultra"),
        "AvailableWithInstantAccess"
    );
    h.collection("rg", "dst2", "eastus", &rpc_id("rg", "ia2"))
        .await;
    let copy2 = json!({"sourceRestorePoint": {"id": rp_id("rg", "ia2", "rp1")}});
    assert_eq!(h.point("rg", "dst2", "rp1", copy2).await.status, 201);
    // vm1: instant access lapses after 60 min with the copy still running: Pending again.
    h.advance(3600 - 760 + 1);
    assert_eq!(
        state_of(&access_states(&h, "ia1", "rp1").await, "vm1_v2"),
        "Pending"
    );
    h.advance(7200);
    assert_eq!(
        state_of(&access_states(&h, "ia1", "rp1").await, "vm1_v2"),
        "Available"
    );
    assert_eq!(h.point("rg", "dst1", "rp1", copy1).await.status, 201);
    // vm2 after its 300 minutes: Available.
    h.advance(300 * 60);
    assert_eq!(
        state_of(&access_states(&h, "ia2", "rp1").await, "vm2_ultra"),
        "Available"
    );
}

#[tokio::test]
async fn rule_three_premium_v2_snapshots_in_progress_per_disk() {
    let mut config = fast_disk_config(only(|r| r.fast_disk_snapshot_limit = true));
    config.timings.background_copy_secs = (7200.0, 7200.0);
    config.timings.background_copy_secs_per_gib = 0.0;
    let h = start_with(config, FaultConfig::default()).await;
    let vm = h.vm("rg", "vm1", "westus", |s| {
        s.with_data_disk_sku(1, "vm1_v2", "PremiumV2_LRS", 256)
    });
    h.collection("rg", "src", "westus", &vm).await;
    for i in 1..=3 {
        let r = h.point("rg", "src", &format!("rp{i}"), json!({})).await;
        assert_eq!(r.status, 201, "rp{i}: {:#}", r.body);
        h.advance(600);
    }
    let r = h.point("rg", "src", "rp4", json!({})).await;
    assert_eq!(r.status, 409, "{:#}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("vm1_v2") && message.contains("in progress"),
        "{message}"
    );
    // A point that leaves the disk out is not limited by it.
    let r = h
        .point(
            "rg",
            "src",
            "rp4-without",
            json!({"excludeDisks": [{"id": disk_id("rg", "vm1_v2")}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    // Once rp1's copy completed (7200 s after it), a third slot is free again.
    h.advance(7200 - 1800);
    let r = h.point("rg", "src", "rp4", json!({})).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
}

#[tokio::test]
async fn rule_instant_access_creates_in_flight_per_subscription_and_region() {
    let h = start_with(
        fast_disk_config(only(|r| {
            r.instant_access_concurrency = true;
            r.max_instant_access_in_flight = 2;
        })),
        FaultConfig::default(),
    )
    .await;
    let mut colls = Vec::new();
    for (i, (location, ia)) in [
        ("westus", true),
        ("westus", true),
        ("westus", true),
        ("eastus", true),
        ("westus", false),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("vm{i}");
        let vm = h.vm("rg", &name, location, |s| {
            s.with_data_disk_sku(1, &format!("{name}_v2"), "PremiumV2_LRS", 64)
        });
        let coll = format!("c{i}");
        let r = h
            .put(
                &rpc("rg", &coll),
                json!({"location": location, "properties": {"source": {"id": vm}, "instantAccess": ia}}),
            )
            .await;
        assert_eq!(r.status, 201, "{:#}", r.body);
        colls.push(coll);
    }
    assert_eq!(h.point("rg", &colls[0], "rp", json!({})).await.status, 201);
    assert_eq!(h.point("rg", &colls[1], "rp", json!({})).await.status, 201);
    let r = h.point("rg", &colls[2], "rp", json!({})).await;
    assert_eq!(r.status, 409, "{:#}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrently"));
    // Another region, or no instant access: not counted.
    assert_eq!(h.point("rg", &colls[3], "rp", json!({})).await.status, 201);
    assert_eq!(h.point("rg", &colls[4], "rp", json!({})).await.status, 201);
    // Once the first two are created, the third goes through.
    h.advance(60);
    assert_eq!(h.point("rg", &colls[2], "rp", json!({})).await.status, 201);
}

/// `--background-load 0.3`: other tools spend 30 % of every bucket, so the remaining-count
/// header vmrp paces by reports less from the first request on, and the 429 comes after 175
/// reads instead of 250 (source in docs/emulator-arm.md, "Shared budget").
#[tokio::test]
async fn background_load_reports_less_remaining_and_throttles_earlier() {
    let mut reads_before_429 = Vec::new();
    for share in [0.0, 0.3] {
        let config = ArmConfig {
            fleet: FleetSpec::empty(),
            throttle: ThrottleConfig {
                background: vmrp::emulator::arm::throttle::BackgroundLoad {
                    share,
                    bursty: false,
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let h = start_with(config, FaultConfig::default()).await;
        h.vm("rg", "vm1", "westus", |s| s);
        let path = format!("{}?{V}", vm_id("rg", "vm1"));
        let first = h.get(&path).await;
        assert_eq!(first.status, 200);
        let want = if share == 0.0 { "249" } else { "174" };
        assert_eq!(
            first.header("x-ms-ratelimit-remaining-subscription-reads"),
            Some(want),
            "share {share}"
        );
        let mut n = 1;
        loop {
            let r = h.get(&path).await;
            if r.status == 429 {
                assert_eq!(r.code(), "SubscriptionRequestsThrottled");
                break;
            }
            n += 1;
            assert!(n <= 300, "never throttled");
        }
        reads_before_429.push(n);
    }
    assert_eq!(reads_before_429, vec![250, 175]);
}

/// The `arm.outage` fault: every ARM request in the window is answered 503 ServiceUnavailable
/// with Retry-After and is not processed (no token taken, nothing created); before and after
/// it ARM serves as usual.
#[tokio::test]
async fn an_outage_answers_503_for_its_window_then_recovers() {
    let faults =
        FaultConfig::from_json(r#"{"arm": {"outage": {"at": "PT1H", "for": "PT10M"}}}"#).unwrap();
    let h = start_with(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        faults,
    )
    .await;
    let vm = h.vm("rg", "vm1", "westus", |s| s);
    let path = format!("{}?{V}", vm_id("rg", "vm1"));
    assert_eq!(h.get(&path).await.status, 200);
    h.advance(3600);
    let down = h.get(&path).await;
    assert_eq!((down.status, down.code()), (503, "ServiceUnavailable"));
    assert_eq!(down.header("retry-after"), Some("10"));
    assert_eq!(
        down.header("x-ms-ratelimit-remaining-subscription-reads"),
        None,
        "ARM answered before metering"
    );
    assert_eq!(h.collection("rg", "c", "westus", &vm).await.status, 503);
    h.advance(599);
    assert_eq!(h.get(&path).await.status, 503, "still inside the window");
    h.advance(1);
    let up = h.get(&path).await;
    assert_eq!(up.status, 200, "recovered at the end of the window");
    assert!(up
        .header("x-ms-ratelimit-remaining-subscription-reads")
        .is_some());
    assert_eq!(h.collection("rg", "c", "westus", &vm).await.status, 201);
    assert_eq!(h.emu.counters().faults_injected["outage"], 3);
}

// ---- Copy rules (learn.microsoft.com virtual-machines/virtual-machines-restore-points-copy,
// Limitations; docs/emulator-arm.md) ----

/// A harness with a VM in westus, its collection `src` with point `rp1` settled, and an
/// eastus copy collection `dst`.
async fn copy_setup(config: ArmConfig, customise: impl FnOnce(VmSeed) -> VmSeed) -> Harness {
    let h = start_with(config, FaultConfig::default()).await;
    let vm = h.vm("rg", "vm1", "westus", customise);
    assert_eq!(h.collection("rg", "src", "westus", &vm).await.status, 201);
    assert_eq!(h.point("rg", "src", "rp1", json!({})).await.status, 201);
    h.advance(600);
    assert_eq!(
        h.collection("rg", "dst", "eastus", &rpc_id("rg", "src"))
            .await
            .status,
        201
    );
    h
}

fn copy_body(source: &str) -> Value {
    json!({"sourceRestorePoint": {"id": source}})
}

fn empty_fleet() -> ArmConfig {
    ArmConfig {
        fleet: FleetSpec::empty(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_source_is_copied_into_a_region_once_and_the_copy_shows_its_creation_time() {
    let h = copy_setup(empty_fleet(), |s| s).await;
    let source = rp_id("rg", "src", "rp1");
    let source_created = h.get(&rp("rg", "src", "rp1")).await.body["properties"]["timeCreated"]
        .as_str()
        .unwrap()
        .to_string();
    let first = h.point("rg", "dst", "rp1", copy_body(&source)).await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    // The target shows the source's creation time, not when the copy was made (10 min later).
    assert_eq!(
        first.body["properties"]["timeCreated"].as_str(),
        Some(source_created.as_str())
    );
    // The same PUT again is a replay (idempotent), not a second copy.
    assert_eq!(
        h.point("rg", "dst", "rp1", copy_body(&source)).await.status,
        201
    );
    // Under another name, in the same collection or another one of the same region: refused
    // for good, naming the existing copy.
    let again = h.point("rg", "dst", "rp1-again", copy_body(&source)).await;
    assert_eq!(
        (again.status, again.code()),
        (409, "OperationNotAllowed"),
        "{:#}",
        again.body
    );
    let msg = again.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("only once") && msg.contains("/restorePoints/rp1"),
        "{msg}"
    );
    assert!(
        !msg.contains("in progress"),
        "a transient-looking message would be retried: {msg}"
    );
    h.advance(3 * 3600);
    assert_eq!(
        h.collection("rg", "dst2", "eastus", &rpc_id("rg", "src"))
            .await
            .status,
        201
    );
    let other = h.point("rg", "dst2", "rp1", copy_body(&source)).await;
    assert_eq!((other.status, other.code()), (409, "OperationNotAllowed"));
    // Another region is another matter.
    assert_eq!(
        h.collection("rg", "dst3", "northeurope", &rpc_id("rg", "src"))
            .await
            .status,
        201
    );
    assert_eq!(
        h.point("rg", "dst3", "rp1", copy_body(&source))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn a_deleted_copy_does_not_block_a_new_copy_of_its_source() {
    let h = copy_setup(empty_fleet(), |s| s).await;
    let source = rp_id("rg", "src", "rp1");
    assert_eq!(
        h.point("rg", "dst", "rp1", copy_body(&source)).await.status,
        201
    );
    h.advance(3 * 3600);
    assert_eq!(h.delete(&rp("rg", "dst", "rp1")).await.status, 202);
    h.advance(600);
    let retry = h.point("rg", "dst", "rp1-r1", copy_body(&source)).await;
    assert_eq!(retry.status, 201, "{:#}", retry.body);
}

#[tokio::test]
async fn copies_in_flight_per_subscription_and_region_are_limited_by_disks() {
    let mut config = empty_fleet();
    // Two disks per point (OS + one data disk); room for 3 disks in flight.
    config.rules.copies_in_flight_per_region = 3;
    config.timings.copy_duration_secs = (7200.0, 7200.0);
    let h = copy_setup(config, |s| s).await;
    let first = h
        .point("rg", "dst", "rp1", copy_body(&rp_id("rg", "src", "rp1")))
        .await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    // A second VM's copy into the same region would make 4 disks in flight: throttled.
    let vm2 = h.vm("rg", "vm2", "westus", |s| s);
    h.collection("rg", "src2", "westus", &vm2).await;
    h.point("rg", "src2", "rp1", json!({})).await;
    h.advance(600);
    h.collection("rg", "dst2", "eastus", &rpc_id("rg", "src2"))
        .await;
    let second = h
        .point("rg", "dst2", "rp1", copy_body(&rp_id("rg", "src2", "rp1")))
        .await;
    assert_eq!(
        (second.status, second.code()),
        (429, "OperationNotAllowed"),
        "{:#}",
        second.body
    );
    assert_eq!(
        second.body["error"]["details"][0]["code"],
        "TooManyRequests"
    );
    assert!(second.header("retry-after").is_some());
    // Another region has its own budget.
    h.collection("rg", "dst2w", "northeurope", &rpc_id("rg", "src2"))
        .await;
    assert_eq!(
        h.point("rg", "dst2w", "rp1", copy_body(&rp_id("rg", "src2", "rp1")))
            .await
            .status,
        201
    );
    // Once the first copy has replicated, the eastus copy goes through.
    h.advance(7200);
    let later = h
        .point("rg", "dst2", "rp1", copy_body(&rp_id("rg", "src2", "rp1")))
        .await;
    assert_eq!(later.status, 201, "{:#}", later.body);
}

#[tokio::test]
async fn a_copy_replicating_longer_than_two_weeks_is_terminated() {
    let mut config = empty_fleet();
    config.timings.copy_duration_secs = (20.0 * 86400.0, 20.0 * 86400.0);
    let h = copy_setup(config, |s| s).await;
    assert_eq!(
        h.point("rg", "dst", "rp1", copy_body(&rp_id("rg", "src", "rp1")))
            .await
            .status,
        201
    );
    let url = format!("{}&$expand=instanceView", rp("rg", "dst", "rp1"));
    h.advance(13 * 86400);
    let b = h.get(&url).await.body;
    let d = &b["properties"]["instanceView"]["diskRestorePoints"][0]["replicationStatus"];
    assert_eq!(d["status"]["code"], "ReplicationState/inProgress");
    assert!(d["completionPercent"].as_i64().unwrap() < 100);
    h.advance(86400);
    let b = h.get(&url).await.body;
    for d in b["properties"]["instanceView"]["diskRestorePoints"]
        .as_array()
        .unwrap()
    {
        let rs = &d["replicationStatus"];
        assert_eq!(rs["status"]["code"], "ReplicationState/failed", "{rs:#}");
        // No detail and no partial percent for a failed disk restore point copy.
        assert!(rs["completionPercent"].is_null(), "{rs:#}");
        assert!(rs["status"]["message"].is_null(), "{rs:#}");
    }
    assert_eq!(
        b["properties"]["instanceView"]["statuses"][0]["code"],
        "ReplicationState/failed"
    );
}

const DES_W: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/keys/providers/Microsoft.Compute/diskEncryptionSets/des-westus";
const DES_E: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/keys/providers/Microsoft.Compute/diskEncryptionSets/des-eastus";

fn cmk_copy_body(source: &str, os_set: Option<&str>, data_set: Option<&str>) -> Value {
    let enc = |s: Option<&str>| match s {
        Some(id) => json!({"diskRestorePoint": {"encryption": {"diskEncryptionSet": {"id": id}}}}),
        None => json!({}),
    };
    let data = enc(data_set);
    json!({
        "sourceRestorePoint": {"id": source},
        "sourceMetadata": {"storageProfile": {"osDisk": enc(os_set), "dataDisks": [data]}}
    })
}

#[tokio::test]
async fn a_copy_of_a_cmk_disk_names_an_encryption_set_of_the_target_region() {
    let h = copy_setup(empty_fleet(), |mut s| {
        s.disk_encryption_set = Some(DES_W.to_string());
        s
    })
    .await;
    for (id, loc) in [(DES_W, "westus"), (DES_E, "eastus")] {
        h.emu
            .add_encryption_set(json!({"id": id, "location": loc}))
            .unwrap();
    }
    let source = rp_id("rg", "src", "rp1");
    // The source point records the disks' set.
    let src = h.get(&rp("rg", "src", "rp1")).await.body;
    assert_eq!(
        src["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]["managedDisk"]
            ["diskEncryptionSet"]["id"],
        DES_W
    );
    // No target set: refused (no silent downgrade to platform keys), naming the disk's field.
    let none = h.point("rg", "dst", "rp1", copy_body(&source)).await;
    assert_eq!(
        (none.status, none.code()),
        (400, "InvalidParameter"),
        "{:#}",
        none.body
    );
    assert_eq!(
        none.body["error"]["target"],
        "properties.sourceMetadata.storageProfile.osDisk.diskRestorePoint.encryption"
    );
    // The data disk still lacks one.
    let half = h
        .point(
            "rg",
            "dst",
            "rp1",
            cmk_copy_body(&source, Some(DES_E), None),
        )
        .await;
    assert_eq!(half.status, 400);
    assert!(half.body["error"]["target"]
        .as_str()
        .unwrap()
        .contains("dataDisks[0]"));
    // A set of another region (the source's) does not do.
    let wrong = h
        .point(
            "rg",
            "dst",
            "rp1",
            cmk_copy_body(&source, Some(DES_W), Some(DES_W)),
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not found in region"));
    // Both disks name the eastus set: copied, and the copy records its encryption per disk.
    let ok = h
        .point(
            "rg",
            "dst",
            "rp1",
            cmk_copy_body(&source, Some(DES_E), Some(DES_E)),
        )
        .await;
    assert_eq!(ok.status, 201, "{:#}", ok.body);
    let copy = h.get(&rp("rg", "dst", "rp1")).await.body;
    let sp = &copy["properties"]["sourceMetadata"]["storageProfile"];
    for disk in [&sp["osDisk"], &sp["dataDisks"][0]] {
        let enc = &disk["diskRestorePoint"]["encryption"];
        assert_eq!(enc["diskEncryptionSet"]["id"], DES_E, "{disk:#}");
        assert_eq!(enc["type"], "EncryptionAtRestWithCustomerKey");
    }
}

#[tokio::test]
async fn a_fleet_with_cmk_fraction_seeds_encrypted_disks_and_their_sets() {
    let config = ArmConfig {
        fleet: FleetSpec {
            count: 10,
            cmk_fraction: 1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(config, FaultConfig::default()).await;
    let vms = h.emu.list_vms();
    assert_eq!(vms.len(), 10);
    for vm in vms {
        let des = vm
            .properties
            .as_ref()
            .unwrap()
            .storage_profile
            .as_ref()
            .unwrap()
            .os_disk
            .as_ref()
            .unwrap()
            .managed_disk
            .as_ref()
            .unwrap()
            .disk_encryption_set
            .as_ref()
            .map(|d| d.id.clone());
        let region = vm.location.clone().unwrap();
        assert!(
            des.as_deref()
                .is_some_and(|d| d.ends_with(&format!("des-{region}"))),
            "{des:?}"
        );
    }
}
