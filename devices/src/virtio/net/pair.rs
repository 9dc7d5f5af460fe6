//! One receive/transmit queue pair and its data path: its backend (a tap
//! queue), its two rings once the driver started the device, and what the
//! data path keeps between frames.
//!
//! Ownership: each pair sits behind its own lock. While the device runs,
//! the host's worker thread for the pair is the only one that takes it,
//! and holds it while it moves frames (readv/writev included). The
//! device's control side (activation, reset, a change of the number of
//! active pairs, statistics) takes it only to change the pair's state, so
//! taking the lock is the handshake that quiesces the worker: its current
//! batch ends first, and it sees the new state on its next event. No lock
//! spans two pairs; the interrupt state ([`Signals`]) is locked briefly,
//! after the pair's lock.

use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;
use virtio_queue::Queue;
use vm_memory::GuestMemory;

use super::{NetBackend, NetStats};
use crate::pci::Interrupts;
use crate::virtio::chain::IovBuf;
use crate::virtio::irq::Signals;
use crate::virtio::{needs_interrupt, LogLimiter, Result};

/// What wakes a pair's data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// The driver kicked the receive queue (new buffers).
    RxKick,
    /// The driver kicked the transmit queue (new frames).
    TxKick,
    /// The backend became readable.
    Readable,
    /// The backend became writable again.
    Writable,
    /// The pair just became active: send what waits, receive what can be.
    Start,
}

/// A queue pair's data path.
pub(crate) struct Pair<B> {
    /// Pair number: its queues are 2 * index (RX) and 2 * index + 1 (TX).
    pub(super) index: u16,
    pub(super) backend: B,
    pub(super) rx: Option<Queue>,
    pub(super) tx: Option<Queue>,
    /// The device is live and this pair is among the active ones.
    pub(super) active: bool,
    /// Features negotiated at activation.
    pub(super) acked: u64,
    pub(super) mtu: u16,
    /// The backend may hold frames not read yet.
    pub(super) rx_pending: bool,
    /// The backend refused a frame; wait until it is writable.
    pub(super) tx_blocked: bool,
    pub(super) iov: IovBuf,
    pub(super) rx_chains: Vec<(u16, usize)>,
    pub(super) stats: NetStats,
    /// The backend takes frames for this pair (a tap queue is attached).
    attached: bool,
    backend_errors: LogLimiter,
}

impl<B: NetBackend> Pair<B> {
    pub(super) fn new(index: u16, backend: B) -> Self {
        Pair {
            index,
            backend,
            rx: None,
            tx: None,
            active: false,
            acked: 0,
            mtu: 1500,
            rx_pending: true,
            tx_blocked: false,
            iov: IovBuf::with_capacity(64),
            rx_chains: Vec::with_capacity(64),
            stats: NetStats::default(),
            attached: true,
            backend_errors: LogLimiter::default(),
        }
    }

    pub(super) fn rx_index(&self) -> u16 {
        2 * self.index
    }

    pub(super) fn tx_index(&self) -> u16 {
        2 * self.index + 1
    }

    /// Stops working the queues and drops them (device reset).
    pub(super) fn clear(&mut self) {
        self.active = false;
        self.rx = None;
        self.tx = None;
        self.acked = 0;
        self.rx_pending = true;
        self.tx_blocked = false;
    }

    /// Attaches or detaches the backend (see [`NetBackend::set_attached`]).
    pub(super) fn set_attached(&mut self, attached: bool) {
        if self.attached == attached {
            return;
        }
        match self.backend.set_attached(attached) {
            Ok(()) => self.attached = attached,
            Err(e) => self.backend_error(if attached { "attach" } else { "detach" }, &e),
        }
    }

    pub(super) fn backend_error(&mut self, what: &str, e: &std::io::Error) {
        if self.backend_errors.hit() {
            warn!(
                "virtio-net: pair {}: backend {what}: {e} ({} errors)",
                self.index,
                self.backend_errors.count()
            );
        }
    }

