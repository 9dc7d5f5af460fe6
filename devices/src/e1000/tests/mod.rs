//! In-process tests of the e1000 model: a driver that programs it the way
//! Linux's e1000 does, over real guest memory, with a fake backend and
//! fake interrupts.

mod desc;
mod device;
mod fuzz;
mod hostile;
mod offload;
mod rx;
mod tx;

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use desc::*;

use super::regs::*;
use super::{E1000, MMIO_BAR};
use crate::pci::{HostedPciDevice, Interrupts, PciDevice};
use crate::virtio::net::NetBackend;

/// Guest RAM: two adjacent 1 MiB regions.
pub const RAM: u64 = 0x20_0000;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Ring layout the driver uses: 32 descriptors each.
pub const TX_RING: u64 = 0x1000;
pub const RX_RING: u64 = 0x2000;
pub const RING_LEN: u32 = 32 * 16;
/// Receive buffers: 2 KiB for each descriptor.
pub const RX_BUFS: u64 = 0x8_0000;
/// Where transmit data goes.
pub const TX_BUFS: u64 = 0x1_0000;
/// What Linux enables: RXT0, TXDW, RXDMT0, RXSEQ, LSC.
pub const IMS_LINUX: u32 = 0x9d;

/// Counts INTx assertions.
#[derive(Clone, Default)]
pub struct FakeIrq(pub Arc<Mutex<u32>>);

impl Interrupts for FakeIrq {
    fn signal_vector(&self, _vector: u16) {
        panic!("e1000 has no MSI-X");
    }
    fn assert_intx(&self) {
        *self.0.lock().unwrap() += 1;
    }
}

impl FakeIrq {
    pub fn count(&self) -> u32 {
        *self.0.lock().unwrap()
    }
}

/// The far side of a fake backend.
#[derive(Default)]
pub struct WireState {
    pub to_guest: VecDeque<Vec<u8>>,
    pub from_guest: Vec<Vec<u8>>,
    /// Writes accepted before the backend blocks (None: never blocks).
    pub writes_left: Option<usize>,
    /// Reads fail with this instead of delivering frames.
    pub read_error: Option<io::ErrorKind>,
    pub reads: usize,
}

#[derive(Clone, Default)]
pub struct Wire(pub Arc<Mutex<WireState>>);

impl Wire {
    pub fn push(&self, frame: Vec<u8>) {
        self.0.lock().unwrap().to_guest.push_back(frame);
    }
    pub fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.0.lock().unwrap().from_guest)
    }
    pub fn queued(&self) -> usize {
        self.0.lock().unwrap().to_guest.len()
    }
    pub fn block_after(&self, writes: Option<usize>) {
        self.0.lock().unwrap().writes_left = writes;
    }
}

/// A backend with `hdr_len` bytes of header before each frame, queued on
/// a [`Wire`]; reads scatter and truncate like a tap's.
pub struct FakeBackend {
    pub wire: Wire,
    pub hdr_len: usize,
}

impl NetBackend for FakeBackend {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let mut w = self.wire.0.lock().unwrap();
        w.reads += 1;
        if let Some(kind) = w.read_error {
            return Err(kind.into());
        }
        let Some(frame) = w.to_guest.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut done = 0;
        for seg in iov.iter_mut() {
            let n = seg.len().min(frame.len() - done);
            seg[..n].copy_from_slice(&frame[done..done + n]);
            done += n;
        }
        Ok(done)
    }
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut w = self.wire.0.lock().unwrap();
        match &mut w.writes_left {
            Some(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(n) => *n -= 1,
            None => {}
        }
        let frame: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
        let n = frame.len();
        w.from_guest.push(frame);
        Ok(n)
    }
    fn vnet_hdr_len(&self) -> usize {
        self.hdr_len
    }
}

pub type Dev = E1000<FakeBackend, GuestMemoryMmap, FakeIrq>;

pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .unwrap()
}

/// The model, its memory, and a driver for it.
pub struct Harness {
    pub dev: Dev,
    pub mem: GuestMemoryMmap,
    pub irq: FakeIrq,
    pub wire: Wire,
    /// Next free transmit data address.
    next_tx_buf: u64,
}

impl Harness {
    /// A device on a backend with a 12-byte header (a tap with vnet_hdr).
    pub fn new() -> Self {
        Self::with_hdr(12)
    }

    pub fn with_hdr(hdr_len: usize) -> Self {
        let mem = memory();
        let irq = FakeIrq::default();
        let wire = Wire::default();
        let backend = FakeBackend {
            wire: wire.clone(),
            hdr_len,
        };
        let dev = E1000::new(backend, MAC, mem.clone(), irq.clone());
        Harness {
            dev,
            mem,
            irq,
            wire,
            next_tx_buf: TX_BUFS,
        }
    }

