pub mod agent;
mod alarm_id;
pub mod cli;
pub mod config;
pub mod failpoint;
mod human;
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
pub(crate) mod web;

/// For unit tests that cannot run on this machine (not root, a package
/// missing): say so in the output, and fail in CI (`CI=true`), where they
/// must run. The integration tests have the same in `tests/it/util.rs`.
#[cfg(test)]
pub(crate) fn skipped(what: &str) {
    eprintln!("SKIPPED: {what}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "SKIPPED in CI, where it must run: {what}"
    );
}
