//! Tests of `vmrp package`: the layout, the executable bit, the zip, and which `--out` folders are refused.

use super::*;
use std::io::Read;

const HOST_JSON: &str = r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"vmrp","arguments":["serve"]}}}"#;

/// The first bytes of a little-endian x86_64 PIE (what cargo builds on Linux).
fn elf_header() -> Vec<u8> {
    let mut h = b"\x7fELF\x02\x01\x01".to_vec();
    h.resize(16, 0);
    h.extend_from_slice(&ET_DYN.to_le_bytes());
    h.extend_from_slice(&0x3eu16.to_le_bytes());
    h
}

/// An app root with host.json and a function.json for each of `names`.
fn app_root(names: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("host.json"), HOST_JSON).unwrap();
    for name in names {
        let dir = root.path().join("functions").join(name);
        fs::create_dir_all(&dir).unwrap();
        let json = format!(r#"{{"bindings":[{{"type":"x","direction":"in","name":"{name}"}}]}}"#);
        fs::write(dir.join("function.json"), json).unwrap();
    }
    root
}

fn fake_binary(dir: &Path) -> PathBuf {
    let path = dir.join("fake-vmrp");
    let mut bytes = elf_header();
    bytes.extend_from_slice(b" fake handler");
    fs::write(&path, bytes).unwrap();
    // Deliberately not executable: the package must set the bit itself.
    set_mode(&path, 0o644).unwrap();
    path
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
#[cfg(unix)]
fn package_holds_host_json_each_function_folder_and_an_executable_vmrp() {
    let root = app_root(&functions::ALL);
    let binary = fake_binary(root.path());
    let out = root.path().join("dist").join("vmrp");

    let report = assemble(root.path(), &binary, &out, true).unwrap();

    assert_eq!(
        fs::read_to_string(out.join("host.json")).unwrap(),
        HOST_JSON
    );
    let mut expected: Vec<String> = functions::ALL.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(report.functions, expected);
    for name in functions::ALL {
        let packaged = fs::read(out.join(name).join("function.json")).unwrap();
        let source = fs::read(
            root.path()
                .join("functions")
                .join(name)
                .join("function.json"),
        )
        .unwrap();
        assert_eq!(packaged, source, "{name}/function.json");
    }
    assert_eq!(
        fs::read(out.join("vmrp")).unwrap(),
        fs::read(&binary).unwrap()
    );
    assert_eq!(mode(&out.join("vmrp")), 0o755);
    assert_eq!(report.binary_bytes, fs::metadata(&binary).unwrap().len());

    let zip_path = root.path().join("dist").join("vmrp.zip");
    assert_eq!(report.zip.as_deref(), Some(zip_path.as_path()));
    let mut archive = zip::ZipArchive::new(fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = archive.file_names().map(str::to_string).collect();
    names.sort();
    let mut want: Vec<String> = functions::ALL
        .iter()
        .map(|n| format!("{n}/function.json"))
        .collect();
    want.push("host.json".into());
    want.push("vmrp".into());
    want.sort();
    assert_eq!(names, want, "the zip holds the package, not its marker");
    assert!(out.join(MARKER).is_file());
    {
        let entry = archive.by_name("vmrp").unwrap();
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o755));
    }
    let mut host = String::new();
    archive
        .by_name("host.json")
        .unwrap()
        .read_to_string(&mut host)
        .unwrap();
    assert_eq!(host, HOST_JSON);
    assert_eq!(
        archive
            .by_name("host.json")
            .unwrap()
            .unix_mode()
            .map(|m| m & 0o777),
        Some(0o644)
    );
}

#[test]
fn repackaging_replaces_the_previous_package() {
    // The earlier package had a function this one no longer has.
    let mut earlier: Vec<&str> = functions::ALL.to_vec();
    earlier.push("Stale");
    let old_root = app_root(&earlier);
    let root = app_root(&functions::ALL);
    let binary = fake_binary(root.path());
    let out = root.path().join("out");
    assemble(old_root.path(), &binary, &out, false).unwrap();
    assert!(out.join("Stale").join("function.json").is_file());

    assemble(root.path(), &binary, &out, false).unwrap();

    assert!(
        !out.join("Stale").exists(),
        "a function folder from an earlier package survived"
    );
    assert!(out.join("host.json").is_file());
}

#[test]
fn refuses_to_replace_a_directory_that_is_not_a_package() {
    let root = app_root(&functions::ALL);
    let binary = fake_binary(root.path());
    let out = root.path().join("precious");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("notes.txt"), "keep me").unwrap();

    let err = assemble(root.path(), &binary, &out, false).unwrap_err();

    assert!(matches!(err, PackageError::NotAPackage { .. }), "{err}");
    assert_eq!(
        fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
}

