//! Unit tests of the NBD wire codec: round trips, every malformed message, and the request
//! checks; and the reactor's large-write path over a socket. The server is tested with real
//! clients in `tests/nbd_clients.rs`.

use proptest::prelude::*;

use super::proto::*;

fn greeting() -> Vec<u8> {
    let mut out = Vec::new();
    encode_greeting(SERVER_HANDSHAKE_FLAGS, &mut out);
    out
}

#[test]
fn greeting_round_trip_and_layout() {
    let bytes = greeting();
    assert_eq!(bytes.len(), GREETING_BYTES);
    assert_eq!(&bytes[..8], b"NBDMAGIC");
    assert_eq!(&bytes[8..16], b"IHAVEOPT");
    assert_eq!(
        decode_greeting(&bytes),
        Ok(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    );
}

#[test]
fn greeting_malformed() {
    let good = greeting();
    assert_eq!(
        decode_greeting(&good[..17]),
        Err(ProtoError::Truncated {
            needed_bytes: 18,
            got_bytes: 17
        })
    );
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert!(matches!(
        decode_greeting(&bad),
        Err(ProtoError::BadMagic {
            expected: NBDMAGIC,
            ..
        })
    ));
    let mut bad = good;
    bad[15] ^= 1;
    assert!(matches!(
        decode_greeting(&bad),
        Err(ProtoError::BadMagic {
            expected: IHAVEOPT,
            ..
        })
    ));
}

#[test]
fn client_flags() {
    for fixed in [false, true] {
        for no_zeroes in [false, true] {
            let flags = ClientFlags {
                fixed_newstyle: fixed,
                no_zeroes,
            };
            let mut out = Vec::new();
            encode_client_flags(flags, &mut out);
            assert_eq!(decode_client_flags(&out, SERVER_HANDSHAKE_FLAGS), Ok(flags));
        }
    }
    // Unknown bits, and NO_ZEROES when the server did not offer it, end the session.
    for bits in [4u32, 1 << 31, 0xffff_ffff] {
        assert_eq!(
            decode_client_flags(&bits.to_be_bytes(), SERVER_HANDSHAKE_FLAGS),
            Err(ProtoError::UnknownClientFlags { flags: bits })
        );
    }
    assert_eq!(
        decode_client_flags(&3u32.to_be_bytes(), FLAG_FIXED_NEWSTYLE),
        Err(ProtoError::UnknownClientFlags { flags: 3 })
    );
    assert!(matches!(
        decode_client_flags(&[0, 0, 1], SERVER_HANDSHAKE_FLAGS),
        Err(ProtoError::Truncated { .. })
    ));
}

#[test]
fn option_header_malformed() {
    let mut out = Vec::new();
    encode_option_header(
        OptionHeader {
            option: OPT_GO,
            data_bytes: 7,
        },
        &mut out,
    );
    assert_eq!(
        decode_option_header(&out),
        Ok(OptionHeader {
            option: OPT_GO,
            data_bytes: 7
        })
    );
    assert!(matches!(
        decode_option_header(&out[..15]),
        Err(ProtoError::Truncated { .. })
    ));
    // A client that skipped the option magic (e.g. a oldstyle client) is out of step.
    out[3] = 0;
    assert!(matches!(
        decode_option_header(&out),
        Err(ProtoError::BadMagic {
            expected: IHAVEOPT,
            ..
        })
    ));
}

fn option_data(option: &ClientOption) -> (OptionHeader, Vec<u8>) {
    let mut out = Vec::new();
    encode_option(option, &mut out);
    let header = decode_option_header(&out).expect("header");
    assert_eq!(out.len(), OPTION_HEADER_BYTES + header.data_bytes as usize);
    (header, out[OPTION_HEADER_BYTES..].to_vec())
}

#[test]
fn simple_options_round_trip() {
    for option in [
        ClientOption::Abort,
        ClientOption::List,
        ClientOption::ExportName(String::new()),
        ClientOption::ExportName("md0".into()),
        ClientOption::Unsupported(OPT_STARTTLS),
        ClientOption::Unsupported(OPT_STRUCTURED_REPLY),
        ClientOption::Unsupported(OPT_EXTENDED_HEADERS),
        ClientOption::Unsupported(OPT_LIST_META_CONTEXT),
        ClientOption::Unsupported(OPT_SET_META_CONTEXT),
        ClientOption::Unsupported(OPT_PEEK_EXPORT),
        ClientOption::Unsupported(0),
        ClientOption::Unsupported(u32::MAX),
    ] {
        let (header, data) = option_data(&option);
        assert_eq!(parse_option(header.option, &data), Ok(option));
    }
}

#[test]
fn unsupported_options_ignore_their_data() {
    // META_CONTEXT and friends carry data; the server refuses them whatever it holds.
    for option in [
        OPT_STARTTLS,
        OPT_SET_META_CONTEXT,
        OPT_EXTENDED_HEADERS,
        4242,
    ] {
        assert_eq!(
            parse_option(option, &[0xff; 9]),
            Ok(ClientOption::Unsupported(option))
        );
    }
    assert_eq!(parse_option(OPT_ABORT, b"junk"), Ok(ClientOption::Abort));
}

#[test]
fn export_name_malformed() {
    assert_eq!(
        parse_option(OPT_EXPORT_NAME, b"a\0b"),
        Err(OptionError::BadString)
    );
    assert_eq!(
        parse_option(OPT_EXPORT_NAME, &[0xc3, 0x28]),
        Err(OptionError::BadString)
    );
    assert_eq!(
        parse_option(OPT_EXPORT_NAME, &[b'x'; MAX_STRING_BYTES + 1]),
        Err(OptionError::StringTooLong {
            bytes: MAX_STRING_BYTES + 1
        })
    );
    assert!(parse_option(OPT_EXPORT_NAME, &[b'x'; MAX_STRING_BYTES]).is_ok());
}

#[test]
fn list_with_data_is_invalid() {
    assert_eq!(
        parse_option(OPT_LIST, b"x"),
        Err(OptionError::UnexpectedData { data_bytes: 1 })
    );
}

fn query_data(name: &[u8], requests: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

#[test]
fn info_and_go_parse() {
    let data = query_data(b"md0", &[INFO_BLOCK_SIZE, INFO_NAME]);
    let query = ExportQuery {
        name: "md0".into(),
        info_requests: vec![INFO_BLOCK_SIZE, INFO_NAME],
    };
    assert_eq!(
        parse_option(OPT_GO, &data),
        Ok(ClientOption::Go(query.clone()))
    );
    assert_eq!(parse_option(OPT_INFO, &data), Ok(ClientOption::Info(query)));
    assert_eq!(
        parse_option(OPT_GO, &query_data(b"", &[])),
        Ok(ClientOption::Go(ExportQuery::default()))
    );
}

#[test]
fn info_and_go_malformed() {
    let good = query_data(b"md0", &[INFO_BLOCK_SIZE]);
    for option in [OPT_INFO, OPT_GO] {
        // Every strict prefix is truncated.
        for cut in 0..good.len() {
            assert_eq!(
                parse_option(option, &good[..cut]),
                Err(OptionError::Truncated),
                "prefix of {cut} bytes"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            parse_option(option, &long),
            Err(OptionError::TrailingBytes { extra_bytes: 1 })
        );
        // A name length pointing past the data, including ones that overflow an addition.
        for name_len in [6u32, 100, u32::MAX - 3, u32::MAX] {
            let mut bad = good.clone();
            bad[..4].copy_from_slice(&name_len.to_be_bytes());
            assert_eq!(parse_option(option, &bad), Err(OptionError::Truncated));
        }
        // A request count beyond the data.
        let mut bad = good.clone();
        let count_at = 4 + 3;
        bad[count_at..count_at + 2].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(parse_option(option, &bad), Err(OptionError::Truncated));
        assert_eq!(
            parse_option(option, &query_data(b"a\0", &[])),
            Err(OptionError::BadString)
        );
        assert_eq!(
            parse_option(option, &query_data(&[0xff], &[])),
            Err(OptionError::BadString)
        );
        assert!(matches!(
            parse_option(option, &query_data(&[b'n'; MAX_STRING_BYTES + 1], &[])),
            Err(OptionError::StringTooLong { .. })
        ));
    }
}

#[test]
fn option_reply_round_trip_and_malformed() {
    let mut out = Vec::new();
    encode_option_reply(OPT_LIST, REP_ERR_UNSUP, b"why", &mut out);
    assert_eq!(out.len(), OPTION_REPLY_HEADER_BYTES + 3);
    assert_eq!(
        decode_option_reply_header(&out),
        Ok(OptionReplyHeader {
            option: OPT_LIST,
            reply_type: REP_ERR_UNSUP,
            data_bytes: 3
        })
    );
    assert_eq!(&out[OPTION_REPLY_HEADER_BYTES..], b"why");
    assert!(matches!(
        decode_option_reply_header(&out[..19]),
        Err(ProtoError::Truncated { .. })
    ));
    out[7] ^= 0x10;
    assert!(matches!(
        decode_option_reply_header(&out),
        Err(ProtoError::BadMagic { .. })
    ));
    assert_eq!(REP_ERR_UNSUP, 0x8000_0001);
    assert_eq!(REP_ERR_TOO_BIG, 0x8000_0009);
}

#[test]
fn rep_server_round_trip_and_malformed() {
    let mut out = Vec::new();
    encode_rep_server("md0", "RAID 1, 2 members", &mut out);
    assert_eq!(
        decode_rep_server(&out),
        Ok(("md0".into(), "RAID 1, 2 members".into()))
    );
    assert_eq!(decode_rep_server(&out[..3]), Err(OptionError::Truncated));
    let mut bad = out.clone();
    bad[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(decode_rep_server(&bad), Err(OptionError::Truncated));
}

#[test]
fn info_items_malformed() {
    assert_eq!(decode_info(&[0]), Err(OptionError::Truncated));
    let mut export = Vec::new();
    encode_info(
        &InfoItem::Export {
            size_bytes: 1 << 40,
            transmission_flags: FLAG_HAS_FLAGS,
        },
        &mut export,
    );
    assert_eq!(export.len(), 12, "proto.md: NBD_INFO_EXPORT length is 12");
    assert_eq!(
        decode_info(&export[..11]),
        Err(OptionError::Truncated),
        "short export info"
    );
    let mut long = export.clone();
    long.push(0);
    assert_eq!(
        decode_info(&long),
        Err(OptionError::TrailingBytes { extra_bytes: 1 })
    );
    let mut block = Vec::new();
    encode_info(
        &InfoItem::BlockSize {
            minimum_bytes: 512,
            preferred_bytes: 4096,
            maximum_payload_bytes: 32 << 20,
        },
        &mut block,
    );
    assert_eq!(
        block.len(),
        14,
        "proto.md: NBD_INFO_BLOCK_SIZE length is 14"
    );
    assert_eq!(decode_info(&block[..13]), Err(OptionError::Truncated));
    assert_eq!(
        decode_info(&[0, INFO_NAME as u8, 0]),
        Err(OptionError::BadString)
    );
}

#[test]
fn export_name_reply_layout() {
    let mut out = Vec::new();
    encode_export_name_reply(1 << 30, FLAG_HAS_FLAGS | FLAG_SEND_FLUSH, false, &mut out);
    assert_eq!(out.len(), EXPORT_NAME_REPLY_BYTES);
    assert_eq!(out.len(), 134);
    assert!(out[10..].iter().all(|&b| b == 0));
    let mut short = Vec::new();
    encode_export_name_reply(1 << 30, FLAG_HAS_FLAGS | FLAG_SEND_FLUSH, true, &mut short);
    assert_eq!(short, out[..10]);
    assert_eq!(u64::from_be_bytes(short[..8].try_into().unwrap()), 1 << 30);
    assert_eq!(u16::from_be_bytes([short[8], short[9]]), 0b101);
}

#[test]
fn request_header_malformed() {
    let header = RequestHeader {
        flags: CMD_FLAG_FUA,
        command: CMD_WRITE,
        cookie: 0x0102_0304_0506_0708,
        offset: 4096,
        length: 512,
    };
    let mut out = Vec::new();
    encode_request_header(&header, &mut out);
    assert_eq!(out.len(), REQUEST_HEADER_BYTES);
    assert_eq!(&out[..4], &[0x25, 0x60, 0x95, 0x13]);
    assert_eq!(decode_request_header(&out), Ok(header));
    assert!(matches!(
        decode_request_header(&out[..27]),
        Err(ProtoError::Truncated {
            needed_bytes: 28,
            got_bytes: 27
        })
    ));
    // The extended-header request magic was never negotiated: out of step.
    out[..4].copy_from_slice(&0x21e4_1c71u32.to_be_bytes());
    assert_eq!(
        decode_request_header(&out),
        Err(ProtoError::BadMagic {
            expected: REQUEST_MAGIC as u64,
            found: 0x21e4_1c71
        })
    );
}

#[test]
fn simple_reply_round_trip_and_malformed() {
    for result in [Ok(()), Err(NbdErrno::EIO), Err(NbdErrno::ENOSPC)] {
        let header = SimpleReplyHeader::new(77, result);
        let bytes = encode_simple_reply_header(&header);
        assert_eq!(&bytes[..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(decode_simple_reply_header(&bytes), Ok(header));
        assert_eq!(
            NbdErrno::from_code(header.error),
            result.err(),
            "error field"
        );
    }
    let mut bytes = encode_simple_reply_header(&SimpleReplyHeader::new(1, Ok(())));
    assert!(matches!(
        decode_simple_reply_header(&bytes[..15]),
        Err(ProtoError::Truncated { .. })
    ));
    bytes[0] = 0;
    assert!(matches!(
        decode_simple_reply_header(&bytes),
        Err(ProtoError::BadMagic { .. })
    ));
}

#[test]
fn errno_values_are_the_protocols() {
    let codes: Vec<u32> = NbdErrno::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(codes, [1, 5, 12, 22, 28, 75, 95, 108]);
    for e in NbdErrno::ALL {
        assert_eq!(NbdErrno::from_code(e.code()), Some(e));
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(NbdErrno::from_code(0), None);
    assert_eq!(NbdErrno::from_code(2), None);
}

#[test]
fn io_errors_map_as_proto_md_asks() {
    let os = std::io::Error::from_raw_os_error;
    assert_eq!(NbdErrno::from_io_error(&os(libc::ENOSPC)), NbdErrno::ENOSPC);
    assert_eq!(NbdErrno::from_io_error(&os(libc::EDQUOT)), NbdErrno::ENOSPC);
    assert_eq!(NbdErrno::from_io_error(&os(libc::EFBIG)), NbdErrno::ENOSPC);
    assert_eq!(NbdErrno::from_io_error(&os(libc::EROFS)), NbdErrno::EPERM);
    assert_eq!(NbdErrno::from_io_error(&os(libc::EIO)), NbdErrno::EIO);
    assert_eq!(NbdErrno::from_io_error(&os(libc::EINVAL)), NbdErrno::EIO);
    let custom = std::io::Error::other("x");
    assert_eq!(NbdErrno::from_io_error(&custom), NbdErrno::EIO);
}

// ---------------------------------------------------------------------------------------
// Request checks

const LIMITS: ExportLimits = ExportLimits {
    size_bytes: 1 << 20,
    minimum_block_bytes: 512,
    maximum_payload_bytes: 64 << 10,
    read_only: false,
    can_trim: true,
};

fn req(command: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        command,
        cookie: 9,
        offset,
        length,
    }
}

fn plan(command: u16, flags: u16, offset: u64, length: u32) -> RequestPlan {
    plan_request(&req(command, flags, offset, length), &LIMITS)
}

fn reject(errno: NbdErrno, payload_bytes: u32) -> RequestPlan {
    RequestPlan::Reject {
        errno,
        payload_bytes,
    }
}

#[test]
fn plan_accepts_valid_requests() {
    use Command::*;
    use RequestPlan::Execute;
    assert_eq!(
        plan(CMD_READ, 0, 0, 4096),
        Execute(Read {
            offset: 0,
            length: 4096
        })
    );
    // The last block and a maximum-size read.
    assert_eq!(
        plan(CMD_READ, 0, (1 << 20) - 512, 512),
        Execute(Read {
            offset: (1 << 20) - 512,
            length: 512
        })
    );
    assert_eq!(
        plan(CMD_READ, CMD_FLAG_FUA, 0, 64 << 10),
        Execute(Read {
            offset: 0,
            length: 64 << 10
        })
    );
    assert_eq!(
        plan(CMD_WRITE, CMD_FLAG_FUA, 512, 1024),
        Execute(Write {
            offset: 512,
            length: 1024,
            fua: true
        })
    );
    assert_eq!(plan(CMD_FLUSH, 0, 0, 0), Execute(Flush));
    assert_eq!(plan(CMD_FLUSH, CMD_FLAG_FUA, 0, 0), Execute(Flush));
    // Trim and zeroes carry no payload: longer than the maximum payload is fine.
    assert_eq!(
        plan(CMD_TRIM, CMD_FLAG_FUA, 0, 1 << 20),
        Execute(Trim {
            offset: 0,
            length: 1 << 20,
            fua: true
        })
    );
    assert_eq!(
        plan(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 1 << 20),
        Execute(WriteZeroes {
            offset: 0,
            length: 1 << 20,
            fua: false,
            no_hole: true
        })
    );
    assert_eq!(plan(CMD_DISC, 0, 0, 0), RequestPlan::Disconnect);
    // Zero-length requests are answered without I/O.
    for command in [CMD_READ, CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
        assert_eq!(plan(command, 0, 1 << 20, 0), RequestPlan::Nothing);
    }
}

#[test]
fn plan_rejects_bad_requests() {
    use NbdErrno::*;
    // Past the end: EINVAL for reads and trims, ENOSPC for writes.
    assert_eq!(plan(CMD_READ, 0, 1 << 20, 512), reject(EINVAL, 0));
    assert_eq!(plan(CMD_READ, 0, (1 << 20) - 512, 1024), reject(EINVAL, 0));
    assert_eq!(plan(CMD_TRIM, 0, 1 << 20, 512), reject(EINVAL, 0));
    assert_eq!(plan(CMD_WRITE, 0, 1 << 20, 512), reject(ENOSPC, 512));
    assert_eq!(plan(CMD_WRITE_ZEROES, 0, 1 << 20, 512), reject(ENOSPC, 0));
    assert_eq!(plan(CMD_READ, 0, 1 << 21, 0), reject(EINVAL, 0));
    // Offsets that overflow.
    assert_eq!(plan(CMD_READ, 0, u64::MAX - 511, 512), reject(EINVAL, 0));
    assert_eq!(plan(CMD_WRITE, 0, u64::MAX - 511, 512), reject(ENOSPC, 512));
    // Unaligned.
    assert_eq!(plan(CMD_READ, 0, 1, 512), reject(EINVAL, 0));
    assert_eq!(plan(CMD_READ, 0, 0, 511), reject(EINVAL, 0));
    assert_eq!(plan(CMD_WRITE, 0, 0, 100), reject(EINVAL, 100));
    assert_eq!(plan(CMD_TRIM, 0, 256, 512), reject(EINVAL, 0));
    // Over the maximum payload: a read is refused, a write cannot be skipped safely.
    assert_eq!(plan(CMD_READ, 0, 0, (64 << 10) + 512), reject(EINVAL, 0));
    assert_eq!(
        plan(CMD_WRITE, 0, 0, (64 << 10) + 512),
        RequestPlan::RejectAndClose(EINVAL)
    );
    assert_eq!(
        plan(CMD_WRITE, 0, 0, u32::MAX),
        RequestPlan::RejectAndClose(EINVAL)
    );
    // Unknown and unadvertised commands.
    for command in [CMD_CACHE, CMD_BLOCK_STATUS, 8, 9, 0x7fff, u16::MAX] {
        assert_eq!(plan(command, 0, 0, 512), reject(EINVAL, 0), "{command}");
    }
    // Flags not valid for the command (DF and REQ_ONE were never negotiated).
    assert_eq!(plan(CMD_READ, CMD_FLAG_DF, 0, 512), reject(EINVAL, 0));
    assert_eq!(plan(CMD_READ, CMD_FLAG_NO_HOLE, 0, 512), reject(EINVAL, 0));
    assert_eq!(
        plan(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 512),
        reject(EINVAL, 512)
    );
    assert_eq!(plan(CMD_WRITE, 1 << 15, 0, 512), reject(EINVAL, 512));
    assert_eq!(
        plan(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 0, 512),
        reject(EINVAL, 512)
    );
    assert_eq!(
        plan(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512),
        reject(EINVAL, 0)
    );
    assert_eq!(plan(CMD_FLUSH, CMD_FLAG_REQ_ONE, 0, 0), reject(EINVAL, 0));
}

#[test]
fn plan_read_only_and_no_trim() {
    use NbdErrno::*;
    let ro = ExportLimits {
        read_only: true,
        ..LIMITS
    };
    let p = |command, length| plan_request(&req(command, 0, 0, length), &ro);
    assert_eq!(p(CMD_WRITE, 512), reject(EPERM, 512));
    assert_eq!(p(CMD_TRIM, 512), reject(EPERM, 0));
    assert_eq!(p(CMD_WRITE_ZEROES, 512), reject(EPERM, 0));
    assert!(matches!(p(CMD_READ, 512), RequestPlan::Execute(_)));
    assert!(matches!(p(CMD_FLUSH, 0), RequestPlan::Execute(_)));
    let no_trim = ExportLimits {
        can_trim: false,
        ..LIMITS
    };
    assert_eq!(
        plan_request(&req(CMD_TRIM, 0, 0, 512), &no_trim),
        reject(EINVAL, 0)
    );
}

fn arb_limits() -> impl Strategy<Value = ExportLimits> {
    (
        0u64..1 << 24,
        9u32..13,
        1u32..1 << 20,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(size, shift, max, read_only, can_trim)| ExportLimits {
            size_bytes: size,
            minimum_block_bytes: 1 << shift,
            maximum_payload_bytes: max,
            read_only,
            can_trim,
        })
}

fn arb_header() -> impl Strategy<Value = RequestHeader> {
    (
        any::<u16>(),
        prop_oneof![0u16..10, any::<u16>()],
        any::<u64>(),
        prop_oneof![0u64..1 << 25, any::<u64>()],
        prop_oneof![0u32..1 << 21, any::<u32>()],
    )
        .prop_map(|(flags, command, cookie, offset, length)| {
            // Bias towards valid flag sets and aligned values so Execute is reached often.
            let flags = if flags % 4 == 0 { flags } else { flags & 3 };
            let offset = if offset % 3 == 0 {
                offset
            } else {
                offset & !511
            };
            let length = if length % 3 == 0 {
                length
            } else {
                length & !511
            };
            RequestHeader {
                flags,
                command,
                cookie,
                offset,
                length,
            }
        })
}

proptest! {
    #[test]
    fn request_header_round_trip(header in arb_header()) {
        let mut out = Vec::new();
        encode_request_header(&header, &mut out);
        prop_assert_eq!(decode_request_header(&out), Ok(header));
    }

    #[test]
    fn go_round_trip(name in "[a-z0-9/_.-]{0,64}", requests in prop::collection::vec(any::<u16>(), 0..8)) {
        let option = ClientOption::Go(ExportQuery { name, info_requests: requests });
        let (header, data) = option_data(&option);
        prop_assert_eq!(parse_option(header.option, &data), Ok(option));
    }

    #[test]
    fn info_item_round_trip(
        size in any::<u64>(), flags in any::<u16>(), a in any::<u32>(), b in any::<u32>(),
        c in any::<u32>(), text in "\\PC{0,40}", kind in 0u8..5,
    ) {
        let item = match kind {
            0 => InfoItem::Export { size_bytes: size, transmission_flags: flags },
            1 => InfoItem::Name(text),
            2 => InfoItem::Description(text),
            3 => InfoItem::BlockSize { minimum_bytes: a, preferred_bytes: b, maximum_payload_bytes: c },
            _ => InfoItem::Other { info_type: 4 + (flags % 1000), data: text.into_bytes() },
        };
        let mut out = Vec::new();
        encode_info(&item, &mut out);
        prop_assert_eq!(decode_info(&out), Ok(item));
    }

    /// Whatever the header, `Execute` only ever carries a request inside the export,
    /// aligned, within the payload limit, and never a write to a read-only export; and a
    /// rejected write always skips exactly its payload.
    #[test]
    fn plan_invariants(header in arb_header(), limits in arb_limits()) {
        let block = u64::from(limits.minimum_block_bytes);
        match plan_request(&header, &limits) {
            RequestPlan::Execute(command) => {
                let (offset, length, writes) = match command {
                    Command::Read { offset, length } => {
                        prop_assert!(length <= limits.maximum_payload_bytes);
                        (offset, length, false)
                    }
                    Command::Write { offset, length, .. } => {
                        prop_assert!(length <= limits.maximum_payload_bytes);
                        (offset, length, true)
                    }
                    Command::Trim { offset, length, .. } => {
                        prop_assert!(limits.can_trim);
                        (offset, length, true)
                    }
                    Command::WriteZeroes { offset, length, .. } => (offset, length, true),
                    Command::Flush => (0, 0, false),
                };
                if command != Command::Flush {
                    prop_assert!(length > 0);
                    prop_assert_eq!(offset % block, 0);
                    prop_assert_eq!(u64::from(length) % block, 0);
                    prop_assert!(offset + u64::from(length) <= limits.size_bytes);
                }
                prop_assert!(!(writes && limits.read_only));
                prop_assert_eq!(offset, if command == Command::Flush { 0 } else { header.offset });
            }
            RequestPlan::Reject { payload_bytes, .. } => {
                let expected = if header.command == CMD_WRITE { header.length } else { 0 };
                prop_assert_eq!(payload_bytes, expected);
                prop_assert!(payload_bytes <= limits.maximum_payload_bytes);
            }
            RequestPlan::RejectAndClose(errno) => {
                prop_assert_eq!(header.command, CMD_WRITE);
                prop_assert!(header.length > limits.maximum_payload_bytes);
                prop_assert_eq!(errno, NbdErrno::EINVAL);
            }
            RequestPlan::Nothing => prop_assert_eq!(header.length, 0),
            RequestPlan::Disconnect => prop_assert_eq!(header.command, CMD_DISC),
        }
    }

    /// Arbitrary option data never panics the parser.
    #[test]
    fn parse_option_total(option in 0u32..16, data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_option(option, &data);
        let _ = decode_info(&data);
        let _ = decode_rep_server(&data);
    }
}

/// The reactor's large-write path (the payload thread) over a real socket: a 1 MiB write
/// lands whole, and a client that hangs up in the middle of a 2 MiB payload changes nothing.
pub(super) mod large_writes {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};

    use super::super::proto::*;
    use super::super::{Backend, Completion, ExportInfo, IoOutcome, NbdIo, Server, ServerConfig};

    const SIZE: usize = 8 << 20;

    /// A byte-array export that applies each request as it is submitted (so a model that
    /// applies them in the order sent predicts every read). Also used by the reactor's tests.
    pub(crate) struct Memory(pub(crate) Mutex<Vec<u8>>);

    impl Memory {
        pub(crate) fn new(size_bytes: usize) -> Self {
            Memory(Mutex::new(vec![0u8; size_bytes]))
        }
    }

    impl Backend for Memory {
        fn exports(&self) -> Vec<ExportInfo> {
            vec![ExportInfo {
                name: "m".into(),
                description: String::new(),
                size_bytes: self.0.lock().unwrap().len() as u64,
                preferred_block_bytes: 4096,
                read_only: false,
                multi_conn: true,
                can_trim: false,
            }]
        }

        fn submit(&self, _export: usize, io: NbdIo, done: Completion) {
            let mut disk = self.0.lock().unwrap();
            match io {
                NbdIo::Read { offset, length } => {
                    let at = offset as usize;
                    done(IoOutcome::Ok(disk[at..at + length as usize].to_vec()));
                }
                NbdIo::Write { offset, data, .. } => {
                    let at = offset as usize;
                    disk[at..at + data.len()].copy_from_slice(&data);
                    done(IoOutcome::Ok(Vec::new()));
                }
                _ => done(IoOutcome::Ok(Vec::new())),
            }
        }
    }

    /// A fresh directory `orion-nbd-NAME-PID` and the path of a socket in it.
    pub(crate) fn temp_socket(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("orion-nbd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        (dir, socket)
    }

    /// Connects with the oldstyle-compatible `ExportName` handshake to the default export.
    pub(crate) fn connect(path: &std::path::Path) -> UnixStream {
        let mut s = UnixStream::connect(path).unwrap();
        let mut greeting = [0u8; GREETING_BYTES];
        s.read_exact(&mut greeting).unwrap();
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        let mut out = Vec::new();
        encode_option(&ClientOption::ExportName(String::new()), &mut out);
        s.write_all(&out).unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).unwrap();
        s
    }

    fn request(s: &mut UnixStream, command: u16, cookie: u64, offset: u64, length: u32) {
        let mut out = Vec::new();
        encode_request_header(
            &RequestHeader {
                flags: 0,
                command,
                cookie,
                offset,
                length,
            },
            &mut out,
        );
        s.write_all(&out).unwrap();
    }

    fn reply(s: &mut UnixStream, data_bytes: usize) -> (u64, Vec<u8>) {
        let mut header = [0u8; SIMPLE_REPLY_HEADER_BYTES];
        s.read_exact(&mut header).unwrap();
        let h = decode_simple_reply_header(&header).unwrap();
        assert_eq!(h.error, 0, "request {} failed", h.cookie);
        let mut data = vec![0u8; data_bytes];
        s.read_exact(&mut data).unwrap();
        (h.cookie, data)
    }

    #[test]
    fn large_writes_land_whole_or_not_at_all() {
        let (dir, socket) = temp_socket("large");
        let backend = Arc::new(Memory::new(SIZE));
        let server = Server::start(
            backend.clone(),
            ServerConfig {
                unix_socket: Some(socket.clone()),
                ..ServerConfig::default()
            },
        )
        .unwrap();

        let mut c = connect(&socket);
        let data: Vec<u8> = (0..1usize << 20)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        for (cookie, offset) in [(1u64, 0u64), (2, 3 << 20)] {
            request(&mut c, CMD_WRITE, cookie, offset, data.len() as u32);
            c.write_all(&data).unwrap();
        }
        request(&mut c, CMD_READ, 3, 4096, 8192);
        assert_eq!(reply(&mut c, 0).0, 1);
        assert_eq!(reply(&mut c, 0).0, 2);
        assert_eq!(reply(&mut c, 8192), (3, data[4096..12288].to_vec()));

        let mut gone = connect(&socket);
        request(&mut gone, CMD_WRITE, 9, 5 << 20, 2 << 20);
        gone.write_all(&vec![0xee; 700 << 10]).unwrap();
        drop(gone);

        request(&mut c, CMD_READ, 4, 3 << 20, 1 << 20);
        assert_eq!(reply(&mut c, 1 << 20), (4, data.clone()));
        server.shutdown();
        let disk = backend.0.lock().unwrap();
        assert!(disk[..1 << 20] == data[..] && disk[3 << 20..4 << 20] == data[..]);
        assert!(
            disk[5 << 20..].iter().all(|&b| b == 0),
            "a partial write landed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A backend that keeps write payloads as they come (as a memory member does):
    /// 1 MiB slots, each the `Bytes` of its last write.
    struct Keeper(Mutex<Vec<super::super::Bytes>>);

    const SLOT: usize = 1 << 20;
    const SLOTS: usize = 8;

    impl Backend for Keeper {
        fn exports(&self) -> Vec<ExportInfo> {
            vec![ExportInfo {
                name: "k".into(),
                description: String::new(),
                size_bytes: (SLOT * SLOTS) as u64,
                preferred_block_bytes: 4096,
                read_only: false,
                multi_conn: true,
                can_trim: false,
            }]
        }

        fn submit(&self, _export: usize, io: NbdIo, done: Completion) {
            let mut slots = self.0.lock().unwrap();
            match io {
                NbdIo::Read { offset, length } => {
                    assert_eq!(length as usize, SLOT, "the test reads whole slots");
                    done(IoOutcome::Ok(slots[offset as usize / SLOT].to_vec()));
                }
                NbdIo::Write { offset, data, .. } => {
                    assert_eq!(data.len(), SLOT, "the test writes whole slots");
                    slots[offset as usize / SLOT] = data;
                    done(IoOutcome::Ok(Vec::new()));
                }
                _ => done(IoOutcome::Ok(Vec::new())),
            }
        }
    }

    /// Pooled payload buffers are reused only once no slot keeps them: one connection
    /// overwrites 1 MiB slots with pipelined writes while another reads them; every read is
    /// one whole write, and the end state is the last write of each slot.
    #[test]
    fn kept_payloads_survive_buffer_reuse_across_connections() {
        let (dir, socket) = temp_socket("keep");
        let zero = super::super::Bytes::from(vec![0u8; SLOT]);
        let backend = Arc::new(Keeper(Mutex::new(vec![zero; SLOTS])));
        let server = Server::start(
            backend.clone(),
            ServerConfig {
                unix_socket: Some(socket.clone()),
                ..ServerConfig::default()
            },
        )
        .unwrap();
        const ROUNDS: u64 = 64;
        const DEPTH: u64 = 4;
        let writer_socket = socket.clone();
        let writer = std::thread::spawn(move || {
            let mut w = connect(&writer_socket);
            for batch in (1..=ROUNDS).step_by(DEPTH as usize) {
                for round in batch..batch + DEPTH {
                    let slot = round % SLOTS as u64;
                    request(&mut w, CMD_WRITE, round, slot * SLOT as u64, SLOT as u32);
                    w.write_all(&vec![round as u8; SLOT]).unwrap();
                }
                for _ in 0..DEPTH {
                    reply(&mut w, 0);
                }
            }
        });
        let mut r = connect(&socket);
        let mut cookie = 1000;
        let mut check_all = |r: &mut UnixStream| -> Vec<u8> {
            let mut seen = Vec::new();
            for slot in 0..SLOTS as u64 {
                cookie += 1;
                request(r, CMD_READ, cookie, slot * SLOT as u64, SLOT as u32);
                let (_, data) = reply(r, SLOT);
                let value = data[0];
                assert!(
                    data.iter().all(|&b| b == value),
                    "slot {slot}: a read mixes writes"
                );
                assert!(
                    value == 0 || u64::from(value) % SLOTS as u64 == slot,
                    "slot {slot}: holds the write of round {value}"
                );
                seen.push(value);
            }
            seen
        };
        while !writer.is_finished() {
            check_all(&mut r);
        }
        writer.join().unwrap();
        let last: Vec<u8> = (0..SLOTS as u64)
            .map(|slot| {
                (1..=ROUNDS)
                    .filter(|round| round % SLOTS as u64 == slot)
                    .max()
                    .unwrap() as u8
            })
            .collect();
        assert_eq!(check_all(&mut r), last);
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
