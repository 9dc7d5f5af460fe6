//! Statistics registers (0x4000..0x4100): 32-bit counters that stick at
//! their maximum and clear when read; the 64-bit octet counters clear
//! both halves when their high half is read (drivers read low, then high).

use super::regs::{STATS_END, STATS_START};

/// Counter offsets the model keeps.
pub mod reg {
    pub const MPC: u32 = 0x4010;
    pub const PRC64: u32 = 0x405c;
    pub const GPRC: u32 = 0x4074;
    pub const BPRC: u32 = 0x4078;
    pub const MPRC: u32 = 0x407c;
    pub const GPTC: u32 = 0x4080;
    pub const GORCL: u32 = 0x4088;
    pub const GOTCL: u32 = 0x4090;
    pub const RUC: u32 = 0x40a4;
    pub const ROC: u32 = 0x40ac;
    pub const TORL: u32 = 0x40c0;
    pub const TOTL: u32 = 0x40c8;
    pub const TPR: u32 = 0x40d0;
    pub const TPT: u32 = 0x40d4;
    pub const PTC64: u32 = 0x40d8;
    pub const MPTC: u32 = 0x40f0;
    pub const BPTC: u32 = 0x40f4;
    pub const TSCTC: u32 = 0x40f8;
}

/// Low halves of the 64-bit counters: they clear with their high half.
const LOW_HALVES: [u32; 4] = [reg::GORCL, reg::GOTCL, reg::TORL, reg::TOTL];
const COUNT: usize = ((STATS_END - STATS_START) / 4) as usize;

/// Which kind of destination a frame had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cast {
    Unicast,
    Multicast,
    Broadcast,
}

impl Cast {
    /// The kind of the destination address at the start of `frame`.
    pub fn of(frame: &[u8]) -> Self {
        match frame.get(..6) {
            Some(d) if d == [0xff; 6] => Cast::Broadcast,
            Some(d) if d[0] & 1 == 1 => Cast::Multicast,
            _ => Cast::Unicast,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Stats {
    regs: [u32; COUNT],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { regs: [0; COUNT] }
    }
}

fn index(off: u32) -> Option<usize> {
    (STATS_START..STATS_END)
        .contains(&off)
        .then(|| ((off - STATS_START) / 4) as usize)
}

impl Stats {
    /// Adds `n` to the counter at `off`, sticking at the maximum.
    pub fn add(&mut self, off: u32, n: u32) {
        if let Some(i) = index(off) {
            self.regs[i] = self.regs[i].saturating_add(n);
        }
    }

    /// Adds `n` to the 64-bit counter whose low half is at `low`.
    pub fn add64(&mut self, low: u32, n: u64) {
        if let (Some(i), Some(j)) = (index(low), index(low + 4)) {
            let v = (u64::from(self.regs[j]) << 32 | u64::from(self.regs[i])).saturating_add(n);
            self.regs[i] = v as u32;
            self.regs[j] = (v >> 32) as u32;
        }
    }

    /// The counter at `off`, cleared as reading it does if `clear`.
    pub fn read(&mut self, off: u32, clear: bool) -> u32 {
        let Some(i) = index(off) else {
            return 0;
        };
        let v = self.regs[i];
        if clear && !LOW_HALVES.contains(&off) {
            self.regs[i] = 0;
            if LOW_HALVES.contains(&(off.wrapping_sub(4))) {
                self.regs[i - 1] = 0;
            }
        }
        v
    }

    /// Counts a frame of `len` bytes (FCS included) in the size buckets
    /// that start at `first` (PRC64 or PTC64).
    fn size_bucket(&mut self, first: u32, len: usize) {
        let bucket = match len {
            0..=63 => return,
            64 => 0,
            65..=127 => 1,
            128..=255 => 2,
            256..=511 => 3,
            512..=1023 => 4,
            _ => 5,
        };
        self.add(first + 4 * bucket, 1);
    }

    /// A frame of `len` bytes (without FCS) was delivered to the guest.
    pub fn received(&mut self, cast: Cast, len: usize) {
        let octets = len as u64 + 4;
        self.add(reg::GPRC, 1);
        self.add(reg::TPR, 1);
        self.add64(reg::GORCL, octets);
        self.add64(reg::TORL, octets);
        self.size_bucket(reg::PRC64, len + 4);
        match cast {
            Cast::Broadcast => self.add(reg::BPRC, 1),
            Cast::Multicast => self.add(reg::MPRC, 1),
            Cast::Unicast => {}
        }
    }

    /// A frame of `len` bytes (without FCS) went to the backend.
    pub fn transmitted(&mut self, cast: Cast, len: usize) {
        let octets = len as u64 + 4;
        self.add(reg::GPTC, 1);
        self.add(reg::TPT, 1);
        self.add64(reg::GOTCL, octets);
        self.add64(reg::TOTL, octets);
        self.size_bucket(reg::PTC64, len + 4);
        match cast {
            Cast::Broadcast => self.add(reg::BPTC, 1),
            Cast::Multicast => self.add(reg::MPTC, 1),
            Cast::Unicast => {}
        }
    }
}
