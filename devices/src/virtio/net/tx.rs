//! virtio-net transmit: frames from the driver's buffers to the backend.

use std::io;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::{Net, NetBackend, HDR_LEN, MAX_FRAME, TX};
use crate::virtio::chain::{as_io_slices, walk};
use crate::virtio::{Error, QueueCtx, Result};

impl<B: NetBackend> Net<B> {
    /// Sends every frame on the transmit queue to the backend.
    pub(super) fn process_tx<M: GuestMemory>(&mut self, ctx: &mut QueueCtx<'_, M>) -> Result<()> {
        let mem = ctx.mem;
        let Some(q) = ctx.queue(TX) else {
            return Ok(());
        };
        let ring = |source| Error::Ring { queue: TX, source };
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
        if used {
            ctx.mark_used(TX);
        }
        Ok(())
    }

    /// Writes the frame of `chain` to the backend (or drops it if it is
    /// malformed or refused). Returns false if the backend would block.
    fn send_frame<M: GuestMemory>(&mut self, mem: &M, chain: DescriptorChain<&M>) -> Result<bool> {
        self.iov.clear();
        let iov = &mut self.iov;
        let walked = walk(TX, chain, |d| {
            if d.is_write_only() {
                return Err(Error::WrongDirection {
                    queue: TX,
                    which: "device-writable",
                });
            }
            iov.push_guest(mem, TX, d.addr(), d.len(), false)
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
