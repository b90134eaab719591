//! The coverage report a person would rather look at: `vmrp status --html FILE` and
//! `vmrp local --html FILE` write one self-contained HTML file (inline CSS and JavaScript, the
//! data as an embedded JSON document; nothing fetched from the network).
//!
//! The page shows a VM × region grid, each cell coloured by the age of the newest settled point
//! (fresh / late / missing, the same judgement as `vmrp status`) and always carrying a symbol and
//! text too (✔ / ▲ / ✖, never colour alone; Okabe–Ito colours, distinguishable with the common
//! colour-vision deficiencies); copies in flight with their percent; failures with their reasons;
//! and a timeline of recent ticks. Sortable (click a column), filterable (text, state), grouped
//! (by home region or state) and paged (250 rows at a time), so 5,000 VMs stay readable. The view
//! can be set from the URL fragment, e.g. `report.html#state=missing&group=region&q=vm-00`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::commands::status::{Coverage, StatusRow};
use crate::inventory::{CollectionRole, Inventory, PointStatus};

/// One failure with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub vm: String,
    pub region: String,
    pub role: String,
    /// The point's name or the tick it belonged to.
    pub what: String,
    pub reason: String,
}

/// Points of one tick, by state (local and copies together).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickSummary {
    pub tick: String,
    pub settled: usize,
    pub in_flight: usize,
    pub failed: usize,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub generated_at: OffsetDateTime,
    pub schedule: String,
    pub rows: Vec<StatusRow>,
    pub failures: Vec<Failure>,
    pub ticks: Vec<TickSummary>,
}

/// The newest `limit` ticks found in point names (`rp-{tick}`), oldest first.
pub fn ticks_from_inventory(inventory: &Inventory, limit: usize) -> Vec<TickSummary> {
    let mut by_tick: BTreeMap<OffsetDateTime, TickSummary> = BTreeMap::new();
    for vm in &inventory.vms {
        for (_, p) in vm.points() {
            let Some((tick, _)) = crate::names::parse_restore_point_name(&p.name) else {
                continue;
            };
            let t = by_tick.entry(tick).or_insert_with(|| TickSummary {
                tick: crate::schedule::rfc3339(tick),
                ..Default::default()
            });
            match p.status {
                PointStatus::Settled => t.settled += 1,
                PointStatus::InProgress { .. } => t.in_flight += 1,
                PointStatus::Failed => t.failed += 1,
            }
        }
    }
    let skip = by_tick.len().saturating_sub(limit);
    by_tick.into_values().skip(skip).collect()
}

/// Failures `vmrp status` can see: points ARM shows as Failed (the reason is in vmrp's logs),
/// and restore drills that failed after their last pass (the reason from the drill table).
pub fn failures_from_rows(rows: &[StatusRow]) -> Vec<Failure> {
    rows.iter()
        .flat_map(|r| {
            let points = r.failed.iter().map(move |p| Failure {
                vm: r.vm.clone(),
                region: r.region.clone(),
                role: role_name(r.role).into(),
                what: p.clone(),
                reason: "provisioningState Failed (see the vmrp::report event for the reason)"
                    .into(),
            });
            let drill = r.drill.as_ref().and_then(|d| {
                d.last_failed.map(|t| Failure {
                    vm: r.vm.clone(),
                    region: r.region.clone(),
                    role: role_name(r.role).into(),
                    what: format!("restore drill {}", crate::schedule::rfc3339(t)),
                    reason: d
                        .last_failure_reason
                        .clone()
                        .unwrap_or_else(|| "no reason".into()),
                })
            });
            points.chain(drill)
        })
        .collect()
}

