//! Fuzzes the SCRAM-SHA-256 state machines and the stored-verifier parser.
//!
//! The input is split at '\n' into up to seven pieces:
//!
//! 0. a stored verifier, for `ScramSecret::parse`;
//! 1. a client-first-message and 2. a client-final-message, for the server side;
//! 3. a server-first-message and 4. a server-final-message, for the client side;
//! 5. client nonce bytes and 6. server nonce bytes (defaults when absent).
//!
//! Nothing may panic. Beyond that: a parsed verifier must print and parse back to the
//! same secret; the keys handed to the client must come with a checked iteration count;
//! and our own client and server, run against each other with the fuzzed nonces, must
//! succeed exactly when the client's keys belong to the server's secret.
//!
//! PBKDF2 runs once per process (for the fixed keys), never on fuzzed input, so an
//! iteration count from the input cannot stall the fuzzer.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgauth::{
    derive_client_keys, ClientKeys, ScramClient, ScramError, ScramSecret, ScramServer,
    MAX_ITERATIONS, MAX_MESSAGE_LEN,
};

/// RFC 7677's example user, password "pencil", as Postgres stores it.
const PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
const PENCIL_PASSWORD: &str = "pencil";

const DEFAULT_CLIENT_NONCE: &[u8] = b"fuzz client nonce";
const DEFAULT_SERVER_NONCE: &[u8] = b"fuzz server nonce";
/// Nonces up to this many bytes keep every message of a whole exchange under
/// `MAX_MESSAGE_LEN` (base64 grows them by a third, and the server-first-message carries
/// both).
const MAX_NONCE_FOR_EXCHANGE: usize = 512;

/// The pencil verifier and the client keys derived from its password.
fn pencil() -> &'static (ScramSecret, ClientKeys) {
    static PENCIL: OnceLock<(ScramSecret, ClientKeys)> = OnceLock::new();
    PENCIL.get_or_init(|| {
        let secret = match ScramSecret::parse(PENCIL_VERIFIER) {
            Ok(secret) => secret,
            Err(e) => panic!("the RFC 7677 verifier does not parse: {e}"),
        };
        let keys = derive_client_keys(PENCIL_PASSWORD, &secret.salt, secret.iterations);
        assert!(
            keys.matches(&secret),
            "pencil keys do not match their verifier"
        );
        (secret, keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = data.split(|&b| b == b'\n');
    let mut next = || pieces.next().unwrap_or_default();
    let verifier = next();
    let client_first = next();
    let client_final = next();
    let server_first = next();
    let server_final = next();
    // An absent nonce takes the default; a present one, even empty, is used as it is.
    let client_nonce = pieces.next().unwrap_or(DEFAULT_CLIENT_NONCE);
    let server_nonce = pieces.next().unwrap_or(DEFAULT_SERVER_NONCE);

    let (pencil_secret, pencil_keys) = pencil();
    let parsed = std::str::from_utf8(verifier)
        .ok()
        .and_then(|text| ScramSecret::parse(text).ok());
    if let Some(secret) = &parsed {
        check_verifier_round_trip(secret);
    }
    let secret = parsed.as_ref().unwrap_or(pencil_secret);

    // The pooler as a server, fed a client's messages.
    if let Ok((server, first)) = ScramServer::start(secret, server_nonce, client_first) {
        assert!(first.starts_with(b"r="), "server-first: {first:?}");
        if let Ok(outcome) = server.finish(client_final) {
            assert!(outcome.server_final.starts_with(b"v="));
            assert!(
                outcome.client_keys().matches(secret),
                "accepted a wrong proof"
            );
        }
    }

    // The pooler as a client, fed a server's messages.
    let (client, first) = ScramClient::new(client_nonce);
    assert!(first.starts_with(b"n,,n=,r="), "client-first: {first:?}");
    let handled = client.handle_server_first(server_first, |_salt, iterations| {
        assert!(
            (1..=MAX_ITERATIONS).contains(&iterations),
            "keys asked for {iterations} iterations"
        );
        pencil_keys.clone()
    });
    if let Ok((client, last)) = handled {
        assert!(last.starts_with(b"c=biws,r="), "client-final: {last:?}");
        let _ = client.verify_server_final(server_final);
    }

    // Our client against our server, with the fuzzed nonces.
    if !client_nonce.is_empty()
        && !server_nonce.is_empty()
        && client_nonce.len() <= MAX_NONCE_FOR_EXCHANGE
        && server_nonce.len() <= MAX_NONCE_FOR_EXCHANGE
    {
        let result = exchange(secret, pencil_keys, client_nonce, server_nonce);
        let fits = secret.salt.len() <= MAX_MESSAGE_LEN / 4;
        match result {
            Ok(()) => assert!(
                pencil_keys.matches(secret),
                "exchange passed with wrong keys"
            ),
            Err(e) if fits && pencil_keys.matches(secret) => {
                panic!("exchange with the right keys failed: {e}")
            }
            Err(_) => {}
        }
    }
});

fn check_verifier_round_trip(secret: &ScramSecret) {
    let text = secret.to_verifier();
    let again = match ScramSecret::parse(&text) {
        Ok(again) => again,
        Err(e) => panic!("verifier {text:?} does not parse back: {e}"),
    };
    assert_eq!(again.iterations, secret.iterations);
    assert_eq!(again.salt, secret.salt);
    assert_eq!(again.stored_key, secret.stored_key);
    assert_eq!(again.server_key, secret.server_key);
}

/// A whole exchange between our client, holding `keys`, and our server, holding `secret`.
fn exchange(
    secret: &ScramSecret,
    keys: &ClientKeys,
    client_nonce: &[u8],
    server_nonce: &[u8],
) -> Result<(), ScramError> {
    let (client, client_first) = ScramClient::new(client_nonce);
    let (server, server_first) = ScramServer::start(secret, server_nonce, &client_first)?;
    let (client, client_final) = client.handle_server_first(&server_first, |_, _| keys.clone())?;
    let outcome = server.finish(&client_final)?;
    client.verify_server_final(&outcome.server_final)
}
