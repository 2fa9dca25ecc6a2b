//! Tests of the frame codec: round trips, every error variant, truncation, mutation, streaming.

use super::*;
use crate::device::{DeviceFlags, NAME_MAX_BYTES};
use crate::error::ProtocolError;
use crate::message::{ERROR_DETAIL_MAX_BYTES, MAX_IO_BYTES, MAX_IO_SECTORS, SECTOR_BYTES};
use alloc::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::format;
use std::string::ToString;

// ---- harness -------------------------------------------------------------------------------

/// Seed for every property here: `SEED=n cargo test` replays a run; the default is fixed so CI
/// is deterministic.
fn seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0bad_f00d_2024)
}

fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let seed = seed();
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("property {name} failed with SEED={seed}: {e}");
    }
}

// ---- strategies ----------------------------------------------------------------------------

fn arb_string<const MAX: usize>() -> impl Strategy<Value = BoundedString<MAX>> {
    "\\PC{0,80}".prop_map(|s: String| BoundedString::truncating(&s))
}

fn arb_device_info() -> impl Strategy<Value = DeviceInfo> {
    let block_size = prop_oneof![Just(0u32), (9u32..=16).prop_map(|shift| 1u32 << shift)];
    let geometry = block_size.prop_flat_map(|bs| {
        let max_blocks = if bs == 0 { 0 } else { u64::MAX / u64::from(bs) };
        (Just(bs), 0..=max_blocks)
    });
    (
        any::<u32>(),
        proptest::sample::select(DeviceClass::ALL.to_vec()),
        0u16..=DeviceFlags::ALL.bits(),
        geometry,
        proptest::option::of(any::<u32>()),
        (arb_string(), arb_string(), arb_string(), arb_string()),
    )
        .prop_map(
            |(id, class, flags, (bs, cap), irq, (name, vendor, model, serial))| DeviceInfo {
                id,
                class,
                flags: DeviceFlags::from_bits(flags).expect("strategy stays in range"),
                block_size_bytes: bs,
                capacity_blocks: cap,
                irq,
                name,
                vendor,
                model,
                serial,
            },
        )
}

fn arb_status() -> impl Strategy<Value = Result<(), DriverError>> {
    prop_oneof![
        Just(Ok(())),
        proptest::sample::select(DriverError::all().collect::<Vec<_>>()).prop_map(Err),
    ]
}

fn arb_fua() -> impl Strategy<Value = IoFlags> {
    prop_oneof![Just(IoFlags::empty()), Just(IoFlags::FUA)]
}

/// A sector that leaves room for `count` sectors after it.
fn arb_sector(count: u32) -> impl Strategy<Value = u64> {
    prop_oneof![0..=1u64 << 40, 0..=u64::MAX - u64::from(count)]
}

fn arb_io_request() -> impl Strategy<Value = IoRequest> {
    let read = (any::<u32>(), 1..=MAX_IO_SECTORS).prop_flat_map(|(dev, count)| {
        arb_sector(count).prop_map(move |sector| IoRequest::read(dev, sector, count))
    });
    let write = (any::<u32>(), 1u32..=8, arb_fua()).prop_flat_map(|(dev, count, flags)| {
        (
            arb_sector(count),
            proptest::collection::vec(any::<u8>(), (count * SECTOR_BYTES) as usize),
        )
            .prop_map(move |(sector, data)| IoRequest::write(dev, sector, data, flags))
    });
    let flush = any::<u32>().prop_map(IoRequest::flush);
    let ranged = (
        any::<u32>(),
        prop_oneof![Just(IoOp::Discard), Just(IoOp::WriteZeroes)],
        arb_fua(),
        1..=u32::MAX,
    )
        .prop_flat_map(|(dev, op, flags, count)| {
            arb_sector(count).prop_map(move |sector| IoRequest {
                device_id: dev,
                op,
                flags,
                sector,
                sector_count: count,
                data: Vec::new(),
            })
        });
    prop_oneof![read, write, flush, ranged]
}

