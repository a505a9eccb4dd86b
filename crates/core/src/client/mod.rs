//! The client side: opening handshake, authentication, and the session that relays a
//! client's traffic to the server connections it borrows.

pub mod auth;
pub mod auth_query;
mod console;
pub mod handshake;
mod login;
pub mod park;
pub mod relay;
pub mod responses;
pub mod rewrite;
pub mod session;
pub mod statements;
pub mod txn;