/// Regression: a folder holding a host.json among the user's own files was wiped.
#[test]
fn only_a_folder_holding_exactly_an_earlier_package_is_replaced() {
    let root = app_root(&functions::ALL);
    let binary = fake_binary(root.path());
    // (what the folder holds, whether it is refused)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 7] = [
        (
            "a project with a host.json",
            &[
                ("host.json", "{}"),
                ("Cargo.toml", "[package]"),
                ("src/main.rs", "fn main() {}"),
                (".git/HEAD", "ref: refs/heads/main"),
            ],
            true,
        ),
        (
            "a forged marker",
            &[
                (MARKER, "host.json\n"),
                ("host.json", "{}"),
                ("notes.txt", "mine"),
            ],
            true,
        ),
        ("an empty folder", &[], false),
        (
            "a package from before the marker",
            &[
                ("host.json", "{}"),
                ("vmrp", "x"),
                ("OnVmChanged/function.json", "{}"),
            ],
            false,
        ),
        (
            "an unmarked package with a file added",
            &[("host.json", "{}"), ("vmrp", "x"), ("notes.txt", "mine")],
            true,
        ),
        (
            "an earlier package",
            &[
                (MARKER, "host.json\nvmrp\n"),
                ("host.json", "{}"),
                ("vmrp", "x"),
            ],
            false,
        ),
        (
            "an earlier package with a file added",
            &[
                (MARKER, "host.json\n"),
                ("host.json", "{}"),
                ("extra/keep.txt", "mine"),
            ],
            true,
        ),
    ];
    for (what, files, refused) in cases {
        let out = root.path().join(what.replace(' ', "-"));
        fs::create_dir_all(&out).unwrap();
        for (path, text) in files {
            let path = out.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let result = assemble(root.path(), &binary, &out, false);
        if refused {
            let err = result.expect_err(what);
            assert!(
                matches!(err, PackageError::NotAPackage { .. }),
                "{what}: {err}"
            );
            for (path, text) in files {
                assert_eq!(
                    &fs::read_to_string(out.join(path)).unwrap(),
                    text,
                    "{what}: {path} kept"
                );
            }
        } else {
            result.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(out.join("vmrp").is_file(), "{what}");
        }
    }
}

#[test]
fn never_the_app_root_or_a_folder_holding_it() {
    let parent = tempfile::tempdir().unwrap();
    let root_path = parent.path().join("repo");
    let root = app_root(&functions::ALL);
    fs::rename(root.path(), &root_path).unwrap();
    // Marker and all: even a folder that looks like a package is refused when it is the root.
    fs::write(root_path.join(MARKER), "host.json\n").unwrap();
    let binary = fake_binary(parent.path());
    for out in [
        root_path.clone(),
        root_path.join("."),
        parent.path().to_path_buf(),
        root_path.join("functions").join(".."),
    ] {
        let err = assemble(&root_path, &binary, &out, false).unwrap_err();
        assert!(
            matches!(err, PackageError::NotAPackage { .. }),
            "{}: {err}",
            out.display()
        );
        assert!(root_path.join("functions").is_dir(), "{}", out.display());
    }
}

#[test]
fn out_with_a_trailing_slash_zips_beside_the_folder() {
    let root = app_root(&functions::ALL);
    let binary = fake_binary(root.path());
    let out = format!("{}/", root.path().join("dist").join("vmrp").display());

    let report = assemble(root.path(), &binary, Path::new(&out), true).unwrap();

    let zip = root.path().join("dist").join("vmrp.zip");
    assert_eq!(report.zip.as_deref(), Some(zip.as_path()));
    assert!(zip.is_file());
    assert!(!root.path().join("dist").join("vmrp").join(".zip").exists());
}

#[test]
fn the_binary_must_be_an_executable_elf_file() {
    let root = app_root(&functions::ALL);
    let mut object = elf_header();
    object[16] = 1; // ET_REL: an object file
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("hostname", b"box\n".to_vec(), "not an executable ELF file"),
        (
            "script",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "starting \"#!/bin/s",
        ),
        ("object", object, "ELF type 1"),
    ];
    for (name, bytes, shown) in cases {
        let path = root.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = root.path().join("out");
        let err = assemble(root.path(), &path, &out, false).unwrap_err();
        assert!(
            matches!(err, PackageError::NotAnExecutable { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(shown), "{name}: {err}");
        assert!(!out.exists(), "{name}: nothing written");
    }
}

#[test]
fn host_json_must_start_vmrp_serve() {
    for arguments in [r#""arguments":["local"],"#, r#""arguments":[],"#, ""] {
        let root = app_root(&functions::ALL);
        let host = format!(
            r#"{{"customHandler":{{"description":{{{arguments}"defaultExecutablePath":"vmrp"}}}}}}"#
        );
        fs::write(root.path().join("host.json"), host).unwrap();
        let binary = fake_binary(root.path());
        let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("arguments") && text.contains("expected [\"serve\"]"),
            "{text}"
        );
    }
}

#[test]
fn a_missing_function_is_named() {
    let root = app_root(&functions::ALL[..4]);
    let binary = fake_binary(root.path());

    let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();

    let text = err.to_string();
    assert!(text.contains(functions::ALL[4]), "{text}");
    assert!(
        !root.path().join("out").exists(),
        "output written despite a bad input"
    );
}

