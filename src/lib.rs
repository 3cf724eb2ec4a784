#![forbid(unsafe_code)]
pub mod agent;
pub mod level;
