//! A minimal writer for the "newc" cpio format, the one the kernel unpacks as an initramfs.
use std::io::{self, Write};

const TRAILER: &str = "TRAILER!!!";

/// Builds an archive in memory; entries keep the order they were added in, so a directory must
/// come before what is in it.
#[derive(Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Archive {
    pub fn directory(&mut self, path: &str) {
        self.entry(path, 0o040_755, 0, &[]);
    }

    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) {
        self.entry(path, 0o100_000 | mode, 0, contents);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120_777, 0, target.as_bytes());
    }

    /// The kernel opens /dev/console for init's stdio before any devtmpfs exists, so the node
    /// must be in the archive itself.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, (major << 8) | minor, &[]);
    }

    pub fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        self.entry(TRAILER, 0, 0, &[]);
        out.write_all(&self.bytes)
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, contents: &[u8]) {
        self.next_inode += 1;
        let name_size = path.len() + 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so the same inputs give the same archive
            contents.len() as u32,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            name_size as u32,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(contents);
        self.pad();
    }

    /// Header+name and data are each padded to a multiple of 4 bytes.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut archive = Archive::default();
        archive.directory("bin");
        archive.file("bin/x", 0o755, b"abcde");
        let mut out = Vec::new();
        archive.finish(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert!(header.starts_with("070701"));
        let second = out.windows(6).skip(1).position(|w| w == b"070701").unwrap() + 1;
        assert_eq!(second % 4, 0, "the second header starts aligned");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("abcde"));
        assert!(text.trim_end_matches('\0').ends_with("TRAILER!!!"));
    }
}
