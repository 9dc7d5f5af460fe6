//! A PCI device whose model runs in another process: configuration cycles
//! and BAR accesses become messages on its device channel. Reads wait for
//! the answer; writes are posted. The BAR registers themselves are kept
//! here: BARs sit where the launcher put them, and the guest may size them
//! but not move them (a move is logged and ignored).

use std::sync::Arc;
use std::time::Duration;

use devices::pci::PciDevice;
use ipc::messages::{DeviceReply, DeviceRequest, RegData};
use ipc::Channel;

use crate::roles::{AssignedBar, BarKindName};
use crate::vcpu::bus::{BusDevice, DeviceRequest as BusRequest};

/// How long a vCPU waits for a device process to take a write or answer a
/// read. A device that does not is given up: from then on it reads as all
/// ones and ignores writes, as an unplugged card would, and the guest's
/// vCPU goes on.
pub const DEVICE_DEADLINE: Duration = Duration::from_secs(20);

/// First configuration register of the BARs, and how many there are.
const BAR_REG: usize = 4;
const BAR_COUNT: usize = 6;

/// The configuration side of a remote device, for the PCI host bridge.
pub struct RemotePci {
    name: String,
    channel: Arc<Channel>,
    bars: Vec<AssignedBar>,
    /// Whether the guest wrote all ones to BAR register i (sizing it).
    sizing: [bool; BAR_COUNT],
    moved_logged: bool,
}

impl RemotePci {
    /// The device `name` behind `channel`, its BARs at the given addresses.
    /// Tells the model where its BARs are, so that its own view agrees.
    pub fn new(name: String, channel: Arc<Channel>, bars: Vec<AssignedBar>) -> Self {
        let dev = RemotePci {
            name,
            channel,
            bars,
            sizing: [false; BAR_COUNT],
            moved_logged: false,
        };
        for reg in BAR_REG..BAR_REG + BAR_COUNT {
            let value = dev.bar_reg(reg - BAR_REG);
            dev.post(DeviceRequest::ConfigWrite {
                reg: reg as u16,
                offset: 0,
                data: RegData::from_u64(u64::from(value), 4),
            });
        }
        dev
    }

    fn post(&self, request: DeviceRequest) {
        if let Err(e) = self.channel.send(&request, &[]) {
            failed(&self.name, &request, &e);
        }
    }

    /// The value of BAR register `i` as the guest sees it.
    fn bar_reg(&self, i: usize) -> u32 {
        for bar in &self.bars {
            let base = usize::from(bar.index);
            let mask = !(bar.size - 1);
            if base == i {
                let flags = match bar.kind {
                    BarKindName::Io => 0x1,
                    BarKindName::Memory32 => u32::from(bar.prefetchable) << 3,
                    BarKindName::Memory64 => 0x4 | u32::from(bar.prefetchable) << 3,
                };
                let value = if self.sizing[i] { mask } else { bar.address };
                let low_mask = if bar.kind == BarKindName::Io {
                    !0x3
                } else {
                    !0xf
                };
                return (value as u32 & low_mask) | flags;
            }
            if bar.kind == BarKindName::Memory64 && base + 1 == i {
                let value = if self.sizing[i] { mask } else { bar.address };
                return (value >> 32) as u32;
            }
        }
        0
    }