fn role_name(role: CollectionRole) -> &'static str {
    match role {
        CollectionRole::Local => "local",
        CollectionRole::Copy => "copy",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cell {
    role: &'static str,
    state: &'static str,
    age: Option<i64>,
    point: Option<String>,
    in_flight: Vec<(String, Option<i32>)>,
    failed: usize,
    /// The last passed drill (and a newer failure), as `vmrp status` prints it.
    drill: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VmData {
    vm: String,
    home: String,
    cells: BTreeMap<String, Cell>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageData<'a> {
    title: &'a str,
    generated_at: String,
    schedule: &'a str,
    regions: Vec<String>,
    vms: Vec<VmData>,
    failures: &'a [Failure],
    ticks: &'a [TickSummary],
}

fn state_name(c: Coverage) -> &'static str {
    match c {
        Coverage::Ok => "ok",
        Coverage::Late => "late",
        Coverage::Missing => "missing",
    }
}

/// The page's data: one entry per VM, a cell per region.
fn page_data(report: &Report) -> PageData<'_> {
    let mut vms: BTreeMap<String, VmData> = BTreeMap::new();
    let mut regions: BTreeSet<String> = BTreeSet::new();
    for r in &report.rows {
        regions.insert(r.region.clone());
        let vm = vms.entry(r.vm.clone()).or_insert_with(|| VmData {
            vm: r.vm.clone(),
            home: String::new(),
            cells: BTreeMap::new(),
        });
        if r.role == CollectionRole::Local {
            vm.home = r.region.clone();
        }
        vm.cells.insert(
            r.region.clone(),
            Cell {
                role: role_name(r.role),
                state: state_name(r.coverage),
                age: r.age_minutes,
                point: r.newest_settled.clone(),
                in_flight: r.in_flight.clone(),
                failed: r.failed.len(),
                drill: r
                    .drill
                    .as_ref()
                    .map(|d| crate::commands::status::drill_cell(Some(d))),
            },
        );
    }
    PageData {
        title: &report.title,
        generated_at: crate::schedule::rfc3339(report.generated_at),
        schedule: &report.schedule,
        regions: regions.into_iter().collect(),
        vms: vms.into_values().collect(),
        failures: &report.failures,
        ticks: &report.ticks,
    }
}

/// Text safe inside HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let data = serde_json::to_string(&page_data(report)).expect("page data serialises");
    // `<` only occurs inside JSON strings, where `\u003c` is the same text: the embedded document
    // cannot end its <script> element early.
    let data = data.replace('<', "\\u003c");
    let title = escape(&report.title);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{title}</h1><p id="meta"></p></header>
<section aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2><div id="summary"></div><table id="regions" class="compact"></table></section>
<section aria-labelledby="h-grid"><h2 id="h-grid">Coverage per VM and region</h2>
<form id="controls" onsubmit="return false">
<label>Find VM <input id="q" type="search" placeholder="name contains…"></label>
<label>Show <select id="state"><option value="all">all VMs</option><option value="problems">late or missing</option><option value="missing">missing</option><option value="late">late</option><option value="ok">fresh</option></select></label>
<label>Group by <select id="group"><option value="none">nothing</option><option value="region">home region</option><option value="state">state</option></select></label>
<span class="legend"><span class="c-ok">✔ fresh</span> <span class="c-late">▲ late</span> <span class="c-missing">✖ missing</span> <span class="na">· not expected</span> <span>⟳ in flight</span></span>
</form>
<p id="shown" role="status"></p>
<table id="grid"></table>
<button id="more" type="button" hidden>Show more</button>
</section>
<section aria-labelledby="h-flight"><h2 id="h-flight">Copies and points in flight</h2><table id="flight" class="compact"></table></section>
<section aria-labelledby="h-fail"><h2 id="h-fail">Failures</h2><table id="failures" class="compact"></table></section>
<section aria-labelledby="h-ticks"><h2 id="h-ticks">Recent ticks</h2><div id="ticks"></div></section>
<script id="vmrp-data" type="application/json">{data}</script>
<script>{JS}</script>
</body>
</html>
"#
    )
}

/// Writes the page to `path`.
pub fn write(path: &std::path::Path, report: &Report) -> Result<(), String> {
    std::fs::write(path, render(report)).map_err(|e| format!("--html {}: {e}", path.display()))
}

