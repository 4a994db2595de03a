//! Builds the wasm components and the example plugin for wasm32-wasip2 and
//! copies them into OUT_DIR for `include_bytes!`.
//!
//! Each wasm crate lives in its own cargo workspace (guest/components,
//! examples/plugin) so the native build never compiles them. They are built
//! by a nested `cargo build` with:
//! - its own target dir, `<root>/target/wasm`: the outer build holds the
//!   lock on `<root>/target`, so sharing it would deadlock;
//! - the crate's directory as working directory, so its `.cargo/config.toml`
//!   (simd128) applies;
//! - the outer build's variables that would leak into it removed (rustflags,
//!   target, wrappers such as clippy-driver, build-script variables).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const WASM_TARGET: &str = "wasm32-wasip2";

/// One nested build and the `.wasm` files it produces.
struct WasmBuild {
    /// Directory of the workspace to build, relative to the repository root.
    dir: &'static str,
    /// Files under `target/wasm/wasm32-wasip2/release/` to copy to OUT_DIR.
    outputs: &'static [&'static str],
}

const BUILDS: &[WasmBuild] = &[
    WasmBuild {
        dir: "guest/components",
        outputs: &[
            "tensor_blob_chunker.wasm",
            "tensor_blob_rogue_chunker.wasm",
            "tensor-blob-bench-plugin.wasm",
            "tensor-blob-hostile-plugin.wasm",
            "tensor-blob-blobstore-client.wasm",
            "tensor-blob-dual-plugin.wasm",
            "tensor-blob-stream-plugin.wasm",
            "tensor-blob-meta-plugin.wasm",
        ],
    },
    WasmBuild {
        dir: "examples/plugin",
        outputs: &["tensor-blob-example-plugin.wasm"],
    },
];

/// Inputs whose change must rebuild the components (cargo rescans a
/// directory's whole tree for changes).
const RERUN_IF_CHANGED: &[&str] = &[
    "rust-toolchain.toml",
    "wit",
    "guest/core/src",
    "guest/core/Cargo.toml",
    "guest/components/Cargo.toml",
    "guest/components/Cargo.lock",
    "guest/components/.cargo",
    "guest/components/shared",
    "guest/components/chunker/src",
    "guest/components/chunker/Cargo.toml",
    "guest/components/rogue/src",
    "guest/components/rogue/Cargo.toml",
    "guest/components/bench-plugin/src",
    "guest/components/bench-plugin/Cargo.toml",
    "guest/components/hostile-plugin/src",
    "guest/components/hostile-plugin/Cargo.toml",
    "guest/components/blobstore-client/src",
    "guest/components/blobstore-client/wit",
    "guest/components/blobstore-client/Cargo.toml",
    "guest/components/dual-plugin/src",
    "guest/components/dual-plugin/Cargo.toml",
    "guest/components/stream-plugin/src",
    "guest/components/stream-plugin/Cargo.toml",
    "guest/components/meta-plugin/src",
    "guest/components/meta-plugin/Cargo.toml",
    "examples/plugin/src",
    "examples/plugin/Cargo.toml",
    "examples/plugin/Cargo.lock",
    "examples/plugin/.cargo",
];

/// Variables cargo sets for the outer build that must not reach the nested
/// one: they would change its flags, target, target dir or compiler wrapper
/// (clippy's `RUSTC_WORKSPACE_WRAPPER`), or be seen by its build scripts.
const REMOVED_VARIABLES: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_DEP_INFO_BASEDIR",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_LINKER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PKG_NAME",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
];

/// Prefixes of further build-script variables to remove.
const REMOVED_PREFIXES: &[&str] = &["CARGO_FEATURE_", "CARGO_CFG_", "CARGO_PKG_", "DEP_"];

fn main() -> Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    // guest/artifacts -> repository root.
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .context("guest/artifacts has no grandparent")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let target_dir = root.join("target").join("wasm");

    for path in RERUN_IF_CHANGED {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    for variable in ["CARGO_TARGET_DIR", "RUSTUP_TOOLCHAIN"] {
        println!("cargo:rerun-if-env-changed={variable}");
    }

    ensure_wasm_target()?;
    for build in BUILDS {
        let dir = root.join(build.dir);
        cargo_build(&cargo, &dir, &target_dir)?;
        for output in build.outputs {
            let built = target_dir.join(WASM_TARGET).join("release").join(output);
            let copy = out_dir.join(output);
            std::fs::copy(&built, &copy)
                .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
        }
    }
    Ok(())
}

/// Installs the wasm32-wasip2 standard library with rustup when it is
/// missing, so a fresh machine needs no manual step (rust-toolchain.toml
/// lists the target, but rustup only adds it when it installs the toolchain).
fn ensure_wasm_target() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .with_context(|| format!("running {rustc:?} --print target-libdir"))?;
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    if !libdir.is_empty() && Path::new(&libdir).is_dir() {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("running rustup target add (is rustup installed?)")?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed: install the target by hand");
    }
    Ok(())
}

/// `cargo build --release --locked --target wasm32-wasip2` in `dir`.
fn cargo_build(cargo: &OsString, dir: &Path, target_dir: &Path) -> Result<()> {
    let mut command = Command::new(cargo);
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let removed = REMOVED_VARIABLES.contains(&name)
            || REMOVED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if removed {
            command.env_remove(name);
        }
    }
    // Set after the removals, which would otherwise undo it.
    command
        .args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir);
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        // Cargo shows a build script's stderr only on failure: print all of it.
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        bail!(
            "building the wasm components in {} failed ({}); see the nested cargo output above",
            dir.display(),
            output.status
        );
    }
    Ok(())
}
