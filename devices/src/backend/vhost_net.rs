//! vhost-net: the host kernel moves a virtio-net device's RX and TX frames
//! between the guest's rings and a tap, woken by the queue's ioeventfd and
//! interrupting through its irqfd, with no process of ours on the way.
//!
//! A [`VhostNet`] wraps a `/dev/vhost-net` descriptor the launcher opened.
//! It must be created in the process that maps guest memory: `VHOST_SET_OWNER`
//! ties the kernel's worker to the caller's address space, and the memory
//! table and ring addresses are addresses in that space. The ioctls go
//! through the rust-vmm `vhost` crate.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use vhost::vhost_kern::vhost_binding::{vhost_vring_file, VHOST_NET_SET_BACKEND};
use vhost::vhost_kern::VhostKernBackend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_ref;

/// One ring as vhost needs it: where the guest put it and where to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringSpec {
    /// Queue index (0 RX, 1 TX for the first pair).
    pub index: usize,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The next available-ring index the device would read.
    pub next_avail: u16,
}

/// What went wrong talking to vhost-net, naming the step.
#[derive(Debug, thiserror::Error)]
#[error("vhost-net: {step}: {source}")]
pub struct Error {
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

fn fail(step: &'static str) -> impl FnOnce(vhost::Error) -> Error {
    move |e| Error {
        step,
        source: io::Error::other(e.to_string()),
    }
}

/// A vhost-net instance owned by this process.
pub struct VhostNet {
    fd: File,
    mem: Arc<GuestMemoryMmap>,
}

impl AsRawFd for VhostNet {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl VhostKernBackend for VhostNet {
    type AS = Arc<GuestMemoryMmap>;

    fn mem(&self) -> &Self::AS {
        &self.mem
    }
}

impl VhostNet {
    /// Takes `fd` (an open `/dev/vhost-net`), becomes its owner and reads
    /// the features it supports.
    pub fn new(fd: OwnedFd, mem: GuestMemoryMmap) -> Result<(VhostNet, u64), Error> {
        let vhost = VhostNet {
            fd: File::from(fd),
            mem: Arc::new(mem),
        };
        vhost.set_owner().map_err(fail("VHOST_SET_OWNER"))?;
        let features = vhost.get_features().map_err(fail("VHOST_GET_FEATURES"))?;
        Ok((vhost, features))
    }

    /// Gives the kernel the memory table, `features` (already limited to
    /// what [`VhostNet::new`] reported), each ring with its kick and call
    /// eventfds, and `tap` as the backend of every ring.
    pub fn start(
        &self,
        features: u64,
        rings: &[(VringSpec, &EventFd, &EventFd)],
        tap: RawFd,
    ) -> Result<(), Error> {
        self.set_features(features)
            .map_err(fail("VHOST_SET_FEATURES"))?;
        let mut regions = Vec::new();
        for region in self.mem.iter() {
            let host = self
                .mem
                .get_host_address(region.start_addr())
                .map_err(|e| Error {
                    step: "memory table",
                    source: io::Error::other(e.to_string()),
                })?;
            regions.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            });
        }
        self.set_mem_table(&regions)
            .map_err(fail("VHOST_SET_MEM_TABLE"))?;
        for (ring, kick, call) in rings {
            let config = VringConfigData {
                queue_max_size: ring.size,
                queue_size: ring.size,
                flags: 0,
                desc_table_addr: ring.desc,
                used_ring_addr: ring.used,
                avail_ring_addr: ring.avail,
                log_addr: None,
            };
            if !self.is_valid(&config) {
                return Err(Error {
                    step: "ring addresses",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("ring {} lies outside guest memory: {ring:?}", ring.index),
                    ),
                });
            }
            self.set_vring_num(ring.index, ring.size)
                .map_err(fail("VHOST_SET_VRING_NUM"))?;
            self.set_vring_addr(ring.index, &config)
                .map_err(fail("VHOST_SET_VRING_ADDR"))?;
            self.set_vring_base(ring.index, ring.next_avail)
                .map_err(fail("VHOST_SET_VRING_BASE"))?;
            self.set_vring_kick(ring.index, kick)
                .map_err(fail("VHOST_SET_VRING_KICK"))?;
            self.set_vring_call(ring.index, call)
                .map_err(fail("VHOST_SET_VRING_CALL"))?;
        }
        for (ring, _, _) in rings {
            self.set_backend(ring.index, tap)?;
        }
        Ok(())
    }

    /// Points ring `index`'s interrupts at `call`.
    pub fn set_call(&self, index: usize, call: &EventFd) -> Result<(), Error> {
        self.set_vring_call(index, call)
            .map_err(fail("VHOST_SET_VRING_CALL"))
    }

    /// Detaches the tap from ring `index` (the kernel stops touching the
    /// ring) and returns where the ring stopped.
    pub fn stop(&self, index: usize) -> Result<u16, Error> {
        self.set_backend(index, -1)?;
        let base = self
            .get_vring_base(index)
            .map_err(fail("VHOST_GET_VRING_BASE"))?;
        Ok(base as u16)
    }

    /// `VHOST_NET_SET_BACKEND`: `fd` (a tap, or -1 for none) serves ring
    /// `index`.
    fn set_backend(&self, index: usize, fd: RawFd) -> Result<(), Error> {
        let file = vhost_vring_file {
            index: index as u32,
            fd,
        };
        // SAFETY: the ioctl reads one vhost_vring_file, which lives for the
        // call; the descriptor is a vhost-net instance we own.
        let ret = unsafe { ioctl_with_ref(&self.fd, VHOST_NET_SET_BACKEND(), &file) };
        if ret < 0 {
            return Err(Error {
                step: "VHOST_NET_SET_BACKEND",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}
