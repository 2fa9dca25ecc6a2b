//! Fuzz target for the Orion IPC frame decoder: any bytes decode or fail cleanly, and what
//! decodes re-encodes to the same bytes and decodes to the same frame.
//!
//! The first input byte picks a mode. Odd: the rest is decoded as it is. Even: before decoding,
//! the rest gets a payload length matching its size and both CRCs recomputed, because random
//! mutations almost never satisfy two CRC-32s and the payload parsers would go unexplored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orion_driver::frame::{
    HEADER_LEN, OFFSET_HEADER_CRC, OFFSET_PAYLOAD_CRC, OFFSET_PAYLOAD_LEN, decode, decode_exact,
    decode_header, encode, header_checksum, payload_checksum,
};

/// Makes `bytes` a frame whose length field and checksums are right, leaving every other field
/// as the fuzzer wrote it.
fn seal(bytes: &mut [u8]) {
    let Some(payload_len) = bytes
        .len()
        .checked_sub(HEADER_LEN)
        .and_then(|n| u32::try_from(n).ok())
    else {
        return;
    };
    bytes[OFFSET_PAYLOAD_LEN..OFFSET_PAYLOAD_LEN + 4].copy_from_slice(&payload_len.to_le_bytes());
    let payload_crc = payload_checksum(&bytes[HEADER_LEN..]);
    bytes[OFFSET_PAYLOAD_CRC..OFFSET_PAYLOAD_CRC + 4].copy_from_slice(&payload_crc.to_le_bytes());
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&bytes[..HEADER_LEN]);
    let header_crc = header_checksum(&header);
    bytes[OFFSET_HEADER_CRC..OFFSET_HEADER_CRC + 4].copy_from_slice(&header_crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 0 {
        seal(&mut bytes);
    }

    let _ = decode_header(&bytes);
    let _ = decode_exact(&bytes);
    if let Ok((frame, used)) = decode(&bytes) {
        assert!(used <= bytes.len());
        let reencoded = encode(&frame).expect("a decoded frame must encode");
        assert_eq!(reencoded, bytes[..used], "encoding is not canonical");
        let (again, used_again) = decode(&reencoded).expect("a re-encoded frame must decode");
        assert_eq!(again, frame);
        assert_eq!(used_again, used);
    }
});