fn arb_io_response() -> impl Strategy<Value = IoResponse> {
    prop_oneof![
        (0usize..=8).prop_flat_map(|sectors| {
            proptest::collection::vec(any::<u8>(), sectors * SECTOR_BYTES as usize)
                .prop_map(IoResponse::ok)
        }),
        proptest::sample::select(DriverError::all().collect::<Vec<_>>()).prop_map(IoResponse::err),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_device_info().prop_map(Message::Probe),
        Just(Message::Init),
        proptest::sample::select(vec![
            ShutdownReason::PowerOff,
            ShutdownReason::Reboot,
            ShutdownReason::Unload
        ])
        .prop_map(|reason| Message::Shutdown { reason }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(irq, timestamp_ns)| Message::Interrupt { irq, timestamp_ns }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(timer_id, now_ns)| Message::Timer { timer_id, now_ns }),
        (any::<u32>(), any::<u64>()).prop_map(|(timer_id, deadline_ns)| Message::ArmTimer {
            timer_id,
            deadline_ns
        }),
        (
            prop_oneof![Just(HotplugEvent::Added), Just(HotplugEvent::Removed)],
            arb_device_info()
        )
            .prop_map(|(event, device)| Message::Hotplug { event, device }),
        arb_io_request().prop_map(Message::IoRequest),
        (any::<u16>(), arb_bytes()).prop_map(|(opcode, payload)| Message::ManagementRequest(
            ManagementRequest { opcode, payload }
        )),
        Just(Message::Ack),
        arb_io_response().prop_map(Message::IoResponse),
        (any::<u16>(), arb_status(), arb_bytes()).prop_map(|(opcode, status, payload)| {
            Message::ManagementResponse(ManagementResponse {
                opcode,
                status,
                payload,
            })
        }),
        (
            proptest::sample::select(DriverError::all().collect::<Vec<_>>()),
            arb_string()
        )
            .prop_map(|(error, detail)| Message::Error(ErrorReply { error, detail })),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), arb_message()).prop_map(|(sequence, message)| Frame { sequence, message })
}

/// One valid frame of every message type, small, for the exhaustive tests.
fn sample_frames() -> Vec<Frame> {
    let mut dev = DeviceInfo::block(3, "nvme0n1", 4096, 1 << 30).unwrap();
    dev.irq = Some(42);
    dev.flags = DeviceFlags::WRITE_CACHE | DeviceFlags::DISCARD;
    dev.vendor = BoundedString::new("Acme").unwrap();
    dev.model = BoundedString::new("Fast Disk 9000").unwrap();
    dev.serial = BoundedString::new("SN-éè-01").unwrap();
    let messages = vec![
        Message::Probe(dev.clone()),
        Message::Init,
        Message::Shutdown {
            reason: ShutdownReason::Unload,
        },
        Message::Interrupt {
            irq: 42,
            timestamp_ns: 123_456_789,
        },
        Message::Timer {
            timer_id: 7,
            now_ns: u64::MAX,
        },
        Message::ArmTimer {
            timer_id: 1,
            deadline_ns: 5_000_000_000,
        },
        Message::Hotplug {
            event: HotplugEvent::Removed,
            device: dev,
        },
        Message::IoRequest(IoRequest::write(
            1,
            2048,
            (0..1024u32).map(|i| i as u8).collect(),
            IoFlags::FUA,
        )),
        Message::ManagementRequest(ManagementRequest {
            opcode: 0x0102,
            payload: vec![9, 8, 7],
        }),
        Message::Ack,
        Message::IoResponse(IoResponse::ok(vec![0x5a; 512])),
        Message::ManagementResponse(ManagementResponse {
            opcode: 0x0102,
            status: Err(DriverError::Protocol(ProtocolError::UnknownOpcode)),
            payload: b"no such array".to_vec(),
        }),
        Message::error(DriverError::NoSpace, "no spare left for md0"),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| Frame {
            sequence: 1000 + i as u64,
            message,
        })
        .collect()
}

