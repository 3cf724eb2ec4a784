//! `Message::decode` on arbitrary bytes, and `Message::chunk_data` (the
//! in-place chunk reader) against it.
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
    // The in-place chunk reader the master receives data with must agree
    // with the full decoder on every input: same data, same refusals.
    match (Message::chunk_data(data), Message::decode(data)) {
        (Some(Ok(d)), Ok(Message::Chunk(full))) => assert_eq!(d, &full[..]),
        (Some(Ok(_)), other) => panic!("chunk_data accepted what decode gives as {other:?}"),
        (Some(Err(_)), Ok(Message::Chunk(_))) => panic!("chunk_data refused a chunk decode accepts"),
        (None, Ok(Message::Chunk(_))) => panic!("chunk_data missed a chunk"),
        _ => {}
    }
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
