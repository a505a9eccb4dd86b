//! Known-answer and round-trip tests of the SCRAM machines, client and server
//! together. Malformed-input and never-panics tests live in `malformed_tests`.

use super::client::ScramClientAwaitingServerFirst;
use super::*;

/// The RFC 7677 §3 example exchange (user "user", password "pencil").
pub(super) mod rfc7677 {
    pub const PASSWORD: &str = "pencil";
    pub const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    pub const ITERATIONS: u32 = 4096;
    pub const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    pub const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    pub const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    pub const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    pub const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    pub const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    /// ClientKey, computed independently with Python's hashlib and hmac.
    pub const CLIENT_KEY: [u8; 32] = [
        0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e,
        0xf4, 0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99,
        0x6e, 0x8b,
    ];
}

pub(super) fn rfc_salt() -> Vec<u8> {
    crypto::decode_base64(rfc7677::SALT_B64.as_bytes()).unwrap_or_default()
}

pub(super) fn rfc_secret() -> ScramSecret {
    ScramSecret::from_password(rfc7677::PASSWORD, &rfc_salt(), rfc7677::ITERATIONS)
}

pub(super) fn rfc_keys() -> ClientKeys {
    derive_client_keys(rfc7677::PASSWORD, &rfc_salt(), rfc7677::ITERATIONS)
}

/// Runs a whole exchange between our client (with `keys`) and our server (with `secret`).
fn exchange(secret: &ScramSecret, keys: &ClientKeys) -> Result<ScramServerOutcome, ScramError> {
    let (client, client_first) = ScramClient::new(b"client nonce bytes");
    let (server, server_first) = ScramServer::start(secret, b"server nonce bytes", &client_first)?;
    let (client, client_final) = client.handle_server_first(&server_first, |_, _| keys.clone())?;
    let outcome = server.finish(&client_final)?;
    client.verify_server_final(&outcome.server_final)?;
    Ok(outcome)
}

#[test]
fn server_replays_rfc_7677() -> Result<(), ScramError> {
    let secret = rfc_secret();
    let (server, server_first) = ScramServer::start_with_encoded_nonce(
        &secret,
        rfc7677::SERVER_NONCE,
        rfc7677::CLIENT_FIRST.as_bytes(),
    )?;
    assert_eq!(server_first, rfc7677::SERVER_FIRST.as_bytes());
    let outcome = server.finish(rfc7677::CLIENT_FINAL.as_bytes())?;
    assert_eq!(outcome.server_final, rfc7677::SERVER_FINAL.as_bytes());
    assert_eq!(outcome.client_key, rfc7677::CLIENT_KEY);
    assert!(outcome.client_keys().matches(&secret));
    Ok(())
}

#[test]
fn client_replays_rfc_7677() -> Result<(), ScramError> {
    let (client, client_first) =
        ScramClientAwaitingServerFirst::with_encoded_nonce("user", rfc7677::CLIENT_NONCE.into());
    assert_eq!(client_first, rfc7677::CLIENT_FIRST.as_bytes());
    let mut asked = None;
    let (client, client_final) =
        client.handle_server_first(rfc7677::SERVER_FIRST.as_bytes(), |salt, iterations| {
            asked = Some((salt.to_vec(), iterations));
            rfc_keys()
        })?;
    assert_eq!(asked, Some((rfc_salt(), rfc7677::ITERATIONS)));
    assert_eq!(client_final, rfc7677::CLIENT_FINAL.as_bytes());
    client.verify_server_final(rfc7677::SERVER_FINAL.as_bytes())
}

#[test]
fn client_first_is_anonymous_and_base64s_the_nonce() {
    let (_, client_first) = ScramClient::new(&[0xfb, 0xff, 0x00]);
    assert_eq!(client_first, b"n,,n=,r=+/8A");
    let (_, escaped) = ScramClientAwaitingServerFirst::with_encoded_nonce("a=b,c", "x".into());
    assert_eq!(escaped, b"n,,n=a=3Db=2Cc,r=x");
}