// ---- hand-built frames, independent of the encoder ------------------------------------------

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}
fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}
fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// A frame built byte by byte from the documented layout, with correct checksums.
fn raw_frame(message_type: u16, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"ORIF");
    f.extend_from_slice(&le16(1));
    f.extend_from_slice(&le16(message_type));
    f.extend_from_slice(&le64(sequence));
    f.extend_from_slice(&le32(payload.len() as u32));
    f.extend_from_slice(&le32(crc32fast::hash(payload)));
    f.extend_from_slice(&le32(0));
    let header_crc = crc32fast::hash(&f[..28]);
    f.extend_from_slice(&le32(header_crc));
    f.extend_from_slice(payload);
    f
}

/// Recomputes both checksums after a test edited a frame's header or payload.
fn reseal(f: &mut [u8]) {
    let payload_crc = crc32fast::hash(&f[HEADER_LEN..]);
    f[20..24].copy_from_slice(&le32(payload_crc));
    let header_crc = crc32fast::hash(&f[..28]);
    f[28..32].copy_from_slice(&le32(header_crc));
}

/// Payload builder for hand-made payloads.
#[derive(Default)]
struct P(Vec<u8>);
impl P {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&le16(v));
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&le32(v));
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&le64(v));
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &[u8]) -> Self {
        self.u16(s.len() as u16).bytes(s)
    }
    /// A device description: id 1, the given class/flags/geometry/irq, name "sda", rest empty.
    fn device(self, class: u16, flags: u16, bs: u32, cap: u64, irq: (u8, u32)) -> Self {
        self.u32(1)
            .u16(class)
            .u16(flags)
            .u32(bs)
            .u64(cap)
            .u8(irq.0)
            .u32(irq.1)
            .str(b"sda")
            .str(b"")
            .str(b"")
            .str(b"")
    }
    fn io(self, op: u16, flags: u16, sector: u64, count: u32, data: &[u8]) -> Self {
        self.u32(1)
            .u16(op)
            .u16(flags)
            .u64(sector)
            .u32(count)
            .bytes(data)
    }
}

fn malformed(reason: MalformedReason) -> FrameError {
    FrameError::Malformed { reason }
}

fn unknown(field: &'static str, value: u32) -> FrameError {
    malformed(MalformedReason::UnknownCode { field, value })
}

// ---- round trips ---------------------------------------------------------------------------

#[test]
fn every_message_type_round_trips() {
    let frames = sample_frames();
    let types: std::collections::BTreeSet<u16> = frames
        .iter()
        .map(|f| f.message.message_type().code())
        .collect();
    assert_eq!(types.len(), MessageType::ALL.len(), "a type is missing");
    for frame in frames {
        let bytes = encode(&frame).unwrap();
        assert_eq!(decode(&bytes), Ok((frame.clone(), bytes.len())));
        assert_eq!(decode_exact(&bytes), Ok(frame));
    }
}

#[test]
fn hand_built_frames_decode_to_the_expected_messages() {
    // Checks the documented layout against the decoder, not the encoder against itself.
    let probe = P::default().device(1, 0b1000, 512, 2048, (1, 11)).0;
    let mut expected = DeviceInfo::block(1, "sda", 512, 2048).unwrap();
    expected.flags = DeviceFlags::WRITE_CACHE;
    expected.irq = Some(11);
    assert_eq!(
        decode_exact(&raw_frame(0x0001, 5, &probe)),
        Ok(Frame {
            sequence: 5,
            message: Message::Probe(expected)
        })
    );
    let io = P::default().io(2, 1, 64, 1, &[7; 512]).0;
    assert_eq!(
        decode_exact(&raw_frame(0x0010, 6, &io)),
        Ok(Frame {
            sequence: 6,
            message: Message::IoRequest(IoRequest {
                device_id: 1,
                op: IoOp::Write,
                flags: IoFlags::FUA,
                sector: 64,
                sector_count: 1,
                data: vec![7; 512],
            })
        })
    );
    let err = P::default().u32(0x103).str(b"what?").0;
    assert_eq!(
        decode_exact(&raw_frame(0x80ff, 7, &err)),
        Ok(Frame {
            sequence: 7,
            message: Message::error(DriverError::Protocol(ProtocolError::UnknownOpcode), "what?")
        })
    );
}

