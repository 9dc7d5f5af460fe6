//! A small in-memory initramfs: entries with root ownership written as a
//! `newc` cpio archive and compressed with `gzip` (no root, no `mknod`
//! needed to put device nodes in it).

use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Paths are relative to the archive's root (no leading `/`); parent
/// directories are added as needed.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.entries.contains_key(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path.to_string(), Entry::Dir);
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path.to_string(), entry);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        let data = data.into();
        self.insert(path, Entry::File { mode, data });
    }

    /// Copies a host file (following symlinks), keeping its permissions.
    pub fn copy(&mut self, path: &str, host: &Path) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
        self.file(path, mode, data);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(path, Entry::CharDev { major, minor });
    }

    /// The archive in `newc` format. Parents sort before their children.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040755, &[], (0, 0)),
                Entry::File { mode, data } => (0o100000 | mode, data, (0, 0)),
                Entry::Symlink(target) => (0o120777, target.as_bytes(), (0, 0)),
                Entry::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            write_entry(&mut out, ino as u32 + 1, mode, path, data, rdev);
        }
        write_entry(&mut out, 0, 0, "TRAILER!!!", &[], (0, 0));
        out
    }

    /// Writes the archive gzip-compressed to `dest` (atomically).
    pub fn write_gz(&self, dest: &Path) -> Result<()> {
        let tmp = dest.with_extension("tmp");
        let mut gzip = Command::new("gzip")
            .args(["-6", "-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?)
            .spawn()
            .context("starting gzip")?;
        gzip.stdin
            .take()
            .expect("piped")
            .write_all(&self.to_cpio())?;
        ensure!(gzip.wait()?.success(), "gzip failed");
        fs::rename(&tmp, dest)?;
        Ok(())
    }
}

fn write_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8], rdev: (u32, u32)) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_tool_reads_it_back() {
        let mut a = Archive::default();
        a.file("etc/moat/x", 0o644, "hello");
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 5, 1);
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.cpio");
        fs::write(&file, a.to_cpio()).unwrap();
        let listing = Command::new("cpio")
            .args(["-itv", "-F"])
            .arg(&file)
            .output();
        let _ = fs::remove_dir_all(&dir);
        let Ok(listing) = listing else { return }; // no cpio tool here
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.status.success(), "{listing:?}");
        for want in [
            "etc/moat/x",
            "bin/sh -> busybox",
            "dev/console",
            "drwxr-xr-x",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(text.lines().next().unwrap().ends_with(" bin"), "{text}");
    }
}
