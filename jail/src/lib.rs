//! Confinement of device processes: user, pid, mount, ipc, uts and network
//! namespaces, pivot_root into an empty tmpfs, dropped capabilities, rlimits,
//! fd hygiene and the parent-death signal. Nothing lives here yet.
