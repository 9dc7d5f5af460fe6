//! The 64-word Microwire EEPROM: read one word at a time through EERD, or
//! bit by bit through EECD as Linux's e1000 does for the 82540EM.
//!
//! A Microwire read is: chip select up, then on rising edges of SK the
//! device shifts in DI: the start bit and opcode (`110` for READ) and a
//! 6-bit word address; from the falling edge after the last address bit,
//! DO presents the word's bits, most significant first, one per clock,
//! running on into the next words.

/// Words in the EEPROM (an EECD.SIZE of 0 says 64 to the driver).
pub const WORDS: usize = 64;
/// Words 0..=0x3f add up to this (with the checksum word at 0x3f).
pub const CHECKSUM_SUM: u16 = 0xbaba;
const CHECKSUM_WORD: usize = 0x3f;

/// EECD bits.
pub mod eecd {
    pub const SK: u32 = 1 << 0;
    pub const CS: u32 = 1 << 1;
    pub const DI: u32 = 1 << 2;
    pub const DO: u32 = 1 << 3;
    pub const FWE: u32 = 3 << 4;
    pub const REQ: u32 = 1 << 6;
    pub const GNT: u32 = 1 << 7;
    pub const PRES: u32 = 1 << 8;
}

/// EERD fields.
pub mod eerd {
    pub const START: u32 = 1 << 0;
    pub const DONE: u32 = 1 << 4;
    pub const ADDR_SHIFT: u32 = 8;
    pub const DATA_SHIFT: u32 = 16;
}

/// The Microwire READ opcode, start bit included.
const READ_OPCODE: u32 = 0b110;
/// Start bit, opcode and address: bits shifted in before data comes out.
const COMMAND_BITS: u8 = 3 + 6;

/// Initial contents besides the MAC address, device and subsystem IDs and
/// checksum: the values of QEMU's e1000 template (from the manual's
/// tables 5-2 and 5-3).
const TEMPLATE: [u16; WORDS] = [
    0x0000, 0x0000, 0x0000, 0x0000, 0xffff, 0x0000, 0x0000, 0x0000, //
    0x3000, 0x1000, 0x6403, 0x0000, 0x0000, 0x0000, 0x8086, 0x3040, //
    0x0008, 0x2000, 0x7e14, 0x0048, 0x1000, 0x00d8, 0x0000, 0x2700, //
    0x6cc9, 0x3150, 0x0722, 0x040b, 0x0984, 0x0000, 0xc000, 0x0706, //
    0x1008, 0x0000, 0x0f04, 0x7fff, 0x4d01, 0xffff, 0xffff, 0xffff, //
    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, //
    0x0100, 0x4000, 0x121c, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, //
    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0x0000, //
];

/// The EEPROM and the state of both ways of reading it.
#[derive(Clone, Debug)]
pub struct Eeprom {
    words: [u16; WORDS],
    /// EECD bits as the driver last wrote them (SK, CS, DI, FWE, REQ).
    eecd: u32,
    /// Command bits shifted in since chip select.
    command: u32,
    command_bits: u8,
    /// A READ was decoded: DO presents bit `out_bit` of the contents.
    reading: bool,
    out_bit: usize,
    eerd: u32,
}

impl Eeprom {
    /// Contents for a NIC with address `mac`, PCI device ID `device` and
    /// subsystem `subsystem_vendor:subsystem`.
    pub fn new(mac: [u8; 6], device: u16, subsystem_vendor: u16, subsystem: u16) -> Self {
        let mut words = TEMPLATE;
        for i in 0..3 {
            words[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
        }
        words[0x0b] = subsystem;
        words[0x0c] = subsystem_vendor;
        words[0x0d] = device;
        let sum = words[..CHECKSUM_WORD]
            .iter()
            .fold(0u16, |a, &w| a.wrapping_add(w));
        words[CHECKSUM_WORD] = CHECKSUM_SUM.wrapping_sub(sum);
        Eeprom {
            words,
            eecd: 0,
            command: 0,
            command_bits: 0,
            reading: false,
            out_bit: 0,
            eerd: 0,
        }
    }

    pub fn words(&self) -> &[u16; WORDS] {
        &self.words
    }

    /// Back to idle (device reset); the contents stay.
    pub fn reset(&mut self) {
        *self = Eeprom {
            words: self.words,
            ..Eeprom::new([0; 6], 0, 0, 0)
        };
    }

    /// EECD as the driver reads it: the EEPROM is present, access is always
    /// granted, and DO carries the current data bit (1 when idle).
    pub fn read_eecd(&self) -> u32 {
        let bit = if self.reading {
            let word = self.words[self.out_bit / 16];
            (word >> (15 - self.out_bit % 16)) & 1 == 1
        } else {
            true
        };
        self.eecd | eecd::PRES | eecd::GNT | if bit { eecd::DO } else { 0 }
    }

    /// A driver write of EECD: clocks the Microwire state machine.
    pub fn write_eecd(&mut self, value: u32) {
        let old = self.eecd;
        let new = value & (eecd::SK | eecd::CS | eecd::DI | eecd::FWE | eecd::REQ);
        self.eecd = new;
        if new & eecd::CS == 0 {
            return;
        }
        if old & eecd::CS == 0 {
            // Chip select starts a new command.
            self.command = 0;
            self.command_bits = 0;
            self.reading = false;
        }
        let rising = old & eecd::SK == 0 && new & eecd::SK != 0;
        let falling = old & eecd::SK != 0 && new & eecd::SK == 0;
        let di = new & eecd::DI != 0;
        if rising && !self.reading && self.command_bits < COMMAND_BITS {
            if self.command_bits == 0 && !di {
                return; // zeros before the start bit are ignored
            }
            self.command = self.command << 1 | u32::from(di);
            self.command_bits += 1;
            if self.command_bits == COMMAND_BITS && self.command >> 6 == READ_OPCODE {
                let addr = (self.command & 0x3f) as usize;
                // The falling edge that ends this clock moves to bit 0.
                self.out_bit = (addr * 16 + WORDS * 16 - 1) % (WORDS * 16);
                self.reading = true;
            }
        } else if falling && self.reading {
            self.out_bit = (self.out_bit + 1) % (WORDS * 16);
        }
    }

    pub fn read_eerd(&self) -> u32 {
        self.eerd
    }

    /// A driver write of EERD: with START, reads the word at its address
    /// at once and reports DONE (an address past the end reads 0).
    pub fn write_eerd(&mut self, value: u32) {
        if value & eerd::START == 0 {
            self.eerd = value & !eerd::DONE;
            return;
        }
        let addr = (value >> eerd::ADDR_SHIFT) & 0xff;
        let data = self.words.get(addr as usize).copied().unwrap_or(0);
        self.eerd = u32::from(data) << eerd::DATA_SHIFT | addr << eerd::ADDR_SHIFT | eerd::DONE;
    }
}
