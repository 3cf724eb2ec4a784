//! The one integration test binary: real masters and agents on loopback.
mod cluster;
mod config_files;
mod keys;
mod logs;
mod operator;
mod scripts;
mod security;
mod util;
