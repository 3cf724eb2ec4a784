//! The agent: collectors, log store, alarm spool and the control/data servers.
pub mod collector;
pub mod logstore;
