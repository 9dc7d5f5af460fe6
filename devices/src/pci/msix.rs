//! MSI-X: the capability in configuration space, and the vector table and
//! pending-bit array (PBA) that live in a BAR.
//!
//! The table is the model's: the guest writes address/data/mask here, the
//! model reports each change (so the host can update the vector's MSI route)
//! and does the masking itself: a masked vector's interrupt sets its pending
//! bit instead of firing, and unmasking fires it.

use super::{ConfigSpace, Interrupts};

/// Capability ID of MSI-X.
pub const CAP_ID: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Most vectors a function can have.
pub const MAX_VECTORS: u16 = 2048;
/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: mask bit.
const VECTOR_MASKED: u32 = 1;

/// A table entry as the guest left it: what the host needs for the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixChange {
    pub vector: u16,
    pub address: u64,
    pub data: u32,
    pub masked: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    address_lo: u32,
    address_hi: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            address_lo: 0,
            address_hi: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

impl Entry {
    fn dword(&self, i: usize) -> u32 {
        [self.address_lo, self.address_hi, self.data, self.control][i & 3]
    }
}

/// The vector table, the PBA and the two message-control bits.
#[derive(Clone, Debug)]
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
}

impl MsixTable {
    /// A table of `vectors` entries (clamped to 1..=2048), all masked, with
    /// MSI-X disabled.
    pub fn new(vectors: u16) -> Self {
        let n = vectors.clamp(1, MAX_VECTORS);
        MsixTable {
            entries: vec![Entry::default(); usize::from(n)],
            pending: vec![0; usize::from(n).div_ceil(64)],
            enabled: false,
            function_masked: false,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Never true: a table has at least one vector.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes the table takes in its BAR.
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.len()) * ENTRY_SIZE
    }

