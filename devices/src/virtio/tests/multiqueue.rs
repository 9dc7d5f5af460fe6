//! Multiqueue virtio-net: the layout and features it offers, the control
//! command that sets the number of working pairs, and the per-pair data
//! path driven from other threads (the host's workers) while the main
//! thread resets or changes pairs.

use super::*;
use crate::virtio::net::{Net, MAX_PAIRS};

const CLASS_MQ: u8 = 4;
const VQ_PAIRS_SET: u8 = 0;
const OK: u8 = 0;
const ERR: u8 = 1;
const WANT_MQ: u64 = WANT | netf::MQ;

fn backend(wire: &Wire) -> FakeBackend {
    FakeBackend {
        wire: wire.clone(),
        hdr_len: 12,
        offloads: netf::OFFLOADS & !(netf::GUEST_UFO | netf::HOST_UFO),
    }
}

/// A multiqueue device with `pairs` pairs, each on its own wire.
fn mq_harness(pairs: usize) -> (Harness<FakeBackend>, Vec<Wire>) {
    let wires: Vec<Wire> = (0..pairs).map(|_| Wire::default()).collect();
    let net = Net::multiqueue(
        wires.iter().map(backend).collect(),
        Some([0x02, 0, 0, 0, 0, 1]),
        256,
    )
    .unwrap();
    (Harness::on_net(net, memory()), wires)
}

/// Two pairs, started as Linux starts them (all five queues).
fn started() -> (Harness<FakeBackend>, Vec<Wire>) {
    let (mut h, wires) = mq_harness(2);
    let f = h.init_queues(WANT_MQ, 5);
    assert_ne!(f & netf::MQ, 0);
    (h, wires)
}

fn set_pairs(h: &mut Harness<FakeBackend>, n: u16) -> u8 {
    h.ctrl(CLASS_MQ, VQ_PAIRS_SET, &n.to_le_bytes())
}

#[test]
fn layout_features_and_config_follow_the_pair_count() {
    let (mut h, _) = mq_harness(2);
    assert_ne!(h.device_features() & netf::MQ, 0);
    assert_eq!(h.common_read(cc::NUM_QUEUES, 2), 5);
    // max_virtqueue_pairs at offset 8 of the device configuration.
    assert_eq!(h.read(h.caps.device + 8, 2), 2);
    // One vector per queue and one for configuration changes.
    assert_eq!(h.dev.msix_vectors(), 6);
    assert_eq!(h.caps.notify_len, 5 * 4);

    // mq=on with one pair: MQ offered, one pair.
    let (mut h, _) = mq_harness(1);
    assert_ne!(h.device_features() & netf::MQ, 0);
    assert_eq!(h.common_read(cc::NUM_QUEUES, 2), 3);
    assert_eq!(h.read(h.caps.device + 8, 2), 1);

    // Without multiqueue, as before.
    let (mut h, _) = Harness::new();
    assert_eq!(h.device_features() & netf::MQ, 0);
    assert_eq!(h.read(h.caps.device + 8, 2), 1);
    assert_eq!(h.dev.msix_vectors(), 4);

    let none: Vec<FakeBackend> = Vec::new();
    assert!(Net::multiqueue(none, None, 256).is_err());
    let wire = Wire::default();
    let many = (0..=MAX_PAIRS).map(|_| backend(&wire)).collect();
    assert!(Net::multiqueue(many, None, 256).is_err());
}

#[test]
fn mq_without_the_control_queue_is_refused() {
    let (mut h, _) = mq_harness(2);
    h.set_status(status::ACKNOWLEDGE | status::DRIVER);
    h.write_features(features::VERSION_1 | netf::MQ);
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(h.status() & status::FEATURES_OK, 0);
}

#[test]
fn only_the_first_pair_works_until_the_driver_sets_more() {
    let (mut h, wires) = started();
    assert_eq!(h.dev.device().active_pairs(), 1);
    // Pair 1 is detached from its backend while it does not work.
    assert_eq!(wires[1].0.lock().unwrap().attach_calls, vec![false]);
    let f = frame(0, 60, 1);
    h.transmit_on(3, &f, 1);
    assert!(wires[1].sent().is_empty());
    h.transmit_on(TX, &f, 1);
    assert_eq!(wires[0].sent(), vec![f.clone()]);

    assert_eq!(set_pairs(&mut h, 2), OK);
    assert_eq!(h.dev.device().active_pairs(), 2);
    assert_eq!(wires[1].0.lock().unwrap().attach_calls, vec![false, true]);
    // The frame that waited goes out as the pair starts.
    assert_eq!(wires[1].sent(), vec![f.clone()]);
    assert_eq!(h.queues[3].take_used(&h.mem).len(), 1);

    // Receive on pair 1 through its worker handle: its own vector.
    h.irq.take();
    h.post_rx_on(2, 1, 65562);
    h.kick(2);
    wires[1].push(frame(0, 100, 2));
    let workers = h.dev.pair_workers();
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[1].queues(), (2, 3));
    workers[1].backend_readable();
    let used = h.queues[2].take_used(&h.mem);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1, 112);
    assert_eq!(h.irq.take(), vec![2]);
    assert!(h.queues[RX as usize].take_used(&h.mem).is_empty());
    assert_eq!(h.dev.device().pair_stats(1).unwrap().rx_frames, 1);
}

