//! The one integration test binary: real masters and agents on loopback.
mod cluster;
mod config_files;
mod http;
mod keys;
mod logs;
mod operator;
mod overload;
mod scripts;
mod security;
mod util;
