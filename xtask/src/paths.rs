//! Where things are: the workspace, cargo's target directory, the lab's
//! cache under `target/lab/`, and the lab's scripts under `xtask/lab/`.

use std::path::PathBuf;

/// The workspace root (also its path inside L1, which sees the host's root).
pub fn root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory.
pub fn target() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The lab's cache: kernels, initramfs images, run directories.
pub fn lab() -> PathBuf {
    target().join("lab")
}

/// A script of the lab (`xtask/lab/NAME`).
pub fn script(name: &str) -> PathBuf {
    root().join("xtask").join("lab").join(name)
}
