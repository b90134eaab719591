//! `vmrp package`: assembles the Azure Functions deployment package of a custom handler —
//! `host.json` and one folder per function (`<Name>/function.json`) at the package root, plus the
//! handler binary named `vmrp` with its executable bit — as a directory and optionally a zip.
//!
//! The zip keeps unix permissions: Linux Functions hosts (Flex Consumption runs the package
//! as-is) start `vmrp` only if the archive says it is executable.
//!
//! The deploy build goes to its own cargo target directory (`target/deploy`, as `bench/` does),
//! so it never overwrites the `target/release/vmrp` (with the emulator) the user is running.
//!
//! `--out` is replaced only when it holds exactly an earlier package: every package writes a
//! marker file ([`MARKER`]) listing what it wrote, and a folder with anything else in it, the app
//! root, or a folder holding the app root, is refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::functions;

/// The file name the package gives the handler; `host.json` must start this.
pub const BINARY_NAME: &str = "vmrp";
/// The deploy binary's package and binary (crates/vmrp-handler): the handler without the
/// emulator, the fakes or the ops tools, by construction. The package ships it as [`BINARY_NAME`].
pub const DEPLOY_BIN: &str = "vmrp-handler";
/// The file every package writes, listing the package's files; only a folder whose content
/// this lists (and nothing else) is replaced by a later package.
pub const MARKER: &str = ".vmrp-package";
/// The folder under cargo's target directory the deploy build uses (bench/run.sh builds there
/// too), so the deploy build never replaces `target/release/vmrp`.
pub const DEPLOY_TARGET_SUBDIR: &str = "deploy";
const BINARY_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// Arguments of `vmrp package`.
#[derive(Debug, Clone, clap::Args)]
pub struct PackageArgs {
    /// Directory to assemble the package in (replaced if it holds an earlier package).
    #[arg(long, default_value = "dist/vmrp")]
    pub out: PathBuf,
    /// Also write `<out>.zip` (e.g. dist/vmrp.zip), the file to deploy.
    #[arg(long)]
    pub zip: bool,
    /// The handler binary to package (an executable ELF file). Default: build it with
    /// `cargo build --release -p vmrp-handler --bin vmrp-handler --target-dir target/deploy`
    /// (the deploy build, without the emulator, kept apart from target/release).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Do not build: package --binary, or the existing deploy build target/deploy/release/vmrp-handler.
    #[arg(long)]
    pub no_build: bool,
    /// Target triple to build for (e.g. x86_64-unknown-linux-gnu); default: the host's.
    #[arg(long)]
    pub target: Option<String>,
    /// The crate root holding host.json and functions/ (run from the repository root).
    #[arg(long, default_value = ".")]
    pub app_root: PathBuf,
}