#[test]
fn golden_bytes_pin_the_format() {
    // CRC-32/IEEE check value, as zlib computes it.
    assert_eq!(payload_checksum(b"123456789"), 0xCBF4_3926);
    let bytes = encode(&Frame {
        sequence: 0x0102_0304_0506_0708,
        message: Message::Timer {
            timer_id: 9,
            now_ns: 10,
        },
    })
    .unwrap();
    // Both CRCs computed independently with Python's zlib.crc32.
    let expected: [u8; 44] = [
        b'O', b'R', b'I', b'F', 1, 0, 0x05, 0x00, 8, 7, 6, 5, 4, 3, 2, 1, 12, 0, 0, 0, 0x36, 0xe0,
        0xbc, 0x77, 0, 0, 0, 0, 0xfb, 0xfc, 0xa3, 0x1e, 9, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn property_arbitrary_frames_round_trip() {
    check("round trip", 512, arb_frame(), |frame| {
        let bytes = encode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode(&bytes), Ok((frame.clone(), bytes.len())));
        // Appending a second frame must not change how the first decodes.
        let mut two = bytes.clone();
        encode_into(&frame, &mut two).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode(&two), Ok((frame, bytes.len())));
        Ok(())
    });
}

// ---- every error variant -------------------------------------------------------------------

#[test]
fn need_more_and_truncated() {
    assert_eq!(decode(&[]), Err(FrameError::NeedMore { bytes: HEADER_LEN }));
    assert_eq!(decode(b"OR"), Err(FrameError::NeedMore { bytes: 30 }));
    let full = raw_frame(0x0004, 1, &P::default().u32(1).u64(2).0);
    assert_eq!(
        decode(&full[..full.len() - 3]),
        Err(FrameError::NeedMore { bytes: 3 })
    );
    assert_eq!(
        decode_exact(&full[..40]),
        Err(FrameError::Truncated { missing_bytes: 4 })
    );
    assert_eq!(
        decode_exact(&full[..10]),
        Err(FrameError::Truncated { missing_bytes: 22 })
    );
}

#[test]
fn trailing_bytes_only_matter_to_decode_exact() {
    let mut bytes = raw_frame(0x8001, 1, &[]);
    bytes.push(0);
    assert_eq!(
        decode_exact(&bytes),
        Err(FrameError::TrailingBytes { count: 1 })
    );
    assert!(matches!(decode(&bytes), Ok((_, 32))));
}

#[test]
fn truncation_at_every_offset_asks_for_exactly_what_is_missing() {
    for frame in sample_frames() {
        let bytes = encode(&frame).unwrap();
        for cut in 0..bytes.len() {
            let expected_missing = if cut < HEADER_LEN {
                HEADER_LEN - cut
            } else {
                bytes.len() - cut
            };
            assert_eq!(
                decode(&bytes[..cut]),
                Err(FrameError::NeedMore {
                    bytes: expected_missing
                }),
                "{:?} cut at {cut}",
                frame.message.message_type()
            );
            assert!(matches!(
                decode_exact(&bytes[..cut]),
                Err(FrameError::Truncated { missing_bytes }) if missing_bytes == expected_missing
            ));
        }
    }
}

#[test]
fn bad_magic_is_seen_from_the_first_byte() {
    assert_eq!(decode(b"X"), Err(FrameError::BadMagic));
    assert_eq!(decode(b"ORIX"), Err(FrameError::BadMagic));
    let mut bytes = raw_frame(0x8001, 1, &[]);
    bytes[0] = b'o';
    assert_eq!(decode(&bytes), Err(FrameError::BadMagic));
    // Big-endian magic is not the magic.
    bytes[..4].copy_from_slice(b"FIRO");
    assert_eq!(decode(&bytes), Err(FrameError::BadMagic));
}

