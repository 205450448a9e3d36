//! The VM's initramfs: busybox, the modules that mount the host's tree (9p over virtio, overlay)
//! plus FUSE, in dependency order, and an /init that builds the guest's root and runs the command.
use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::{cpio::Archive, kernel::decompress};

/// Modules the init script needs, when the kernel has them as modules rather than built in.
const WANTED_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay", "fuse"];
/// Loaded too where the kernel has them: what `injector net` needs (iptables' mangle table,
/// the NFQUEUE target and its queue, the mark and port matches) and its netem path (netem
/// under a prio qdisc, u32 filters). The guest runs the host's tools, which cannot modprobe the
/// guest kernel's modules, so they are loaded at boot.
const OPTIONAL_MODULES: &[&str] = &[
    "nfnetlink_queue",
    "xt_NFQUEUE",
    "iptable_mangle",
    "xt_mark",
    "xt_tcpudp",
    "sch_netem",
    "sch_prio",
    "cls_u32",
];
const BUSYBOX: &str = "/bin/busybox";
/// The guest prints this, then the command's exit status, as its last word on the console.
pub const EXIT_MARKER: &str = "FAULTLINE-VM-EXIT=";

const INIT: &str = r#"#!/bin/sh
# Faultline's VM init: mount the host's / read-only (9p) under a tmpfs overlay, give it the
# guest's own kernel file systems, run the command in a chroot and report its exit status.
export PATH=/bin
fail() { echo "faultline-vm: $*"; echo "FAULTLINE-VM-EXIT=125"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
    [ -e "$module" ] || continue
    insmod "$module" || fail "insmod $module failed"
done
share=$(sed -n 's/.*faultline.share=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host /host || fail "cannot mount the host's / over 9p"
mount -t tmpfs tmpfs /mnt
mkdir -p /mnt/upper /mnt/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/mnt/upper,workdir=/mnt/work /root || fail "cannot mount the overlay"
mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t devtmpfs devtmpfs /root/dev
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts devpts /root/dev/pts
mount -t tmpfs tmpfs /root/dev/shm
# /tmp stays the overlay's: a checkout under the host's /tmp must stay visible.
mount -t tmpfs tmpfs /root/run
mount -t bpf bpf /root/sys/fs/bpf
mount -t tracefs tracefs /root/sys/kernel/tracing
mount -t securityfs securityfs /root/sys/kernel/security
mount -t cgroup2 cgroup2 /root/sys/fs/cgroup
mkdir -p "/root$share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share "/root$share" || fail "cannot mount the share"
ip link set lo up
chroot /root /bin/sh "$share/run.sh"
echo "FAULTLINE-VM-EXIT=$?"
sync
poweroff -f
"#;

/// Writes the initramfs for a kernel whose modules are in `modules` (its `lib/modules/VERSION`).
pub fn build(modules: &Path, out: &Path) -> Result<()> {
    let mut archive = Archive::default();
    for dir in [
        "bin", "dev", "proc", "sys", "host", "mnt", "root", "modules",
    ] {
        archive.directory(dir);
    }
    archive.char_device("dev/console", 5, 1);
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("cannot read {BUSYBOX}: install busybox-static"))?;
    archive.file("bin/busybox", 0o755, &busybox);
    for applet in [
        "sh", "mount", "mkdir", "insmod", "sed", "chroot", "poweroff", "ip", "sync", "echo",
    ] {
        archive.symlink(&format!("bin/{applet}"), "busybox");
    }
    archive.file("init", 0o755, INIT.as_bytes());
    let index = ModuleIndex::new(modules)?;
    let optional: Vec<&str> = OPTIONAL_MODULES
        .iter()
        .copied()
        .filter(|name| index.has(name))
        .collect();
    let wanted: Vec<&str> = WANTED_MODULES.iter().copied().chain(optional).collect();
    for (position, name) in index.load_order(&wanted)?.iter().enumerate() {
        let bytes = index.read(name)?;
        archive.file(&format!("modules/{position:02}-{name}.ko"), 0o644, &bytes);
    }
    let partial = out.with_extension("partial");
    let mut file = fs::File::create(&partial)?;
    archive.finish(&mut file)?;
    fs::rename(&partial, out)?;
    Ok(())
}

/// A kernel package's modules by name (`-` and `_` are the same to the kernel).
struct ModuleIndex {
    files: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
}

impl ModuleIndex {
    fn new(modules: &Path) -> Result<Self> {
        let mut files = HashMap::new();
        let mut pending = vec![modules.join("kernel")];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Some(name) = module_name(&path) {
                    files.insert(name, path);
                }
            }
        }
        let builtin = fs::read_to_string(modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| module_name(Path::new(line)))
            .collect();
        Ok(Self { files, builtin })
    }

    /// Whether the kernel has the module, as a file or built in.
    fn has(&self, name: &str) -> bool {
        let name = name.replace('-', "_");
        self.files.contains_key(&name) || self.builtin.contains(&name)
    }

    /// `wanted` and everything they depend on, each after its dependencies; built-in ones left out.
    fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            self.visit(name, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) -> Result<()> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        if !self.files.contains_key(&name) {
            if self.builtin.contains(&name) {
                return Ok(());
            }
            bail!("the kernel has no module `{name}` and does not build it in");
        }
        for dependency in depends(&self.read(&name)?) {
            self.visit(&dependency, seen, order)?;
        }
        order.push(name);
        Ok(())
    }

    /// The module's ELF, decompressed if the package ships it compressed.
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = &self.files[name];
        let bytes = fs::read(path)?;
        let decompressor: &[&str] = match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => &["xz", "-dc"],
            Some("zst") => &["zstd", "-dcq"],
            _ => return Ok(bytes),
        };
        let plain = decompress(decompressor, &bytes)?;
        if !plain.starts_with(b"\x7fELF") {
            bail!("{} did not decompress to a module", path.display());
        }
        Ok(plain)
    }
}

/// `9p.ko.xz` → `9p`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))?;
    Some(stem.replace('-', "_"))
}

/// The `depends=` entry of a module's `.modinfo` section.
fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[start + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_from_modinfo() {
        let modinfo = b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(depends(modinfo), ["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0name=x\0").is_empty());
    }

    #[test]
    fn module_names_ignore_compression_and_dashes() {
        assert_eq!(
            module_name(Path::new("a/9pnet-virtio.ko.xz")).as_deref(),
            Some("9pnet_virtio")
        );
        assert_eq!(
            module_name(Path::new("kernel/fs/fuse/fuse.ko")).as_deref(),
            Some("fuse")
        );
        assert_eq!(module_name(Path::new("README")), None);
    }
}
