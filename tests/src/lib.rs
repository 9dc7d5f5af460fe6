//! End-to-end tests of moatvm: real Linux guests booted inside the nested lab.
//!
//! The tests only run inside L1 (see `xtask/src/lab.rs`): each is
//! `#[ignore]`d, and `cargo xtask lab` runs the test binary there with
//! `--include-ignored --test-threads=1`. The lab tells the tests where things
//! are through environment variables (see [`env`]).
//!
//! Library modules (also used by `cargo xtask bench`):
//! - [`env`]: the lab's paths, from the environment.
//! - [`guest`]: the guest's kernel command line and its `MOAT ...` lines.
//! - [`vmm`]: command lines for moatvm and QEMU as the guest's VMM.
//! - [`process`]: a running VMM: serial capture, waiting for lines or exit.
//! - [`checks`]: whole-guest checks shared by the test modules.
//! - [`procfs`]: L1's processes as /proc shows them.
//!
//! Test modules (one lab scenario each): `boot` (moatvm), `qemu` (QEMU on
//! the same image: validates the lab itself), `virtio_tap` (virtio-net over
//! a tap and bridge, the jail, a seccomp kill, a driver reload), `vhost`
//! (the same with `vhost=on`), `multiqueue` (`queues=2`, `mq=on`: two
//! queue pairs carrying two streams, userspace and vhost), `slirp` (virtio-net on user-mode
//! networking: DHCP, traffic to L1's loopback, hostfwd, the backend's jail
//! and a seccomp kill), `slirp_http` (an HTTP page through user-mode
//! networking, with virtio-net and e1000, and `restrict=on`), `e1000` (the 82540EM: link, traffic, jail, driver
//! reload).

pub mod checks;
pub mod env;
pub mod guest;
pub mod process;
pub mod procfs;
pub mod vmm;

#[cfg(test)]
mod boot;
#[cfg(test)]
mod e1000;
#[cfg(test)]
mod multiqueue;
#[cfg(test)]
mod qemu;
#[cfg(test)]
mod slirp;
#[cfg(test)]
mod slirp_http;
#[cfg(test)]
mod vhost;
#[cfg(test)]
mod virtio_tap;