/// Why a package could not be assembled; every variant names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("missing function folder(s) under {dir}: {names} (expected <Name>/function.json for each of the functions vmrp serves)")]
    MissingFunctions { dir: PathBuf, names: String },
    #[error("refusing to replace {path}: {why}; choose another --out")]
    NotAPackage { path: PathBuf, why: String },
    #[error(
        "--binary {path}: not an executable ELF file ({why}); pass the vmrp binary built for Linux"
    )]
    NotAnExecutable { path: PathBuf, why: String },
    #[error("`{command}` failed: {status}")]
    Build { command: String, status: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What went into a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReport {
    pub dir: PathBuf,
    pub zip: Option<PathBuf>,
    /// Function names, sorted.
    pub functions: Vec<String>,
    pub binary_bytes: u64,
}

/// The `cargo` arguments of the deploy build: release, the handler crate only, into `target_dir`
/// (the deploy folder, see [`deploy_target_dir`]).
pub fn deploy_build_args(target: Option<&str>, target_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--release", "-p", DEPLOY_BIN, "--bin", DEPLOY_BIN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("--target-dir".to_string());
    args.push(target_dir.display().to_string());
    if let Some(target) = target {
        args.push("--target".to_string());
        args.push(target.to_string());
    }
    args
}

/// Where cargo puts the release binary for `target` under `target_dir`.
pub fn release_binary_path(target_dir: &Path, target: Option<&str>) -> PathBuf {
    let mut path = target_dir.to_path_buf();
    if let Some(target) = target {
        path.push(target);
    }
    path.join("release").join(DEPLOY_BIN)
}

/// `vmrp package`.
pub async fn run(args: PackageArgs) -> Result<ExitCode, String> {
    let report = tokio::task::spawn_blocking(move || package(&args))
        .await
        .map_err(|e| format!("package task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    println!(
        "packaged {} function(s) ({}) and {} ({} bytes) into {}",
        report.functions.len(),
        report.functions.join(", "),
        BINARY_NAME,
        report.binary_bytes,
        report.dir.display()
    );
    if let Some(zip) = &report.zip {
        println!("wrote {}", zip.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds (unless told not to) and assembles the package.
pub fn package(args: &PackageArgs) -> Result<PackageReport, PackageError> {
    let target_dir = deploy_target_dir(&resolve_target_dir(
        &args.app_root,
        std::env::var_os("CARGO_TARGET_DIR"),
    ));
    package_in(args, &target_dir)
}

/// Where the deploy build goes: `<cargo target dir>/deploy`.
pub fn deploy_target_dir(cargo_target_dir: &Path) -> PathBuf {
    cargo_target_dir.join(DEPLOY_TARGET_SUBDIR)
}

/// cargo's target directory: `CARGO_TARGET_DIR` when set, else `<app_root>/target`.
pub fn resolve_target_dir(
    app_root: &Path,
    cargo_target_dir: Option<std::ffi::OsString>,
) -> PathBuf {
    cargo_target_dir
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| app_root.join("target"))
}

/// `target_dir` is the deploy build's own target directory.
fn package_in(args: &PackageArgs, target_dir: &Path) -> Result<PackageReport, PackageError> {
    // Checked before the build: a wrong --out should not cost a release compile first.
    check_out(&args.app_root, &args.out)?;
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => {
            if !args.no_build {
                build_deploy_binary(&args.app_root, args.target.as_deref(), target_dir)?;
            }
            release_binary_path(target_dir, args.target.as_deref())
        }
    };
    assemble(&args.app_root, &binary, &args.out, args.zip)
}

fn build_deploy_binary(
    app_root: &Path,
    target: Option<&str>,
    target_dir: &Path,
) -> Result<(), PackageError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let build_args = deploy_build_args(target, target_dir);
    let command = format!("{cargo} {}", build_args.join(" "));
    let status = Command::new(&cargo)
        .args(&build_args)
        .current_dir(app_root)
        .status()
        .map_err(|e| PackageError::Build {
            command: command.clone(),
            status: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PackageError::Build {
            command,
            status: status.to_string(),
        })
    }
}

/// The function folders of `<app_root>/functions`, each with its parsed-and-checked function.json.
fn read_functions(app_root: &Path) -> Result<Vec<(String, Vec<u8>)>, PackageError> {
    let dir = app_root.join("functions");
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        if !entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("function.json");
        let bytes = fs::read(&path).map_err(io(&path))?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| PackageError::Json {
                path: path.clone(),
                source,
            })?;
        if !json.get("bindings").is_some_and(|b| b.is_array()) {
            return Err(PackageError::Invalid {
                path,
                what: "expected a \"bindings\" array".to_string(),
            });
        }
        found.push((name, bytes));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let missing: Vec<&str> = functions::ALL
        .iter()
        .copied()
        .filter(|want| !found.iter().any(|(name, _)| name == want))
        .collect();
    if !missing.is_empty() {
        return Err(PackageError::MissingFunctions {
            dir,
            names: missing.join(", "),
        });
    }
    Ok(found)
}

/// host.json, checked to start the binary this package ships.
fn read_host_json(app_root: &Path) -> Result<Vec<u8>, PackageError> {
    let path = app_root.join("host.json");
    let bytes = fs::read(&path).map_err(io(&path))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| PackageError::Json {
            path: path.clone(),
            source,
        })?;
    let executable = json
        .pointer("/customHandler/description/defaultExecutablePath")
        .and_then(|v| v.as_str());
    if executable != Some(BINARY_NAME) {
        return Err(PackageError::Invalid {
            path,
            what: format!(
                "customHandler.description.defaultExecutablePath is {}, expected \"{BINARY_NAME}\" (the binary this package ships)",
                executable.map_or("missing".to_string(), |e| format!("{e:?}"))
            ),
        });
    }
    // The host starts `vmrp <arguments>`; anything but `serve` first would start another
    // subcommand (or print the help) and the app would never come up.
    let arguments = json.pointer("/customHandler/description/arguments");
    let first = arguments
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str());
    if first != Some("serve") {
        return Err(PackageError::Invalid {
            path,
            what: format!(
                "customHandler.description.arguments is {}, expected [\"serve\"] (the host must start `{BINARY_NAME} serve`)",
                arguments.map_or("missing".to_string(), |a| a.to_string())
            ),
        });
    }
    Ok(bytes)
}

