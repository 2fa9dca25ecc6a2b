//! Fuzz target for the Orion extension record decoder: arbitrary bytes never panic, and
//! whatever decodes re-encodes to a block that decodes to the same record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use orion_raid::metadata::extension::{EXTENSION_BYTES, ExtensionRecord};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry a valid CRC: also try them resealed (length taken
    // from the block, clamped) so the entry parser gets exercised.
    if data.len() >= 48 {
        let mut block = data.to_vec();
        let length = u32::from_le_bytes([block[12], block[13], block[14], block[15]]) as usize;
        let length = length.clamp(48, block.len().min(EXTENSION_BYTES));
        block[..8].copy_from_slice(b"ORIONEXT");
        block[8..10].copy_from_slice(&1u16.to_le_bytes());
        block[12..16].copy_from_slice(&(length as u32).to_le_bytes());
        block[16..20].fill(0);
        let crc = crc32fast::hash(&block[..length]);
        block[16..20].copy_from_slice(&crc.to_le_bytes());
        check(&block);
    }
});

fn check(bytes: &[u8]) {
    if let Ok(record) = ExtensionRecord::decode(bytes) {
        let block = record.encode();
        assert_eq!(block.len(), EXTENSION_BYTES);
        let again = ExtensionRecord::decode(&block).expect("a re-encoded record must decode");
        assert_eq!(again, record);
        assert_eq!(again.encode(), block);
    }
}