#[test]
fn round_trip_with_right_password() -> Result<(), ScramError> {
    let secret = ScramSecret::from_password("correct horse", b"0123456789abcdef", 16);
    let keys = derive_client_keys("correct horse", b"0123456789abcdef", 16);
    let outcome = exchange(&secret, &keys)?;
    assert_eq!(outcome.client_key, keys.client_key);
    Ok(())
}

#[test]
fn round_trip_with_saslprep_fallback_password() -> Result<(), ScramError> {
    // U+0007 is prohibited by SASLprep, so both sides fall back to the raw bytes.
    let secret = ScramSecret::from_password("bell\u{7}", b"salt", 2);
    exchange(&secret, &derive_client_keys("bell\u{7}", b"salt", 2)).map(drop)
}

#[test]
fn pass_through_keys_log_in_again() -> Result<(), ScramError> {
    let secret = rfc_secret();
    let first = exchange(&secret, &rfc_keys())?;
    // The keys recovered from the client's proof work against a backend with the same verifier.
    let again = exchange(&secret, &first.client_keys())?;
    assert_eq!(again.client_key, rfc7677::CLIENT_KEY);
    Ok(())
}

#[test]
fn wrong_password_is_an_invalid_proof() {
    let secret = ScramSecret::from_password("right", b"salt", 8);
    let keys = derive_client_keys("wrong", b"salt", 8);
    let error = exchange(&secret, &keys).err();
    assert_eq!(error, Some(ScramError::InvalidProof));
    assert_eq!(error.map(|e| e.sqlstate()), Some("28P01"));
}

#[test]
fn wrong_server_key_is_an_invalid_server_signature() {
    let mut impostor = ScramSecret::from_password("right", b"salt", 8);
    // The impostor can check proofs (it has StoredKey) but cannot sign (wrong ServerKey).
    impostor.server_key = [0; 32];
    let keys = derive_client_keys("right", b"salt", 8);
    assert_eq!(
        exchange(&impostor, &keys).err(),
        Some(ScramError::InvalidServerSignature)
    );
}

#[test]
fn server_error_text_is_reported() {
    let (client, first) = ScramClient::new(b"n");
    let server_first = format!("r={}xyz,s=c2FsdA==,i=1", &first[8..].escape_ascii());
    let result = client
        .handle_server_first(server_first.as_bytes(), |salt, i| {
            derive_client_keys("pw", salt, i)
        })
        .and_then(|(client, _)| client.verify_server_final(b"e=invalid-proof"));
    assert_eq!(result, Err(ScramError::ServerError("invalid-proof".into())));
}

#[test]
fn missing_keys_fail_the_exchange() {
    let (client, first) = ScramClient::new(b"n");
    let server_first = format!("r={}xyz,s=c2FsdA==,i=1", &first[8..].escape_ascii());
    let result = client.handle_server_first_checked(server_first.as_bytes(), |_, _| None);
    assert_eq!(result.err(), Some(ScramError::NoKeysForSalt));
}

#[test]
fn debug_output_hides_keys() -> Result<(), ScramError> {
    let secret = rfc_secret();
    let (client, client_first) = ScramClient::new(b"client");
    let (server, server_first) = ScramServer::start(&secret, b"server", &client_first)?;
    let server_debug = format!("{server:?}");
    let (client, client_final) = client.handle_server_first(&server_first, |_, _| rfc_keys())?;
    let client_debug = format!("{client:?}");
    let outcome = server.finish(&client_final)?;
    let outcome_debug = format!("{outcome:?} {:?}", outcome.client_keys());
    let secret_keys = [
        crypto::encode_base64(&secret.stored_key),
        crypto::encode_base64(&secret.server_key),
        crypto::encode_base64(&rfc7677::CLIENT_KEY),
        format!("{:?}", secret.stored_key),
        format!("{:?}", rfc7677::CLIENT_KEY),
    ];
    for shown in [server_debug, client_debug, outcome_debug] {
        assert!(shown.contains("<redacted>"), "{shown}");
        for key in &secret_keys {
            assert!(!shown.contains(key.as_str()), "{shown}");
        }
    }
    Ok(())
}