    pub fn read(&mut self, off: u32) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar_read(MMIO_BAR, u64::from(off), &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write(&mut self, off: u32, v: u32) {
        self.dev
            .bar_write(MMIO_BAR, u64::from(off), &v.to_le_bytes());
    }

    pub fn set_bits(&mut self, off: u32, bits: u32) {
        let v = self.read(off);
        self.write(off, v | bits);
    }

    pub fn clear_bits(&mut self, off: u32, bits: u32) {
        let v = self.read(off);
        self.write(off, v & !bits);
    }

    /// PCI command: I/O, memory, bus master.
    pub fn enable_pci(&mut self) {
        self.dev.config_write(1, 0, &[0x07, 0x00]);
    }

    /// Brings the device up as e1000_probe/e1000_open do: reset, link,
    /// rings, enables, interrupts. Receive buffers are posted for all but
    /// one descriptor.
    pub fn up(&mut self) {
        self.enable_pci();
        self.write(IMC, u32::MAX);
        self.write(RCTL, 0);
        self.write(TCTL, 0x8);
        self.set_bits(CTRL, ctrl::RST);
        self.write(IMC, u32::MAX);
        self.read(ICR);
        self.set_bits(CTRL, ctrl::SLU);
        for i in 0..128 {
            self.write(MTA + 4 * i, 0);
        }
        // Transmit ring.
        self.mem
            .write_slice(&[0u8; RING_LEN as usize], GuestAddress(TX_RING))
            .unwrap();
        self.write(TDBAL, TX_RING as u32);
        self.write(TDBAH, 0);
        self.write(TDLEN, RING_LEN);
        self.write(TDH, 0);
        self.write(TDT, 0);
        self.write(TIPG, 0x0060_200a);
        self.write(TCTL, 0x0004_010a); // EN, PSP, CT
                                       // Receive ring.
        self.mem
            .write_slice(&[0u8; RING_LEN as usize], GuestAddress(RX_RING))
            .unwrap();
        self.write(RDBAL, RX_RING as u32);
        self.write(RDBAH, 0);
        self.write(RDLEN, RING_LEN);
        self.write(RDH, 0);
        self.write(RDT, 0);
        // EN, BAM, RDMTS 1/2, 2 KiB buffers.
        self.write(RCTL, rctl::EN | rctl::BAM);
        for i in 0..31 {
            self.post_rx(i);
        }
        self.write(RDT, 31);
        self.read(ICR);
        self.dev.intx_resample();
        *self.irq.0.lock().unwrap() = 0;
        self.write(IMS, IMS_LINUX);
        // e1000_up fires LSC itself to start its watchdog.
        self.write(ICS, int::LSC);
        assert_eq!(self.read(ICR) & int::LSC, int::LSC);
        self.dev.intx_resample();
        assert_eq!(self.irq.count(), 1, "one LSC interrupt");
        *self.irq.0.lock().unwrap() = 0;
    }

    /// Gives receive descriptor `i` a fresh 2 KiB buffer, status cleared.
    pub fn post_rx(&mut self, i: u32) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&(RX_BUFS + 0x800 * u64::from(i)).to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(RX_RING + 16 * u64::from(i)))
            .unwrap();
    }

    /// Receive descriptor `i`: (length, status, errors, special).
    pub fn rx_desc(&self, i: u32) -> (u16, u8, u8, u16) {
        let mut d = [0u8; 16];
        self.mem
            .read_slice(&mut d, GuestAddress(RX_RING + 16 * u64::from(i)))
            .unwrap();
        (
            u16::from_le_bytes([d[8], d[9]]),
            d[12],
            d[13],
            u16::from_le_bytes([d[14], d[15]]),
        )
    }

    /// The buffer of receive descriptor `i`, `len` bytes.
    pub fn rx_data(&self, i: u32, len: usize) -> Vec<u8> {
        self.bytes(RX_BUFS + 0x800 * u64::from(i), len)
    }

    pub fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    /// Copies `data` into fresh guest memory; returns its address.
    pub fn tx_buf(&mut self, data: &[u8]) -> u64 {
        let at = self.next_tx_buf;
        self.mem.write_slice(data, GuestAddress(at)).unwrap();
        self.next_tx_buf += (data.len() as u64 + 15) & !15;
        assert!(self.next_tx_buf < RX_BUFS);
        at
    }

    /// Writes raw descriptor `d` at the tail of the transmit ring and
    /// moves the driver's tail (not TDT); returns its index.
    pub fn put_tx(&mut self, d: [u8; 16], tail: &mut u32) -> u32 {
        let i = *tail;
        self.mem
            .write_slice(&d, GuestAddress(TX_RING + 16 * u64::from(i)))
            .unwrap();
        *tail = (i + 1) % 32;
        i
    }

    /// Sends `frame` in `pieces` legacy descriptors (RS on the last) and
    /// rings the doorbell; returns the index of the last descriptor.
    pub fn send_legacy(&mut self, frame: &[u8], pieces: usize) -> u32 {
        let mut tail = self.read(TDT);
        let chunk = frame.len().div_ceil(pieces);
        let parts: Vec<&[u8]> = frame.chunks(chunk).collect();
        let mut last = 0;
        for (n, part) in parts.iter().enumerate() {
            let at = self.tx_buf(part);
            let cmd = if n + 1 == parts.len() {
                EOP | IFCS | RS
            } else {
                IFCS
            };
            last = self.put_tx(legacy(at, part.len() as u16, cmd), &mut tail);
        }
        self.write(TDT, tail);
        last
    }

    /// The status byte of transmit descriptor `i`.
    pub fn tx_status(&self, i: u32) -> u8 {
        self.bytes(TX_RING + 16 * u64::from(i) + 12, 1)[0]
    }
}
