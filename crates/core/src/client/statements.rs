//! Named prepared statements in transaction mode: what each client has prepared
//! (under its own names) and what each server connection has prepared (under
//! pooler-wide names), so a statement follows its client to any server. Pure.
//!
//! A statement's pooler-wide name is derived from its text and parameter types, so
//! clients preparing the same query share one server-side statement. Each server
//! keeps a bounded LRU of what it has; evicting one means closing it on that server.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sql_hint::SessionHints;

/// A statement as the client prepared it, ready to be prepared on any server.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// Pooler-wide name, `tp_` and 16 hex digits.
    pub global: Box<str>,
    /// A complete Parse message (tag included) naming the statement `global`.
    pub parse: Bytes,
    /// What running it may do to session state, applied at each Bind: a prepared
    /// `SET` changes settings when it runs, in a later transaction than its Parse.
    pub hints: SessionHints,
}

impl Statement {
    /// Builds the statement of a client's Parse body (`name`, query, parameter types).
    /// `rest` is the body after the statement name; `hints` what its SQL may do.
    pub fn from_parse_rest(rest: &[u8], hints: SessionHints) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        rest.hash(&mut hasher);
        let global: Box<str> = format!("tp_{:016x}", hasher.finish()).into();
        let mut parse = BytesMut::with_capacity(rest.len() + global.len() + 6);
        parse.put_u8(pgwire::tag::PARSE);
        parse.put_i32((4 + global.len() + 1 + rest.len()) as i32);
        parse.put_slice(global.as_bytes());
        parse.put_u8(0);
        parse.put_slice(rest);
        Self {
            global,
            parse: parse.freeze(),
            hints,
        }
    }
}

/// A client's prepared statements, by the names it chose. The map is allocated at
/// the first statement: most clients of a pooler never prepare one, and each
/// idle client carries this.
#[derive(Debug, Default)]
pub struct ClientStatements {
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per idle client instead of a 48-byte empty map"
    )]
    by_name: Option<Box<HashMap<Box<str>, Arc<Statement>>>>,
}

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.by_name.as_ref()?.get(name)
    }

    pub fn insert(&mut self, name: &str, statement: Arc<Statement>) {
        self.by_name
            .get_or_insert_default()
            .insert(name.into(), statement);
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Statement>> {
        self.by_name.as_mut()?.remove(name)
    }

    pub fn clear(&mut self) {
        self.by_name = None;
    }

    pub fn len(&self) -> usize {
        self.by_name.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one server connection has prepared, bounded, least recently used first out.
#[derive(Debug)]
pub struct ServerStatements {
    capacity: usize,
    clock: u64,
    last_used: HashMap<Box<str>, u64>,
    /// Statements under a client's own name, left on the server by a refused
    /// duplicate Parse: closed when the transaction ends.
    strays: Vec<Box<str>>,
    /// Cache events since the owner last took them (for metrics).
    pub counts: StatementCounts,
}

/// Statement cache events of one server connection, counted without atomics and
/// added to the pool's statistics after each transaction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatementCounts {
    pub hits: u64,
    pub prepares: u64,
    pub evictions: u64,
}

impl ServerStatements {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            last_used: HashMap::new(),
            strays: Vec::new(),
            counts: StatementCounts::default(),
        }
    }

    /// Notes a statement left on the server under `name`, to close.
    pub fn add_stray(&mut self, name: &str) {
        if !self.strays.iter().any(|s| **s == *name) {
            self.strays.push(name.into());
        }
    }

    /// The statements to close, taken.
    pub fn take_strays(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.strays)
    }

    pub fn has_strays(&self) -> bool {
        !self.strays.is_empty()
    }

    /// True if the server has `global`; marks it as just used.
    pub fn touch(&mut self, global: &str) -> bool {
        self.clock += 1;
        match self.last_used.get_mut(global) {
            Some(t) => {
                *t = self.clock;
                self.counts.hits += 1;
                true
            }
            None => false,
        }
    }

    /// Records that `global` is being prepared; returns the statement to close first
    /// if the cache is full.
    pub fn insert(&mut self, global: &str) -> Option<Box<str>> {
        self.clock += 1;
        let evicted =
            if self.last_used.len() >= self.capacity && !self.last_used.contains_key(global) {
                let oldest = self
                    .last_used
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(name, _)| name.clone());
                if let Some(name) = &oldest {
                    self.last_used.remove(name);
                }
                oldest
            } else {
                None
            };
        self.last_used.insert(global.into(), self.clock);
        self.counts.prepares += 1;
        if evicted.is_some() {
            self.counts.evictions += 1;
        }
        evicted
    }

    /// Forgets a statement (its Parse failed, or it was closed).
    pub fn remove(&mut self, global: &str) {
        self.last_used.remove(global);
    }

    /// Records again a statement whose eviction did not happen (the Close was skipped
    /// after an error); the cache may exceed its capacity until the next insert.
    pub fn restore(&mut self, global: &str) {
        self.clock += 1;
        self.last_used.insert(global.into(), self.clock);
    }

    /// Forgets everything (DISCARD ALL or DEALLOCATE ALL ran on the server).
    pub fn clear(&mut self) {
        self.last_used.clear();
        self.strays.clear();
    }

    pub fn len(&self) -> usize {
        self.last_used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_global_name() {
        let a = Statement::from_parse_rest(b"select 1\0\0\0", SessionHints::default());
        let b = Statement::from_parse_rest(b"select 1\0\0\0", SessionHints::default());
        let c = Statement::from_parse_rest(b"select 2\0\0\0", SessionHints::default());
        assert_eq!(a.global, b.global);
        assert_ne!(a.global, c.global);
        let f = pgwire::frame::decode_frame(&a.parse, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(f.wire_len(), a.parse.len());
        let (name, query) = pgwire::frontend::decode_parse_head(f.body).unwrap();
        assert_eq!((name, query), (&*a.global, "select 1"));
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut s = ServerStatements::new(2);
        assert_eq!(s.insert("a"), None);
        assert_eq!(s.insert("b"), None);
        assert!(s.touch("a"));
        assert_eq!(s.insert("c").as_deref(), Some("b"));
        assert!(s.touch("a") && s.touch("c") && !s.touch("b"));
        assert_eq!(s.len(), 2);
    }
}
