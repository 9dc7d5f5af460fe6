//! The vCPU process's side of each device's vm-control channel: devices ask
//! for ioeventfds, irqfds and MSI routes, and each request is checked
//! against that device's own BARs and vectors before KVM hears of it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use ipc::messages::{VmReply, VmRequest};
use ipc::Channel;

use crate::roles::{BarKindName, RemoteDevice};

/// GSIs 0-23 belong to the IOAPIC (and 0-15 to the PICs); MSI routes follow.
const FIRST_MSI_GSI: u32 = 24;
/// MSI messages go to the local APICs' window.
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// An MSI route: its GSI and, once the guest programmed it, the message
/// (address, data).
type MsiRoute = (u32, Option<(u64, u32)>);

/// The VM's whole GSI routing table: KVM replaces it wholesale, so every
/// change rewrites the irqchip routes and every MSI route.
pub struct GsiRoutes {
    /// (device index, vector) → (GSI, current message, if set).
    msi: BTreeMap<(usize, u16), MsiRoute>,
    next_gsi: u32,
}

impl Default for GsiRoutes {
    fn default() -> Self {
        GsiRoutes {
            msi: BTreeMap::new(),
            next_gsi: FIRST_MSI_GSI,
        }
    }
}

impl GsiRoutes {
    /// The GSI of `vector` of device `device`, allocated on first use.
    fn gsi(&mut self, device: usize, vector: u16) -> u32 {
        let next = &mut self.next_gsi;
        self.msi
            .entry((device, vector))
            .or_insert_with(|| {
                *next += 1;
                (*next - 1, None)
            })
            .0
    }

    fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::new();
        for gsi in 0..24u32 {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
            e.u.irqchip.pin = gsi;
            entries.push(e);
            if gsi < 16 && gsi != 2 {
                let (chip, pin) = if gsi < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, gsi)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
                };
                e.u.irqchip.irqchip = chip;
                e.u.irqchip.pin = pin;
                entries.push(e);
            }
        }
        for &(gsi, msg) in self.msi.values() {
            let Some((address, data)) = msg else { continue };
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = address as u32;
            e.u.msi.address_hi = (address >> 32) as u32;
            e.u.msi.data = data;
            entries.push(e);
        }
        entries
    }

    fn apply(&self, vm: &VmFd) -> Result<(), String> {
        let routing = KvmIrqRouting::from_entries(&self.entries())
            .map_err(|e| format!("routing table: {e:?}"))?;
        vm.set_gsi_routing(&routing)
            .map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))
    }
}

/// Serves device `index`'s vm-control channel until the device hangs up.
pub fn serve(
    index: usize,
    device: RemoteDevice,
    channel: Channel,
    vm: Arc<VmFd>,
    routes: Arc<Mutex<GsiRoutes>>,
) {
    // Descriptors KVM was given stay open here as long as the VM lives.
    let mut kept: Vec<EventFd> = Vec::new();
    loop {
        let (request, fds) = match channel.recv::<VmRequest>() {
            Ok(m) => m,
            Err(ipc::Error::Closed) => return,
            Err(e) => {
                log::warn!("{}: vm-control: {e}", device.name);
                continue;
            }
        };
        let reply = match handle(index, &device, &request, fds, &vm, &routes, &mut kept) {
            Ok(()) => VmReply::Ok,
            Err(why) => {
                log::warn!("{}: refused {request:?}: {why}", device.name);
                VmReply::Refused(why)
            }
        };
        if channel.send(&reply, &[]).is_err() {
            return;
        }
    }
}

