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
mod tests;