    /// Works the queues for `work`; returns the queues (as a bit mask of
    /// queue indices) whose driver wants an interrupt now.
    pub(super) fn work<M: GuestMemory>(&mut self, mem: &M, work: Work) -> Result<u64> {
        if !self.active {
            return Ok(0);
        }
        let (mut rx, mut tx) = (false, false);
        match work {
            Work::RxKick => rx = self.process_rx(mem)?,
            Work::TxKick => tx = self.process_tx(mem)?,
            Work::Readable => {
                self.rx_pending = true;
                rx = self.process_rx(mem)?;
            }
            Work::Writable => {
                if self.tx_blocked {
                    self.tx_blocked = false;
                    tx = self.process_tx(mem)?;
                }
            }
            Work::Start => {
                tx = self.process_tx(mem)?;
                rx = self.process_rx(mem)?;
            }
        }
        let mut raise = 0;
        let (rxi, txi) = (self.rx_index(), self.tx_index());
        if let (true, Some(q)) = (rx, self.rx.as_mut()) {
            if needs_interrupt(q, mem, rxi)? {
                raise |= 1 << rxi;
            }
        }
        if let (true, Some(q)) = (tx, self.tx.as_mut()) {
            if needs_interrupt(q, mem, txi)? {
                raise |= 1 << txi;
            }
        }
        Ok(raise)
    }
}

/// Locks a pair; a poisoned lock is taken over (a panic ends the device
/// process at once, so it is only ever seen in tests).
pub(super) fn lock<B>(pair: &Mutex<Pair<B>>) -> MutexGuard<'_, Pair<B>> {
    pair.lock().unwrap_or_else(|e| e.into_inner())
}

/// A host thread's handle on one pair: what it calls when the pair's
/// doorbells or backend become ready. Interrupts go out through the
/// transport's shared [`Signals`], which honour masked vectors.
pub struct PairWorker<B, M, I> {
    pub(super) pair: Arc<Mutex<Pair<B>>>,
    pub(super) mem: M,
    pub(super) signals: Arc<Signals<I>>,
}

impl<B: NetBackend, M: GuestMemory, I: Interrupts> PairWorker<B, M, I> {
    /// The pair's (RX, TX) queue indices.
    pub fn queues(&self) -> (u16, u16) {
        let p = lock(&self.pair);
        (p.rx_index(), p.tx_index())
    }

    /// The doorbell of queue `queue` (one of this pair's) rang. Returns
    /// false if the pair holds no rings, so the queue is not its now: the
    /// kick belongs to the transport (say, the control queue at index 2
    /// when the driver did not negotiate multiqueue, or a kick before
    /// DRIVER_OK), and the host hands it to [`VirtioPci`]'s `queue_notify`.
    ///
    /// [`VirtioPci`]: crate::virtio::pci::VirtioPci
    pub fn notify(&self, queue: u16) -> bool {
        let work = if queue.is_multiple_of(2) {
            Work::RxKick
        } else {
            Work::TxKick
        };
        self.run_if(work, |pair| pair.rx.is_some() || pair.tx.is_some())
    }

    /// The pair's backend became readable.
    pub fn backend_readable(&self) {
        self.run(Work::Readable);
    }

    /// The pair's backend became writable.
    pub fn backend_writable(&self) {
        self.run(Work::Writable);
    }

    /// Whether the pair waits for its backend to become writable: only
    /// then does its host need to hear of it (a tap or a socket reports
    /// room after every frame it has taken, which would otherwise wake the
    /// host per frame).
    pub fn tx_blocked(&self) -> bool {
        lock(&self.pair).tx_blocked
    }

    fn run(&self, work: Work) {
        self.run_if(work, |_| true);
    }

    /// Has the pair do `work` under one hold of its lock, if `ready` says
    /// so; returns `ready`'s answer.
    fn run_if(&self, work: Work, ready: impl FnOnce(&Pair<B>) -> bool) -> bool {
        let mut pair = lock(&self.pair);
        if !ready(&pair) {
            return false;
        }
        if self.signals.broken() {
            return true;
        }
        match pair.work(&self.mem, work) {
            Ok(raise) => {
                for q in 0..64 {
                    if raise & (1 << q) != 0 {
                        self.signals.queue_interrupt(q);
                    }
                }
            }
            Err(e) => {
                pair.active = false;
                self.signals.fault(&e);
            }
        }
        true
    }
}