#[test]
fn unsupported_version_wins_over_the_header_checksum() {
    let mut bytes = raw_frame(0x8001, 1, &[]);
    bytes[4] = 2;
    assert_eq!(
        decode(&bytes),
        Err(FrameError::UnsupportedVersion { version: 2 })
    );
    // Seen before the header is complete.
    assert_eq!(
        decode(&bytes[..6]),
        Err(FrameError::UnsupportedVersion { version: 2 })
    );
    bytes[4] = 0;
    assert_eq!(
        decode(&bytes),
        Err(FrameError::UnsupportedVersion { version: 0 })
    );
}

#[test]
fn unknown_type() {
    for ty in [0x0000, 0x0008, 0x7fff, 0x8000, 0x8002, 0xffff] {
        assert_eq!(
            decode(&raw_frame(ty, 1, &[])),
            Err(FrameError::UnknownType { message_type: ty })
        );
    }
    // Known without the payload: no need to wait for it.
    let mut header = raw_frame(0x1234, 1, &[0; 10]);
    header.truncate(HEADER_LEN);
    assert_eq!(
        decode(&header),
        Err(FrameError::UnknownType {
            message_type: 0x1234
        })
    );
}

#[test]
fn length_too_large_is_refused_from_the_header_alone() {
    let mut header = raw_frame(0x0020, 1, &[]);
    header[16..20].copy_from_slice(&le32(MAX_PAYLOAD_BYTES + 1));
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&le32(crc));
    assert_eq!(
        decode(&header),
        Err(FrameError::LengthTooLarge {
            payload_len: MAX_PAYLOAD_BYTES + 1,
            max: MAX_PAYLOAD_BYTES
        })
    );
    header[16..20].copy_from_slice(&le32(u32::MAX));
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&le32(crc));
    assert!(matches!(
        decode(&header),
        Err(FrameError::LengthTooLarge {
            payload_len: u32::MAX,
            ..
        })
    ));
}

#[test]
fn largest_payload_is_accepted_and_one_more_byte_is_not() {
    let frame = Frame {
        sequence: 1,
        message: Message::ManagementRequest(ManagementRequest {
            opcode: 1,
            payload: vec![0xee; MAX_PAYLOAD_BYTES as usize - 2],
        }),
    };
    let bytes = encode(&frame).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + MAX_PAYLOAD_BYTES as usize);
    assert_eq!(decode_exact(&bytes), Ok(frame.clone()));
    let Message::ManagementRequest(mut req) = frame.message else {
        unreachable!()
    };
    req.payload.push(0);
    let too_big = Frame {
        sequence: 1,
        message: Message::ManagementRequest(req),
    };
    let mut out = vec![1, 2, 3];
    assert_eq!(
        encode_into(&too_big, &mut out),
        Err(EncodeError::PayloadTooLarge {
            len: MAX_PAYLOAD_BYTES as usize + 1
        })
    );
    assert_eq!(
        out,
        [1, 2, 3],
        "a failed encode leaves the buffer as it was"
    );
}

#[test]
fn bad_checksums() {
    let mut bytes = raw_frame(0x0004, 1, &P::default().u32(1).u64(2).0);
    bytes[8] ^= 1; // sequence, covered by the header CRC
    assert!(matches!(
        decode(&bytes),
        Err(FrameError::BadChecksum {
            region: ChecksumRegion::Header,
            ..
        })
    ));
    bytes[8] ^= 1;
    bytes[HEADER_LEN] ^= 0x80;
    let computed = crc32fast::hash(&bytes[HEADER_LEN..]);
    let stored = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(
        decode(&bytes),
        Err(FrameError::BadChecksum {
            region: ChecksumRegion::Payload,
            stored,
            computed
        })
    );
}

#[test]
fn reserved_word_must_be_zero() {
    let mut bytes = raw_frame(0x8001, 1, &[]);
    bytes[24] = 1;
    reseal(&mut bytes);
    assert_eq!(
        decode(&bytes),
        Err(malformed(MalformedReason::ReservedNotZero))
    );
}