const CSS: &str = r#"
:root{--ok:#009E73;--late:#E69F00;--missing:#D55E00;--flight:#0072B2;--fg:#1b1b1b;--bg:#fff;--muted:#5a5a5a;--line:#d8d8d8}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0 1.5rem 2rem}
h1{font-size:1.4rem;margin:1rem 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
#meta,#shown{color:var(--muted);margin:.2rem 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:2px 6px;text-align:left;white-space:nowrap}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus{outline:2px solid var(--flight)}
th[aria-sort=ascending] button::after{content:" ▴"}th[aria-sort=descending] button::after{content:" ▾"}
.c-ok{background:#d4f0e7;color:#00573f}.c-late{background:#fbe9c6;color:#6b4700}.c-missing{background:#f9d9c9;color:#8a2f00;font-weight:600}
.na{color:#9a9a9a;text-align:center}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid var(--line);border-radius:6px;padding:.5rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.6rem}
tr.group th{background:#f1f1f1}
#controls{display:flex;gap:1rem;flex-wrap:wrap;align-items:center;margin:.3rem 0}
.legend span{padding:1px 5px;border-radius:3px}
.bar{display:flex;height:18px;width:420px;border:1px solid var(--line)}.bar div{height:100%}
.b-ok{background:var(--ok)}.b-flight{background:var(--flight)}.b-failed{background:var(--missing)}
.tick{display:flex;gap:.8rem;align-items:center;margin:2px 0}.tick code{min-width:12rem}
progress{width:8rem;vertical-align:middle}
td.reason{white-space:normal;max-width:60rem}
"#;

const JS: &str = r##"
"use strict";
const D = JSON.parse(document.getElementById("vmrp-data").textContent);
const S = {q: "", state: "all", group: "none", sort: "state", dir: 1, limit: 250};
const RANK = {missing: 0, late: 1, ok: 2};
const SYM = {ok: "✔", late: "▲", missing: "✖"};
const LABEL = {ok: "fresh", late: "late", missing: "missing"};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
function human(m) {
  if (m == null) return "";
  if (m < 60) return m + "m";
  if (m < 48 * 60) return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  return Math.floor(m / 1440) + "d" + Math.floor(m / 60) % 24 + "h";
}
function worst(v) {
  let w = 2;
  for (const r of D.regions) { const c = v.cells[r]; if (c) w = Math.min(w, RANK[c.state]); }
  return ["missing", "late", "ok"][w];
}
for (const v of D.vms) v.worst = worst(v);
function readHash() {
  new URLSearchParams(location.hash.slice(1)).forEach((val, k) => {
    if (k === "limit" || k === "dir") S[k] = Number(val) || S[k]; else if (k in S) S[k] = val;
  });
  $("q").value = S.q; $("state").value = S.state; $("group").value = S.group;
}
function matches(v) {
  if (S.q && !v.vm.toLowerCase().includes(S.q.toLowerCase())) return false;
  if (S.state === "all") return true;
  if (S.state === "problems") return v.worst !== "ok";
  return v.worst === S.state;
}
function key(v) {
  if (S.sort === "vm") return v.vm;
  if (S.sort === "state") return RANK[v.worst] * 1e9 - maxAge(v);
  const c = v.cells[S.sort];
  if (!c) return 4e9;
  return c.state === "missing" ? -1 : -(c.age || 0);
}
function maxAge(v) { let a = 0; for (const r in v.cells) a = Math.max(a, v.cells[r].age || 0); return a; }
function cmp(a, b) { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : a.vm < b.vm ? -1 : 1) * S.dir; }
function cell(v, r) {
  const c = v.cells[r];
  if (!c) return `<td class="na" aria-label="${esc(r)}: not expected">·</td>`;
  const flight = c.inFlight.map(([n, p]) => p == null ? "⟳" : `⟳${p}%`).join(" ");
  const text = c.state === "missing" ? "missing" : human(c.age);
  const label = `${r} ${c.role}: ${LABEL[c.state]}` + (c.age != null ? `, newest settled point ${human(c.age)} old` : ", no settled point") + (flight ? ", in flight " + flight : "");
  return `<td class="c-${c.state}" data-state="${c.state}" aria-label="${esc(label)}" title="${esc((c.point || "no settled point") + " (" + c.role + ")" + (c.drill ? "; drill: " + c.drill : ""))}">${SYM[c.state]} ${text}${flight ? " " + flight : ""}${c.failed ? " ⚠" + c.failed : ""}</td>`;
}
function head() {
  const cols = [["vm", "VM"], ["state", "state"], ...D.regions.map((r) => [r, r])];
  return "<thead><tr>" + cols.map(([k, t]) => `<th aria-sort="${S.sort === k ? (S.dir > 0 ? "ascending" : "descending") : "none"}"><button type="button" data-sort="${esc(k)}">${esc(t)}</button></th>`).join("") + "</tr></thead>";
}
function row(v) {
  return `<tr data-vm="${esc(v.vm)}" data-state="${v.worst}"><th scope="row">${esc(v.vm)}</th><td class="c-${v.worst}">${SYM[v.worst]} ${LABEL[v.worst]}</td>${D.regions.map((r) => cell(v, r)).join("")}</tr>`;
}
function renderGrid() {
  const list = D.vms.filter(matches).sort(cmp);
  const shown = list.slice(0, S.limit);
  let body = "";
  if (S.group === "none") body = shown.map(row).join("");
  else {
    const groups = new Map();
    for (const v of shown) { const g = S.group === "region" ? v.home : LABEL[v.worst]; if (!groups.has(g)) groups.set(g, []); groups.get(g).push(v); }
    for (const [g, vs] of [...groups].sort()) {
      const n = {ok: 0, late: 0, missing: 0}; vs.forEach((v) => n[v.worst]++);
      body += `<tr class="group"><th colspan="${D.regions.length + 2}">${esc(g)}: ${vs.length} VMs (✔ ${n.ok} fresh, ▲ ${n.late} late, ✖ ${n.missing} missing)</th></tr>` + vs.map(row).join("");
    }
  }
  $("grid").innerHTML = head() + "<tbody>" + body + "</tbody>";
  $("shown").textContent = `Showing ${shown.length} of ${list.length} matching VMs (${D.vms.length} in all).`;
  $("shown").dataset.shown = shown.length; $("shown").dataset.matching = list.length;
  $("more").hidden = shown.length >= list.length;
  for (const b of document.querySelectorAll("th button")) b.onclick = () => { const k = b.dataset.sort; S.dir = S.sort === k ? -S.dir : 1; S.sort = k; update(); };
}
function renderSummary() {
  const n = {ok: 0, late: 0, missing: 0}, per = {};
  for (const v of D.vms) for (const r in v.cells) { const s = v.cells[r].state; n[s]++; (per[r] = per[r] || {ok: 0, late: 0, missing: 0})[s]++; }
  const total = n.ok + n.late + n.missing;
  $("summary").innerHTML = `<div class="cards"><div class="card">VMs<b id="n-vms">${D.vms.length}</b></div>` +
    ["ok", "late", "missing"].map((s) => `<div class="card c-${s}">${SYM[s]} ${LABEL[s]}<b id="n-${s}">${n[s]}</b>VM-regions</div>`).join("") +
    `<div class="card">covered<b id="n-percent">${total ? Math.floor(1000 * n.ok / total) / 10 : 100}%</b></div></div>`;
  $("regions").innerHTML = "<thead><tr><th>region</th><th>✔ fresh</th><th>▲ late</th><th>✖ missing</th><th>covered</th></tr></thead><tbody>" +
    Object.keys(per).sort().map((r) => { const p = per[r], t = p.ok + p.late + p.missing; return `<tr data-region="${esc(r)}"><th scope="row">${esc(r)}</th><td>${p.ok}</td><td>${p.late}</td><td>${p.missing}</td><td>${Math.floor(1000 * p.ok / t) / 10}%</td></tr>`; }).join("") + "</tbody>";
}
function renderFlight() {
  const rows = [];
  for (const v of D.vms) for (const r in v.cells) for (const [p, pc] of v.cells[r].inFlight) rows.push([v.vm, r, v.cells[r].role, p, pc]);
  $("flight").innerHTML = rows.length ? "<thead><tr><th>VM</th><th>region</th><th>role</th><th>point</th><th>progress</th></tr></thead><tbody>" +
    rows.slice(0, 500).map(([vm, r, role, p, pc]) => `<tr data-flight="${esc(vm)}"><td>${esc(vm)}</td><td>${esc(r)}</td><td>${role}</td><td>${esc(p)}</td><td>${pc == null ? "⟳ started" : `<progress max="100" value="${pc}">${pc}%</progress> ${pc}%`}</td></tr>`).join("") + "</tbody>"
    : "<tbody><tr><td>Nothing in flight.</td></tr></tbody>";
}
// ARM ids in reasons shortened to their last segment (the full text is the cell's title).
const shortIds = (s) => s.replace(/\/subscriptions\/[^\s:;,()']+\/([^\/\s:;,()']+)/g, "…/$1");
function renderFailures() {
  const list = D.failures.filter((f) => !S.q || f.vm.toLowerCase().includes(S.q.toLowerCase()));
  $("failures").innerHTML = list.length ? "<thead><tr><th>VM</th><th>region</th><th>role</th><th>point / tick</th><th>reason</th></tr></thead><tbody>" +
    list.slice(0, 1000).map((f) => `<tr data-failure="${esc(f.vm)}"><td>${esc(f.vm)}</td><td>${esc(f.region)}</td><td>${esc(f.role)}</td><td>${esc(f.what)}</td><td class="reason" title="${esc(f.reason)}">✖ ${esc(shortIds(f.reason))}</td></tr>`).join("") + "</tbody>"
    : "<tbody><tr><td>No failures.</td></tr></tbody>";
}
function renderTicks() {
  const max = Math.max(1, ...D.ticks.map((t) => t.settled + t.inFlight + t.failed));
  $("ticks").innerHTML = D.ticks.length ? D.ticks.map((t) => {
    const w = (n) => (100 * n / max).toFixed(1) + "%";
    return `<div class="tick" data-tick="${esc(t.tick)}"><code>${esc(t.tick)}</code><div class="bar" role="img" aria-label="${t.settled} settled, ${t.inFlight} in flight, ${t.failed} failed"><div class="b-ok" style="width:${w(t.settled)}"></div><div class="b-flight" style="width:${w(t.inFlight)}"></div><div class="b-failed" style="width:${w(t.failed)}"></div></div><span>✔ ${t.settled} settled · ⟳ ${t.inFlight} in flight · ✖ ${t.failed} failed</span></div>`;
  }).join("") : "<p>No ticks yet.</p>";
}
function update() {
  const h = new URLSearchParams({q: S.q, state: S.state, group: S.group, sort: S.sort, dir: S.dir}).toString();
  if (location.hash.slice(1) !== h) history.replaceState(null, "", "#" + h);
  renderGrid(); renderFailures();
}
$("meta").textContent = `Generated ${D.generatedAt} · schedule ${D.schedule} · ${D.vms.length} VMs in ${D.regions.length} regions`;
$("q").oninput = (e) => { S.q = e.target.value; S.limit = 250; update(); };
$("state").onchange = (e) => { S.state = e.target.value; S.limit = 250; update(); };
$("group").onchange = (e) => { S.group = e.target.value; update(); };
$("more").onclick = () => { S.limit += 250; renderGrid(); };
readHash();
if (!location.hash && D.vms.length > 500) S.state = "problems", $("state").value = "problems";
renderSummary(); renderFlight(); renderTicks(); renderGrid(); renderFailures();
document.body.dataset.rendered = "true";
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::CollectionRole;
    use time::macros::datetime;

    fn row(vm: &str, region: &str, role: CollectionRole, coverage: Coverage) -> StatusRow {
        StatusRow {
            vm: vm.into(),
            region: region.into(),
            role,
            newest_settled: (coverage != Coverage::Missing).then(|| "rp-20261125T0800Z".into()),
            newest_created: None,
            age_minutes: (coverage != Coverage::Missing).then_some(270),
            coverage,
            in_flight: vec![],
            failed: vec![],
            vm_id: format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/{vm}"),
            drill: None,
        }
    }

    #[test]
    fn the_page_is_self_contained_and_embeds_the_data_safely() {
        let mut rows = vec![
            row("vm1", "westeurope", CollectionRole::Local, Coverage::Ok),
            row(
                "vm1",
                "swedencentral",
                CollectionRole::Copy,
                Coverage::Missing,
            ),
        ];
        rows[1].in_flight = vec![("rp-20261125T1200Z".into(), Some(40))];
        let report = Report {
            title: "coverage <test>".into(),
            generated_at: datetime!(2026-11-25 12:30 UTC),
            schedule: "0 0 */4 * * *".into(),
            rows,
            failures: vec![Failure {
                vm: "vm1".into(),
                region: "westeurope".into(),
                role: "local".into(),
                what: "rp-x".into(),
                reason: "</script><script>alert(1)</script>".into(),
            }],
            ticks: vec![],
        };
        let html = render(&report);
        // No fetches: no external script, style, image or link.
        for needle in ["src=", "href=", "@import", "url(", "http://", "https://"] {
            assert!(!html.contains(needle), "{needle} in the page");
        }
        assert!(html.contains("<title>coverage &lt;test&gt;</title>"));
        // The reason cannot close the data element.
        assert_eq!(html.matches("</script>").count(), 2);
        let start = html.find(r#"type="application/json">"#).unwrap() + 24;
        let end = start + html[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(
            data["regions"],
            serde_json::json!(["swedencentral", "westeurope"])
        );
        assert_eq!(data["vms"][0]["home"], "westeurope");
        assert_eq!(data["vms"][0]["cells"]["swedencentral"]["state"], "missing");
        assert_eq!(
            data["vms"][0]["cells"]["swedencentral"]["inFlight"][0][1],
            40
        );
        assert_eq!(
            data["failures"][0]["reason"],
            "</script><script>alert(1)</script>"
        );
    }
}
