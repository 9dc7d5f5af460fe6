//! virtio-net with a kernel data path (vhost-net) taking the RX and TX
//! queues: what the offload is told, and that the device keeps its hands
//! off those queues and the backend while it runs.

use std::io;

use super::*;
use crate::virtio::net::{NetOffload, VringSpec, OFFLOAD_RING_FEATURES};

#[derive(Default)]
struct Calls {
    starts: Vec<(u64, Vec<(VringSpec, u16)>)>,
    stops: usize,
}

#[derive(Clone)]
struct FakeOffload {
    ring_features: u64,
    fail: bool,
    calls: Arc<Mutex<Calls>>,
}

impl NetOffload for FakeOffload {
    fn ring_features(&self) -> u64 {
        self.ring_features
    }
    fn start(&mut self, features: u64, _pair: u16, rings: &[(VringSpec, u16)]) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("refused"));
        }
        self.calls
            .lock()
            .unwrap()
            .starts
            .push((features, rings.to_vec()));
        Ok(())
    }
    fn stop(&mut self, _pair: u16) -> Vec<(u16, u16)> {
        self.calls.lock().unwrap().stops += 1;
        Vec::new()
    }
}

fn harness(ring_features: u64, fail: bool) -> (Harness<FakeBackend>, Wire, Arc<Mutex<Calls>>) {
    let wire = Wire::default();
    let backend = FakeBackend {
        wire: wire.clone(),
        hdr_len: 12,
        offloads: netf::OFFLOADS & !(netf::GUEST_UFO | netf::HOST_UFO),
    };
    let calls = Arc::new(Mutex::new(Calls::default()));
    let offload = FakeOffload {
        ring_features,
        fail,
        calls: calls.clone(),
    };
    let net = Net::new(backend, Some([0x02, 0, 0, 0, 0, 1]), 256)
        .unwrap()
        .with_offload(Box::new(offload));
    (Harness::on_net(net, memory()), wire, calls)
}

#[test]
fn driver_ok_hands_rx_and_tx_to_the_offload() {
    let (mut h, wire, calls) = harness(OFFLOAD_RING_FEATURES, false);
    let f = h.init(WANT);
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.starts.len(), 1);
        let (features, rings) = &calls.starts[0];
        assert_eq!(*features, f);
        assert_eq!(rings.len(), 2);
        for (q, (spec, vector)) in rings.iter().enumerate() {
            let dq = &h.queues[q];
            assert_eq!(
                (spec.index, spec.size, spec.desc, spec.avail, spec.used),
                (q, dq.size, dq.desc, dq.avail, dq.used)
            );
            assert_eq!((spec.next_avail, *vector), (0, q as u16));
        }
    }
    assert!(h.dev.device().offloaded());
    // A frame on TX and a kick: the kernel's business, not the device's.
    h.transmit(&frame(1, 60, 1), 1);
    assert!(wire.sent().is_empty(), "the device wrote to the backend");
    assert!(h.queues[1].take_used(&h.mem).is_empty());
    // Nor does it read the backend into RX buffers.
    h.post_rx(4, 2048);
    wire.push(frame(0, 60, 2));
    h.dev.backend_readable();
    assert!(h.queues[0].take_used(&h.mem).is_empty());
    assert!(h.irq.take().is_empty());

    // Reset stops it; the next DRIVER_OK starts it again.
    h.set_status(0);
    assert_eq!(calls.lock().unwrap().stops, 1);
    assert!(!h.dev.device().offloaded());
    h.init(WANT);
    assert_eq!(calls.lock().unwrap().starts.len(), 2);
}

#[test]
fn ring_features_the_offload_lacks_are_not_offered() {
    let (mut h, _, _) = harness(OFFLOAD_RING_FEATURES & !features::RING_EVENT_IDX, false);
    let offered = h.device_features();
    assert_eq!(offered & features::RING_EVENT_IDX, 0);
    assert_ne!(offered & netf::MRG_RXBUF, 0);
}

#[test]
fn an_offload_that_fails_to_start_makes_the_device_need_a_reset() {
    let (mut h, _, calls) = harness(OFFLOAD_RING_FEATURES, true);
    h.set_status(0);
    h.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let f = h.device_features() & WANT;
    h.write_features(f);
    h.features = f;
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    h.enable_msix();
    for q in 0..3 {
        h.setup_queue(q, 256);
    }
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_ne!(h.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(!h.dev.device().offloaded());
    assert_eq!(calls.lock().unwrap().stops, 0);
}
