//! The vCPU side of a VM: KVM, guest memory, boot, and the exit loop.

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod cpuid;
pub mod layout;
pub mod memory;
pub mod regs;
pub mod runner;
pub mod vm;
pub mod vm_control;

#[cfg(test)]
mod kvm_tests;
