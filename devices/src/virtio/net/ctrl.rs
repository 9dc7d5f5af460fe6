//! virtio-net control queue: receive-mode and MAC commands, recorded and
//! acknowledged.

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::{features, Net, NetBackend, CTRL, CTRL_ERR, CTRL_OK};
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

impl<B: NetBackend> Net<B> {
    /// Answers every command on the control queue.
    pub(super) fn process_ctrl<M: GuestMemory>(&mut self, ctx: &mut QueueCtx<'_, M>) -> Result<()> {
        let mem = ctx.mem;
        let Some(q) = ctx.queue(CTRL) else {
            return Ok(());
        };
        let ring = |source| Error::Ring {
            queue: CTRL,
            source,
        };
        let mut used = false;
        // virtio-queue's notification loop: with EVENT_IDX,
        // enable_notification is what publishes avail_event. Without it,
        // avail_event stays where the driver zeroed it, and Linux (whose
        // vring_need_event then says no) kicks for the first command only,
        // then busy-polls the second one forever.
        loop {
            q.disable_notification(mem).map_err(ring)?;
            loop {
                let next = q.iter(mem).map_err(ring)?.next();
                let Some(chain) = next else {
                    break;
                };
                let head = chain.head_index();
                let Some(ack_at) = self.read_command(mem, chain)? else {
                    return Err(Error::BadChain { queue: CTRL, head });
                };
                let ack = match self.ctrl_buf.len() {
                    0..=CTRL_MAX => self.command(),
                    _ => CTRL_ERR,
                };
                mem.write_obj(ack, ack_at).map_err(|_| Error::BadBuffer {
                    queue: CTRL,
                    addr: ack_at.0,
                    len: 1,
                })?;
                q.add_used(mem, head, 1).map_err(ring)?;
                used = true;
            }
            if !q.enable_notification(mem).map_err(ring)? {
                break;
            }
        }
        if used {
            ctx.mark_used(CTRL);
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
        let buf = &mut self.ctrl_buf;
        buf.clear();
        let mut ack_at = None;
        let mut too_big = false;
        walk(CTRL, chain, |d| {
            let bad = || Error::BadBuffer {
                queue: CTRL,
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
                    queue: CTRL,
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
    fn command(&mut self) -> u8 {
        let buf = &self.ctrl_buf;
        let (Some(&class), Some(&cmd)) = (buf.first(), buf.get(1)) else {
            return CTRL_ERR;
        };
        let data = &buf[2..];
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