/// The ELF magic, and the object types a loader runs: `ET_EXEC` and `ET_DYN` (PIE).
const ELF_MAGIC: &[u8] = b"\x7fELF";
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// Refuses a handler that is not an executable ELF file (a text file, a script, an object
/// file): the Linux Functions host could not start it, and only at deploy time would anyone see.
fn check_executable(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    let bad = |why: String| PackageError::NotAnExecutable {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < 18 || !bytes.starts_with(ELF_MAGIC) {
        let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(8)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        return Err(bad(format!(
            "{} bytes starting {head:?}, not the ELF magic \\x7fELF",
            bytes.len()
        )));
    }
    // e_type sits at offset 16, in the byte order EI_DATA (offset 5) names: 1 little, 2 big.
    let e_type = match bytes[5] {
        2 => u16::from_be_bytes([bytes[16], bytes[17]]),
        _ => u16::from_le_bytes([bytes[16], bytes[17]]),
    };
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(bad(format!(
            "ELF type {e_type}, not an executable (2) or position-independent executable (3)"
        )));
    }
    Ok(())
}

/// `out` without trailing separators or `.` parts, so `dist/vmrp/` zips to `dist/vmrp.zip`.
fn normalized(out: &Path) -> PathBuf {
    out.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// `path` made absolute and resolved as far as it exists (the rest appended as given).
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return absolute,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

/// Refuses an `--out` that is not a plain folder name or that is the app root or holds it.
fn check_out(app_root: &Path, out: &Path) -> Result<(), PackageError> {
    let refuse = |why: &str| PackageError::NotAPackage {
        path: out.to_path_buf(),
        why: why.to_string(),
    };
    let out_norm = normalized(out);
    if out_norm.as_os_str().is_empty()
        || out_norm.file_name().is_none()
        || out_norm
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(refuse(
            "--out must name a folder of its own (no `.` or `..`)",
        ));
    }
    let (out_abs, root_abs) = (resolved(&out_norm), resolved(app_root));
    if root_abs.starts_with(&out_abs) {
        return Err(refuse(
            "it is the app root (--app-root) or a folder that holds it",
        ));
    }
    if let Ok(cwd) = std::env::current_dir().map(|d| resolved(&d)) {
        if cwd.starts_with(&out_abs) {
            return Err(refuse("it is the current folder or a folder that holds it"));
        }
    }
    Ok(())
}

/// Whether `out` may be replaced: it does not exist, is empty, or holds exactly the files an
/// earlier package's marker lists (and the folders they sit in).
fn check_replaceable(out: &Path) -> Result<(), PackageError> {
    let refuse = |why: String| PackageError::NotAPackage {
        path: out.to_path_buf(),
        why,
    };
    let meta = match fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(out)(e)),
    };
    if !meta.is_dir() {
        return Err(refuse("it exists and is not a folder".into()));
    }
    let mut found = Vec::new();
    list_files(out, Path::new(""), &mut found)?;
    if found.is_empty() {
        return Ok(());
    }
    let marker = out.join(MARKER);
    let listed: Vec<String> = match fs::read_to_string(&marker) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        // A package from before the marker: exactly host.json, vmrp and <Name>/function.json.
        Err(_) if is_unmarked_package(&found) => return Ok(()),
        Err(_) => {
            return Err(refuse(format!(
                "it is not empty and holds no {MARKER} (the marker every vmrp package writes)"
            )))
        }
    };
    let extra: Vec<&String> = found
        .iter()
        .filter(|f| f.as_str() != MARKER && !listed.contains(f))
        .collect();
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        return Err(refuse(format!(
            "it holds files no earlier package wrote ({}{})",
            shown.join(", "),
            if extra.len() > 5 { ", …" } else { "" }
        )));
    }
    Ok(())
}