#[test]
fn a_function_folder_without_function_json_names_the_path() {
    let root = app_root(&functions::ALL);
    fs::create_dir_all(root.path().join("functions").join("Extra")).unwrap();
    let binary = fake_binary(root.path());

    let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();

    assert!(err.to_string().contains("Extra/function.json"), "{err}");
}

#[test]
fn invalid_function_json_names_the_file() {
    let root = app_root(&functions::ALL);
    let path = root
        .path()
        .join("functions")
        .join("OnVmChanged")
        .join("function.json");
    fs::write(&path, "{ not json").unwrap();
    let binary = fake_binary(root.path());

    let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();

    assert!(matches!(err, PackageError::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("OnVmChanged/function.json"),
        "{err}"
    );
}

#[test]
fn function_json_without_bindings_is_rejected() {
    let root = app_root(&functions::ALL);
    let path = root
        .path()
        .join("functions")
        .join("PollRestorePoint")
        .join("function.json");
    fs::write(&path, r#"{"disabled": false}"#).unwrap();
    let binary = fake_binary(root.path());

    let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();

    assert!(err.to_string().contains("\"bindings\" array"), "{err}");
}

#[test]
fn host_json_must_start_the_packaged_binary() {
    let cases = [
        (
            r#"{"customHandler":{"description":{"defaultExecutablePath":"handler"}}}"#,
            "\"handler\"",
        ),
        (r#"{"version":"2.0"}"#, "missing"),
    ];
    for (host_json, shown) in cases {
        let root = app_root(&functions::ALL);
        fs::write(root.path().join("host.json"), host_json).unwrap();
        let binary = fake_binary(root.path());

        let err = assemble(root.path(), &binary, &root.path().join("out"), false).unwrap_err();

        let text = err.to_string();
        assert!(text.contains("defaultExecutablePath"), "{text}");
        assert!(text.contains(shown), "{text}");
        assert!(text.contains("expected \"vmrp\""), "{text}");
    }
}

#[test]
fn a_missing_binary_names_its_path() {
    let root = app_root(&functions::ALL);
    let err = assemble(
        root.path(),
        &root.path().join("nope"),
        &root.path().join("out"),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn the_deploy_build_is_the_handler_crate() {
    let cases: [(Option<&str>, &[&str]); 2] = [
        (
            None,
            &[
                "build",
                "--release",
                "-p",
                "vmrp-handler",
                "--bin",
                "vmrp-handler",
            ],
        ),
        (
            Some("x86_64-unknown-linux-gnu"),
            &[
                "build",
                "--release",
                "-p",
                "vmrp-handler",
                "--bin",
                "vmrp-handler",
                "--target",
                "x86_64-unknown-linux-gnu",
            ],
        ),
    ];
    for (target, want) in cases {
        let mut want: Vec<&str> = want.to_vec();
        let pos = if target.is_some() {
            want.len() - 2
        } else {
            want.len()
        };
        want.splice(pos..pos, ["--target-dir", "/t/deploy"]);
        assert_eq!(deploy_build_args(target, Path::new("/t/deploy")), want);
    }
}

#[test]
fn release_binary_path_follows_cargo_layout() {
    let dir = Path::new("/t");
    assert_eq!(
        release_binary_path(dir, None),
        Path::new("/t/release/vmrp-handler")
    );
    assert_eq!(
        release_binary_path(dir, Some("x86_64-unknown-linux-gnu")),
        Path::new("/t/x86_64-unknown-linux-gnu/release/vmrp-handler")
    );
}

#[test]
fn target_dir_honours_cargo_target_dir() {
    let root = Path::new("/repo");
    assert_eq!(resolve_target_dir(root, None), Path::new("/repo/target"));
    assert_eq!(
        resolve_target_dir(root, Some("".into())),
        Path::new("/repo/target")
    );
    assert_eq!(
        resolve_target_dir(root, Some("/cache/t".into())),
        Path::new("/cache/t")
    );
}

/// Regression: the deploy build replaced target/release/vmrp (with the emulator).
#[test]
fn the_deploy_build_has_its_own_target_dir() {
    assert_eq!(
        deploy_target_dir(&resolve_target_dir(Path::new("/repo"), None)),
        Path::new("/repo/target/deploy")
    );
    assert_eq!(
        release_binary_path(&deploy_target_dir(Path::new("/repo/target")), None),
        Path::new("/repo/target/deploy/release/vmrp-handler")
    );
}

#[test]
fn no_build_packages_the_existing_release_binary() {
    let root = app_root(&functions::ALL);
    let target_dir = root.path().join("target");
    fs::create_dir_all(target_dir.join("release")).unwrap();
    let mut build = elf_header();
    build.extend_from_slice(b"release build");
    fs::write(target_dir.join("release").join(DEPLOY_BIN), &build).unwrap();
    let args = PackageArgs {
        out: root.path().join("out"),
        zip: false,
        binary: None,
        no_build: true,
        target: None,
        app_root: root.path().to_path_buf(),
    };

    package_in(&args, &target_dir).unwrap();

    assert_eq!(
        fs::read(root.path().join("out").join("vmrp")).unwrap(),
        build
    );
}
