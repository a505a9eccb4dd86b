//! Hostile-input tests of the SCRAM machines: each malformed message gives the
//! right error, and a deterministic fuzz loop checks nothing panics.

use super::client::ScramClientAwaitingServerFirst;
use super::crypto;
use super::tests::{rfc_keys, rfc_secret};
use super::*;

const CLIENT_BARE: &str = "n=,r=abc";
const SERVER_FIRST: &str = "r=abcXYZ,s=c2FsdA==,i=1";

fn malformed(message: ScramMessage) -> impl Fn(&ScramError) -> bool {
    move |error| matches!(error, ScramError::Malformed { message: m, .. } if *m == message)
}

fn missing(message: ScramMessage, attribute: char) -> ScramError {
    ScramError::MissingAttribute { message, attribute }
}

fn start(client_first: &[u8]) -> Result<(ScramServerAwaitingFinal, Vec<u8>), ScramError> {
    ScramServer::start_with_encoded_nonce(&rfc_secret(), "XYZ", client_first)
}

/// A valid proof for `without_proof`, after client-first `n,,n=,r=abc` and server nonce `XYZ`.
fn proof_for(without_proof: &str) -> String {
    let secret = rfc_secret();
    let server_first = format!("r=abcXYZ,s={},i=4096", crypto::encode_base64(&secret.salt));
    let auth_message = [
        CLIENT_BARE.as_bytes(),
        b",",
        server_first.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let keys = rfc_keys();
    let signature = crypto::hmac_sha256(&secret.stored_key, &auth_message);
    crypto::encode_base64(&crypto::xor(&keys.client_key, &signature))
}

#[test]
fn server_rejects_malformed_client_first() {
    use ScramError::*;
    use ScramMessage::ClientFirst as M;
    let too_long = format!("n,,n=,r={}", "a".repeat(MAX_MESSAGE_LEN));
    let cases: Vec<(&[u8], ScramError)> = vec![
        (
            b"p=tls-server-end-point,,n=,r=abc",
            ChannelBindingUnsupported,
        ),
        (b"n,a=bob,n=,r=abc", AuthzidUnsupported),
        (b"n,,m=ext,n=,r=abc", UnsupportedExtension(M)),
        (b"n,,r=abc", missing(M, 'n')),
        (b"n,,n=", missing(M, 'r')),
        (b"n,,n=,s=abc", missing(M, 'r')),
        (too_long.as_bytes(), MessageTooLong(M)),
    ];
    for (input, expected) in cases {
        assert_eq!(
            start(input).err(),
            Some(expected),
            "{}",
            input.escape_ascii()
        );
    }
    let malformed_inputs: [&[u8]; 10] = [
        b"",
        b"n",
        b"n,",
        b"x,,n=,r=abc",
        b"n,n=,r=abc",
        b"n,,n=,r=",
        b"n,,n=,r=a b",
        b"n,,n=,r=abc,",
        b"n,,n=,r=abc,bad",
        b"n,,n=,r=\xff",
    ];
    for input in malformed_inputs {
        let error = start(input).err();
        assert!(error.as_ref().is_some_and(malformed(M)), "{error:?}");
    }
}

#[test]
fn server_accepts_y_flag_usernames_and_extensions() {
    for input in [
        &b"y,,n=,r=abc"[..],
        b"n,,n=user,r=abc,x=ext",
        b"n,,n=*,r=abc",
    ] {
        assert!(start(input).is_ok(), "{}", input.escape_ascii());
    }
}

#[test]
fn server_rejects_malformed_client_final() {
    use ScramError::*;
    use ScramMessage::ClientFinal as M;
    let good = format!("c=biws,r=abcXYZ,p={}", proof_for("c=biws,r=abcXYZ"));
    let zero_proof = format!("c=biws,r=abcXYZ,p={}", crypto::encode_base64(&[0; 32]));
    let short_proof = format!("c=biws,r=abcXYZ,p={}", crypto::encode_base64(&[0; 31]));
    let cases: Vec<(String, Result<(), ScramError>)> = vec![
        (good.clone(), Ok(())),
        (
            good.replace("c=biws", "c=eSws"),
            Err(ChannelBindingMismatch),
        ),
        (good.replace("r=abcXYZ", "r=abcXY"), Err(NonceMismatch)),
        (good.replace("r=abcXYZ", "r=abc"), Err(NonceMismatch)),
        ("r=abcXYZ,c=biws".into(), Err(missing(M, 'c'))),
        ("c=biws".into(), Err(missing(M, 'r'))),
        ("c=biws,r=abcXYZ".into(), Err(missing(M, 'p'))),
        ("c=biws,r=abcXYZ,x=1".into(), Err(missing(M, 'p'))),
        (zero_proof, Err(InvalidProof)),
    ];
    for (input, expected) in cases {
        let result = start(b"n,,n=,r=abc").and_then(|(server, _)| server.finish(input.as_bytes()));
        assert_eq!(result.map(drop), expected, "{input}");
    }
    let y_final = format!("c=eSws,r=abcXYZ,p={}", proof_for("c=eSws,r=abcXYZ"));
    let result = start(b"y,,n=,r=abc").and_then(|(server, _)| server.finish(y_final.as_bytes()));
    assert!(result.is_ok(), "{result:?}");
    let mismatch = start(b"y,,n=,r=abc").and_then(|(server, _)| server.finish(good.as_bytes()));
    assert_eq!(mismatch.err(), Some(ChannelBindingMismatch));

    for input in [
        short_proof,
        good.replace("p=", "p=!"),
        format!("{good},x=after"),
        format!("{good},"),
        good[..good.len() - 1].to_string(),
        String::new(),
    ] {
        let result = start(b"n,,n=,r=abc").and_then(|(server, _)| server.finish(input.as_bytes()));
        let error = result.err();
        assert!(
            error.as_ref().is_some_and(malformed(M)),
            "{input}: {error:?}"
        );
    }
}

#[test]
fn server_checks_proof_over_extensions() {
    let without_proof = "c=biws,r=abcXYZ,x=extension";
    let client_final = format!("{without_proof},p={}", proof_for(without_proof));
    let result =
        start(b"n,,n=,r=abc").and_then(|(server, _)| server.finish(client_final.as_bytes()));
    assert!(result.is_ok(), "{result:?}");
}

fn handle_server_first(server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
    let (client, _) = ScramClientAwaitingServerFirst::with_encoded_nonce("", "abc".into());
    client
        .handle_server_first(server_first, |_, _| rfc_keys())
        .map(|(_, client_final)| client_final)
}

#[test]
fn client_rejects_malformed_server_first() {
    use ScramError::*;
    use ScramMessage::ServerFirst as M;
    assert!(handle_server_first(SERVER_FIRST.as_bytes()).is_ok());
    assert!(handle_server_first(format!("{SERVER_FIRST},x=ext").as_bytes()).is_ok());
    let cases: Vec<(String, ScramError)> = vec![
        ("r=abd,s=c2FsdA==,i=1".into(), NonceMismatch),
        ("r=abc,s=c2FsdA==,i=1".into(), NonceMismatch),
        ("r=ab,s=c2FsdA==,i=1".into(), NonceMismatch),
        (
            "m=x,r=abcXYZ,s=c2FsdA==,i=1".into(),
            UnsupportedExtension(M),
        ),
        ("s=c2FsdA==,i=1".into(), missing(M, 'r')),
        ("r=abcXYZ,i=1".into(), missing(M, 's')),
        ("r=abcXYZ".into(), missing(M, 's')),
        ("r=abcXYZ,s=c2FsdA==".into(), missing(M, 'i')),
        ("r=abcXYZ,s=c2FsdA==,i=0".into(), IterationsOutOfRange),
        (
            "r=abcXYZ,s=c2FsdA==,i=10000001".into(),
            IterationsOutOfRange,
        ),
        (
            "r=abcXYZ,s=c2FsdA==,i=4294967296".into(),
            IterationsOutOfRange,
        ),
        ("r=abcXYZ,s=c2FsdA==,i=1".repeat(200), MessageTooLong(M)),
    ];
    for (input, expected) in cases {
        assert_eq!(
            handle_server_first(input.as_bytes()).err(),
            Some(expected),
            "{input}"
        );
    }
    for input in [
        "",
        "r=",
        "r=abcX Z,s=c2FsdA==,i=1",
        "r=abcXYZ,s=c2Fsd,i=1",
        "r=abcXYZ,s=c2FsdA==,i=",
        "r=abcXYZ,s=c2FsdA==,i=-1",
        "r=abcXYZ,s=c2FsdA==,i=1,",
    ] {
        let error = handle_server_first(input.as_bytes()).err();
        assert!(
            error.as_ref().is_some_and(malformed(M)),
            "{input}: {error:?}"
        );
    }
}

#[test]
fn client_does_not_ask_for_keys_on_bad_input() {
    let (client, _) = ScramClientAwaitingServerFirst::with_encoded_nonce("", "abc".into());
    let mut called = false;
    let result = client.handle_server_first(b"r=abcXYZ,s=c2FsdA==,i=0", |_, _| {
        called = true;
        rfc_keys()
    });
    assert!(result.is_err() && !called);
}

#[test]
fn client_rejects_malformed_server_final() {
    use ScramMessage::ServerFinal as M;
    let verify = |server_final: &[u8]| {
        handle_server_first(SERVER_FIRST.as_bytes()).and_then(|_| {
            let (client, _) = ScramClientAwaitingServerFirst::with_encoded_nonce("", "abc".into());
            let (client, _) =
                client.handle_server_first(SERVER_FIRST.as_bytes(), |_, _| rfc_keys())?;
            client.verify_server_final(server_final)
        })
    };
    let zero = format!("v={}", crypto::encode_base64(&[0; 32]));
    assert_eq!(
        verify(zero.as_bytes()),
        Err(ScramError::InvalidServerSignature)
    );
    assert_eq!(verify(b"x=1"), Err(missing(M, 'v')));
    let long = vec![b'e'; MAX_MESSAGE_LEN + 1];
    assert_eq!(verify(&long), Err(ScramError::MessageTooLong(M)));
    for input in [&b""[..], b"v=", b"v=abc", b"v=!!!!", b"e", b"v=AAAA,"] {
        let error = verify(input).err();
        assert!(error.as_ref().is_some_and(malformed(M)), "{error:?}");
    }
}

/// xorshift64: a tiny deterministic generator, so the fuzz loop needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound.max(1) as u64).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        // Favour the bytes the grammar cares about.
        const INTERESTING: &[u8] = b",=nyprcsivmeaxNPR0123456789+/ \x00\xff";
        match self.below(3) {
            0 => INTERESTING[self.below(INTERESTING.len())],
            _ => self.next().to_le_bytes()[0],
        }
    }

    /// A random mutation of `seed`, or a random string.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = if self.below(8) == 0 {
            Vec::new()
        } else {
            seed.to_vec()
        };
        for _ in 0..=self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(5) {
                0 => out.truncate(at),
                1 => out.insert(at, self.byte()),
                2 if at < out.len() => out[at] = self.byte(),
                3 if at < out.len() => drop(out.remove(at)),
                _ => out.extend((0..self.below(16)).map(|_| self.byte())),
            }
        }
        out
    }
}

