//! `diskio`: reads, writes and busy time per block device, from
//! `/proc/diskstats` (what node_exporter's diskstats collector gives).
//!
//! Output, one line per whole device (those in `/sys/block`, without
//! loop, ram and zram devices):
//! `DEVICE READS READ_BYTES WRITES WRITTEN_BYTES IO_MS LEVEL`, counters
//! since boot (sectors are 512 bytes in this file whatever the device's
//! own sector size). LEVEL is normal. No such device: `none normal`.

use std::collections::HashSet;

use super::error::CheckError;
use super::{read, Context};

pub(crate) fn run(ctx: &Context) -> Result<Vec<String>, CheckError> {
    let path = ctx.proc_path("diskstats");
    let text = read(&path)?;
    let whole: HashSet<String> = std::fs::read_dir(ctx.roots.sys.join("block"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // major minor name reads merged sectors ms writes merged sectors ms in-flight io_ms …
        if f.len() < 14 {
            continue;
        }
        let name = f[2];
        if !whole.contains(name) || ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let n = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| CheckError::parse_line(&path, line))
        };
        lines.push(format!(
            "{name} {} {} {} {} {} normal",
            n(3)?,
            n(5)? * 512,
            n(7)?,
            n(9)? * 512,
            n(12)?
        ));
    }
    if lines.is_empty() {
        lines.push("none normal".to_string());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    #[test]
    fn whole_devices_only() {
        let t = Tree::new();
        let ctx = t.context();
        assert!(run(&ctx).unwrap_err().to_string().contains("diskstats"));
        t.write(
            "proc/diskstats",
            "   7       0 loop0 5 0 10 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n 179       0 mmcblk0 100 5 2000 50 40 3 800 60 0 90 110 0 0 0 0 0 0\n 179       1 mmcblk0p1 10 0 20 5 0 0 0 0 0 5 5 0 0 0 0 0 0\n",
        );
        assert_eq!(run(&ctx).unwrap(), ["none normal"]);
        t.write("sys/block/mmcblk0/size", "1\n");
        t.write("sys/block/loop0/size", "1\n");
        assert_eq!(
            run(&ctx).unwrap(),
            ["mmcblk0 100 1024000 40 409600 90 normal"]
        );
        t.write(
            "proc/diskstats",
            " 179 0 mmcblk0 x 5 2000 50 40 3 800 60 0 90 110\n",
        );
        assert!(run(&ctx).unwrap_err().to_string().contains("cannot parse"));
    }
}
