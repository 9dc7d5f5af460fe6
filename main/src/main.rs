//! moatvm: a virtual machine monitor for untrusted guests.

mod cli;
mod config;
mod platform;
mod vcpu;

fn main() {}
