//! Arbitrary text as a master and as an agent configuration file.
//!
//! Checks that parsing and validation never panic, that what validates can
//! be expanded the way the daemons do at start (static agent list, collector
//! specs, alarm address) without panicking, and that every error renders.
//! Host names are not looked up under the fuzzer (see `lookup` in
//! src/config.rs), so runs stay fast, repeatable and off the network.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pihealth::config::{AgentConfig, MasterConfig};

fuzz_target!(|data: &[u8]| {
    // A configuration file is read with `read_to_string`: never anything but UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    match MasterConfig::parse(text, path) {
        Ok(config) => {
            let agents = config.static_agents(path).expect("validated");
            std::hint::black_box(agents);
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
    match AgentConfig::parse(text, path) {
        Ok(config) => {
            let specs = config.collector_specs(path).expect("validated");
            std::hint::black_box(specs);
            config.master_alarm_address().expect("validated");
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
