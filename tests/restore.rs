//! `vmrp restore` end to end against the in-process emulator (the binary, with the emulator's
//! managed identity), and the emulator's restore rules through its HTTP API. The emulator plays
//! the operator's role (`rules::operator_role_actions`): restore never runs as the app identity.

use std::process::Command;

use serde_json::{json, Value};
use time::macros::datetime;
use vmrp::emulator::arm::{rules, ArmConfig, FleetSpec, RuleSwitches};
use vmrp::emulator::server::{self, BusAuth, EmulatorConfig, RunningEmulator};

const BIN: &str = env!("CARGO_BIN_EXE_vmrp");
const API: &str = vmrp::azure::models::API_VERSION;
const DISKS_API: &str = "2024-03-02";
const HOME: &str = "westeurope";
const DR: &str = "swedencentral";

struct Env {
    emulator: RunningEmulator,
    sub: String,
    vm: String,
    collection: String,
    http: reqwest::Client,
    token: String,
}

impl Env {
    fn url(&self, path: &str, api: &str) -> String {
        format!(
            "{}{path}?api-version={api}",
            self.emulator.urls.arm.trim_end_matches('/')
        )
    }
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        api: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(path, api))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let rsp = req.send().await.unwrap();
        let status = rsp.status().as_u16();
        let text = rsp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn put(&self, path: &str, api: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, api, Some(body)).await
    }
    async fn get(&self, path: &str, api: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, api, None).await
    }
    fn rg_path(&self, rg: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{rg}", self.sub)
    }
    /// Takes a local point and lets it settle.
    async fn point(&self, name: &str) -> String {
        let id = format!("{}/restorePoints/{name}", self.collection);
        let (s, b) = self.put(&id, API, json!({"properties": {}})).await;
        assert_eq!(s, 201, "{b}");
        id
    }
    fn settle(&self, d: time::Duration) {
        self.emulator.clock.advance(d);
    }
    /// The disks the emulator holds in `rg`.
    fn disks_in(&self, rg: &str) -> Vec<Value> {
        let needle = format!("/resourcegroups/{}/", rg.to_ascii_lowercase());
        self.emulator.arm.dump()["disks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .contains(&needle)
            })
            .cloned()
            .collect()
    }
    fn restore(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let settings = self.emulator.handler_settings(BusAuth::Sas);
        let mut cmd = Command::new(BIN);
        cmd.arg("restore")
            .args(["--vm", &self.vm, "--arm-endpoint", &self.emulator.urls.arm])
            .args(["--arm-audience", "https://management.azure.com"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn");
        for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"] {
            cmd.env(k, &settings[k]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
    fn restore_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = self.restore(&all);
        assert_eq!(code, Some(0), "{args:?}\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// One Linux VM in westeurope with two data disks, a local collection, the operator's role.
async fn env(rules: RuleSwitches) -> Env {
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: datetime!(2026-12-01 03:00 UTC),
        seed: 18,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: 1,
                regions: vec![HOME.into()],
                min_data_disks: 2,
                max_data_disks: 2,
                ephemeral_os_fraction: 0.0,
                shared_disk_fraction: 0.0,
                ultra_disk_fraction: 0.0,
                premium_v2_fraction: 0.0,
                seed: 18,
                ..FleetSpec::default()
            },
            rules,
            ..ArmConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let vm = emulator.arm.list_vms()[0].id.clone().unwrap();
    let id = vmrp::azure::ResourceId::parse(&vm).unwrap();
    let sub = id.subscription().to_string();
    for rg in ["restored", "restored2", "dr"] {
        emulator.arm.add_resource_group(&sub, rg, HOME);
    }
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let collection = format!(
        "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Compute/restorePointCollections/rpc-home",
        id.resource_group().unwrap()
    );
    let env = Env {
        emulator,
        sub,
        vm: vm.clone(),
        collection: collection.clone(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        token,
    };
    let (s, b) = env
        .put(
            &collection,
            API,
            json!({"location": HOME, "properties": {"source": {"id": vm}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    env
}

async fn operator_env() -> Env {
    // The tests also read the NIC they check (restore itself never does).
    let mut actions = rules::operator_role_actions();
    actions.push("Microsoft.Network/networkInterfaces/read".into());
    env(RuleSwitches {
        role_actions: Some(actions),
        ..RuleSwitches::default()
    })
    .await
}

fn writes(e: &Env) -> u64 {
    e.emulator.arm.counters().writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_writes_nothing_then_disks_mode_restores_each_disk_from_its_point() {
    let e = operator_env().await;
    let p1 = e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let before_writes = writes(&e);
    let before_disks = e.emulator.arm.dump()["disks"].clone();

    let plan = e.restore_json(&["--resource-group", "restored", "--plan"]);
    assert_eq!(plan["planned"], true);
    assert_eq!(plan["point"], json!(p1));
    let calls = plan["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "OS + 2 data disks: {plan:#}");
    assert!(calls.iter().all(|c| c["kind"] == "createDisk"));
    assert_eq!(writes(&e), before_writes, "--plan wrote");
    assert_eq!(e.emulator.arm.dump()["disks"], before_disks);
    let (code, text, err) = e.restore(&["--resource-group", "restored", "--plan"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.contains("nothing written") && text.contains("PUT /subscriptions/"),
        "{text}"
    );

    let out = e.restore_json(&["--resource-group", "restored"]);
    let disks = e.disks_in("restored");
    assert_eq!(disks.len(), 3);
    // Each restored disk: created from its disk restore point, with the source's SKU, size and zone.
    let (_, point) = e.get(&p1, API).await;
    let meta = &point["properties"]["sourceMetadata"]["storageProfile"];
    let (_, vm) = e.get(&e.vm, API).await;
    let sources = std::iter::once(&meta["osDisk"]).chain(meta["dataDisks"].as_array().unwrap());
    for src in sources {
        let rp = src["diskRestorePoint"]["id"].as_str().unwrap();
        let d = disks
            .iter()
            .find(|d| d["properties"]["creationData"]["sourceResourceId"] == rp)
            .unwrap_or_else(|| panic!("no disk from {rp}: {disks:#?}"));
        assert_eq!(d["properties"]["creationData"]["createOption"], "Restore");
        assert_eq!(d["sku"]["name"], src["managedDisk"]["storageAccountType"]);
        assert_eq!(d["zones"], vm["zones"], "the VM's zone");
        let (_, original) = e
            .get(src["managedDisk"]["id"].as_str().unwrap(), DISKS_API)
            .await;
        assert_eq!(
            d["properties"]["diskSizeGB"],
            original["properties"]["diskSizeGB"]
        );
        assert!(out["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == d["id"] && o["adopted"] == false));
    }
    // --sku and --zone override the source's.
    e.restore_json(&[
        "--resource-group",
        "restored2",
        "--sku",
        "StandardSSD_LRS",
        "--zone",
        "3",
    ]);
    for d in e.disks_in("restored2") {
        assert_eq!(d["sku"]["name"], "StandardSSD_LRS");
        assert_eq!(d["zones"], json!(["3"]));
    }
    e.emulator.stop().await.unwrap();
}

/// Interrupted at the second disk (a disk of its name, from elsewhere, stands in the way: a clear
/// error, nothing overwritten); once cleared, the re-run adopts the first disk and makes the rest:
/// same names, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_resumes_with_the_same_names_and_no_duplicates() {
    let e = operator_env().await;
    e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let plan = e.restore_json(&["--resource-group", "restored", "--plan"]);
    let second = plan["calls"][1]["id"].as_str().unwrap().to_string();
    e.settle(time::Duration::hours(4));
    let other = e.point("p2").await;
    e.settle(time::Duration::minutes(10));
    // A disk from another point under the second name.
    let (_, p2) = e.get(&other, API).await;
    let foreign = p2["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]
        ["diskRestorePoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = e
        .put(&second, DISKS_API, json!({"location": HOME, "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": foreign}}}))
        .await;
    assert_eq!(s, 200, "{b}");
    let point = plan["point"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (code, _, err) = e.restore(&["--resource-group", "restored", "--point", &point]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exists and was not made from"), "{err}");
    assert_eq!(
        e.disks_in("restored").len(),
        2,
        "first disk made, the foreign one untouched"
    );
    // The emulator refuses to change a disk's source too.
    let first_src = plan["calls"][1]["source"].clone();
    let (s, b) = e
        .put(&second, DISKS_API, json!({"location": HOME, "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": first_src}}}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("PropertyChangeNotAllowed"))
    );
    let (s, _) = e
        .send(reqwest::Method::DELETE, &second, DISKS_API, None)
        .await;
    assert_eq!(s, 200);

    let out = e.restore_json(&["--resource-group", "restored", "--point", &point]);
    let adopted: Vec<bool> = out["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["adopted"].as_bool().unwrap())
        .collect();
    assert_eq!(adopted, [true, false, false]);
    let ids = |v: &Value| -> Vec<String> {
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&out), ids(&plan), "same names");
    assert_eq!(e.disks_in("restored").len(), 3, "no duplicates");
    // A third run changes nothing.
    let w = writes(&e);
    e.restore_json(&["--resource-group", "restored", "--point", &point]);
    assert_eq!(writes(&e), w);
    assert_eq!(e.disks_in("restored").len(), 3);
    e.emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_vm_from_the_newest_copy_in_another_region() {
    let e = operator_env().await;
    let p1 = e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let copy_collection = format!(
        "{}/providers/Microsoft.Compute/restorePointCollections/rpc-dr",
        e.rg_path("dr")
    );
    let (s, b) = e
        .put(
            &copy_collection,
            API,
            json!({"location": DR, "properties": {"source": {"id": e.collection}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let copy = format!("{copy_collection}/restorePoints/p1-copy");
    let (s, b) = e
        .put(
            &copy,
            API,
            json!({"properties": {"sourceRestorePoint": {"id": p1}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    e.settle(time::Duration::minutes(5));
    // Still replicating: refused by vmrp, and by the emulator if asked directly.
    let (code, _, err) = e.restore(&[
        "--resource-group",
        "dr",
        "--region",
        DR,
        "--point",
        "p1-copy",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not fully replicated"), "{err}");
    let (_, cp) = e.get(&copy, API).await;
    let drp = cp["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]["diskRestorePoint"]
        ["id"]
        .clone();
    let direct = format!(
        "{}/providers/Microsoft.Compute/disks/direct",
        e.rg_path("dr")
    );
    let (s, b) = e
        .put(&direct, DISKS_API, json!({"location": DR, "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": drp}}}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still being copied"),
        "{b}"
    );

    e.settle(time::Duration::hours(3));
    let subnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/vnet-dr/subnets/default",
        e.rg_path("dr")
    );
    let out = e.restore_json(&[
        "--resource-group",
        "dr",
        "--region",
        DR,
        "--new-vm",
        "vm-dr",
        "--subnet",
        &subnet,
    ]);
    assert_eq!(out["copy"], true);
    assert_eq!(out["point"], json!(copy));
    let new_vm = out["newVm"].as_str().unwrap();
    let (s, vm) = e.get(new_vm, API).await;
    assert_eq!(s, 200);
    assert_eq!(vm["location"], DR);
    let meta = &cp["properties"]["sourceMetadata"];
    assert_eq!(vm["properties"]["hardwareProfile"], meta["hardwareProfile"]);
    let os = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        .as_str()
        .unwrap();
    assert!(
        os.contains("/resourceGroups/dr/") && os.ends_with("-rp-p1-copy"),
        "{os}"
    );
    assert_eq!(
        vm["properties"]["storageProfile"]["dataDisks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, disk) = e.get(os, DISKS_API).await;
    assert_eq!(disk["managedBy"], json!(new_vm));
    assert_eq!(disk["location"], DR);
    let nic = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap();
    let (s, nic_doc) = e.get(nic, "2024-05-01").await;
    assert_eq!(s, 200);
    assert!(
        !nic_doc.to_string().contains("publicIPAddress"),
        "{nic_doc}"
    );
    assert_eq!(
        nic_doc["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"],
        json!(subnet)
    );
    // Re-run: the VM is adopted.
    let w = writes(&e);
    e.restore_json(&[
        "--resource-group",
        "dr",
        "--region",
        DR,
        "--new-vm",
        "vm-dr",
        "--subnet",
        &subnet,
    ]);
    assert_eq!(
        writes(&e) - w,
        1,
        "only the NIC PUT (idempotent) is sent again"
    );
    // Region down and the VM gone with it: the copy alone is enough, given --region.
    assert!(e
        .emulator
        .arm
        .remove_vm(&vmrp::azure::ResourceId::parse(&e.vm).unwrap()));
    let (code, _, err) = e.restore(&["--resource-group", "restored"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pass --region"), "{err}");
    let out = e.restore_json(&["--resource-group", "restored", "--region", DR]);
    assert_eq!(out["copy"], true);
    assert_eq!(out["disks"].as_array().unwrap().len(), 3);
    e.emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_swaps_the_disks_of_the_deallocated_vm_and_starts_it() {
    let e = operator_env().await;
    e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let (_, before) = e.get(&e.vm, API).await;
    let old_os = before["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rg = vmrp::azure::ResourceId::parse(&e.vm)
        .unwrap()
        .resource_group()
        .unwrap()
        .to_string();

    let (code, _, err) = e.restore(&["--resource-group", &rg, "--in-place"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--yes"), "{err}");
    // The emulator refuses an OS disk swap on a running VM (Azure: deallocate first).
    let plan = e.restore_json(&["--resource-group", &rg, "--in-place", "--plan"]);
    let kinds: Vec<&str> = plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "createDisk",
            "createDisk",
            "createDisk",
            "deallocate",
            "swapDisks",
            "start"
        ]
    );

    let out = e.restore_json(&["--resource-group", &rg, "--in-place", "--yes"]);
    let new_os = out["calls"][0]["id"].as_str().unwrap();
    let (_, vm) = e.get(&e.vm, API).await;
    assert_eq!(
        vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"],
        json!(new_os)
    );
    let data: Vec<&str> = vm["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["managedDisk"]["id"].as_str().unwrap())
        .collect();
    assert!(data.iter().all(|d| d.contains("-rp-p1")), "{data:?}");
    let (_, view) = e.get(&format!("{}/instanceView", e.vm), API).await;
    assert!(
        view.to_string().contains("PowerState/running"),
        "started again: {view}"
    );
    let ops = e.emulator.arm.counters().requests_by_operation;
    assert_eq!(ops.get("VirtualMachines_Deallocate"), Some(&1), "{ops:?}");
    assert_eq!(ops.get("VirtualMachines_Start"), Some(&1), "{ops:?}");
    let (s, old) = e.get(&old_os, DISKS_API).await;
    assert_eq!(s, 200, "originals kept");
    assert!(old.get("managedBy").is_none(), "released: {old}");

    // Re-run: nothing to swap again, no new disk.
    let disks = e.emulator.arm.dump()["disks"].as_array().unwrap().len();
    e.restore_json(&["--resource-group", &rg, "--in-place", "--yes"]);
    assert_eq!(
        e.emulator.arm.dump()["disks"].as_array().unwrap().len(),
        disks
    );

    // A newer point in place with --delete-originals: the replaced disks go.
    e.settle(time::Duration::hours(4));
    e.point("p2").await;
    e.settle(time::Duration::minutes(10));
    let out = e.restore_json(&[
        "--resource-group",
        &rg,
        "--in-place",
        "--yes",
        "--delete-originals",
    ]);
    let deleted: Vec<&str> = out["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "deleteDisk")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 3);
    for d in deleted {
        assert!(d.contains("-rp-p1"), "{d}");
        assert_eq!(e.get(d, DISKS_API).await.0, 404, "{d} deleted");
    }
    // Azure swaps the OS disk of a running VM too (no deallocation needed), but never to
    // another OS type.
    let (_, vm) = e.get(&e.vm, API).await;
    let os_type = vm["properties"]["storageProfile"]["osDisk"]["osType"]
        .as_str()
        .unwrap()
        .to_string();
    let other_type = if os_type == "Linux" {
        "Windows"
    } else {
        "Linux"
    };
    let foreign = format!(
        "{}/providers/Microsoft.Compute/disks/foreign-os",
        e.rg_path(&rg)
    );
    e.emulator
        .arm
        .add_disk(json!({"id": foreign, "name": "foreign-os", "location": HOME, "sku": {"name": "Premium_LRS"},
            "properties": {"osType": other_type, "diskSizeGB": 30, "diskState": "Unattached"}}))
        .unwrap();
    let swap_to = |disk: &str| {
        let mut body = vm.clone();
        body["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"] = json!(disk);
        body
    };
    let (s, b) = e.put(&e.vm, API, swap_to(&foreign)).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("OperationNotAllowed")),
        "{b}"
    );
    let (_, view) = e.get(&format!("{}/instanceView", e.vm), API).await;
    assert!(view.to_string().contains("PowerState/running"));
    let (s, b) = e.put(&e.vm, API, swap_to(&old_os)).await;
    assert_eq!(s, 200, "a running VM's OS disk swaps: {b}");
    assert_eq!(
        b["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"],
        json!(old_os)
    );
    e.emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_write_nothing() {
    let e = operator_env().await;
    let (code, _, err) = e.restore(&["--resource-group", "restored"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no settled point in westeurope"), "{err}");
    let p1 = e.point("p1").await;
    // Still being created.
    let (code, _, err) = e.restore(&["--resource-group", "restored", "--point", "p1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not settled yet"), "{err}");
    let (_, p) = e.get(&p1, API).await;
    let drp = p["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]["diskRestorePoint"]
        ["id"]
        .clone();
    let disk = format!(
        "{}/providers/Microsoft.Compute/disks/early",
        e.rg_path("restored")
    );
    let (s, b) = e
        .put(&disk, DISKS_API, json!({"location": HOME, "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": drp}}}))
        .await;
    assert_eq!(s, 409, "{b}");
    e.settle(time::Duration::minutes(10));
    // --at before the point.
    let (code, _, err) = e.restore(&[
        "--resource-group",
        "restored",
        "--at",
        "2026-11-30T00:00:00Z",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("created at or before"), "{err}");
    // A disk restore point restores in its own region only.
    let (s, b) = e
        .put(&disk, DISKS_API, json!({"location": DR, "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": drp}}}))
        .await;
    assert_eq!(
        (s, b["error"]["target"].as_str()),
        (400, Some("location")),
        "{b}"
    );
    assert!(e.disks_in("restored").is_empty());
    // A disk attached to a VM is not deleted.
    let (_, vm) = e.get(&e.vm, API).await;
    let os = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = e.send(reqwest::Method::DELETE, &os, DISKS_API, None).await;
    assert_eq!(s, 409, "{b}");
    e.emulator.stop().await.unwrap();
}

/// The app identity's role (the default) cannot restore: restore is the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_role_cannot_restore() {
    let e = env(RuleSwitches::default()).await;
    e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let (code, _, err) = e.restore(&["--resource-group", "restored"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("AuthorizationFailed") && err.contains("Microsoft.Compute/disks/write"),
        "{err}"
    );
    e.emulator.stop().await.unwrap();
}

/// A drill restores the newest settled point as disks into the drill group, times it and deletes
/// what it made (the emulator's state proves it); without a settled point it fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_restores_then_cleans_up_and_a_failed_one_says_why() {
    let e = operator_env().await;
    let client = {
        let endpoint = url::Url::parse(&e.emulator.urls.arm).unwrap();
        let credential = vmrp::azure::credential::StaticToken::new(
            &e.token,
            std::time::Duration::from_secs(3600),
        );
        let mut config = vmrp::azure::client::ArmClientConfig::new(
            endpoint,
            Some("https://management.azure.com".into()),
            credential,
        );
        config.loopback_only = true;
        vmrp::azure::client::ArmClient::new(config).unwrap()
    };
    let vm = vmrp::azure::ResourceId::parse(&e.vm).unwrap();
    let failed = vmrp::drill::drill_vm(&client, &vm, HOME, false, "dr").await;
    assert!(!failed.passed);
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("no settled point"),
        "{failed:?}"
    );
    e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let w = writes(&e);
    let passed = vmrp::drill::drill_vm(&client, &vm, HOME, false, "dr").await;
    assert!(passed.passed && passed.cleaned, "{passed:?}");
    assert_eq!(passed.disks.len(), 3);
    assert!(passed.seconds_to_restore.is_some());
    assert_eq!(writes(&e) - w, 3, "three disk PUTs");
    assert!(e.disks_in("dr").is_empty(), "cleaned up");
    // The VM and its collection are untouched.
    let (_, vm_doc) = e.get(&e.vm, API).await;
    assert!(
        !vm_doc["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
            .as_str()
            .unwrap()
            .contains("-rp-")
    );
    // No copy in swedencentral: failed, with the reason.
    let copy = vmrp::drill::drill_vm(&client, &vm, DR, true, "dr").await;
    assert!(
        !copy.passed && copy.reason.as_deref().unwrap().contains("swedencentral"),
        "{copy:?}"
    );
    e.emulator.stop().await.unwrap();
}

/// A customer-managed-key disk: restored at home with the source's disk encryption set (the
/// emulator copies it from the disk restore point); from a copy region only with a set named
/// for that region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_sets_follow_the_source_at_home_and_must_be_named_in_a_copy_region() {
    let e = operator_env().await;
    let des = format!(
        "{}/providers/Microsoft.Compute/diskEncryptionSets/des-home",
        e.rg_path("restored")
    );
    let (_, mut vm) = e.get(&e.vm, API).await;
    vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["diskEncryptionSet"] =
        json!({ "id": des });
    e.emulator.arm.add_vm(vm).unwrap();
    let p1 = e.point("p1").await;
    e.settle(time::Duration::minutes(10));
    let out = e.restore_json(&["--resource-group", "restored"]);
    let os = out["disks"][0]["id"].as_str().unwrap();
    let (_, disk) = e.get(os, DISKS_API).await;
    assert_eq!(
        disk["properties"]["encryption"]["diskEncryptionSetId"],
        json!(des)
    );
    assert_eq!(
        disk["properties"]["encryption"]["type"],
        "EncryptionAtRestWithCustomerKey"
    );
    let (_, data) = e
        .get(out["disks"][1]["id"].as_str().unwrap(), DISKS_API)
        .await;
    assert_eq!(
        data["properties"]["encryption"]["type"],
        "EncryptionAtRestWithPlatformKey"
    );

    let copies = format!(
        "{}/providers/Microsoft.Compute/restorePointCollections/rpc-dr",
        e.rg_path("dr")
    );
    let (s, _) = e
        .put(
            &copies,
            API,
            json!({"location": DR, "properties": {"source": {"id": e.collection}}}),
        )
        .await;
    assert_eq!(s, 201);
    // The copy of a CMK disk names a set of the target region (as vmrp's copy does from
    // `copies[].encryptionSets`); the emulator refuses it otherwise.
    let des_dr = format!(
        "{}/providers/Microsoft.Compute/diskEncryptionSets/des-dr",
        e.rg_path("dr")
    );
    e.emulator
        .arm
        .add_encryption_set(vmrp::emulator::arm::fleet::encryption_set_doc(
            &des_dr, DR, 1,
        ))
        .unwrap();
    let (s, _) = e
        .put(
            &format!("{copies}/restorePoints/p1-copy"),
            API,
            json!({"properties": {
                "sourceRestorePoint": {"id": p1},
                "sourceMetadata": {"storageProfile": {"osDisk": {"diskRestorePoint": {"encryption": {
                    "diskEncryptionSet": {"id": des_dr},
                    "type": "EncryptionAtRestWithCustomerKey"
                }}}}}
            }}),
        )
        .await;
    assert_eq!(s, 201);
    e.settle(time::Duration::hours(3));
    let (code, _, err) = e.restore(&["--resource-group", "dr", "--region", DR]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--disk-encryption-set") && err.contains(DR),
        "{err}"
    );
    assert!(e.disks_in("dr").is_empty());
    let out = e.restore_json(&[
        "--resource-group",
        "dr",
        "--region",
        DR,
        "--disk-encryption-set",
        &des_dr,
    ]);
    for d in out["disks"].as_array().unwrap() {
        let (_, disk) = e.get(d["id"].as_str().unwrap(), DISKS_API).await;
        assert_eq!(
            disk["properties"]["encryption"]["diskEncryptionSetId"],
            json!(des_dr)
        );
        assert_eq!(disk["location"], DR);
    }
    e.emulator.stop().await.unwrap();
}