#[test]
fn every_malformed_payload_is_named() {
    let long = vec![b'x'; ERROR_DETAIL_MAX_BYTES + 1];
    let long_name = vec![b'n'; NAME_MAX_BYTES + 1];
    let max_read = MAX_IO_SECTORS + 1;
    let cases: Vec<(&str, u16, Vec<u8>, FrameError)> = vec![
        (
            "short",
            0x0004,
            P::default().u32(1).u8(0).0,
            malformed(MalformedReason::PayloadTooShort),
        ),
        (
            "short device",
            0x0001,
            P::default().u32(1).u16(1).0,
            malformed(MalformedReason::PayloadTooShort),
        ),
        (
            "string past the end",
            0x80ff,
            P::default().u32(1).u16(10).bytes(b"abc").0,
            malformed(MalformedReason::PayloadTooShort),
        ),
        (
            "long",
            0x0002,
            vec![0],
            malformed(MalformedReason::PayloadTooLong),
        ),
        (
            "long after device",
            0x0001,
            P::default().device(1, 0, 512, 1, (0, 0)).u8(0).0,
            malformed(MalformedReason::PayloadTooLong),
        ),
        (
            "detail too long",
            0x80ff,
            P::default().u32(1).str(&long).0,
            malformed(MalformedReason::StringTooLong),
        ),
        (
            "name too long",
            0x0001,
            P::default()
                .u32(1)
                .u16(1)
                .u16(0)
                .u32(512)
                .u64(1)
                .u8(0)
                .u32(0)
                .str(&long_name)
                .0,
            malformed(MalformedReason::StringTooLong),
        ),
        (
            "bad utf-8",
            0x80ff,
            P::default().u32(1).str(&[0xff, 0xfe]).0,
            malformed(MalformedReason::InvalidUtf8),
        ),
        (
            "shutdown reason",
            0x0003,
            vec![9],
            unknown("shutdown reason", 9),
        ),
        (
            "hotplug event",
            0x0006,
            P::default().u8(0).device(1, 0, 512, 1, (0, 0)).0,
            unknown("hotplug event", 0),
        ),
        (
            "device class",
            0x0001,
            P::default().device(77, 0, 512, 1, (0, 0)).0,
            unknown("device class", 77),
        ),
        (
            "device flags",
            0x0001,
            P::default().device(1, 0x20, 512, 1, (0, 0)).0,
            unknown("device flags", 0x20),
        ),
        (
            "irq tag",
            0x0001,
            P::default().device(1, 0, 512, 1, (2, 0)).0,
            unknown("irq present", 2),
        ),
        (
            "absent irq with a value",
            0x0001,
            P::default().device(1, 0, 512, 1, (0, 5)).0,
            unknown("absent irq", 5),
        ),
        (
            "io op",
            0x0010,
            P::default().io(6, 0, 0, 1, &[]).0,
            unknown("io op", 6),
        ),
        (
            "io flags",
            0x0010,
            P::default().io(1, 2, 0, 1, &[]).0,
            unknown("io flags", 2),
        ),
        (
            "io status",
            0x8010,
            P::default().u32(15).0,
            unknown("status", 15),
        ),
        (
            "management status",
            0x8020,
            P::default().u16(1).u32(0x100).0,
            unknown("status", 0x100),
        ),
        (
            "error reply with success",
            0x80ff,
            P::default().u32(0).str(b"").0,
            unknown("error status", 0),
        ),
        (
            "fua on read",
            0x0010,
            P::default().io(1, 1, 0, 1, &[]).0,
            malformed(MalformedReason::FlagNotAllowed),
        ),
        (
            "fua on flush",
            0x0010,
            P::default().io(3, 1, 0, 0, &[]).0,
            malformed(MalformedReason::FlagNotAllowed),
        ),
        (
            "flush with range",
            0x0010,
            P::default().io(3, 0, 0, 1, &[]).0,
            malformed(MalformedReason::FlushWithRange),
        ),
        (
            "zero-length discard",
            0x0010,
            P::default().io(4, 0, 0, 0, &[]).0,
            malformed(MalformedReason::ZeroLength),
        ),
        (
            "read too large",
            0x0010,
            P::default().io(1, 0, 0, max_read, &[]).0,
            malformed(MalformedReason::IoTooLarge),
        ),
        (
            "sector overflow",
            0x0010,
            P::default().io(5, 0, u64::MAX - 1, 2, &[]).0,
            malformed(MalformedReason::SectorOverflow),
        ),
        (
            "short write data",
            0x0010,
            P::default().io(2, 0, 0, 1, &[0; 511]).0,
            malformed(MalformedReason::DataLengthMismatch),
        ),
        (
            "read with data",
            0x0010,
            P::default().io(1, 0, 0, 1, &[0; 512]).0,
            malformed(MalformedReason::DataLengthMismatch),
        ),
        (
            "partial-sector read data",
            0x8010,
            P::default().u32(0).bytes(&[0; 100]).0,
            malformed(MalformedReason::DataLengthMismatch),
        ),
        (
            "read data too large",
            0x8010,
            P::default().u32(0).bytes(&vec![0; MAX_IO_BYTES + 512]).0,
            malformed(MalformedReason::IoTooLarge),
        ),
        (
            "data with an error",
            0x8010,
            P::default().u32(3).bytes(&[0; 512]).0,
            malformed(MalformedReason::DataWithError),
        ),
        (
            "bad block size",
            0x0001,
            P::default().device(1, 0, 1000, 1, (0, 0)).0,
            malformed(MalformedReason::BadDeviceInfo),
        ),
        (
            "block size below 512",
            0x0001,
            P::default().device(1, 0, 256, 1, (0, 0)).0,
            malformed(MalformedReason::BadDeviceInfo),
        ),
        (
            "block size above 64 KiB",
            0x0001,
            P::default().device(1, 0, 1 << 17, 1, (0, 0)).0,
            malformed(MalformedReason::BadDeviceInfo),
        ),
        (
            "capacity overflows bytes",
            0x0001,
            P::default().device(1, 0, 1 << 16, u64::MAX >> 15, (0, 0)).0,
            malformed(MalformedReason::BadDeviceInfo),
        ),
        (
            "write too large",
            0x0010,
            P::default().io(2, 0, 0, max_read, &[]).0,
            malformed(MalformedReason::IoTooLarge),
        ),
        (
            "capacity without blocks",
            0x0006,
            P::default().u8(1).device(1, 0, 0, 1, (0, 0)).0,
            malformed(MalformedReason::BadDeviceInfo),
        ),
    ];
    for (name, ty, payload, expected) in cases {
        assert_eq!(decode(&raw_frame(ty, 1, &payload)), Err(expected), "{name}");
    }
}