/// Whether `files` are exactly what a package without a marker (vmrp before the marker) held.
fn is_unmarked_package(files: &[String]) -> bool {
    files.iter().any(|f| f == "host.json")
        && files.iter().any(|f| f == BINARY_NAME)
        && files.iter().all(|f| {
            f == "host.json"
                || f == BINARY_NAME
                || f.split_once('/')
                    .is_some_and(|(dir, file)| !dir.is_empty() && file == "function.json")
        })
}

/// Every file under `dir` (and every symlink or other non-folder), as `/`-joined relative paths.
fn list_files(dir: &Path, prefix: &Path, out: &mut Vec<String>) -> Result<(), PackageError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let relative = prefix.join(entry.file_name());
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        if kind.is_dir() {
            let before = out.len();
            list_files(&entry.path(), &relative, out)?;
            if out.len() == before {
                // An empty folder is not something a package writes.
                out.push(format!("{}/", relative.to_string_lossy()));
            }
        } else {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Lays out the package in `out` (and `<out>.zip` when `zip`), from the app files under
/// `app_root` and the handler `binary`.
pub fn assemble(
    app_root: &Path,
    binary: &Path,
    out: &Path,
    zip: bool,
) -> Result<PackageReport, PackageError> {
    // Read and check every input before touching the output.
    let out = &normalized(out);
    check_out(app_root, out)?;
    let host_json = read_host_json(app_root)?;
    let functions = read_functions(app_root)?;
    let binary_bytes = fs::read(binary).map_err(io(binary))?;
    check_executable(binary, &binary_bytes)?;
    check_replaceable(out)?;

    if out.exists() {
        fs::remove_dir_all(out).map_err(io(out))?;
    }
    fs::create_dir_all(out).map_err(io(out))?;

    // (relative path, bytes, mode), in the order they are written to the zip.
    let mut files: Vec<(String, &[u8], u32)> =
        vec![("host.json".to_string(), &host_json, FILE_MODE)];
    for (name, bytes) in &functions {
        files.push((format!("{name}/function.json"), bytes, FILE_MODE));
    }
    files.push((BINARY_NAME.to_string(), &binary_bytes, BINARY_MODE));

    for (relative, bytes, mode) in &files {
        let path = out.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&path, bytes).map_err(io(&path))?;
        set_mode(&path, *mode)?;
    }
    // Written last, in the folder only (the zip is what gets deployed): a half-written package
    // has no marker, so a later run refuses it rather than guess.
    let listing: String = files.iter().map(|(r, _, _)| format!("{r}\n")).collect();
    let marker = out.join(MARKER);
    fs::write(&marker, listing).map_err(io(&marker))?;

    let zip_path = if zip {
        let mut name = out.as_os_str().to_owned();
        name.push(".zip");
        let zip_path = PathBuf::from(name);
        write_zip(&zip_path, &files)?;
        Some(zip_path)
    } else {
        None
    };

    Ok(PackageReport {
        dir: out.to_path_buf(),
        zip: zip_path,
        functions: functions.into_iter().map(|(name, _)| name).collect(),
        binary_bytes: binary_bytes.len() as u64,
    })
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), PackageError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), PackageError> {
    // The zip carries the mode; the directory copy on a non-unix host cannot.
    Ok(())
}

fn write_zip(path: &Path, files: &[(String, &[u8], u32)]) -> Result<(), PackageError> {
    let file = fs::File::create(path).map_err(io(path))?;
    let mut writer = zip::ZipWriter::new(file);
    let zip_error = |e: zip::result::ZipError| PackageError::Invalid {
        path: path.to_path_buf(),
        what: format!("writing the zip failed: {e}"),
    };
    for (relative, bytes, mode) in files {
        // Fixed timestamps (the zip default) keep the archive reproducible.
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer
            .start_file(relative.as_str(), options)
            .map_err(zip_error)?;
        writer.write_all(bytes).map_err(io(path))?;
    }
    writer.finish().map_err(zip_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
            let json =
                format!(r#"{{"bindings":[{{"type":"x","direction":"in","name":"{name}"}}]}}"#);
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
}
