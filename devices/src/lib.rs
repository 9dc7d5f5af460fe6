//! Device models behind small traits: the PCI plumbing (configuration space,
//! BARs, MSI-X, INTx), the virtio transport and virtio-net, and one file per
//! emulated NIC (e1000, rtl8139, ne2k_pci, pcnet), plus the host backends they
//! talk to (tap, vhost-net, slirp, socket, hub). Models are plain state
//! machines: they know nothing of processes or sockets.

pub mod backend;
pub mod e1000;
pub mod net_offload;
pub mod pci;
pub mod virtio;
