//! A register mirror: one shared page in which a device process publishes
//! the values of registers whose reads have no side effects and which the
//! guest's writes cannot change (e1000's STATUS), so that the vCPU process
//! answers the guest's reads of them without a round trip.
//!
//! The page is a memfd the launcher creates and hands to both processes.
//! Slot `i` is two 32-bit words: a "valid" flag and the value. The device
//! side writes the value, then sets the flag (release); the vCPU side reads
//! the flag, then the value (acquire). A slot not yet valid is read the
//! slow way, by a message. A compromised device can only make its own
//! registers read wrong, which it could do anyway.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::error::{Error, Result};

/// Bytes of a mirror: one page.
pub const MIRROR_SIZE: usize = 4096;
/// Slots in a page (two words each).
pub const MIRROR_SLOTS: usize = MIRROR_SIZE / 8;

/// One process's mapping of a register mirror.
pub struct RegisterMirror {
    base: NonNull<AtomicU32>,
}

// SAFETY: the mapping is only ever accessed through atomics, which are
// safe to share between threads; it lives until `drop` unmaps it.
unsafe impl Send for RegisterMirror {}
// SAFETY: as above.
unsafe impl Sync for RegisterMirror {}

impl RegisterMirror {
    /// A new mirror (a sealed-size memfd of [`MIRROR_SIZE`] bytes), mapped,
    /// and its descriptor to hand to the other process.
    pub fn create() -> Result<(RegisterMirror, OwnedFd)> {
        let fd = nix::sys::memfd::memfd_create(
            "moatvm-register-mirror",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| Error::io("memfd_create", e.into()))?;
        nix::unistd::ftruncate(&fd, MIRROR_SIZE as i64)
            .map_err(|e| Error::io("ftruncate", e.into()))?;
        let mirror = RegisterMirror::map(&fd)?;
        Ok((mirror, fd))
    }

    /// Maps the mirror `fd` (which must hold at least [`MIRROR_SIZE`]
    /// bytes: a shorter file would fault on access, so it is checked).
    pub fn map(fd: &OwnedFd) -> Result<RegisterMirror> {
        let len = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| Error::io("fstat", e.into()))?
            .st_size;
        if (len as u64) < MIRROR_SIZE as u64 {
            return Err(Error::io(
                "register mirror",
                std::io::Error::other(format!("{len} bytes, need {MIRROR_SIZE}")),
            ));
        }
        // SAFETY: a fresh shared mapping of a file we checked is large
        // enough; nothing else in this process refers to that range.
        let ptr = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(MIRROR_SIZE).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| Error::io("mmap", e.into()))?;
        Ok(RegisterMirror { base: ptr.cast() })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < MIRROR_SIZE / 4, "mirror word {i} out of range");
        // SAFETY: `i` is inside the page mapped for the life of `self`;
        // AtomicU32 has the layout of u32 and the page is 4-byte aligned.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    /// Publishes `value` in slot `slot` (device side).
    pub fn publish(&self, slot: usize, value: u32) {
        self.word(2 * slot + 1).store(value, Ordering::Relaxed);
        self.word(2 * slot).store(1, Ordering::Release);
    }

    /// The value in slot `slot`, once the device published one.
    pub fn read(&self, slot: usize) -> Option<u32> {
        if slot >= MIRROR_SLOTS || self.word(2 * slot).load(Ordering::Acquire) != 1 {
            return None;
        }
        Some(self.word(2 * slot + 1).load(Ordering::Relaxed))
    }
}

impl Drop for RegisterMirror {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `map` mapped; no reference into
        // it outlives `self`.
        let _ = unsafe { munmap(self.base.cast(), MIRROR_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_each_other() {
        let (device, fd) = RegisterMirror::create().unwrap();
        let vcpu = RegisterMirror::map(&fd).unwrap();
        assert_eq!(vcpu.read(0), None, "nothing published yet");
        device.publish(0, 0x8000_0083);
        device.publish(3, 7);
        assert_eq!(vcpu.read(0), Some(0x8000_0083));
        assert_eq!(vcpu.read(3), Some(7));
        assert_eq!(vcpu.read(1), None);
        assert_eq!(vcpu.read(MIRROR_SLOTS), None);
    }

    #[test]
    fn a_short_file_is_refused() {
        let fd =
            nix::sys::memfd::memfd_create("short", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 100).unwrap();
        assert!(RegisterMirror::map(&fd).is_err());
    }
}
