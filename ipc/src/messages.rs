//! Every message moatvm's processes exchange: one enum per channel and
//! direction, all in this module so the whole protocol reads in one place.
//!
//! | channel     | from → to                 | requests            | replies        |
//! |-------------|---------------------------|---------------------|----------------|
//! | device      | vCPU process → device     | [`DeviceRequest`]   | [`DeviceReply`] (reads only) |
//! | vm control  | device → vCPU process     | [`VmRequest`]       | [`VmReply`] (every request) |
//! | bootstrap   | launcher → child          | [`LauncherMessage`] | [`ChildMessage`] |
//!
//! Descriptors never appear in these types: they travel beside the message
//! as `SCM_RIGHTS`, and each variant's documentation says which ones, in
//! which order. The receiver checks that the count matches
//! (see [`VmRequest::expected_fds`]) before using any.
//!
//! Messages come from processes that may be compromised, so decoding is not
//! the end of checking: the `check` methods validate shapes (ranges, lengths)
//! that the type system cannot, and the receiver still checks meaning (for
//! example, that a BAR offset lies inside that device's BAR).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Up to 8 bytes of register data, kept inline (no allocation per access).
///
/// On the wire it is the length and all 8 bytes; decoding rejects a length
/// above 8, and bytes past the length are zero after decoding.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RegDataWire")]
pub struct RegData {
    len: u8,
    bytes: [u8; RegData::MAX],
}

#[derive(Deserialize)]
struct RegDataWire {
    len: u8,
    bytes: [u8; RegData::MAX],
}

impl TryFrom<RegDataWire> for RegData {
    type Error = String;

    fn try_from(wire: RegDataWire) -> Result<Self, Self::Error> {
        let len = usize::from(wire.len);
        if len > RegData::MAX {
            return Err(format!(
                "register data length {len} exceeds {}",
                RegData::MAX
            ));
        }
        let mut bytes = [0; RegData::MAX];
        bytes[..len].copy_from_slice(&wire.bytes[..len]);
        Ok(RegData {
            len: wire.len,
            bytes,
        })
    }
}

impl RegData {
    /// The most bytes one access carries (a 64-bit access).
    pub const MAX: usize = 8;

    /// `data` as register data, or `None` if it is longer than [`Self::MAX`].
    pub fn new(data: &[u8]) -> Option<Self> {
        if data.len() > Self::MAX {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..data.len()].copy_from_slice(data);
        Some(RegData {
            len: data.len() as u8,
            bytes,
        })
    }

    /// The low `len` bytes of `value`, little-endian (`len` is clamped to 8).
    pub fn from_u64(value: u64, len: usize) -> Self {
        let len = len.min(Self::MAX);
        let mut bytes = value.to_le_bytes();
        bytes[len..].fill(0);
        RegData {
            len: len as u8,
            bytes,
        }
    }

    /// The bytes, in guest (little-endian) order.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The bytes as a little-endian number.
    pub fn to_u64(&self) -> u64 {
        u64::from_le_bytes(self.bytes)
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for RegData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegData({:02x?})", self.as_slice())
    }
}

/// Size of a PCI Express configuration space, in bytes; conventional PCI uses
/// the first 256.
pub const CONFIG_SPACE_BYTES: u16 = 4096;

/// Number of BARs of a type-0 header.
pub const BAR_COUNT: u8 = 6;

/// Why a message's shape is invalid (returned by the `check` methods).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {message}: {reason}")]
pub struct ShapeError {
    pub message: &'static str,
    pub reason: String,
}

fn shape(message: &'static str, reason: impl Into<String>) -> ShapeError {
    ShapeError {
        message,
        reason: reason.into(),
    }
}

fn check_access(message: &'static str, len: usize) -> Result<(), ShapeError> {
    match len {
        1 | 2 | 4 | 8 => Ok(()),
        n => Err(shape(
            message,
            format!("access size {n} is not 1, 2, 4 or 8"),
        )),
    }
}

fn check_bar(message: &'static str, bar: u8) -> Result<(), ShapeError> {
    if bar < BAR_COUNT {
        Ok(())
    } else {
        Err(shape(message, format!("BAR {bar} does not exist")))
    }
}

