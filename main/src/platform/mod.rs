//! Platform devices the vCPU process emulates itself.
