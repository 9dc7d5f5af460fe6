//! Descriptor ring geometry, from the base/length/head/tail registers,
//! checked before every use: a ring must be non-empty, lie in guest RAM,
//! and have its head and tail inside it.

use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::{Dir, Error};

/// Size of a receive or transmit descriptor.
pub const DESC_LEN: u64 = 16;

/// A ring as the device may walk it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub base: u64,
    pub count: u32,
}

impl Ring {
    /// The `dir` ring of `len` bytes at `bah:bal` (already masked as the
    /// registers store them) with `head` and `tail`, if usable.
    pub fn new<M: GuestMemory>(
        dir: Dir,
        mem: &M,
        bal: u32,
        bah: u32,
        len: u32,
        head: u32,
        tail: u32,
    ) -> Result<Ring, Error> {
        let count = (u64::from(len) / DESC_LEN) as u32;
        if count == 0 {
            return Err(Error::EmptyRing { dir });
        }
        if head >= count || tail >= count {
            return Err(Error::BeyondRing {
                dir,
                head,
                tail,
                count,
            });
        }
        let base = u64::from(bah) << 32 | u64::from(bal);
        let in_ram = base.checked_add(u64::from(len)).is_some()
            && mem.check_range(GuestAddress(base), len as usize, Permissions::ReadWrite);
        if !in_ram {
            return Err(Error::RingOutsideRam {
                dir,
                base,
                len: u64::from(len),
            });
        }
        Ok(Ring { base, count })
    }

    /// Address of descriptor `i` (less than `count`).
    pub fn desc(&self, i: u32) -> GuestAddress {
        GuestAddress(self.base + u64::from(i) * DESC_LEN)
    }

    /// The index after `i`.
    pub fn next(&self, i: u32) -> u32 {
        if i + 1 >= self.count {
            0
        } else {
            i + 1
        }
    }

    /// Descriptors the device owns: from `head` up to, not including, `tail`.
    pub fn owned(&self, head: u32, tail: u32) -> u32 {
        (tail + self.count - head) % self.count
    }
}