    /// Bytes the PBA takes in its BAR (whole qwords).
    pub fn pba_bytes(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Whether the guest enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Adds the MSI-X capability to `config`, with the table at
    /// `table_offset` of BAR `table_bar` and the PBA at `pba_offset` of BAR
    /// `pba_bar` (offsets 8-byte aligned). Returns the capability's offset.
    pub fn add_capability(
        &self,
        config: &mut ConfigSpace,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> Option<usize> {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&(self.len() - 1).to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset & !7 | u32::from(table_bar & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset & !7 | u32::from(pba_bar & 7)).to_le_bytes());
        let at = config.add_capability(CAP_ID, &body)?;
        config.set_writable_u16(at + 2, CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        Some(at)
    }

    /// Takes the message control register as the guest left it (after a
    /// configuration write); fires vectors whose pending bit was held back
    /// by the function mask or by MSI-X being off.
    pub fn set_control<I: Interrupts + ?Sized>(&mut self, control: u16, irq: &I) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for v in 0..self.len() {
            self.deliver_pending(v, irq);
        }
    }

    /// A guest read of the table at `offset` (relative to the table).
    /// Dword and qword reads inside the table see its fields; any other
    /// access reads zeros.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = self.aligned_dword(offset, data.len()) else {
            return;
        };
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let d = first + i;
            let value = self.entries[d / 4].dword(d % 4);
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
    }

    /// A guest write to the table at `offset`. Only naturally aligned dword
    /// or qword writes count. Returns the entry as it now stands if the write
    /// changed it; the caller reports that to the host, then calls
    /// [`deliver_pending`](Self::deliver_pending) for the vector.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<MsixChange> {
        let first = self.aligned_dword(offset, data.len())?;
        let mut changed = false;
        for (i, chunk) in data.chunks(4).enumerate() {
            let d = first + i;
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let e = &mut self.entries[d / 4];
            let field = match d % 4 {
                0 => &mut e.address_lo,
                1 => &mut e.address_hi,
                2 => &mut e.data,
                _ => &mut e.control,
            };
            // Only the mask bit of vector control is defined.
            let value = if d % 4 == 3 {
                value & VECTOR_MASKED
            } else {
                value
            };
            changed |= *field != value;
            *field = value;
        }
        if changed {
            self.entry(first / 4)
        } else {
            None
        }
    }

    /// The dword index `offset` names, if a `len`-byte access there is a
    /// naturally aligned dword or qword inside the table.
    fn aligned_dword(&self, offset: u64, len: usize) -> Option<usize> {
        let ok = match len {
            4 => offset.is_multiple_of(4),
            8 => offset.is_multiple_of(8),
            _ => false,
        };
        let end = offset.checked_add(len as u64)?;
        (ok && end <= self.table_bytes()).then_some((offset / 4) as usize)
    }

    /// A guest read of the PBA at `offset` (relative to the PBA).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            let word = self.pending.get((at / 8) as usize).copied().unwrap_or(0);
            *byte = (word >> ((at % 8) * 8)) as u8;
        }
    }

    /// Entry `vector` as the host needs it for a route.
    pub fn entry(&self, vector: usize) -> Option<MsixChange> {
        let e = self.entries.get(vector)?;
        Some(MsixChange {
            vector: vector as u16,
            address: u64::from(e.address_hi) << 32 | u64::from(e.address_lo),
            data: e.data,
            masked: e.control & VECTOR_MASKED != 0,
        })
    }

    /// Whether `vector` can fire now (MSI-X on, neither it nor the function masked).
    fn deliverable(&self, vector: u16) -> bool {
        self.enabled
            && !self.function_masked
            && self
                .entries
                .get(usize::from(vector))
                .is_some_and(|e| e.control & VECTOR_MASKED == 0)
    }

    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, vector: u16, on: bool) {
        let v = usize::from(vector);
        if let Some(w) = self.pending.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    /// Raises `vector`: fires it, or sets its pending bit if it is masked.
    /// Returns false for a vector beyond the table (nothing happens).
    pub fn signal<I: Interrupts + ?Sized>(&mut self, vector: u16, irq: &I) -> bool {
        if vector >= self.len() {
            return false;
        }
        if self.deliverable(vector) {
            irq.signal_vector(vector);
        } else {
            self.set_pending(vector, true);
        }
        true
    }

    /// Fires `vector` if it is pending and no longer masked.
    pub fn deliver_pending<I: Interrupts + ?Sized>(&mut self, vector: u16, irq: &I) {
        if self.is_pending(vector) && self.deliverable(vector) {
            self.set_pending(vector, false);
            irq.signal_vector(vector);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fired(Mutex<Vec<u16>>);
    impl Interrupts for Fired {
        fn signal_vector(&self, vector: u16) {
            self.0.lock().unwrap().push(vector);
        }
    }

    fn write32(t: &mut MsixTable, off: u64, v: u32) -> Option<MsixChange> {
        t.write_table(off, &v.to_le_bytes())
    }

    #[test]
    fn capability_layout() {
        let t = MsixTable::new(4);
        let mut cs = ConfigSpace::new(1, 2, 3, 4, 5, 6);
        let at = t.add_capability(&mut cs, 0, 0x4000, 0, 0x5000).unwrap();
        assert_eq!(at, 0x40);
        assert_eq!(cs.u8_at(at), CAP_ID);
        assert_eq!(cs.u16_at(at + 2), 3);
        assert_eq!(cs.u32_at(at + 4), 0x4000);
        assert_eq!(cs.u32_at(at + 8), 0x5000);
        cs.write_reg(at / 4, 2, &[0xff, 0xff]);
        assert_eq!(cs.u16_at(at + 2), 0xc003);
    }

    #[test]
    fn entries_read_back_and_report_changes() {
        let mut t = MsixTable::new(2);
        let c = write32(&mut t, 16, 0xfee0_0000).unwrap();
        assert_eq!((c.vector, c.address, c.masked), (1, 0xfee0_0000, true));
        assert_eq!(write32(&mut t, 16, 0xfee0_0000), None);
        let c = t
            .write_table(24, &0x0000_0000_0000_0041u64.to_le_bytes())
            .unwrap();
        assert_eq!((c.data, c.masked), (0x41, false));
        let mut b = [0u8; 4];
        t.read_table(24, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x41);
        t.read_table(28, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
    }

    #[test]
    fn odd_accesses_are_ignored() {
        let mut t = MsixTable::new(1);
        assert_eq!(t.write_table(1, &[1, 2, 3, 4]), None);
        assert_eq!(t.write_table(4, &[1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(t.write_table(0, &[1, 2]), None);
        assert_eq!(t.write_table(16, &[1, 2, 3, 4]), None);
        assert_eq!(t.write_table(u64::MAX - 1, &[1, 2, 3, 4]), None);
        let mut b = [0xaau8; 3];
        t.read_table(0, &mut b);
        assert_eq!(b, [0; 3]);
        let mut b = [0xaau8; 8];
        t.read_pba(u64::MAX - 2, &mut b);
        assert_eq!(b, [0; 8]);
    }

    #[test]
    fn masked_vector_goes_pending_and_fires_on_unmask() {
        let irq = Fired::default();
        let mut t = MsixTable::new(3);
        t.set_control(CONTROL_ENABLE, &irq);
        assert!(t.signal(2, &irq));
        assert!(irq.0.lock().unwrap().is_empty());
        let mut pba = [0u8; 8];
        t.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b100);
        let c = write32(&mut t, 2 * 16 + 12, 0).unwrap();
        assert!(!c.masked);
        t.deliver_pending(2, &irq);
        assert_eq!(*irq.0.lock().unwrap(), vec![2]);
        assert!(!t.is_pending(2));
        assert!(t.signal(2, &irq));
        assert_eq!(*irq.0.lock().unwrap(), vec![2, 2]);
        assert!(!t.signal(3, &irq));
    }

    #[test]
    fn function_mask_holds_all_vectors() {
        let irq = Fired::default();
        let mut t = MsixTable::new(2);
        write32(&mut t, 12, 0);
        t.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK, &irq);
        t.signal(0, &irq);
        assert!(irq.0.lock().unwrap().is_empty() && t.is_pending(0));
        t.set_control(CONTROL_ENABLE, &irq);
        assert_eq!(*irq.0.lock().unwrap(), vec![0]);
    }
}
