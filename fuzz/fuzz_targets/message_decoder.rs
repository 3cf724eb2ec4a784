//! `Message::decode` on arbitrary bytes.
//!
//! Checks, beyond "never panics": whatever decodes re-encodes to something
//! that decodes to the same message, and to the same number of bytes (the
//! decoder refuses trailing bytes, so a longer or shorter encoding would mean
//! encoder and decoder disagree on a field's width). The bytes themselves may
//! differ in one place only: any non-zero `more` flag decodes as `true`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pihealth::protocol::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(
        encoded.len(),
        data.len(),
        "{} re-encodes to another length",
        message.kind()
    );
    let again = Message::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message, "{} does not round-trip", message.kind());
    // The zero-copy chunk header must agree with the full encoding.
    if let Message::Chunk(bytes) = &message {
        assert_eq!(encoded[..5], Message::chunk_header(bytes.len()));
    }
});
