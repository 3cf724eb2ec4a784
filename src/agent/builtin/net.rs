//! `net`: bytes, packets and errors per network interface, from
//! `/proc/net/dev` (what node_exporter's netdev collector gives).
//!
//! Output, one line per interface except `lo`:
//! `IFACE RX_BYTES TX_BYTES RX_PACKETS TX_PACKETS RX_ERRORS TX_ERRORS RX_DROPPED TX_DROPPED LEVEL`.
//! The counters are the kernel's, since boot (Prometheus' `rate()` makes
//! them per second). LEVEL is note when the interface's error or drop
//! counters grew since the previous run, else normal. No interface but
//! `lo`: one line `none normal`.

use std::collections::HashMap;

use super::error::CheckError;
use super::{read, Context};

#[derive(Debug, Default)]
pub(crate) struct Net {
    /// Errors and drops per interface at the previous run.
    faults: HashMap<String, u64>,
}

impl Net {
    pub(crate) fn run(&mut self, ctx: &Context) -> Result<Vec<String>, CheckError> {
        let path = ctx.proc_path("net/dev");
        let text = read(&path)?;
        let mut lines = Vec::new();
        let mut faults = HashMap::new();
        // Two header lines, then `IFACE: rx(8 fields) tx(8 fields)`.
        for line in text.lines().skip(2) {
            let Some((name, counters)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name == "lo" || name.is_empty() {
                continue;
            }
            let c: Vec<u64> = counters
                .split_whitespace()
                .map(|w| w.parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| CheckError::parse_line(&path, line))?;
            if c.len() < 16 {
                return Err(CheckError::parse_line(&path, line));
            }
            let (rx_bytes, rx_packets, rx_errs, rx_drop) = (c[0], c[1], c[2], c[3]);
            let (tx_bytes, tx_packets, tx_errs, tx_drop) = (c[8], c[9], c[10], c[11]);
            let fault = rx_errs + rx_drop + tx_errs + tx_drop;
            let grew = self.faults.get(name).is_some_and(|&before| fault > before);
            faults.insert(name.to_string(), fault);
            // Interface names hold no spaces (the kernel refuses them).
            lines.push(format!(
                "{name} {rx_bytes} {tx_bytes} {rx_packets} {tx_packets} {rx_errs} {tx_errs} {rx_drop} {tx_drop} {}",
                if grew { "note" } else { "normal" }
            ));
        }
        self.faults = faults;
        if lines.is_empty() {
            lines.push("none normal".to_string());
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    const HEAD: &str = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn interfaces_counters_and_growing_errors() {
        let t = Tree::new();
        let ctx = t.context();
        let mut net = Net::default();
        assert!(net.run(&ctx).unwrap_err().to_string().contains("net/dev"));
        t.write(
            "proc/net/dev",
            &format!("{HEAD}    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\nwlan0: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"),
        );
        assert_eq!(
            net.run(&ctx).unwrap(),
            [
                "eth0 1000 2000 10 20 1 3 2 4 normal",
                "wlan0 5 6 1 1 0 0 0 0 normal"
            ]
        );
        t.write(
            "proc/net/dev",
            &format!("{HEAD}  eth0: 1500 15 2 2 0 0 0 0 2500 25 3 4 0 0 0 0\nwlan0: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"),
        );
        assert_eq!(
            net.run(&ctx).unwrap()[0],
            "eth0 1500 2500 15 25 2 3 2 4 note"
        );
        t.write(
            "proc/net/dev",
            &format!("{HEAD}    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"),
        );
        assert_eq!(net.run(&ctx).unwrap(), ["none normal"]);
        t.write("proc/net/dev", &format!("{HEAD}  eth0: 1 x\n"));
        assert!(net
            .run(&ctx)
            .unwrap_err()
            .to_string()
            .contains("cannot parse"));
    }
}
