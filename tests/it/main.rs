//! The one integration test binary: real masters and agents on loopback.
mod alarm_faults;
mod builtin;
mod chaos;
mod cluster;
mod config_files;
mod disk;
mod flood;
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
