//! The device process's side of vhost-net: the [`NetOffload`] the
//! virtio-net model starts at DRIVER_OK (and as the driver sets more
//! queue pairs) and stops at reset (or fewer pairs), and the bookkeeping
//! that points each ring's interrupts where they belong. Each queue pair
//! has its own vhost-net instance (its own descriptor, opened by the
//! launcher) over its own tap queue; within an instance the pair's rings
//! are 0 (RX) and 1 (TX), while the device numbers them 2p and 2p + 1.
//!
//! The kernel's worker is woken by the queue's doorbell (the same eventfd
//! KVM signals as ioeventfd, never polled here) and interrupts through a
//! "call" eventfd: the vector's irqfd while the vector is live, so no
//! process of ours wakes; a proxy eventfd polled here while the vector is
//! masked or the queue has none (INTx), so the transport sets the pending
//! bit or the ISR and no interrupt is lost.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};

use devices::backend::vhost_net::{VhostNet, VringSpec};
use devices::virtio::net::{NetOffload, OFFLOAD_RING_FEATURES};
use log::{info, warn};
use vmm_sys_util::eventfd::EventFd as KernelEventFd;

use super::{name, EventFd};

/// MSI-X "no vector".
const NO_VECTOR: u16 = 0xffff;

/// State shared by the offload (in the model) and the interrupt side (the
/// host's `Irqfds`, which hears of MSI-X table changes).
pub struct VhostShared {
    /// One instance per queue pair.
    vhost: Vec<VhostNet>,
    /// Doorbell eventfd of each queue (index = queue), set once the vCPU
    /// process registered them.
    kicks: OnceLock<Vec<Option<KernelEventFd>>>,
    /// The irqfd of each MSI-X vector.
    irqfds: OnceLock<Vec<KernelEventFd>>,
    /// One proxy per data queue (index = queue), polled by the device
    /// process.
    proxies: Vec<EventFd>,
    proxy_handles: Vec<KernelEventFd>,
    state: Mutex<Rings>,
}

/// Which rings run and which vectors the guest masked.
#[derive(Default)]
struct Rings {
    /// (queue index, vector) of each running ring.
    running: Vec<(usize, u16)>,
    masked: Vec<u16>,
}

impl VhostShared {
    /// Wraps the owned vhost-net instances (one per pair); creates the
    /// proxies.
    pub fn new(vhost: Vec<VhostNet>) -> io::Result<Arc<Self>> {
        let mut proxies = Vec::new();
        let mut proxy_handles = Vec::new();
        for _ in 0..2 * vhost.len() {
            let fd = EventFd::new()?;
            proxy_handles.push(kernel_eventfd(&fd)?);
            proxies.push(fd);
        }
        Ok(Arc::new(VhostShared {
            vhost,
            kicks: OnceLock::new(),
            irqfds: OnceLock::new(),
            proxies,
            proxy_handles,
            state: Mutex::new(Rings::default()),
        }))
    }

    /// The proxies to poll: (ring index, eventfd).
    pub fn proxies(&self) -> impl Iterator<Item = (u16, &EventFd)> {
        self.proxies
            .iter()
            .enumerate()
            .map(|(i, fd)| (i as u16, fd))
    }

    /// Records the doorbells (index = queue) and vector irqfds.
    pub fn set_fds(&self, kicks: Vec<Option<&EventFd>>, irqfds: &[EventFd]) -> io::Result<()> {
        let kicks = kicks
            .into_iter()
            .map(|k| k.map(kernel_eventfd).transpose())
            .collect::<io::Result<Vec<_>>>()?;
        let irqfds = irqfds
            .iter()
            .map(kernel_eventfd)
            .collect::<io::Result<Vec<_>>>()?;
        if self.kicks.set(kicks).is_err() || self.irqfds.set(irqfds).is_err() {
            return Err(io::Error::other("vhost descriptors set twice"));
        }
        Ok(())
    }

    /// Points queue `queue`'s ring at `call`.
    fn set_call(&self, queue: usize, call: &KernelEventFd) -> io::Result<()> {
        let vhost = self
            .vhost
            .get(queue / 2)
            .ok_or_else(|| io::Error::other(format!("queue {queue} has no vhost-net instance")))?;
        vhost.set_call(queue % 2, call).map_err(io::Error::other)
    }

