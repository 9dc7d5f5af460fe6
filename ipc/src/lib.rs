//! Messages between moatvm's processes: one enum per channel, bincode on
//! SOCK_SEQPACKET socketpairs, file descriptors passed with SCM_RIGHTS.
//! Nothing lives here yet.
