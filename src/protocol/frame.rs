//! Frames: a 4-byte big-endian length, then that many bytes.
//!
//! This layer knows nothing of messages or keys; it only refuses lengths
//! above the caller's maximum *before* allocating, so a hostile peer cannot
//! make us reserve memory it never sends. After the handshake each frame
//! body is one Noise transport message (`conn`, docs/PROTOCOL.md §5).

use std::io::{self, Read, Write};

/// Largest message accepted after authentication, over all its fragments
/// (`conn` reassembles a message from frames of at most 65,535 bytes).
pub const MAX_FRAME: usize = 256 * 1024;
/// Largest frame accepted before authentication: handshake frames are tiny.
pub const MAX_HANDSHAKE_FRAME: usize = 128;

/// Read one frame body. A clean end of stream before the first length byte
/// is `UnexpectedEof`, like any truncation.
pub fn read_frame(reader: &mut dyn Read, max: usize) -> io::Result<Vec<u8>> {
    let len = read_frame_len(reader, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Read one frame's length, refusing it above `max`.
pub(crate) fn read_frame_len(reader: &mut dyn Read, max: usize) -> io::Result<usize> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok(len)
}

/// Write one frame from parts (avoids concatenating payload and MAC).
pub fn write_frame(writer: &mut dyn Write, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + len as usize);
    buf.extend_from_slice(&len.to_be_bytes());
    for part in parts {
        buf.extend_from_slice(part);
    }
    writer.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &[b"hel", b"lo"]).unwrap();
        write_frame(&mut wire, &[]).unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"");
        assert_eq!(
            read_frame(&mut r, 16).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn oversize_refused_before_allocation() {
        let wire = u32::MAX.to_be_bytes();
        let e = read_frame(&mut &wire[..], MAX_FRAME).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut wire = 10u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"short");
        let e = read_frame(&mut &wire[..], 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
