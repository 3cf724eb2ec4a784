//! The master's web surface: the status page and `/metrics` on `http_listen`.
//!
//! It reads what the master keeps (the registry, the alarms, the archives)
//! and changes nothing, in three layers: `http` is the transport (the
//! request head read and parsed, the response written, one request per
//! connection on its own fixed pool), `routes` what each path answers,
//! `views` assembles the answers. Beneath them, `page` renders the status
//! page, `metrics` and `exposition` the Prometheus text format, `samples`
//! reads recent values from the archives, `alarm_summary` folds
//! `alarms.log` into open problems.
pub(crate) mod alarm_summary;
pub(crate) mod exposition;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod page;
/// The strict exposition reader of the integration tests, for the unit
/// tests too.
#[cfg(test)]
#[path = "../../tests/it/prom_text.rs"]
pub(crate) mod prom_text;
pub(crate) mod routes;
pub(crate) mod samples;
pub(crate) mod views;

/// `text` with each character `replace` names replaced: the escaping of
/// HTML and of Prometheus label values.
fn escape_chars(text: &str, replace: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match replace(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}