#[test]
fn machines_never_panic_on_mutated_input() {
    let secret = ScramSecret::from_password("fuzz", b"salt", 1);
    let keys = derive_client_keys("fuzz", b"salt", 1);
    let (client, client_first) = ScramClient::new(b"client nonce");
    let server_nonce = b"server nonce";
    let started = ScramServer::start(&secret, server_nonce, &client_first);
    let Ok((server, server_first)) = started else {
        panic!("valid client-first rejected: {started:?}");
    };
    let handled = client.handle_server_first(&server_first, |_, _| keys.clone());
    let Ok((_, client_final)) = handled else {
        panic!("valid server-first rejected: {handled:?}");
    };
    let Ok(outcome) = server.finish(&client_final) else {
        panic!("valid client-final rejected");
    };

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0usize;
    for _ in 0..20_000 {
        let input = rng.mutate(&client_first);
        if let Ok((server, _)) = ScramServer::start(&secret, server_nonce, &input) {
            accepted += usize::from(server.finish(&rng.mutate(&client_final)).is_ok());
        }
        let (client, _) = ScramClient::new(b"client nonce");
        let input = rng.mutate(&server_first);
        if let Ok((client, _)) = client.handle_server_first(&input, |_, _| keys.clone()) {
            let verified = client.verify_server_final(&rng.mutate(&outcome.server_final));
            accepted += usize::from(verified.is_ok());
        }
    }
    // Some unmutated-enough inputs must get through, or the loop tested nothing deep.
    assert!(accepted > 0);
}
