//! virtio-net control queue: receive-mode and MAC commands, recorded and
//! acknowledged, and multiqueue's VQ_PAIRS_SET, carried out.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::{features, Net, NetBackend, CTRL_ERR, CTRL_OK};
use crate::virtio::chain::walk;
use crate::virtio::{Error, QueueCtx, Result};

/// Largest control command the device reads.
const CTRL_MAX: usize = 16 * 1024;
/// Command classes and commands.
const CLASS_RX: u8 = 0;
const RX_PROMISC: u8 = 0;
const RX_ALLMULTI: u8 = 1;
const CLASS_MAC: u8 = 1;
const MAC_TABLE_SET: u8 = 0;
const MAC_ADDR_SET: u8 = 1;
const CLASS_MQ: u8 = 4;
const MQ_VQ_PAIRS_SET: u8 = 0;

impl<B: NetBackend> Net<B> {
    /// Answers every command on the control queue.
    pub(super) fn process_ctrl<M: GuestMemory>(&mut self, ctx: &mut QueueCtx<'_, M>) -> Result<()> {
        let mem = ctx.mem;
        let queue = self.ctrl_queue();
        if ctx.queue(queue).is_none() {
            return Ok(());
        }
        let ring = |source| Error::Ring { queue, source };
        let mut used = false;
        // virtio-queue's notification loop: with EVENT_IDX,
        // enable_notification is what publishes avail_event. Without it,
        // avail_event stays where the driver zeroed it, and Linux (whose
        // vring_need_event then says no) kicks for the first command only,
        // then busy-polls the second one forever.
        // The queue is looked up again after each command: carrying one
        // out (VQ_PAIRS_SET) needs the context too.
        fn q<'c, M: GuestMemory>(
            ctx: &'c mut QueueCtx<'_, M>,
            queue: u16,
        ) -> Result<&'c mut Queue> {
            ctx.queue(queue).ok_or(Error::BadQueue {
                queue,
                detail: "disabled while in use".into(),
            })
        }
        loop {
            q(ctx, queue)?.disable_notification(mem).map_err(ring)?;
            loop {
                let next = q(ctx, queue)?.iter(mem).map_err(ring)?.next();
                let Some(chain) = next else {
                    break;
                };
                let head = chain.head_index();
                let Some(ack_at) = self.read_command(mem, chain)? else {
                    return Err(Error::BadChain { queue, head });
                };
                let ack = match self.ctrl_buf.len() {
                    0..=CTRL_MAX => self.command(ctx)?,
                    _ => CTRL_ERR,
                };
                mem.write_obj(ack, ack_at).map_err(|_| Error::BadBuffer {
                    queue,
                    addr: ack_at.0,
                    len: 1,
                })?;
                q(ctx, queue)?.add_used(mem, head, 1).map_err(ring)?;
                used = true;
            }
            if !q(ctx, queue)?.enable_notification(mem).map_err(ring)? {
                break;
            }
        }
        if used {
            ctx.mark_used(queue);
        }
        Ok(())
    }

    /// Copies the readable part of a control chain into `ctrl_buf` (or
    /// makes it longer than CTRL_MAX if it does not fit) and returns where
    /// the ack byte goes: the first byte of the writable part.
    fn read_command<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: DescriptorChain<&M>,
    ) -> Result<Option<GuestAddress>> {
        let queue = self.ctrl_queue();
        let buf = &mut self.ctrl_buf;
        buf.clear();
        let mut ack_at = None;
        let mut too_big = false;
        walk(queue, chain, |d| {
            let bad = || Error::BadBuffer {
                queue,
                addr: d.addr().0,
                len: d.len(),
            };
            let len = d.len() as usize;
            if d.is_write_only() {
                if ack_at.is_none() && len > 0 {
                    if !mem.check_range(d.addr(), len, Permissions::Write) {
                        return Err(bad());
                    }
                    ack_at = Some(d.addr());
                }
                return Ok(());
            }
            if ack_at.is_some() {
                return Err(Error::WrongDirection {
                    queue,
                    which: "device-readable",
                });
            }
            if too_big || buf.len() + len > CTRL_MAX {
                too_big = true;
                return match mem.check_range(d.addr(), len, Permissions::Read) {
                    true => Ok(()),
                    false => Err(bad()),
                };
            }
            let at = buf.len();
            buf.resize(at + len, 0);
            mem.read_slice(&mut buf[at..], d.addr()).map_err(|_| bad())
        })?;
        if too_big {
            buf.resize(CTRL_MAX + 1, 0);
        }
        Ok(ack_at)
    }

    /// Carries out the command in `ctrl_buf`; returns the ack.
    fn command<M: GuestMemory>(&mut self, ctx: &mut QueueCtx<'_, M>) -> Result<u8> {
        let buf = &self.ctrl_buf;
        let (Some(&class), Some(&cmd)) = (buf.first(), buf.get(1)) else {
            return Ok(CTRL_ERR);
        };
        let data = &buf[2..];
        if class == CLASS_MQ {
            return match (cmd, data) {
                (MQ_VQ_PAIRS_SET, &[lo, hi]) => self.set_pairs(u16::from_le_bytes([lo, hi]), ctx),
                _ => Ok(CTRL_ERR),
            };
        }
        Ok(self.rx_command(class, cmd))
    }

    /// Receive-mode and MAC commands: recorded; returns the ack.
    fn rx_command(&mut self, class: u8, cmd: u8) -> u8 {
        let data = &self.ctrl_buf[2..];
        let rx = self.acked & features::CTRL_RX != 0;
        match (class, cmd, data) {
            (CLASS_RX, RX_PROMISC, &[on]) if rx => self.filter.promisc = on != 0,
            (CLASS_RX, RX_ALLMULTI, &[on]) if rx => self.filter.allmulti = on != 0,
            (CLASS_MAC, MAC_TABLE_SET, _) if rx => {
                let Some((unicast, rest)) = mac_table(data) else {
                    return CTRL_ERR;
                };
                let Some((multicast, [])) = mac_table(rest) else {
                    return CTRL_ERR;
                };
                self.filter.unicast = unicast;
                self.filter.multicast = multicast;
            }
            (CLASS_MAC, MAC_ADDR_SET, &[a, b, c, d, e, f])
                if self.acked & features::CTRL_MAC_ADDR != 0 =>
            {
                self.mac = [a, b, c, d, e, f];
            }
            _ => return CTRL_ERR,
        }
        CTRL_OK
    }
}

/// Parses one `virtio_net_ctrl_mac` (le32 count, then count addresses)
/// off the front of `data`.
fn mac_table(data: &[u8]) -> Option<(Vec<[u8; 6]>, &[u8])> {
    let (count, rest) = data.split_first_chunk::<4>()?;
    let n = usize::try_from(u32::from_le_bytes(*count)).ok()?;
    let bytes = n.checked_mul(6).filter(|&b| b <= rest.len())?;
    let macs = rest[..bytes]
        .chunks_exact(6)
        .map(|m| [m[0], m[1], m[2], m[3], m[4], m[5]])
        .collect();
    Some((macs, &rest[bytes..]))
}