    /// The call eventfd for queue `ring` raising `vector`.
    fn call_for(&self, ring: usize, vector: u16, masked: &[u16]) -> Option<&KernelEventFd> {
        let irqfd = self.irqfds.get()?.get(usize::from(vector));
        match irqfd {
            Some(fd) if vector != NO_VECTOR && !masked.contains(&vector) => Some(fd),
            _ => self.proxy_handles.get(ring),
        }
    }

    /// The guest masked or unmasked `vector`: rings raising it change
    /// their call eventfd.
    pub fn vector_masked(&self, vector: u16, masked: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.masked.retain(|&v| v != vector);
        if masked {
            state.masked.push(vector);
        }
        for &(ring, v) in &state.running {
            if v != vector {
                continue;
            }
            let Some(call) = self.call_for(ring, v, &state.masked) else {
                continue;
            };
            if let Err(e) = self.set_call(ring, call) {
                warn!("{}: {e}", name());
            }
        }
    }
}

/// A duplicate of `fd` in the type the vhost crate takes.
fn kernel_eventfd(fd: &EventFd) -> io::Result<KernelEventFd> {
    let dup = fd.0.try_clone()?;
    // SAFETY: `dup` is a fresh duplicate of an eventfd, owned by nothing
    // else; the new EventFd takes it over.
    Ok(unsafe { KernelEventFd::from_raw_fd(dup.into_raw_fd()) })
}

/// The [`NetOffload`] the virtio-net model holds.
pub struct VhostOffload {
    shared: Arc<VhostShared>,
    /// vhost-net's features.
    supported: u64,
    /// The tap queue of each pair.
    taps: Vec<RawFd>,
}

impl VhostOffload {
    /// `taps` (one per pair) stay open as long as the model (its backends
    /// own them).
    pub fn new(shared: Arc<VhostShared>, supported: u64, taps: Vec<RawFd>) -> Self {
        VhostOffload {
            shared,
            supported,
            taps,
        }
    }
}

impl NetOffload for VhostOffload {
    fn ring_features(&self) -> u64 {
        self.supported & OFFLOAD_RING_FEATURES
    }

    fn start(&mut self, features: u64, pair: u16, rings: &[(VringSpec, u16)]) -> io::Result<()> {
        let p = usize::from(pair);
        let (Some(vhost), Some(&tap)) = (self.shared.vhost.get(p), self.taps.get(p)) else {
            return Err(io::Error::other(format!(
                "pair {pair} has no vhost-net instance"
            )));
        };
        let shared = &self.shared;
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let kicks = shared
            .kicks
            .get()
            .ok_or_else(|| io::Error::other("doorbells not registered yet"))?;
        let mut plan = Vec::new();
        for &(spec, vector) in rings {
            let kick = kicks
                .get(spec.index)
                .and_then(Option::as_ref)
                .ok_or_else(|| io::Error::other(format!("queue {} has no doorbell", spec.index)))?;
            let call = shared
                .call_for(spec.index, vector, &state.masked)
                .ok_or_else(|| io::Error::other("no call eventfd"))?;
            // Within the pair's instance: 0 RX, 1 TX.
            let local = VringSpec {
                index: spec.index % 2,
                ..spec
            };
            plan.push((local, kick, call));
        }
        vhost
            .start(features & self.supported, &plan, tap)
            .map_err(io::Error::other)?;
        state
            .running
            .extend(rings.iter().map(|(s, v)| (s.index, *v)));
        info!("{}: vhost-net runs queue pair {pair}", name());
        Ok(())
    }

    fn stop(&mut self, pair: u16) -> Vec<(u16, u16)> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = usize::from(pair);
        let mut stopped = Vec::new();
        let Some(vhost) = self.shared.vhost.get(p) else {
            return stopped;
        };
        state.running.retain(|&(q, _)| q / 2 != p);
        for ring in 0..2 {
            match vhost.stop(ring) {
                Ok(base) => stopped.push((2 * pair + ring as u16, base)),
                Err(e) => warn!("{}: {e}", name()),
            }
        }
        stopped
    }
}
