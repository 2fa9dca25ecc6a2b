//! Fuzz target for the NBD codec: request headers and the server's request checks, client
//! options, and the option replies a client decodes. Arbitrary bytes never panic; whatever
//! decodes re-encodes to the same bytes; a request the checks let through is inside the
//! export, aligned and within the payload limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use orion_raid::host::nbd::proto::*;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => request(rest),
        1 => option(rest),
        _ => replies(rest),
    }
});

/// Input: 16 bytes of export limits, then a request header.
fn request(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let (limit_bytes, bytes) = data.split_at(16);
    let word = |at: usize| u32::from_le_bytes(limit_bytes[at..at + 4].try_into().unwrap());
    let limits = ExportLimits {
        size_bytes: u64::from(word(0)) << (limit_bytes[12] % 24),
        minimum_block_bytes: 1 << (9 + limit_bytes[13] % 4),
        maximum_payload_bytes: word(4),
        read_only: limit_bytes[14] & 1 != 0,
        can_trim: limit_bytes[14] & 2 != 0,
    };
    let Ok(header) = decode_request_header(bytes) else {
        return;
    };
    let mut again = Vec::new();
    encode_request_header(&header, &mut again);
    assert_eq!(again, bytes[..REQUEST_HEADER_BYTES]);

    let block = u64::from(limits.minimum_block_bytes);
    match plan_request(&header, &limits) {
        RequestPlan::Execute(Command::Flush) => assert_eq!(header.command, CMD_FLUSH),
        RequestPlan::Execute(command) => {
            let (offset, length, writes) = match command {
                Command::Read { offset, length } => {
                    assert!(length <= limits.maximum_payload_bytes);
                    (offset, length, false)
                }
                Command::Write { offset, length, .. } => {
                    assert!(length <= limits.maximum_payload_bytes);
                    (offset, length, true)
                }
                Command::Trim { offset, length, .. } => {
                    assert!(limits.can_trim);
                    (offset, length, true)
                }
                Command::WriteZeroes { offset, length, .. } => (offset, length, true),
                Command::Flush => unreachable!(),
            };
            assert_eq!((offset, length), (header.offset, header.length));
            assert!(length > 0);
            assert_eq!(offset % block, 0);
            assert_eq!(u64::from(length) % block, 0);
            assert!(offset + u64::from(length) <= limits.size_bytes);
            assert!(!(writes && limits.read_only));
        }
        RequestPlan::Reject { payload_bytes, .. } => {
            let payload = if header.command == CMD_WRITE {
                header.length
            } else {
                0
            };
            assert_eq!(payload_bytes, payload);
            assert!(payload_bytes <= limits.maximum_payload_bytes);
        }
        RequestPlan::RejectAndClose(_) => {
            assert_eq!(header.command, CMD_WRITE);
            assert!(header.length > limits.maximum_payload_bytes);
        }
        RequestPlan::Nothing => assert_eq!(header.length, 0),
        RequestPlan::Disconnect => assert_eq!(header.command, CMD_DISC),
    }
}

/// Input: an option header and its data, as a client sends them.
fn option(data: &[u8]) {
    let _ = decode_client_flags(data, SERVER_HANDSHAKE_FLAGS);
    let Ok(header) = decode_option_header(data) else {
        return;
    };
    let body = &data[OPTION_HEADER_BYTES..];
    let body = &body[..body.len().min(header.data_bytes as usize)];
    let Ok(parsed) = parse_option(header.option, body) else {
        return;
    };
    assert_eq!(parsed.number(), header.option);
    // Options that keep their data re-encode to exactly the bytes sent.
    let exact = match &parsed {
        ClientOption::ExportName(_) | ClientOption::Info(_) | ClientOption::Go(_) => true,
        ClientOption::List => body.is_empty(),
        ClientOption::Abort | ClientOption::Unsupported(_) => false,
    };
    if exact {
        let mut again = Vec::new();
        encode_option(&parsed, &mut again);
        assert_eq!(again[OPTION_HEADER_BYTES..], *body);
        let reparsed = parse_option(header.option, &again[OPTION_HEADER_BYTES..]);
        assert_eq!(reparsed, Ok(parsed));
    }
}

/// Input: what a server sends during the handshake and transmission.
fn replies(data: &[u8]) {
    let _ = decode_greeting(data);
    let _ = decode_simple_reply_header(data);
    if let Ok(h) = decode_option_reply_header(data) {
        let body = &data[OPTION_REPLY_HEADER_BYTES..];
        let body = &body[..body.len().min(h.data_bytes as usize)];
        if let Ok(item) = decode_info(body) {
            let mut again = Vec::new();
            encode_info(&item, &mut again);
            assert_eq!(again, body);
        }
        if let Ok((name, description)) = decode_rep_server(body) {
            let mut again = Vec::new();
            encode_rep_server(&name, &description, &mut again);
            assert_eq!(again, body);
        }
    }
}
