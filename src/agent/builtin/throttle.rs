//! `throttle`: the Raspberry Pi firmware's under-voltage and throttling
//! flags (what `vcgencmd get_throttled` prints), from
//! `/sys/devices/platform/soc/soc:firmware/get_throttled` where the kernel
//! exposes it.
//!
//! Output: `UNDERVOLTAGE FREQ_CAPPED THROTTLED SOFT_TEMP_LIMIT
//! UNDERVOLTAGE_SEEN FREQ_CAPPED_SEEN THROTTLED_SEEN SOFT_TEMP_LIMIT_SEEN LEVEL`,
//! each 0 or 1 (bits 0–3 now, 16–19 since boot). LEVEL is warning while
//! under-voltage or throttling lasts, note when any flag was seen since
//! boot, else normal. Elsewhere (not a Pi, or a kernel without the file):
//! `none normal`, never an error.

use super::error::CheckError;
use super::Context;

const PATHS: [&str; 1] = ["devices/platform/soc/soc:firmware/get_throttled"];

pub(crate) fn run(ctx: &Context) -> Result<Vec<String>, CheckError> {
    let found = PATHS
        .iter()
        .find_map(|p| std::fs::read_to_string(ctx.roots.sys.join(p)).ok());
    let Some(text) = found else {
        return Ok(vec!["none normal".to_string()]);
    };
    let word = text.trim();
    let hex = word.strip_prefix("0x").unwrap_or(word);
    let flags =
        u32::from_str_radix(hex, 16).map_err(|_| CheckError::Throttled(word.to_string()))?;
    let bit = |n: u32| (flags >> n) & 1;
    let level = if bit(0) == 1 || bit(2) == 1 {
        "warning"
    } else if flags & 0xF_000F != 0 {
        "note"
    } else {
        "normal"
    };
    Ok(vec![format!(
        "{} {} {} {} {} {} {} {} {level}",
        bit(0),
        bit(1),
        bit(2),
        bit(3),
        bit(16),
        bit(17),
        bit(18),
        bit(19)
    )])
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    #[test]
    fn flags_and_absence() {
        let t = Tree::new();
        let ctx = t.context();
        assert_eq!(run(&ctx).unwrap(), ["none normal"]);
        t.write(&format!("sys/{}", PATHS[0]), "50005\n");
        assert_eq!(run(&ctx).unwrap(), ["1 0 1 0 1 0 1 0 warning"]);
        t.write(&format!("sys/{}", PATHS[0]), "0x50000\n");
        assert_eq!(run(&ctx).unwrap(), ["0 0 0 0 1 0 1 0 note"]);
        t.write(&format!("sys/{}", PATHS[0]), "0\n");
        assert_eq!(run(&ctx).unwrap(), ["0 0 0 0 0 0 0 0 normal"]);
        t.write(&format!("sys/{}", PATHS[0]), "zz\n");
        assert!(run(&ctx).unwrap_err().to_string().contains("get_throttled"));
    }
}
