//! virtio-net transmit: frames from the driver's buffers to the backend.

use std::io;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::pair::Pair;
use super::{NetBackend, HDR_LEN, MAX_FRAME};
use crate::virtio::chain::{as_io_slices, walk};
use crate::virtio::{Error, Result};

impl<B: NetBackend> Pair<B> {
    /// Sends every frame on the transmit queue to the backend; returns
    /// whether the queue got used buffers.
    pub(super) fn process_tx<M: GuestMemory>(&mut self, mem: &M) -> Result<bool> {
        let Some(mut q) = self.tx.take() else {
            return Ok(false);
        };
        let result = self.process_tx_on(mem, &mut q);
        self.tx = Some(q);
        result
    }

    fn process_tx_on<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool> {
        let queue = self.tx_index();
        let ring = |source| Error::Ring { queue, source };
        let mut used = false;
        while !self.tx_blocked {
            q.disable_notification(mem).map_err(ring)?;
            loop {
                let next = q.iter(mem).map_err(ring)?.next();
                let Some(chain) = next else {
                    break;
                };
                let head = chain.head_index();
                if !self.send_frame(mem, chain)? {
                    q.go_to_previous_position();
                    self.tx_blocked = true;
                    break;
                }
                q.add_used(mem, head, 0).map_err(ring)?;
                used = true;
            }
            if self.tx_blocked || !q.enable_notification(mem).map_err(ring)? {
                break;
            }
        }
        Ok(used)
    }

    /// Writes the frame of `chain` to the backend (or drops it if it is
    /// malformed or refused). Returns false if the backend would block.
    fn send_frame<M: GuestMemory>(&mut self, mem: &M, chain: DescriptorChain<&M>) -> Result<bool> {
        let queue = self.tx_index();
        self.iov.clear();
        let iov = &mut self.iov;
        let walked = walk(queue, chain, |d| {
            if d.is_write_only() {
                return Err(Error::WrongDirection {
                    queue,
                    which: "device-writable",
                });
            }
            iov.push_guest(mem, queue, d.addr(), d.len(), false)
        });
        let total = self.iov.bytes();
        match walked {
            Err(Error::TooManySegments { .. }) => {
                self.stats.tx_dropped += 1;
                return Ok(true);
            }
            r => r?,
        }
        if !(HDR_LEN..=HDR_LEN + MAX_FRAME).contains(&total) {
            self.stats.tx_dropped += 1;
            return Ok(true);
        }
        let skip = if self.backend.vnet_hdr_len() == 0 {
            HDR_LEN
        } else {
            0
        };
        let backend = &mut self.backend;
        let written = self
            .iov
            .with_skipped(skip, |iov| backend.writev(as_io_slices(iov)));
        match written {
            Ok(_) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += (total - HDR_LEN) as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => {
                self.stats.tx_errors += 1;
                self.backend_error("write", &e);
            }
        }
        Ok(true)
    }
}
