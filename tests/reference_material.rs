//! A fresh clone passes its own tests: the reference material the suite reads is vendored under
//! `reference/` (its README names each file's origin and licence), and nothing in the project
//! reads the folder that sat beside the repository while it was being built.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The folders the tests, the emulator and `oav` read, each with the files it must hold.
const VENDORED: &[(&str, usize)] = &[
    ("reference/functions-custom-handler/payloads", 6),
    ("reference/arm/examples/restore-points", 16),
    ("reference/arm/examples/virtual-machines", 5),
    ("reference/eventgrid/event-grid-schema", 3),
    ("reference/eventgrid/cloud-events-schema", 3),
    (
        "reference/arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01",
        3,
    ),
];

#[test]
fn the_reference_material_is_in_the_repository() {
    for (dir, want) in VENDORED {
        let path = Path::new(ROOT).join(dir);
        let json = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(json, *want, "{dir}: JSON files");
    }
    let readme = std::fs::read_to_string(Path::new(ROOT).join("reference/README.md")).unwrap();
    for dir in VENDORED {
        let top = dir
            .0
            .trim_start_matches("reference/")
            .split('/')
            .next()
            .unwrap();
        assert!(
            readme.contains(&format!("`{top}/")),
            "reference/README.md names no origin for {top}/"
        );
    }
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "node_modules" || name == ".venv" || name == "corpus" {
            continue;
        }
        if path.is_dir() {
            files_below(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn nothing_reads_the_folder_beside_the_repository() {
    // Spelled in two pieces so that this file does not match its own search.
    let needle = format!("{}/{}", "..", "shared");
    let mut files = vec![Path::new(ROOT).join("README.md")];
    for dir in [
        "src", "crates", "tests", "scripts", "bench", "infra", "fuzz", "docs", "examples",
    ] {
        files_below(&Path::new(ROOT).join(dir), &mut files);
    }
    assert!(files.len() > 50, "walked only {} files", files.len());
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle)))
        .map(|f| f.strip_prefix(ROOT).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "these files read {needle}: {offenders:?}"
    );
}
