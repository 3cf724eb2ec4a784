//! The master: registry and liveness, the pull scheduler, the per-host
//! archive, and the alarm receiver.
pub mod archive;
