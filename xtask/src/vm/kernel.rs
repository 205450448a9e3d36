//! Stock Debian kernels for the VM: resolved from the package registry, downloaded with
//! `apt-get download`, unpacked once into the cache, and the compressed image unpacked to an ELF
//! `vmlinux` (boots in about half the time of the compressed image under TCG).
use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{cmd, packages};

/// Which kernel a VM boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// Debian 12's own kernel (`linux-image-6.1.0-N-amd64`), the newest N the registry has.
    Debian61,
    /// Debian 12's backported 6.12 kernel (`linux-image-6.12.N+deb12-amd64`).
    Debian612,
    /// A kernel image package (`.deb`) or a directory one was unpacked into.
    Path(PathBuf),
}

impl KernelChoice {
    pub const DEBIANS: [KernelChoice; 2] = [KernelChoice::Debian61, KernelChoice::Debian612];
}

impl FromStr for KernelChoice {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "debian-6.1" => Ok(Self::Debian61),
            "debian-6.12" => Ok(Self::Debian612),
            path if Path::new(path).exists() => Ok(Self::Path(PathBuf::from(path))),
            other => bail!(
                "unknown kernel `{other}`: use debian-6.1, debian-6.12, or the path of a Debian \
                 linux-image .deb (or the directory it was unpacked into)"
            ),
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Debian61 => f.write_str("debian-6.1"),
            Self::Debian612 => f.write_str("debian-6.12"),
            Self::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// An unpacked kernel: the image to boot and its modules.
pub struct Kernel {
    pub image: PathBuf,
    /// `lib/modules/VERSION` of the package.
    pub modules: PathBuf,
    /// Where derived files (the initramfs) for this kernel are cached.
    pub cache: PathBuf,
}

pub fn prepare(cache_root: &Path, choice: &KernelChoice) -> Result<Kernel> {
    let unpacked = match choice {
        KernelChoice::Path(path) if path.is_dir() => path.clone(),
        KernelChoice::Path(deb) => unpack_once(cache_root, deb)?,
        debian => {
            let package = resolve_package(debian, cache_root)?;
            let dir = cache_root.join(&package);
            if !dir.join(READY).exists() {
                let deb = download(cache_root, &package)?;
                unpack_into(&deb, &dir)?;
                fs::remove_file(&deb)?;
            }
            dir
        }
    };
    let compressed = find_one(&unpacked.join("boot"), "vmlinuz-")
        .with_context(|| format!("no boot/vmlinuz-* in {}", unpacked.display()))?;
    let version = file_name(&compressed)
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules = unpacked.join("lib/modules").join(&version);
    ensure!(
        modules.is_dir(),
        "{} has no lib/modules/{version}",
        unpacked.display()
    );
    let elf = unpacked.join(format!("vmlinux-{version}"));
    let image = if elf.exists() || extract_elf(&compressed, &elf)? {
        elf
    } else {
        eprintln!(
            "vm: could not unpack {} to an ELF image; booting it compressed",
            compressed.display()
        );
        compressed
    };
    Ok(Kernel {
        image,
        modules,
        cache: unpacked,
    })
}

const READY: &str = ".faultline-ready";

/// The newest package of the series the registry knows, refreshing stale package lists once.
/// Offline, a kernel already in the cache will do.
fn resolve_package(choice: &KernelChoice, cache_root: &Path) -> Result<String> {
    let prefix = match choice {
        KernelChoice::Debian61 => "linux-image-6.1.0-",
        KernelChoice::Debian612 => "linux-image-6.12.",
        KernelChoice::Path(_) => unreachable!("paths are not resolved in the registry"),
    };
    let newest = |names: Vec<String>| {
        names
            .into_iter()
            .filter_map(|name| Some((series_number(choice, &name)?, name)))
            .max()
            .map(|(_, name)| name)
    };
    if let Some(name) = newest(apt_package_names(prefix)) {
        return Ok(name);
    }
    packages::refresh_package_lists()?;
    if let Some(name) = newest(apt_package_names(prefix)) {
        return Ok(name);
    }
    let cached = fs::read_dir(cache_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join(READY).exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    newest(cached).with_context(|| {
        format!("the package registry lists no {prefix}* kernel for {choice}, and none is cached")
    })
}

/// The release number that orders a series: N in `linux-image-6.1.0-N-amd64` and in
/// `linux-image-6.12.N+deb12-amd64`; None for other flavours (cloud, rt, dbg, unsigned).
fn series_number(choice: &KernelChoice, name: &str) -> Option<u32> {
    let middle = match choice {
        KernelChoice::Debian61 => name
            .strip_prefix("linux-image-6.1.0-")?
            .strip_suffix("-amd64")?,
        KernelChoice::Debian612 => name
            .strip_prefix("linux-image-6.12.")?
            .strip_suffix("+deb12-amd64")?,
        KernelChoice::Path(_) => return None,
    };
    middle.parse().ok()
}

fn apt_package_names(prefix: &str) -> Vec<String> {
    cmd::probe_stdout(Command::new("apt-cache").args(["pkgnames", prefix]))
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn download(cache_root: &Path, package: &str) -> Result<PathBuf> {
    let downloads = cache_root.join("downloads");
    fs::create_dir_all(&downloads)?;
    eprintln!(
        "vm: downloading {package} from the Debian package registry (once; cached in {})",
        cache_root.display()
    );
    cmd::run(
        Command::new("apt-get")
            .current_dir(&downloads)
            .args(["download", "-q", package]),
    )?;
    find_one(&downloads, &format!("{package}_"))
        .with_context(|| format!("apt-get download left no {package}_*.deb"))
}

/// A user's `.deb`, unpacked under the cache by its file name.
fn unpack_once(cache_root: &Path, deb: &Path) -> Result<PathBuf> {
    let dir = cache_root.join(file_name(deb).trim_end_matches(".deb"));
    if !dir.join(READY).exists() {
        unpack_into(deb, &dir)?;
    }
    Ok(dir)
}

/// Unpacks next to `dir` and renames, so an interrupted unpack never looks finished.
fn unpack_into(deb: &Path, dir: &Path) -> Result<()> {
    let partial = with_suffix(dir, ".partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    fs::write(partial.join(READY), "")?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&partial, dir)?;
    Ok(())
}

/// A bzImage holds the kernel as one compressed stream after the boot code: try each xz and
/// zstd stream start until one decompresses to an ELF file. False if none does.
fn extract_elf(compressed: &Path, elf: &Path) -> Result<bool> {
    let image = fs::read(compressed)?;
    let formats: [(&[u8], &[&str]); 2] = [
        (b"\xfd7zXZ\x00", &["xz", "-dc", "--single-stream"]),
        (b"\x28\xb5\x2f\xfd", &["zstd", "-dcq"]),
    ];
    for (magic, decompressor) in formats {
        for start in find_all(&image, magic) {
            let Ok(bytes) = decompress(decompressor, &image[start..]) else {
                continue;
            };
            if bytes.starts_with(b"\x7fELF") {
                let partial = with_suffix(elf, ".partial");
                fs::write(&partial, &bytes)?;
                fs::rename(&partial, elf)?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Runs a decompressor over `input`; its output counts even when it complains about the data
/// after the stream (a bzImage has some).
pub fn decompress(command: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", command[0]))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        // A decompressor that stops early closes its stdin: not an error here.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    Ok(output.stdout)
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, window)| *window == needle)
        .map(|(index, _)| index)
}

fn find_one(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| file_name(path).starts_with(prefix))
}

/// `path` with `suffix` appended to its file name (kernel versions are full of dots, so
/// `with_extension` would cut them).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_plain_amd64_flavour_of_a_series_is_chosen() {
        let six_one = KernelChoice::Debian61;
        assert_eq!(
            series_number(&six_one, "linux-image-6.1.0-56-amd64"),
            Some(56)
        );
        assert_eq!(
            series_number(&six_one, "linux-image-6.1.0-56-cloud-amd64"),
            None
        );
        assert_eq!(
            series_number(&six_one, "linux-image-6.1.0-56-amd64-unsigned"),
            None
        );
        let six_twelve = KernelChoice::Debian612;
        assert_eq!(
            series_number(&six_twelve, "linux-image-6.12.117+deb12-amd64"),
            Some(117)
        );
        assert_eq!(
            series_number(&six_twelve, "linux-image-6.12.117+deb12-rt-amd64"),
            None
        );
        assert_eq!(
            series_number(&six_twelve, "linux-image-6.1.0-56-amd64"),
            None
        );
    }

    #[test]
    fn an_unknown_kernel_name_is_refused_with_the_choices() {
        let error = "debian-9".parse::<KernelChoice>().unwrap_err().to_string();
        assert!(error.contains("debian-6.1, debian-6.12"), "{error}");
    }
}
