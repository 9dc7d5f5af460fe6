//! Guest RAM: one sealed memfd, mapped shared, so that device processes can
//! later map the very same pages.

use std::fs::File;
use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::ftruncate;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use super::layout;

/// What went wrong while creating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot create the guest-RAM memfd: {0}")]
    Memfd(nix::Error),
    #[error("cannot size guest RAM to {size} bytes: {err}")]
    Size { size: u64, err: nix::Error },
    #[error("cannot seal the guest-RAM memfd: {0}")]
    Seal(nix::Error),
    #[error("cannot duplicate the guest-RAM memfd: {0}")]
    Dup(std::io::Error),
    #[error("cannot map guest RAM: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// Guest RAM and the memfd behind it.
pub struct GuestRam {
    /// The mapping the vCPU process uses.
    pub memory: GuestMemoryMmap,
    /// The memfd, sealed against growing and shrinking.
    pub file: File,
}

/// Creates `size` bytes of guest RAM laid out as `layout::ram_regions` says.
pub fn create_guest_ram(size: u64) -> Result<GuestRam, MemoryError> {
    let fd: OwnedFd = memfd_create(
        "moatvm-guest-ram",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(MemoryError::Memfd)?;
    let size_off = i64::try_from(size).map_err(|_| MemoryError::Size {
        size,
        err: nix::Error::EINVAL,
    })?;
    ftruncate(&fd, size_off).map_err(|err| MemoryError::Size { size, err })?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(MemoryError::Seal)?;
    let file = File::from(fd);

    let memory = map_guest_ram(&file, size)?;
    Ok(GuestRam { memory, file })
}

/// Maps guest RAM of `size` bytes from its memfd, as every process that
/// touches guest memory does: each region maps the part of the file that
/// starts where the previous region's RAM ended.
pub fn map_guest_ram(file: &File, size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (start, len) in layout::ram_regions(size) {
        let clone = file.try_clone().map_err(MemoryError::Dup)?;
        ranges.push((
            GuestAddress(start),
            len as usize,
            Some(FileOffset::new(clone, offset)),
        ));
        offset += len;
    }
    Ok(GuestMemoryMmap::from_ranges_with_files(ranges)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn ram_is_shared_with_its_memfd() {
        use std::os::unix::fs::FileExt;
        let ram = create_guest_ram(4 << 20).unwrap();
        ram.memory
            .write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .unwrap();
        let mut buf = [0u8; 4];
        ram.file.read_exact_at(&mut buf, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xdead_beef);
        assert_eq!(ram.memory.num_regions(), 1);
    }

    #[test]
    fn memfd_cannot_grow() {
        let ram = create_guest_ram(1 << 20).unwrap();
        assert!(ram.file.set_len(2 << 20).is_err());
    }
}
