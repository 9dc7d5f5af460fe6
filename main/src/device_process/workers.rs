//! virtio-net's data-path threads: one per queue pair (userspace data
//! path, `vhost=off`), each in its own epoll loop over the pair's tap queue
//! and the doorbells (ioeventfds) of the pair's RX and TX queues.
//!
//! A worker drives its pair through the model's [`PairWorker`] handle:
//! the pair's lock is held only by this thread while the device runs (the
//! main thread takes it to activate, reset or change the number of active
//! pairs, which is how those wait for the worker's current batch), and
//! interrupts go out through the transport's shared interrupt state, which
//! honours masked vectors. The main thread keeps the device channel, the
//! control queue, the MSI-X table and the INTx resample.
//!
//! The threads start before the seccomp filter is installed (it uses
//! TSYNC and allows no clone), and never end: the process exits whole.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use devices::pci::Interrupts;
use devices::virtio::net::{NetBackend, PairWorker};
use log::{error, warn};
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{name, EventFd};

/// What a worker needs of its pair, without the model's type parameters.
pub trait PairRunner: Send + Sync {
    /// False if the queue is not the pair's now (see [`PairWorker::notify`]).
    fn notify(&self, queue: u16) -> bool;
    fn backend_readable(&self);
    fn backend_writable(&self);
    /// Whether the pair waits for room in its backend.
    fn tx_blocked(&self) -> bool;
}

impl<B, M, I> PairRunner for PairWorker<B, M, I>
where
    B: NetBackend,
    M: GuestMemory + Send + Sync,
    I: Interrupts,
{
    fn notify(&self, queue: u16) -> bool {
        PairWorker::notify(self, queue)
    }
    fn backend_readable(&self) {
        PairWorker::backend_readable(self);
    }
    fn backend_writable(&self) {
        PairWorker::backend_writable(self);
    }
    fn tx_blocked(&self) -> bool {
        PairWorker::tx_blocked(self)
    }
}

/// Doorbells a worker hands to the main thread: those of queues that are
/// not its pair's now (the control queue at index 2 without multiqueue
/// negotiated). The worker sets the queue's bit and signals the eventfd,
/// which the main thread polls.
pub struct Forward {
    pub queues: AtomicU64,
    pub fd: EventFd,
}

impl Forward {
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Forward {
            queues: AtomicU64::new(0),
            fd: EventFd::new()?,
        }))
    }

    fn send(&self, queue: u16) {
        if queue < 64 {
            self.queues.fetch_or(1 << queue, Ordering::AcqRel);
            self.fd.signal();
        }
    }

    /// The forwarded queues since the last call.
    pub fn take(&self) -> u64 {
        self.fd.drain();
        self.queues.swap(0, Ordering::AcqRel)
    }
}

/// epoll tokens of a worker: its tap queue, and doorbell `i` as `1 + i`.
const TOKEN_TAP: u64 = 0;
const TOKEN_DOORBELL: u64 = 1;

/// Starts the worker of pair `pair`: `tap` is the pair's tap queue (open as
/// long as the model), `doorbells` the eventfds of its queues.
pub fn spawn(
    pair: u16,
    runner: Arc<dyn PairRunner>,
    tap: RawFd,
    doorbells: Vec<(EventFd, u16)>,
    forward: Arc<Forward>,
) -> Result<()> {
    let epoll = Epoll::new().context("epoll_create")?;
    epoll
        .ctl(
            ControlOperation::Add,
            tap,
            EpollEvent::new(tap_events(false), TOKEN_TAP),
        )
        .context("epoll_ctl")?;
    for (i, (fd, _)) in doorbells.iter().enumerate() {
        epoll
            .ctl(
                ControlOperation::Add,
                fd.0.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_DOORBELL + i as u64),
            )
            .context("epoll_ctl")?;
    }
    std::thread::Builder::new()
        .name(format!("pair{pair}"))
        .spawn(move || serve(pair, &*runner, &epoll, tap, &doorbells, &forward))
        .with_context(|| format!("cannot start the thread of queue pair {pair}"))?;
    Ok(())
}

/// What a data path waits for on its tap: frames, and room for frames
/// when `out`. Writability is asked for only while a frame waits: a tap or
/// a socket reports room after every frame it takes, which would wake the
/// data path once per frame for nothing.
pub(super) fn tap_events(out: bool) -> EventSet {
    let base = EventSet::IN | EventSet::EDGE_TRIGGERED;
    if out {
        base | EventSet::OUT
    } else {
        base
    }
}

fn serve(
    pair: u16,
    runner: &dyn PairRunner,
    epoll: &Epoll,
    tap: RawFd,
    doorbells: &[(EventFd, u16)],
    forward: &Forward,
) {
    let mut events = [EpollEvent::default(); 8];
    let mut attached = true;
    // Whether the tap's writability is in the epoll set.
    let mut watching_out = false;
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Not expected; the pair's queues then go quiet, the
                // rest of the device goes on.
                error!("{}: queue pair {pair}: epoll_wait: {e}", name());
                return;
            }
        };
        for event in &events[..n] {
            match event.data() {
                TOKEN_TAP => {
                    let set = event.event_set();
                    if set.contains(EventSet::IN) {
                        runner.backend_readable();
                    }
                    if set.contains(EventSet::OUT) {
                        runner.backend_writable();
                    }
                    if set.intersects(EventSet::ERROR | EventSet::HANG_UP) && attached {
                        warn!(
                            "{}: queue pair {pair}: the tap reports an error; no more frames",
                            name()
                        );
                        attached = false;
                        let _ = epoll.ctl(ControlOperation::Delete, tap, EpollEvent::default());
                    }
                }
                token => {
                    if let Some((fd, queue)) = doorbells.get((token - TOKEN_DOORBELL) as usize) {
                        fd.drain();
                        if !runner.notify(*queue) {
                            forward.send(*queue);
                        }
                    }
                }
            }
        }
        // Writability only while a frame waits for room. Adding it reports
        // a tap that is writable already, so no wake-up is lost.
        let blocked = attached && runner.tx_blocked();
        if blocked != watching_out {
            let event = EpollEvent::new(tap_events(blocked), TOKEN_TAP);
            match epoll.ctl(ControlOperation::Modify, tap, event) {
                Ok(()) => watching_out = blocked,
                Err(e) => warn!("{}: queue pair {pair}: epoll_ctl: {e}", name()),
            }
        }
    }
}
