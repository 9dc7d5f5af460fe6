//! Messages between moatvm's processes: one enum per channel, bincode on
//! SOCK_SEQPACKET socketpairs, file descriptors passed with SCM_RIGHTS.
//!
//! - [`Channel`] is the transport: one socket end, one message per datagram,
//!   descriptors attached as `SCM_RIGHTS`, received close-on-exec.
//! - [`messages`] holds every message enum, one per channel (and one for the
//!   replies on that channel where there are replies).
//! - [`mirror`]: a shared page through which a device process publishes
//!   side-effect-free register values for the vCPU process to answer.
//!
//! Every byte that arrives may come from a compromised process: decoding
//! never panics, never allocates more than [`MAX_MESSAGE_SIZE`] on a peer's
//! word, and rejects truncated messages, stray control data and trailing
//! bytes.

mod channel;
mod error;
pub mod messages;
pub mod mirror;

pub use channel::{config, Channel, WireConfig, MAX_FDS, MAX_MESSAGE_SIZE};
pub use error::{Error, Result};
pub use mirror::RegisterMirror;