#[test]
fn encoder_refuses_what_the_decoder_would_refuse() {
    let mut read = IoRequest::read(1, 0, 1);
    read.flags = IoFlags::FUA;
    let frame = Frame {
        sequence: 1,
        message: Message::IoRequest(read),
    };
    assert_eq!(
        encode(&frame),
        Err(EncodeError::Invalid {
            reason: MalformedReason::FlagNotAllowed
        })
    );
    let mut dev = DeviceInfo::block(1, "a", 512, 1).unwrap();
    dev.block_size_bytes = 3;
    assert_eq!(
        encode(&Frame {
            sequence: 1,
            message: Message::Probe(dev)
        }),
        Err(EncodeError::Invalid {
            reason: MalformedReason::BadDeviceInfo
        })
    );
}

#[test]
fn errors_display_and_map_to_bad_frame() {
    let e = FrameError::LengthTooLarge {
        payload_len: 1 << 30,
        max: MAX_PAYLOAD_BYTES,
    };
    assert_eq!(
        e.to_string(),
        format!("payload length {} exceeds the maximum 16777216", 1u32 << 30)
    );
    assert_eq!(
        DriverError::from(e),
        DriverError::Protocol(ProtocolError::BadFrame)
    );
    assert_eq!(
        unknown("io op", 6).to_string(),
        "malformed frame: unknown io op value 0x6"
    );
}

