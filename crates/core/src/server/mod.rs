//! The server side: opening connections to Postgres, pooling them, and cleaning them
//! between clients.

pub mod admission;
pub mod conn;
pub mod connect;
pub mod pool;
pub mod reset;