#[test]
fn bad_pair_counts_and_commands_get_an_error() {
    let (mut h, _) = started();
    for n in [0u16, 3, 0xffff] {
        assert_eq!(set_pairs(&mut h, n), ERR, "{n} pairs");
    }
    assert_eq!(h.ctrl(CLASS_MQ, VQ_PAIRS_SET, &[2]), ERR);
    assert_eq!(h.ctrl(CLASS_MQ, VQ_PAIRS_SET, &[2, 0, 0]), ERR);
    assert_eq!(h.ctrl(CLASS_MQ, VQ_PAIRS_SET, &[]), ERR);
    assert_eq!(h.ctrl(CLASS_MQ, 1, &[1, 0]), ERR);
    assert_eq!(h.dev.device().active_pairs(), 1);
    assert!(!h.needs_reset());
    assert_eq!(set_pairs(&mut h, 2), OK);
    assert_eq!(set_pairs(&mut h, 1), OK);
}

#[test]
fn without_mq_negotiated_the_control_queue_is_queue_2() {
    let (mut h, wires) = mq_harness(2);
    let f = h.init_queues(WANT, 5);
    assert_eq!(f & netf::MQ, 0);
    assert_eq!(h.queues.len(), 3);
    assert_eq!(h.dev.device().ctrl_queue(), 2);
    // The control queue answers; VQ_PAIRS_SET is refused without MQ.
    assert_eq!(h.ctrl(0, 0, &[1]), OK);
    assert_eq!(set_pairs(&mut h, 2), ERR);
    // Pair 1 holds no rings: a host worker hands a kick of queue 2 (the
    // control queue now) back to the transport.
    let workers = h.dev.pair_workers();
    assert!(!workers[1].notify(2));
    assert!(workers[0].notify(1));
    h.transmit_on(TX, &frame(0, 60, 3), 1);
    assert_eq!(wires[0].sent().len(), 1);
}

#[test]
fn fewer_pairs_stop_the_others_until_set_again() {
    let (mut h, wires) = started();
    assert_eq!(set_pairs(&mut h, 2), OK);
    assert_eq!(set_pairs(&mut h, 1), OK);
    assert_eq!(
        wires[1].0.lock().unwrap().attach_calls,
        vec![false, true, false]
    );
    let f = frame(0, 60, 4);
    h.transmit_on(3, &f, 1);
    h.dev.pair_workers()[1].notify(3);
    assert!(wires[1].sent().is_empty());
    assert_eq!(set_pairs(&mut h, 2), OK);
    assert_eq!(wires[1].sent(), vec![f]);
    // A reset stops every pair; the device starts again with one.
    h.set_status(0);
    assert_eq!(h.dev.device().active_pairs(), 0);
    h.init_queues(WANT_MQ, 5);
    assert_eq!(h.dev.device().active_pairs(), 1);
}

#[test]
fn a_worker_thread_and_the_main_thread_each_send_every_frame_once() {
    let (mut h, wires) = started();
    assert_eq!(set_pairs(&mut h, 2), OK);
    let worker = h.dev.pair_workers().remove(1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            worker.notify(3);
            worker.backend_writable();
            worker.backend_readable();
        }
        worker
    });
    let mut sent = Vec::new();
    for i in 0..50u8 {
        let f = frame(0, 60, i);
        h.transmit_on(3, &f, 2);
        sent.push(f);
    }
    // The main thread resets while the worker is busy: the reset waits
    // for the worker's batch, then the worker finds nothing to do.
    h.set_status(0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worker = thread.join().unwrap();
    assert_eq!(wires[1].sent(), sent);
    worker.notify(3);
    assert!(wires[1].sent().is_empty());
    assert!(!h.needs_reset());
}

#[test]
fn a_worker_interrupt_on_a_masked_vector_waits_in_the_pending_bit() {
    let (mut h, wires) = started();
    assert_eq!(set_pairs(&mut h, 2), OK);
    h.irq.take();
    let entry = h.caps.msix_table + 16 * 3;
    h.write(entry + 12, 4, 1);
    // A frame on TX1, sent by the worker.
    let at = h.alloc(72);
    h.mem
        .write_slice(&frame(0, 60, 9), GuestAddress(at))
        .unwrap();
    let q = &mut h.queues[3];
    let head = q.add_chain(&h.mem, &[(at, 72, false)]);
    q.publish(&h.mem, head);
    h.dev.pair_workers()[1].notify(3);
    assert_eq!(wires[1].sent().len(), 1);
    assert!(h.irq.take().is_empty());
    assert!(h.dev.msix().is_pending(3));
    h.write(entry + 12, 4, 0);
    assert_eq!(h.irq.take(), vec![3]);
    assert!(!h.dev.msix().is_pending(3));
}

#[test]
fn a_worker_that_meets_a_bad_chain_asks_for_a_reset() {
    let (mut h, wires) = started();
    assert_eq!(set_pairs(&mut h, 2), OK);
    h.irq.take();
    let at = h.alloc(72);
    let q = &mut h.queues[3];
    // Device-writable on a transmit queue.
    let head = q.add_chain(&h.mem, &[(at, 72, true)]);
    q.publish(&h.mem, head);
    let workers = h.dev.pair_workers();
    workers[1].notify(3);
    assert!(h.needs_reset());
    // The configuration vector (5) told the driver, once.
    assert_eq!(h.irq.take(), vec![5]);
    workers[1].notify(3);
    workers[0].notify(1);
    assert!(h.irq.take().is_empty());
    assert!(wires[1].sent().is_empty());
}
