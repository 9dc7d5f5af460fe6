//! virtio-net receive: frames from the backend into the driver's buffers.

use std::io;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::pair::Pair;
use super::{features, rewind, NetBackend, HDR_LEN, MAX_FRAME};
use crate::virtio::chain::{as_io_slices_mut, walk};
use crate::virtio::{Error, Result};

impl<B: NetBackend> Pair<B> {
    /// Bytes of buffer the driver must give for one received frame.
    pub(super) fn rx_need(&self) -> usize {
        let gso = features::GUEST_TSO4 | features::GUEST_TSO6 | features::GUEST_UFO;
        HDR_LEN
            + if self.acked & gso != 0 {
                MAX_FRAME
            } else {
                14 + 4 + usize::from(self.mtu)
            }
    }

    /// Moves frames from the backend into the receive queue until either
    /// runs dry; returns whether the queue got used buffers.
    pub(super) fn process_rx<M: GuestMemory>(&mut self, mem: &M) -> Result<bool> {
        let Some(mut q) = self.rx.take() else {
            return Ok(false);
        };
        let result = self.process_rx_on(mem, &mut q);
        self.rx = Some(q);
        result
    }

    fn process_rx_on<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool> {
        let queue = self.rx_index();
        let ring = |source| Error::Ring { queue, source };
        let mrg = self.acked & features::MRG_RXBUF != 0;
        let need = self.rx_need();
        let mut used = false;
        q.disable_notification(mem).map_err(ring)?;
        while self.rx_pending {
            self.gather_rx(mem, q, mrg, need)?;
            let have: usize = self.rx_chains.iter().map(|c| c.1).sum();
            if self.rx_chains.is_empty() || (mrg && have < need) {
                // Not enough buffers. Ask for a kick when the driver adds
                // one past those taken (so EVENT_IDX's avail_event lands
                // after them), then give them back; go on only if some
                // arrived meanwhile.
                let more = q.enable_notification(mem).map_err(ring)?;
                rewind(q, self.rx_chains.len());
                if !more {
                    break;
                }
                q.disable_notification(mem).map_err(ring)?;
                continue;
            }
            used |= self.read_frame(mem, q)?;
        }
        Ok(used)
    }

    /// Takes chains off the receive ring (one, or with `mrg` enough for
    /// `need` bytes) and lays their buffers out in `self.iov`.
    fn gather_rx<M: GuestMemory>(
        &mut self,
        mem: &M,
        q: &mut Queue,
        mrg: bool,
        need: usize,
    ) -> Result<()> {
        let queue = self.rx_index();
        self.iov.clear();
        self.rx_chains.clear();
        let chains = q
            .iter(mem)
            .map_err(|source| Error::Ring { queue, source })?;
        let mut have = 0;
        for chain in chains {
            let head = chain.head_index();
            let iov = &mut self.iov;
            let mut len = 0;
            // More than IOV_MAX segments for one frame is no real driver's
            // doing (Linux's buffers are 1.5 KiB and up): a fault.
            walk(queue, chain, |d| {
                if !d.is_write_only() {
                    return Err(Error::WrongDirection {
                        queue,
                        which: "device-readable",
                    });
                }
                len += d.len() as usize;
                iov.push_guest(mem, queue, d.addr(), d.len(), true)
            })?;
            if len < HDR_LEN {
                return Err(Error::ShortBuffer {
                    queue,
                    len,
                    need: HDR_LEN,
                });
            }
            self.rx_chains.push((head, len));
            have += len;
            if !mrg || have >= need {
                break;
            }
        }
        Ok(())
    }

    /// Reads one frame into the gathered buffers and returns the chains it
    /// filled to the driver. Returns whether any were used.
    fn read_frame<M: GuestMemory>(&mut self, mem: &M, q: &mut Queue) -> Result<bool> {
        let queue = self.rx_index();
        let ring = |source| Error::Ring { queue, source };
        let bare = self.backend.vnet_hdr_len() == 0;
        if bare {
            self.iov.write_at(0, &[0; HDR_LEN]);
        }
        let skip = if bare { HDR_LEN } else { 0 };
        let backend = &mut self.backend;
        let read = self
            .iov
            .with_skipped(skip, |iov| backend.readv(as_io_slices_mut(iov)));
        let total = match read {
            Ok(n) if n + skip >= HDR_LEN => n + skip,
            other => {
                rewind(q, self.rx_chains.len());
                match other {
                    // A frame too short for its header: dropped; go on.
                    Ok(n) if n > 0 => self.stats.rx_errors += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Nothing to read (0 is end of file for a socket), or
                    // an error: wait for the next readable event, so that
                    // a failing backend cannot make the device spin.
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            self.stats.rx_errors += 1;
                            self.backend_error("read", &e);
                        }
                        self.rx_pending = false;
                    }
                    Ok(_) => self.rx_pending = false,
                }
                return Ok(false);
            }
        };
        // How many chains the frame fills; the rest go back to the ring.
        let mut left = total;
        let mut count = 0;
        for &(_, len) in &self.rx_chains {
            if left == 0 && count > 0 {
                break;
            }
            left = left.saturating_sub(len);
            count += 1;
        }
        rewind(q, self.rx_chains.len() - count);
        self.iov.write_at(10, &(count as u16).to_le_bytes());
        if self.acked & features::GUEST_CSUM == 0 {
            // Without GUEST_CSUM the flags must be 0; the tap only ever
            // sets DATA_VALID then.
            self.iov.write_at(0, &[0]);
        }
        let mut left = total;
        for &(head, len) in &self.rx_chains[..count] {
            let n = left.min(len);
            q.add_used(mem, head, n as u32).map_err(ring)?;
            left -= n;
        }
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += (total - HDR_LEN) as u64;
        Ok(true)
    }
}
