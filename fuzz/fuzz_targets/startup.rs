//! Fuzzes `pgwire::startup::decode_startup`, the first code that reads a new client's bytes.
//!
//! Checks that it never panics, that a decoded packet claims no more bytes than it was
//! given and no fewer than a header, that every shorter prefix of a decoded packet is
//! "incomplete" rather than an error or a different packet, and that what it decodes
//! encodes back to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::startup::{decode_startup, encode_cancel_request, encode_startup, StartupPacket};
use pgwire::MAX_STARTUP_PACKET_LEN;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((packet, used))) = decode_startup(data) else {
        return;
    };
    assert!(used <= data.len(), "used {used} of {} bytes", data.len());
    assert!((8..=MAX_STARTUP_PACKET_LEN).contains(&used), "used {used}");

    // The packet depends only on its own bytes, and until they have all arrived the
    // decoder must ask for more instead of guessing.
    assert_eq!(
        decode_startup(&data[..used]),
        Ok(Some((packet.clone(), used)))
    );
    for cut in 0..used {
        assert_eq!(
            decode_startup(&data[..cut]),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }

    match &packet {
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => assert_eq!(used, 8),
        StartupPacket::CancelRequest { process_id, secret } => {
            let mut out = BytesMut::new();
            encode_cancel_request(*process_id, secret, &mut out);
            assert_eq!(&out[..], &data[..used]);
        }
        StartupPacket::Startup(params) => {
            let pairs: Vec<(&str, &str)> = params
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut out = BytesMut::new();
            encode_startup(&pairs, &mut out);
            let Ok(Some((StartupPacket::Startup(again), again_used))) = decode_startup(&out) else {
                panic!("re-encoded StartupMessage does not decode: {out:?}");
            };
            assert_eq!(again_used, out.len());
            assert_eq!(again.params, params.params);
        }
    }
});
