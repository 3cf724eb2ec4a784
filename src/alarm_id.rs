//! Alarm ids: whichever side raises an alarm (an agent, or the master for
//! its own host alarms) gives it a fresh random id, by which the spool,
//! the master's alarm log and the acknowledgements know it.

/// A new alarm id: 16 random bytes in lowercase hex (32 characters, within
/// the 64 alphanumeric characters the master accepts).
pub(crate) fn new_alarm_id() -> std::io::Result<String> {
    Ok(crate::random::random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let a = super::new_alarm_id().unwrap();
        let b = super::new_alarm_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
