//! From descriptor chains to iovecs over guest memory, so that a backend
//! can readv/writev straight from and to guest buffers.
//!
//! Chains come from virtio-queue, which stops walking a bad chain without
//! saying why; [`walk`] turns every such stop into an error: a chain is good
//! only if its last descriptor says that nothing follows.

use std::io::{IoSlice, IoSliceMut};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::{Error, Result};

/// Most segments one readv/writev takes (Linux's UIO_MAXIOV).
pub const IOV_MAX: usize = 1024;

/// Calls `f` for each descriptor of `chain` (of queue `queue`); fails if
/// the chain yields nothing or ends on a descriptor that says more follow:
/// a loop, a chain longer than its table, a `next` outside the table, an
/// indirect table outside RAM, or more than 4 GiB in total.
pub fn walk<M, F>(queue: u16, chain: DescriptorChain<&M>, mut f: F) -> Result<()>
where
    M: GuestMemory,
    F: FnMut(&Descriptor) -> Result<()>,
{
    let head = chain.head_index();
    let mut open = true;
    let mut seen = false;
    for desc in chain {
        seen = true;
        open = desc.has_next();
        f(&desc)?;
    }
    if !seen || open {
        return Err(Error::BadChain { queue, head });
    }
    Ok(())
}

/// Reusable iovec storage: filled for one frame, used, then cleared, so
/// the data path allocates nothing once it has grown.
#[derive(Debug, Default)]
pub struct IovBuf {
    iov: Vec<libc::iovec>,
}

// SAFETY: the iovecs point into guest memory, which every thread of the
// process may access; they are plain addresses that this type never
// dereferences except through `write_at`, whose caller holds the memory.
unsafe impl Send for IovBuf {}

impl IovBuf {
    /// Empty, with room for `n` segments.
    pub fn with_capacity(n: usize) -> Self {
        IovBuf {
            iov: Vec::with_capacity(n),
        }
    }

    pub fn clear(&mut self) {
        self.iov.clear();
    }

    pub fn len(&self) -> usize {
        self.iov.len()
    }

    pub fn is_empty(&self) -> bool {
        self.iov.is_empty()
    }

    /// Drops the segments from `n` on.
    pub fn truncate(&mut self, n: usize) {
        self.iov.truncate(n);
    }

    /// Bytes the segments cover.
    pub fn bytes(&self) -> usize {
        self.iov.iter().map(|v| v.iov_len).sum()
    }

    /// Appends the guest memory `addr..addr+len` (split where guest RAM is
    /// discontiguous), for the device to write into if `write`. Fails with
    /// [`Error::BadBuffer`] if any of it is not RAM, and with
    /// [`Error::TooManySegments`] past [`IOV_MAX`] segments.
    pub fn push_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: u16,
        addr: GuestAddress,
        len: u32,
        write: bool,
    ) -> Result<()> {
        let bad = || Error::BadBuffer {
            queue,
            addr: addr.0,
            len,
        };
        let access = if write {
            Permissions::Write
        } else {
            Permissions::Read
        };
        let slices = mem
            .get_slices(addr, len as usize, access)
            .map_err(|_| bad())?;
        for slice in slices {
            let slice = slice.map_err(|_| bad())?;
            if self.iov.len() >= IOV_MAX {
                return Err(Error::TooManySegments {
                    queue,
                    max: IOV_MAX,
                });
            }
            let base = if write {
                // The device writes there: count it dirty up front.
                slice.bitmap().mark_dirty(0, slice.len());
                slice.ptr_guard_mut().as_ptr()
            } else {
                slice.ptr_guard().as_ptr().cast_mut()
            };
            // The pointer outlives its guard: without vm-memory's `xen`
            // feature (not enabled here) a guard is only the address of a
            // mapping that lives as long as `mem`, and the caller uses
            // these iovecs only while it holds `mem`.
            self.iov.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: slice.len(),
            });
        }
        Ok(())
    }

    /// Runs `f` on the segments with the first `skip` bytes left out.
    pub fn with_skipped<R>(&mut self, skip: usize, f: impl FnOnce(&mut [libc::iovec]) -> R) -> R {
        let mut first = 0;
        let mut left = skip;
        while first < self.iov.len() && left >= self.iov[first].iov_len && left > 0 {
            left -= self.iov[first].iov_len;
            first += 1;
        }
        let Some(seg) = self.iov.get_mut(first) else {
            return f(&mut []);
        };
        let saved = *seg;
        // SAFETY: `left < seg.iov_len`, so the new base stays inside the segment.
        seg.iov_base = unsafe { seg.iov_base.cast::<u8>().add(left) }.cast();
        seg.iov_len -= left;
        let r = f(&mut self.iov[first..]);
        self.iov[first] = saved;
        r
    }

    /// Writes `bytes` at byte `offset` of the concatenated segments, as far
    /// as they reach; returns how many bytes were written.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> usize {
        write_iov(&self.iov, offset, bytes)
    }

    /// The segments, for a gathering write.
    pub fn as_io_slices(&self) -> &[IoSlice<'_>] {
        as_io_slices(&self.iov)
    }
}

/// Writes `bytes` at byte `offset` of the concatenation of `iov`, as far as
/// it reaches; returns how many bytes were written.
pub fn write_iov(iov: &[libc::iovec], offset: usize, bytes: &[u8]) -> usize {
    let mut skip = offset;
    let mut done = 0;
    for seg in iov {
        if done == bytes.len() {
            break;
        }
        if skip >= seg.iov_len {
            skip -= seg.iov_len;
            continue;
        }
        let n = (seg.iov_len - skip).min(bytes.len() - done);
        for i in 0..n {
            // SAFETY: `skip + i < seg.iov_len`, inside guest memory that
            // vm-memory bounds-checked when the segment was made; the guest
            // may touch it concurrently, hence a volatile write.
            unsafe {
                std::ptr::write_volatile(seg.iov_base.cast::<u8>().add(skip + i), bytes[done + i])
            };
        }
        done += n;
        skip = 0;
    }
    done
}

/// `iov` as `IoSlice`s (for `writev`).
pub fn as_io_slices(iov: &[libc::iovec]) -> &[IoSlice<'_>] {
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix
    // (it is a transparent wrapper around one), and every segment points to
    // `iov_len` bytes of mapped guest memory that outlive the borrow of `iov`.
    unsafe { std::slice::from_raw_parts(iov.as_ptr().cast::<IoSlice<'_>>(), iov.len()) }
}

/// `iov` as `IoSliceMut`s (for `readv`).
pub fn as_io_slices_mut(iov: &mut [libc::iovec]) -> &mut [IoSliceMut<'_>] {
    // SAFETY: as for `as_io_slices`; the segments were made from writable
    // guest memory, and the exclusive borrow of `iov` stands for the
    // exclusive use of those buffers that the driver granted the device.
    unsafe { std::slice::from_raw_parts_mut(iov.as_mut_ptr().cast::<IoSliceMut<'_>>(), iov.len()) }
}
