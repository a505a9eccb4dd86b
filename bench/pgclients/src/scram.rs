//! Client side of SCRAM-SHA-256 (RFC 5802 and RFC 7677) as libpq speaks it to
//! Postgres: no channel binding (`n,,`), an empty user name inside the
//! exchange (Postgres takes the user from the startup packet).
//!
//! The salted password is cached per (salt, iterations): a load generator
//! that ran PBKDF2 for every login would spend the machine's CPU on itself,
//! and this tool exists to measure the server's side of a login.
//! Passwords are used as given (no SASLprep): the benchmark's are ASCII.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Keys derived from one password and one (salt, iterations) pair.
#[derive(Clone, Copy)]
struct DerivedKeys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

/// The password and the keys already derived from it, shared by all logins.
pub struct KeyCache {
    password: String,
    keys: Mutex<HashMap<(Vec<u8>, u32), DerivedKeys>>,
}

impl KeyCache {
    pub fn new(password: String) -> Self {
        KeyCache {
            password,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn derived_keys(&self, salt: &[u8], iterations: u32) -> DerivedKeys {
        let cache_key = (salt.to_vec(), iterations);
        if let Ok(keys) = self.keys.lock() {
            if let Some(found) = keys.get(&cache_key) {
                return *found;
            }
        }
        let salted = pbkdf2_sha256(self.password.as_bytes(), salt, iterations);
        let derived = DerivedKeys {
            client_key: hmac_sha256(&salted, &[b"Client Key"]),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        };
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(cache_key, derived);
        }
        derived
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (32 bytes), RFC 8018 section 5.2.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = hmac_sha256(password, &[salt, &1u32.to_be_bytes()]);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac_sha256(password, &[&block]);
        for (out, byte) in result.iter_mut().zip(block.iter()) {
            *out ^= byte;
        }
    }
    result
}

/// One login's exchange, from client-first to the server's signature check.
pub struct Exchange {
    client_nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl Exchange {
    /// Starts an exchange; returns it and the client-first message.
    pub fn start(client_nonce: String) -> (Exchange, String) {
        let client_first_bare = format!("n=,r={client_nonce}");
        let message = format!("n,,{client_first_bare}");
        (
            Exchange {
                client_nonce,
                client_first_bare,
                expected_server_signature: None,
            },
            message,
        )
    }

    /// Answers the server-first message with the client-final message.
    pub fn respond(&mut self, cache: &KeyCache, server_first: &str) -> Result<String, String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            if let Some(value) = attribute.strip_prefix("r=") {
                nonce = Some(value);
            } else if let Some(value) = attribute.strip_prefix("s=") {
                salt = Some(
                    BASE64
                        .decode(value)
                        .map_err(|_| "server-first: salt is not base64".to_string())?,
                );
            } else if let Some(value) = attribute.strip_prefix("i=") {
                iterations = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| "server-first: bad iteration count".to_string())?,
                );
            }
        }
        let (nonce, salt, iterations) = match (nonce, salt, iterations) {
            (Some(n), Some(s), Some(i)) if i >= 1 => (n, s, i),
            _ => return Err(format!("server-first message incomplete: {server_first:?}")),
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err("server nonce does not extend the client nonce".to_string());
        }
        let keys = cache.derived_keys(&salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(keys.client_key).into();
        let client_signature = hmac_sha256(&stored_key, &[auth_message.as_bytes()]);
        let mut proof = keys.client_key;
        for (out, byte) in proof.iter_mut().zip(client_signature.iter()) {
            *out ^= byte;
        }
        self.expected_server_signature =
            Some(hmac_sha256(&keys.server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final message (`v=signature` or `e=error`).
    pub fn verify(&self, server_final: &str) -> Result<(), String> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(format!("server reported SCRAM error: {error}"));
        }
        let signature = server_final
            .split(',')
            .find_map(|attribute| attribute.strip_prefix("v="))
            .ok_or_else(|| "server-final message has no signature".to_string())?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| "server signature is not base64".to_string())?;
        match self.expected_server_signature {
            Some(expected) if expected[..] == signature[..] => Ok(()),
            _ => Err("server signature does not match".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3 test vector (user "user", password "pencil").
    #[test]
    fn rfc7677_vector() {
        let cache = KeyCache::new("pencil".to_string());
        let mut exchange = Exchange {
            client_nonce: "rOprNGfwEbeRWgbNEkqO".to_string(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".to_string(),
            expected_server_signature: None,
        };
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = exchange.respond(&cache, server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        exchange
            .verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }
}