// ---------------------------------------------------------------------------
// device channel: vCPU process → device process
// ---------------------------------------------------------------------------

/// What the vCPU process asks of a device process, on that device's
/// "device" channel. No descriptors travel with these.
///
/// Reads are a synchronous round trip: the device answers each read with one
/// [`DeviceReply`], in order. Writes are posted: no reply, but the device
/// applies them in the order sent, before any later read is answered, so a
/// read always sees every earlier write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceRequest {
    /// Read the 32-bit configuration register `reg` (the byte offset divided
    /// by 4; below 1024). Reply: [`DeviceReply::ConfigValue`].
    ConfigRead { reg: u16 },
    /// Write `data` (1, 2 or 4 bytes) at byte `offset` (0..=3) of the 32-bit
    /// configuration register `reg`, not crossing into the next register.
    /// Posted.
    ConfigWrite { reg: u16, offset: u8, data: RegData },
    /// Read `len` (1, 2, 4 or 8) bytes at `offset` into BAR `bar` (0..=5).
    /// Reply: [`DeviceReply::BarData`].
    BarRead { bar: u8, offset: u64, len: u8 },
    /// Write `data` (1, 2, 4 or 8 bytes) at `offset` into BAR `bar`. Posted.
    BarWrite { bar: u8, offset: u64, data: RegData },
    /// Stop: the device process finishes what it is doing and exits. No reply.
    Shutdown,
}

impl DeviceRequest {
    /// Whether the vCPU process waits for a [`DeviceReply`] to this request.
    pub fn expects_reply(&self) -> bool {
        matches!(
            self,
            DeviceRequest::ConfigRead { .. } | DeviceRequest::BarRead { .. }
        )
    }

    /// Checks ranges and sizes (not whether a BAR is implemented or how big
    /// it is: that is the device's business).
    pub fn check(&self) -> Result<(), ShapeError> {
        const REGS: u16 = CONFIG_SPACE_BYTES / 4;
        match *self {
            DeviceRequest::ConfigRead { reg } if reg >= REGS => Err(shape(
                "ConfigRead",
                format!("register {reg} is past {REGS}"),
            )),
            DeviceRequest::ConfigRead { .. } => Ok(()),
            DeviceRequest::ConfigWrite { reg, offset, data } => {
                let m = "ConfigWrite";
                if reg >= REGS {
                    return Err(shape(m, format!("register {reg} is past {REGS}")));
                }
                if !matches!(data.len(), 1 | 2 | 4) {
                    return Err(shape(
                        m,
                        format!("access size {} is not 1, 2 or 4", data.len()),
                    ));
                }
                if usize::from(offset) + data.len() > 4 {
                    return Err(shape(
                        m,
                        format!("{} bytes at offset {offset} cross the register", data.len()),
                    ));
                }
                Ok(())
            }
            DeviceRequest::BarRead { bar, offset, len } => {
                check_bar("BarRead", bar)?;
                check_access("BarRead", usize::from(len))?;
                check_span("BarRead", offset, u64::from(len))
            }
            DeviceRequest::BarWrite { bar, offset, data } => {
                check_bar("BarWrite", bar)?;
                check_access("BarWrite", data.len())?;
                check_span("BarWrite", offset, data.len() as u64)
            }
            DeviceRequest::Shutdown => Ok(()),
        }
    }
}

fn check_span(message: &'static str, offset: u64, len: u64) -> Result<(), ShapeError> {
    offset
        .checked_add(len)
        .map(|_| ())
        .ok_or_else(|| shape(message, format!("offset {offset:#x} + {len} overflows")))
}

/// A device's answer to a read on the device channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceReply {
    /// The value of the register a [`DeviceRequest::ConfigRead`] asked for.
    ConfigValue(u32),
    /// The bytes a [`DeviceRequest::BarRead`] asked for (exactly `len` of
    /// them; the vCPU process rejects any other length).
    BarData(RegData),
}

// ---------------------------------------------------------------------------
// vm control channel: device process → vCPU process
// ---------------------------------------------------------------------------