fn handle(
    index: usize,
    device: &RemoteDevice,
    request: &VmRequest,
    mut fds: Vec<OwnedFd>,
    vm: &VmFd,
    routes: &Mutex<GsiRoutes>,
    kept: &mut Vec<EventFd>,
) -> Result<(), String> {
    request.check().map_err(|e| e.to_string())?;
    if fds.len() != request.expected_fds() {
        return Err(format!(
            "{} descriptors, expected {}",
            fds.len(),
            request.expected_fds()
        ));
    }
    let eventfd = |fd: OwnedFd| {
        // SAFETY: the descriptor was received over SCM_RIGHTS and is owned
        // here; if it is not an eventfd, KVM refuses it.
        unsafe {
            <EventFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                fd,
            ))
        }
    };
    let check_vector = |vector: u16| {
        if vector < device.msix_vectors {
            Ok(())
        } else {
            Err(format!(
                "vector {vector} is not one of the device's {}",
                device.msix_vectors
            ))
        }
    };
    let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
    match *request {
        VmRequest::RegisterIoevent {
            bar,
            offset,
            len,
            datamatch,
        } => {
            let b = device
                .bars
                .iter()
                .find(|b| b.index == bar)
                .ok_or_else(|| format!("the device has no BAR {bar}"))?;
            if offset
                .checked_add(u64::from(len).max(1))
                .is_none_or(|end| end > b.size)
            {
                return Err(format!("offset {offset:#x} is outside BAR {bar}"));
            }
            let addr = match b.kind {
                BarKindName::Io => IoEventAddress::Pio(b.address + offset),
                BarKindName::Memory32 | BarKindName::Memory64 => {
                    IoEventAddress::Mmio(b.address + offset)
                }
            };
            let evt = eventfd(fds.remove(0));
            let result = match (len, datamatch) {
                (0, None) => vm.register_ioevent(&evt, &addr, NoDatamatch),
                (1, Some(v)) => vm.register_ioevent(&evt, &addr, v as u8),
                (2, Some(v)) => vm.register_ioevent(&evt, &addr, v as u16),
                (4, Some(v)) => vm.register_ioevent(&evt, &addr, v as u32),
                (8, Some(v)) => vm.register_ioevent(&evt, &addr, v),
                _ => return Err("a fixed width needs a datamatch".into()),
            };
            result.map_err(|e| format!("KVM_IOEVENTFD: {e}"))?;
            log::debug!(
                "{}: doorbell at {:#x} (BAR {bar} + {offset:#x})",
                device.name,
                b.address + offset
            );
            kept.push(evt);
            Ok(())
        }
        VmRequest::RegisterIrqfd { vector } => {
            check_vector(vector)?;
            let gsi = routes.gsi(index, vector);
            let evt = eventfd(fds.remove(0));
            vm.register_irqfd(&evt, gsi)
                .map_err(|e| format!("KVM_IRQFD: {e}"))?;
            kept.push(evt);
            Ok(())
        }
        VmRequest::SetMsiRoute {
            vector,
            address,
            data,
            masked,
        } => {
            check_vector(vector)?;
            if address & MSI_ADDRESS_MASK != MSI_ADDRESS_BASE && !masked {
                return Err(format!("MSI address {address:#x} is not a local APIC's"));
            }
            let gsi = routes.gsi(index, vector);
            // A masked vector keeps its route: the device holds the
            // interrupt back itself and sets the pending bit.
            let message =
                (address & MSI_ADDRESS_MASK == MSI_ADDRESS_BASE).then_some((address, data));
            routes.msi.insert((index, vector), (gsi, message));
            routes.apply(vm)
        }
        VmRequest::RegisterIntx { resample } => {
            // Device `index` sits in slot index + 1 and has one pin, INTA.
            let gsi = intx_gsi(index);
            let evt = eventfd(fds.remove(0));
            if resample {
                let resample_evt = eventfd(fds.remove(0));
                vm.register_irqfd_with_resample(&evt, &resample_evt, gsi)
                    .map_err(|e| format!("KVM_IRQFD (resample): {e}"))?;
                kept.push(resample_evt);
            } else {
                vm.register_irqfd(&evt, gsi)
                    .map_err(|e| format!("KVM_IRQFD: {e}"))?;
            }
            log::debug!("{}: INTA at GSI {gsi} (resample {resample})", device.name);
            kept.push(evt);
            Ok(())
        }
        VmRequest::UnregisterIrqfd { .. }
        | VmRequest::UnregisterIoevent { .. }
        | VmRequest::UnregisterIntx => Err("not supported yet".into()),
    }
}

/// The GSI of INTA of device `index` (in slot `index + 1`), as the DSDT's
/// `_PRT` routes it.
fn intx_gsi(index: usize) -> u32 {
    let slot = u8::try_from(index + 1).unwrap_or(u8::MAX);
    crate::vcpu::layout::pci_intx_gsi(slot, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table_keeps_irqchip_routes_and_adds_msi() {
        let mut r = GsiRoutes::default();
        assert_eq!(r.gsi(0, 0), 24);
        assert_eq!(r.gsi(1, 0), 25);
        assert_eq!(r.gsi(0, 0), 24);
        assert_eq!(
            r.entries().len(),
            24 + 15,
            "no MSI routes before a message is set"
        );
        r.msi.insert((0, 0), (24, Some((0xfee0_0000, 0x41))));
        let e = r.entries();
        assert_eq!(e.len(), 24 + 15 + 1);
        let msi = e.last().unwrap();
        assert_eq!((msi.gsi, msi.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: the entry was written as an MSI route just above.
        assert_eq!(unsafe { msi.u.msi.data }, 0x41);
    }
}
