//! Embeds the eBPF object built by `cargo xtask build-ebpf`, and refuses to embed one that is
//! missing, empty or older than the sources it was built from: a stale object would make the
//! injector silently run old kernel code.
use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

// Must match where `cargo xtask build-ebpf` writes (xtask/src/ebpf.rs).
const OBJECT: &str = "target/ebpf/bpfel-unknown-none/release/injector-ebpf";
// Everything the object is built from.
const INPUTS: &[&str] = &[
    "injector-ebpf/src",
    "injector-ebpf/Cargo.toml",
    "injector-ebpf/Cargo.lock",
    "injector-ebpf/.cargo/config.toml",
    "injector-common/src",
    "injector-common/Cargo.toml",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .expect("injector-user lives inside the workspace");
    let object = root.join(OBJECT);
    let inputs: Vec<PathBuf> = INPUTS.iter().map(|input| root.join(input)).collect();
    for path in inputs.iter().chain([&object]) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    match check_object(&object, &inputs) {
        Ok(()) => println!("cargo::rustc-env=INJECTOR_EBPF_OBJECT={}", object.display()),
        Err(problem) => println!("cargo::error={problem}: run `cargo xtask build-ebpf` first"),
    }
}

fn check_object(object: &Path, inputs: &[PathBuf]) -> Result<(), String> {
    let meta = fs::metadata(object)
        .map_err(|_| format!("the eBPF object {} does not exist", object.display()))?;
    let head = fs::read(object).map_err(|e| format!("cannot read {}: {e}", object.display()))?;
    if meta.len() == 0 || !head.starts_with(b"\x7fELF") {
        return Err(format!(
            "{} is empty or not an ELF object",
            object.display()
        ));
    }
    let built = meta.modified().map_err(|e| e.to_string())?;
    if let Some((newest, when)) = newest_input(inputs)
        && when > built
    {
        return Err(format!(
            "the eBPF object is older than {} (stale)",
            newest.display()
        ));
    }
    Ok(())
}

fn newest_input(inputs: &[PathBuf]) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    let mut pending: Vec<PathBuf> = inputs.to_vec();
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else if let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(_, when)| modified > *when)
        {
            newest = Some((path, modified));
        }
    }
    newest
}