/// What a device process asks of the vCPU process, which alone holds the VM
/// descriptor. Each request gets one [`VmReply`].
///
/// Addresses are BAR-relative: the vCPU process knows where the guest put
/// each BAR, refuses anything outside that device's own BARs and interrupt
/// vectors, and moves the registrations itself when the guest moves a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRequest {
    /// Signal the attached eventfd (descriptor 0) when the guest writes
    /// `len` bytes (1, 2, 4 or 8; 0 for any width) at `offset` into BAR `bar`, and, if
    /// `datamatch` is given, only when the value written equals it. The
    /// write then completes in the kernel without any IPC.
    RegisterIoevent {
        bar: u8,
        offset: u64,
        len: u8,
        datamatch: Option<u64>,
    },
    /// Undo the [`VmRequest::RegisterIoevent`] with the same fields. No
    /// descriptor.
    UnregisterIoevent {
        bar: u8,
        offset: u64,
        len: u8,
        datamatch: Option<u64>,
    },
    /// Inject MSI-X `vector` (an index into the device's MSI-X table)
    /// whenever the attached eventfd (descriptor 0) is signalled. The route
    /// itself comes from [`VmRequest::SetMsiRoute`].
    RegisterIrqfd { vector: u16 },
    /// Undo [`VmRequest::RegisterIrqfd`] for `vector`. No descriptor.
    UnregisterIrqfd { vector: u16 },
    /// Point MSI-X `vector` at `address`/`data` (as the guest programmed the
    /// table entry), or mask it. No descriptor.
    SetMsiRoute {
        vector: u16,
        address: u64,
        data: u32,
        masked: bool,
    },
    /// Raise the device's INTx pin whenever the attached eventfd (descriptor
    /// 0) is signalled. With `resample`, the pin is level-triggered: the
    /// second descriptor is an eventfd KVM signals when the guest acknowledges
    /// the interrupt, so the device can re-check and re-assert.
    RegisterIntx { resample: bool },
    /// Undo [`VmRequest::RegisterIntx`]. No descriptor.
    UnregisterIntx,
}

impl VmRequest {
    /// How many descriptors must travel with this request. The vCPU process
    /// refuses a request that comes with any other number.
    pub fn expected_fds(&self) -> usize {
        match self {
            VmRequest::RegisterIoevent { .. } | VmRequest::RegisterIrqfd { .. } => 1,
            VmRequest::RegisterIntx { resample } => 1 + usize::from(*resample),
            VmRequest::UnregisterIoevent { .. }
            | VmRequest::UnregisterIrqfd { .. }
            | VmRequest::SetMsiRoute { .. }
            | VmRequest::UnregisterIntx => 0,
        }
    }

