//! The one integration test binary: real masters and agents on loopback.
mod alarm_bounds;
mod alarm_faults;
mod chaos;
mod client_deadlines;
mod cluster;
mod config_files;
mod disk;
mod http;
mod keys;
mod logs;
mod operator;
mod overload;
mod proxy;
mod scripts;
mod security;
mod soak;
mod util;
