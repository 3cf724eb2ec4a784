//! Randomness from the operating system, for nonces, tokens, epochs, alarm
//! ids and keys: one place, so nothing draws it another way.

/// Fresh random bytes from the kernel's generator.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(std::io::Error::other)?;
    Ok(out)
}