    /// Checks ranges and sizes; whether the BAR or vector belongs to the
    /// device is for the vCPU process to check against its own records.
    pub fn check(&self) -> Result<(), ShapeError> {
        match *self {
            VmRequest::RegisterIoevent {
                bar,
                offset,
                len,
                datamatch,
            }
            | VmRequest::UnregisterIoevent {
                bar,
                offset,
                len,
                datamatch,
            } => {
                let m = if matches!(self, VmRequest::RegisterIoevent { .. }) {
                    "RegisterIoevent"
                } else {
                    "UnregisterIoevent"
                };
                check_bar(m, bar)?;
                // Length 0 matches a write of any width (KVM's wildcard),
                // which cannot be combined with a datamatch.
                if len != 0 || datamatch.is_some() {
                    check_access(m, usize::from(len))?;
                }
                check_span(m, offset, u64::from(len))?;
                if let Some(value) = datamatch {
                    if len < 8 && value >> (u32::from(len) * 8) != 0 {
                        return Err(shape(
                            m,
                            format!("datamatch {value:#x} does not fit in {len} bytes"),
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The vCPU process's answer to every [`VmRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmReply {
    /// Done.
    Ok,
    /// Not done, and why (for the device's log).
    Refused(String),
}

// ---------------------------------------------------------------------------
// bootstrap channel: launcher → spawned process
// ---------------------------------------------------------------------------

/// Which part a spawned process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The process holding the VM: vCPUs, irqchip, platform devices, and the
    /// far end of every device channel.
    Vcpu,
    /// The emulated NIC at this index in the VM's configuration.
    Device { nic: u16 },
    /// The host-side backend (slirp, socket, hub) of the NIC at this index.
    Backend { nic: u16 },
}

/// What one descriptor passed with [`LauncherMessage::Bootstrap`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// The memfd holding guest RAM.
    GuestMemory,
    /// `/dev/kvm`.
    Kvm,
    /// The device channel of the NIC at this index (the vCPU process gets
    /// one per NIC, a device process its own).
    DeviceChannel { nic: u16 },
    /// The vm control channel of the NIC at this index.
    VmControl { nic: u16 },
    /// One queue of a tap device.
    Tap { queue: u16 },
    /// An open `/dev/vhost-net`, one per queue pair.
    VhostNet { queue: u16 },
    /// The frame channel between a NIC and its backend.
    FrameChannel,
    /// A socket for a socket backend (listening or connected).
    Socket,
    /// Where the process writes its log.
    Log,
}

/// What the launcher tells a process it spawned, on that process's bootstrap
/// channel (inherited across exec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LauncherMessage {
    /// Everything the process needs, sent once, first. `config` is the
    /// encoded configuration (its format is the binary's business);
    /// descriptor `i` of this message is of kind `fds[i]`.
    Bootstrap {
        role: Role,
        config: Vec<u8>,
        fds: Vec<FdKind>,
    },
    /// Stop now: the VM is ending.
    Shutdown,
}

/// What a spawned process tells the launcher on its bootstrap channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildMessage {
    /// Set up, jailed, and running.
    Ready,
    /// Cannot go on, and why; the process exits after sending this.
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_data_keeps_only_its_length() {
        let d = RegData::from_u64(0x1122_3344_5566_7788, 2);
        assert_eq!(d.as_slice(), &[0x88, 0x77]);
        assert_eq!(d.to_u64(), 0x7788);
        assert!(RegData::new(&[0; 9]).is_none());
        assert!(RegData::new(&[]).unwrap().is_empty());
    }

    #[test]
    fn device_request_shapes() {
        let data = |n: usize| RegData::new(&[0; 8][..n]).unwrap();
        let ok = [
            DeviceRequest::ConfigRead { reg: 1023 },
            DeviceRequest::ConfigWrite {
                reg: 0,
                offset: 2,
                data: data(2),
            },
            DeviceRequest::BarRead {
                bar: 5,
                offset: 0,
                len: 8,
            },
        ];
        for r in ok {
            assert!(r.check().is_ok(), "{r:?}");
        }
        let bad = [
            DeviceRequest::ConfigRead { reg: 1024 },
            DeviceRequest::ConfigWrite {
                reg: 0,
                offset: 3,
                data: data(2),
            },
            DeviceRequest::ConfigWrite {
                reg: 0,
                offset: 0,
                data: data(8),
            },
            DeviceRequest::BarRead {
                bar: 6,
                offset: 0,
                len: 4,
            },
            DeviceRequest::BarRead {
                bar: 0,
                offset: 0,
                len: 3,
            },
            DeviceRequest::BarWrite {
                bar: 0,
                offset: u64::MAX,
                data: data(1),
            },
            DeviceRequest::BarWrite {
                bar: 0,
                offset: 0,
                data: data(0),
            },
        ];
        for r in bad {
            assert!(r.check().is_err(), "{r:?}");
        }
        assert!(DeviceRequest::BarRead {
            bar: 0,
            offset: 0,
            len: 4
        }
        .expects_reply());
        assert!(!DeviceRequest::Shutdown.expects_reply());
    }

    #[test]
    fn vm_request_shapes() {
        let io = |len, datamatch| VmRequest::RegisterIoevent {
            bar: 0,
            offset: 0x3000,
            len,
            datamatch,
        };
        assert!(io(2, Some(0xffff)).check().is_ok());
        assert!(io(8, Some(u64::MAX)).check().is_ok());
        assert!(io(2, Some(0x1_0000)).check().is_err());
        assert!(io(3, None).check().is_err());
        assert_eq!(
            VmRequest::RegisterIntx { resample: false }.expected_fds(),
            1
        );
        assert_eq!(VmRequest::UnregisterIntx.expected_fds(), 0);
    }
}
