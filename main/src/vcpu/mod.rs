//! The vCPU side of a VM: KVM, guest memory, boot, and the exit loop.

pub mod bus;
pub mod layout;
