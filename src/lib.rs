#![forbid(unsafe_code)]
pub mod agent;
mod alarm_id;
pub mod cli;
pub mod config;
pub mod failpoint;
pub mod journal;
pub mod level;
pub mod logline;
pub mod master;
pub mod names;
pub mod net;
pub mod perfdata;
pub mod protocol;
pub mod random;
pub mod schema;
pub mod storage;
pub mod sync;
pub mod web;
