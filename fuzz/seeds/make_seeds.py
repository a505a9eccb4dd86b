#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/seeds/<target>/: small valid messages, built byte by byte
from the protocol documentation, so the fuzzer starts from inputs that reach deep into the
decoders. Run it from anywhere; it rewrites the seed files next to it.

The SCRAM seeds are whole valid exchanges for the RFC 7677 example user (password "pencil"),
computed here with hashlib and hmac, so the fuzzer starts on the success paths too.
"""

import base64
import hashlib
import hmac
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cstr(text):
    return text.encode() + b"\0"


def message(tag, body):
    """A tagged message: Byte1 tag, Int32 length (itself included), body."""
    return tag + struct.pack("!i", len(body) + 4) + body


def packet(body):
    """An untagged startup-phase packet: Int32 length (itself included), body."""
    return struct.pack("!i", len(body) + 4) + body


# Startup phase (Postgres docs, "Message Formats").
STARTUP = packet(
    struct.pack("!I", 3 << 16)
    + cstr("user") + cstr("alice")
    + cstr("database") + cstr("app")
    + cstr("application_name") + cstr("psql")
    + b"\0"
)
STARTUP_3_2 = packet(
    struct.pack("!I", (3 << 16) | 2) + cstr("user") + cstr("bob") + cstr("_pq_.x") + cstr("1") + b"\0"
)
SSL_REQUEST = packet(struct.pack("!I", 80877103))
GSSENC_REQUEST = packet(struct.pack("!I", 80877104))
CANCEL_REQUEST = packet(struct.pack("!III", 80877102, 4242, 0xDEADBEEF))

# Frontend messages.
QUERY = message(b"Q", cstr("SELECT 1"))
PASSWORD = message(b"p", cstr("secret"))
SASL_INITIAL = message(
    b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", 23) + b"n,,n=,r=ZnV6eiBub25jZQ=="
)
PARSE = message(b"P", cstr("s1") + cstr("SELECT $1") + struct.pack("!hi", 1, 23))
BIND = message(b"B", cstr("") + cstr("s1") + struct.pack("!hhhi", 0, 1, 0, 1) + b"7" + struct.pack("!h", 0))
SYNC = message(b"S", b"")

# Backend messages.
AUTH_OK = message(b"R", struct.pack("!i", 0))
AUTH_SASL = message(b"R", struct.pack("!i", 10) + cstr("SCRAM-SHA-256") + b"\0")
AUTH_MD5 = message(b"R", struct.pack("!i", 5) + b"salt")
PARAMETER_STATUS = message(b"S", cstr("TimeZone") + cstr("UTC"))
BACKEND_KEY_DATA = message(b"K", struct.pack("!II", 4242, 0xDEADBEEF))
READY_FOR_QUERY = message(b"Z", b"I")
ERROR_RESPONSE = message(
    b"E",
    b"S" + cstr("FATAL") + b"V" + cstr("FATAL") + b"C" + cstr("28P01")
    + b"M" + cstr('password authentication failed for user "alice"') + b"\0",
)
LOGIN = AUTH_OK + PARAMETER_STATUS + BACKEND_KEY_DATA + READY_FOR_QUERY

SEEDS = {
    "startup": {
        "startup_message": STARTUP,
        "startup_message_3_2": STARTUP_3_2,
        "ssl_request": SSL_REQUEST,
        "gssenc_request": GSSENC_REQUEST,
        "cancel_request": CANCEL_REQUEST,
        "ssl_then_startup": SSL_REQUEST + STARTUP,
    },
    "frames": {
        "query": QUERY,
        "password": PASSWORD,
        "sasl_initial_response": SASL_INITIAL,
        "parse_bind_sync": PARSE + BIND + SYNC,
        "auth_sasl": AUTH_SASL,
        "auth_md5": AUTH_MD5,
        "ready_for_query": READY_FOR_QUERY,
        "error_response": ERROR_RESPONSE,
        "login": LOGIN,
    },
    # The first byte picks the split point (0: all in the second chunk, 255: all in the first).
    "scanner": {
        "query_split_middle": b"\x80" + QUERY + READY_FOR_QUERY,
        "login_split_early": b"\x10" + LOGIN,
        "error_then_rfq": b"\xc0" + ERROR_RESPONSE + READY_FOR_QUERY,
        "extended_query": b"\x55" + PARSE + BIND + SYNC,
        "sasl_initial_partial": b"\x40" + SASL_INITIAL + QUERY[:7],
    },
}


def b64(data):
    return base64.b64encode(data).decode()


def hmac_sha256(key, data):
    return hmac.new(key, data.encode(), hashlib.sha256).digest()


def scram_seed():
    """Lines: verifier, client-first, client-final, server-first, server-final, client
    nonce, server nonce; see fuzz_targets/scram.rs."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    verifier = f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
    client_nonce, server_nonce = b"fuzz client nonce", b"fuzz server nonce"

    # What a client sends to our server (which base64-encodes the server nonce bytes).
    bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    nonce = "rOprNGfwEbeRWgbNEkqO" + b64(server_nonce)
    server_first = f"r={nonce},s={b64(salt)},i=4096"
    without_proof = f"c=biws,r={nonce}"
    signature = hmac_sha256(stored_key, f"{bare},{server_first},{without_proof}")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    to_server = ["n,," + bare, f"{without_proof},p={b64(proof)}"]

    # What a server sends to our client (which base64-encodes the client nonce bytes and
    # sends an empty username).
    bare = f"n=,r={b64(client_nonce)}"
    nonce = b64(client_nonce) + "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    server_first = f"r={nonce},s={b64(salt)},i=4096"
    without_proof = f"c=biws,r={nonce}"
    signature = hmac_sha256(server_key, f"{bare},{server_first},{without_proof}")
    to_client = [server_first, f"v={b64(signature)}"]

    lines = [verifier, *to_server, *to_client, client_nonce.decode(), server_nonce.decode()]
    return "\n".join(lines).encode(), verifier


def main():
    exchange, verifier = scram_seed()
    SEEDS["scram"] = {
        "valid_exchange": exchange,
        "verifier_only": verifier.encode(),
        "server_error": b"\n\n\n" + b"r=ZnV6eiBjbGllbnQgbm9uY2U=x,s=AAAA,i=1\ne=invalid-proof",
    }
    for target, seeds in SEEDS.items():
        directory = HERE / target
        directory.mkdir(exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)


if __name__ == "__main__":
    main()
