//! One seccomp allowlist per process kind (vCPU, each NIC model, each
//! backend), each syscall with the reason it is there. Nothing lives here yet.