    fn write_bar_reg(&mut self, i: usize, offset: usize, data: &[u8]) {
        if offset != 0 || data.len() != 4 {
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let was_sizing = self.sizing[i];
        self.sizing[i] = value == u32::MAX;
        if !self.sizing[i]
            && !was_sizing
            && value & !0xf != self.bar_reg(i) & !0xf
            && !self.moved_logged
        {
            self.moved_logged = true;
            log::warn!(
                "{}: the guest tried to move BAR register {i}; BARs stay where they are",
                self.name
            );
        }
    }
}

impl PciDevice for RemotePci {
    fn config_read(&mut self, reg: usize) -> u32 {
        if (BAR_REG..BAR_REG + BAR_COUNT).contains(&reg) {
            return self.bar_reg(reg - BAR_REG);
        }
        let request = DeviceRequest::ConfigRead { reg: reg as u16 };
        match self.channel.call::<_, DeviceReply>(&request, &[]) {
            Ok((DeviceReply::ConfigValue(v), _)) => v,
            Ok((other, _)) => {
                log::warn!("{}: answered {request:?} with {other:?}", self.name);
                u32::MAX
            }
            Err(e) => {
                failed(&self.name, &request, &e);
                u32::MAX
            }
        }
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if (BAR_REG..BAR_REG + BAR_COUNT).contains(&reg) {
            return self.write_bar_reg(reg - BAR_REG, offset, data);
        }
        if let Some(data) = RegData::new(data) {
            self.post(DeviceRequest::ConfigWrite {
                reg: reg as u16,
                offset: offset as u8,
                data,
            });
        }
    }
}

/// One BAR of a remote device, on the MMIO or PIO bus.
pub struct RemoteBar {
    pub name: String,
    pub channel: Arc<Channel>,
    pub bar: u8,
    /// The device's register mirror and, for each slot, the offset in this
    /// BAR it answers (`None` for a slot of another BAR).
    pub mirror: Option<(Arc<ipc::RegisterMirror>, Vec<Option<u64>>)>,
}

impl RemoteBar {
    /// A 4-byte read answered from the register mirror, if it covers it.
    fn mirrored(&self, offset: u64, len: usize) -> Option<u32> {
        let (mirror, offsets) = self.mirror.as_ref()?;
        if len != 4 {
            return None;
        }
        let slot = offsets.iter().position(|o| *o == Some(offset))?;
        mirror.read(slot)
    }
}

impl BusDevice for RemoteBar {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(value) = self.mirrored(offset, data.len()) {
            data.copy_from_slice(&value.to_le_bytes());
            return;
        }
        let request = DeviceRequest::BarRead {
            bar: self.bar,
            offset,
            len: data.len() as u8,
        };
        match self.channel.call::<_, DeviceReply>(&request, &[]) {
            Ok((DeviceReply::BarData(d), _)) if d.len() == data.len() => {
                data.copy_from_slice(d.as_slice())
            }
            Ok((other, _)) => {
                log::warn!("{}: answered {request:?} with {other:?}", self.name);
                data.fill(0xff);
            }
            Err(e) => {
                failed(&self.name, &request, &e);
                data.fill(0xff);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
        if let Some(d) = RegData::new(data) {
            let request = DeviceRequest::BarWrite {
                bar: self.bar,
                offset,
                data: d,
            };
            if let Err(e) = self.channel.send(&request, &[]) {
                failed(&self.name, &request, &e);
            }
        }
        BusRequest::None
    }
}

/// Reports a failed exchange with device `name`: the moment it is given up,
/// or any other failure; nothing once it is gone.
fn failed(name: &str, request: &DeviceRequest, e: &ipc::Error) {
    match e {
        ipc::Error::TimedOut { after } => {
            log::error!(
                "{name}: the device process did not respond within {after:?} ({request:?}); \
                 the device now reads as unplugged"
            )
        }
        ipc::Error::GivenUp | ipc::Error::Closed => {}
        e => log::warn!("{name}: {request:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(bars: Vec<AssignedBar>) -> (RemotePci, Channel) {
        let (here, there) = Channel::pair().unwrap();
        (RemotePci::new("t".into(), Arc::new(here), bars), there)
    }

    #[test]
    fn mirrored_reads_need_no_message() {
        let (here, there) = Channel::pair().unwrap();
        let (device_side, fd) = ipc::RegisterMirror::create().unwrap();
        let mirror = Arc::new(ipc::RegisterMirror::map(&fd).unwrap());
        let mut bar = RemoteBar {
            name: "t".into(),
            channel: Arc::new(here),
            bar: 0,
            mirror: Some((mirror, vec![Some(0x8)])),
        };
        // Not published yet: the read goes to the device.
        let reader = std::thread::spawn(move || {
            let mut data = [0u8; 4];
            bar.read(0x8, &mut data);
            (bar, data)
        });
        let (request, _) = there.recv::<DeviceRequest>().unwrap();
        assert_eq!(
            request,
            DeviceRequest::BarRead {
                bar: 0,
                offset: 0x8,
                len: 4
            }
        );
        there
            .send(
                &DeviceReply::BarData(RegData::new(&[1, 0, 0, 0]).unwrap()),
                &[],
            )
            .unwrap();
        let (mut bar, data) = reader.join().unwrap();
        assert_eq!(data, [1, 0, 0, 0]);
        // Published: answered here, nothing sent.
        device_side.publish(0, 0x8008_0783);
        let mut data = [0u8; 4];
        bar.read(0x8, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x8008_0783);
        assert!(there.try_recv::<DeviceRequest>().unwrap().is_none());
        // A 2-byte read of it, or another register, still asks the device.
        let mut data = [0u8; 2];
        let reader = std::thread::spawn(move || bar.read(0x8, &mut data));
        assert!(matches!(
            there.recv::<DeviceRequest>().unwrap().0,
            DeviceRequest::BarRead { len: 2, .. }
        ));
        there
            .send(&DeviceReply::BarData(RegData::new(&[0, 0]).unwrap()), &[])
            .unwrap();
        reader.join().unwrap();
    }

    fn bar64() -> AssignedBar {
        AssignedBar {
            index: 0,
            kind: BarKindName::Memory64,
            prefetchable: false,
            size: 0x8000,
            address: 0xc000_8000,
        }
    }

    #[test]
    fn bars_read_back_size_and_do_not_move() {
        let (mut dev, other) = remote(vec![bar64()]);
        // The model is told where the BARs are.
        let (first, _) = other.recv::<DeviceRequest>().unwrap();
        assert!(matches!(first, DeviceRequest::ConfigWrite { reg: 4, .. }));
        assert_eq!(dev.config_read(4), 0xc000_8004);
        assert_eq!(dev.config_read(5), 0);
        dev.config_write(4, 0, &u32::MAX.to_le_bytes());
        dev.config_write(5, 0, &u32::MAX.to_le_bytes());
        assert_eq!(dev.config_read(4), 0xffff_8004);
        assert_eq!(dev.config_read(5), 0xffff_ffff);
        dev.config_write(4, 0, &0xd000_0000u32.to_le_bytes());
        dev.config_write(5, 0, &0u32.to_le_bytes());
        assert_eq!(dev.config_read(4), 0xc000_8004);
        assert_eq!(dev.config_read(6), 0);
    }

    #[test]
    fn other_registers_go_to_the_model_and_a_dead_model_reads_all_ones() {
        let (mut dev, other) = remote(vec![bar64()]);
        for _ in 0..BAR_COUNT {
            other.recv::<DeviceRequest>().unwrap();
        }
        dev.config_write(1, 0, &[0x06, 0x00]);
        let (w, _) = other.recv::<DeviceRequest>().unwrap();
        assert_eq!(
            w,
            DeviceRequest::ConfigWrite {
                reg: 1,
                offset: 0,
                data: RegData::new(&[6, 0]).unwrap()
            }
        );
        drop(other);
        assert_eq!(dev.config_read(0), u32::MAX);
    }
}