#[test]
fn a_bad_payload_can_be_skipped_using_the_header() {
    let mut stream = raw_frame(0x0003, 77, &[9]);
    let good = encode(&Frame {
        sequence: 78,
        message: Message::Init,
    })
    .unwrap();
    stream.extend_from_slice(&good);
    assert_eq!(decode(&stream), Err(unknown("shutdown reason", 9)));
    let header = decode_header(&stream).unwrap();
    assert_eq!(header.sequence, 77);
    let next = &stream[header.frame_len()..];
    assert_eq!(
        decode(next),
        Ok((
            Frame {
                sequence: 78,
                message: Message::Init
            },
            good.len()
        ))
    );
}

// ---- hostile input -------------------------------------------------------------------------

#[test]
fn property_random_bytes_never_panic() {
    check(
        "random bytes",
        4096,
        proptest::collection::vec(any::<u8>(), 0..300),
        |bytes| {
            if let Ok((frame, used)) = decode(&bytes) {
                prop_assert_eq!(encode(&frame).ok(), Some(bytes[..used].to_vec()));
            }
            let _ = decode_exact(&bytes);
            Ok(())
        },
    );
}

#[test]
fn property_random_payloads_behind_a_valid_header_never_panic() {
    // Random bytes almost never pass the CRCs; seal them so the payload parsers are exercised.
    let ty = proptest::sample::select(
        MessageType::ALL
            .iter()
            .map(|t| t.code())
            .collect::<Vec<_>>(),
    );
    check(
        "sealed random payloads",
        8192,
        (
            ty,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..120),
        ),
        |(ty, seq, payload)| {
            let bytes = raw_frame(ty, seq, &payload);
            match decode(&bytes) {
                Ok((frame, used)) => {
                    prop_assert_eq!(used, bytes.len());
                    // Canonical encoding: what decodes re-encodes to the same bytes.
                    prop_assert_eq!(encode(&frame).ok(), Some(bytes));
                }
                Err(FrameError::Malformed { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            Ok(())
        },
    );
}

#[test]
fn property_any_single_byte_change_is_detected() {
    // CRC-32 catches every error burst of up to 32 bits, and every byte is covered by a CRC.
    check(
        "single byte change",
        1024,
        (arb_frame(), any::<prop::sample::Index>(), 1u8..=255),
        |(frame, index, flip)| {
            let mut bytes = encode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let at = index.index(bytes.len());
            bytes[at] ^= flip;
            prop_assert!(
                decode(&bytes).is_err(),
                "byte {at} ^ {flip:#x} went unnoticed"
            );
            Ok(())
        },
    );
}

#[test]
fn property_streaming_in_arbitrary_chunks() {
    let input = (
        proptest::collection::vec(arb_frame(), 1..6),
        proptest::collection::vec(1usize..64, 1..20),
    );
    check("streaming", 256, input, |(frames, chunk_sizes)| {
        let mut wire = Vec::new();
        for f in &frames {
            encode_into(f, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut received = Vec::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut chunk = chunk_sizes.iter().cycle();
        while sent < wire.len() || !buffer.is_empty() {
            let n = (*chunk.next().unwrap_or(&1)).min(wire.len() - sent);
            buffer.extend_from_slice(&wire[sent..sent + n]);
            sent += n;
            while !buffer.is_empty() {
                match decode(&buffer) {
                    Ok((frame, used)) => {
                        received.push(frame);
                        buffer.drain(..used);
                    }
                    Err(FrameError::NeedMore { bytes }) => {
                        prop_assert!(bytes >= 1);
                        prop_assert!(bytes <= wire.len() - sent, "asked for bytes never sent");
                        break;
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
        }
        prop_assert_eq!(received, frames);
        Ok(())
    });
}
