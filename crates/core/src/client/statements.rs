//! Named prepared statements in transaction mode: what each client has prepared
//! (under its own names) and what each server connection has prepared (under
//! pooler-wide names), so a statement follows its client to any server. Pure.
//!
//! A statement's pooler-wide name is derived from its text and parameter types, so
//! clients preparing the same query share one server-side statement. Each server
//! keeps a bounded LRU of what it has; evicting one means closing it on that server.
//!
//! A statement also has a shape: fingerprints of its parameter types and result
//! columns, as Describes reported them. Postgres fixes a statement's shape
//! when it is prepared and refuses to run it once a schema change would alter its
//! columns. A copy prepared later, on another server or by another client, may
//! have a new shape, so the pooler keeps both the shape each client was told and
//! the shape of each server's copy, and checks them before a Bind.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sql_hint::SessionHints;

/// A statement as the client prepared it, ready to be prepared on any server.
#[derive(Debug)]
pub struct Statement {
    /// Pooler-wide name, `tp_` and 16 hex digits.
    pub global: Box<str>,
    /// A complete Parse message (tag included) naming the statement `global`.
    pub parse: Bytes,
    /// What running it may do to session state, applied at each Bind: a prepared
    /// `SET` changes settings when it runs, in a later transaction than its Parse.
    pub hints: SessionHints,
    /// The shape the client was told by its Describes of the statement (or of a
    /// portal bound from it); unknown if it never asked (it then learns the
    /// columns per portal, each time). Atomic only to be set through the `Arc` the
    /// client's map shares.
    params: AtomicU64,
    rows: AtomicU64,
}

impl PartialEq for Statement {
    fn eq(&self, other: &Self) -> bool {
        self.global == other.global && self.parse == other.parse && self.hints == other.hints
    }
}

impl Eq for Statement {}

/// A fingerprint no Describe has reported yet.
pub const UNKNOWN: u64 = 0;

/// What Describes reported of a statement: a fingerprint of its parameter types
/// and one of its result columns, each [`UNKNOWN`] until reported (a portal's
/// Describe reports the columns only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub params: u64,
    pub rows: u64,
}

/// How a server's copy compares with the shape a client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Same,
    /// A part the client was told is not known for the copy.
    Unknown,
    Different,
}

impl Shape {
    pub fn is_unknown(self) -> bool {
        self.params == UNKNOWN && self.rows == UNKNOWN
    }

    /// Takes the parts `seen` reports.
    pub fn learn(&mut self, seen: Shape) {
        if seen.params != UNKNOWN {
            self.params = seen.params;
        }
        if seen.rows != UNKNOWN {
            self.rows = seen.rows;
        }
    }

    /// How `have` (a server's copy) fits `self` (what the client was told), part
    /// by part; parts the client was not told do not count.
    pub fn fit(self, have: Shape) -> Fit {
        let mut fit = Fit::Same;
        for (want, have) in [(self.params, have.params), (self.rows, have.rows)] {
            if want == UNKNOWN {
                continue;
            }
            if have == UNKNOWN {
                fit = Fit::Unknown;
            } else if have != want {
                return Fit::Different;
            }
        }
        fit
    }
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
            params: AtomicU64::new(UNKNOWN),
            rows: AtomicU64::new(UNKNOWN),
        }
    }

    /// The shape the client was told.
    pub fn shape(&self) -> Shape {
        Shape {
            params: self.params.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }

    /// Records what a Describe told the client.
    pub fn learn(&self, seen: Shape) {
        if seen.params != UNKNOWN {
            self.params.store(seen.params, Ordering::Relaxed);
        }
        if seen.rows != UNKNOWN {
            self.rows.store(seen.rows, Ordering::Relaxed);
        }
    }
}

/// FNV-1a over `parts`, never [`UNKNOWN`].
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    if h == UNKNOWN {
        1
    } else {
        h
    }
}

/// The fingerprint of a ParameterDescription body: the parameter types.
pub fn parameters_fingerprint(body: &[u8]) -> u64 {
    fingerprint([body])
}

/// The fingerprint of a RowDescription body (`Some`) or of NoData (`None`). Per
/// column it takes the name, type and type modifier, as Postgres compares them,
/// and leaves out the source table and column (a table made again has new ones)
/// and the format code (text for a statement, the Bind's choice for a portal). A
/// body cut short is taken whole.
pub fn columns_fingerprint(body: Option<&[u8]>) -> u64 {
    let Some(body) = body else {
        return fingerprint([b"n".as_slice()]);
    };
    let mut parts: Vec<&[u8]> = vec![b"T"];
    let Some((count, mut rest)) = body.split_first_chunk::<2>() else {
        return fingerprint([b"T".as_slice(), body]);
    };
    parts.push(count);
    for _ in 0..u16::from_be_bytes(*count) {
        // name NUL, table OID (4), column number (2), type OID (4), type length
        // (2), type modifier (4), format (2)
        let field = rest
            .iter()
            .position(|&b| b == 0)
            .and_then(|end| rest.get(..end + 1 + 18).map(|f| (end, f)));
        let Some((name_end, field)) = field else {
            return fingerprint([b"T".as_slice(), body]);
        };
        let fixed = &field[name_end + 1..];
        parts.extend([&field[..name_end + 1], &fixed[6..10], &fixed[12..16]]);
        rest = &rest[name_end + 1 + 18..];
    }
    fingerprint(parts)
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
    last_used: HashMap<Box<str>, ServerCopy>,
    /// Statements under a client's own name, left on the server by a refused
    /// duplicate Parse: closed when the transaction ends.
    strays: Vec<Box<str>>,
    /// Cache events since the owner last took them (for metrics).
    pub counts: StatementCounts,
}

/// One statement on the server: when it was last used, and what Describes of
/// this copy reported.
#[derive(Debug, Clone)]
struct ServerCopy {
    used: u64,
    shape: Shape,
}

/// Statement cache events of one server connection, counted without atomics and
/// added to the pool's statistics after each transaction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatementCounts {
    pub hits: u64,
    pub prepares: u64,
    pub evictions: u64,
    /// Copies prepared again and described before a Bind, to compare shapes.
    pub shape_checks: u64,
    /// Binds failed because the client's statement was stale.
    pub stale: u64,
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
            Some(copy) => {
                copy.used = self.clock;
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
                    .min_by_key(|(_, copy)| copy.used)
                    .map(|(name, _)| name.clone());
                if let Some(name) = &oldest {
                    self.last_used.remove(name);
                }
                oldest
            } else {
                None
            };
        self.last_used.insert(
            global.into(),
            ServerCopy {
                used: self.clock,
                shape: Shape::default(),
            },
        );
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
        self.last_used.insert(
            global.into(),
            ServerCopy {
                used: self.clock,
                shape: Shape::default(),
            },
        );
    }

    /// Like [`Self::touch`] (marks the copy used, counts a hit), giving the copy's
    /// shape; `None` if the server lacks it.
    pub fn use_copy(&mut self, global: &str) -> Option<Shape> {
        self.clock += 1;
        let copy = self.last_used.get_mut(global)?;
        copy.used = self.clock;
        self.counts.hits += 1;
        Some(copy.shape)
    }

    /// The shape of the server's copy of `global`, or `None` if the server lacks it.
    pub fn shape(&self, global: &str) -> Option<Shape> {
        self.last_used.get(global).map(|copy| copy.shape)
    }

    /// Records what a Describe of the server's copy of `global` reported.
    pub fn learn(&mut self, global: &str, seen: Shape) {
        if let Some(copy) = self.last_used.get_mut(global) {
            copy.shape.learn(seen);
        }
    }

    /// The copy of `global` was made again: nothing is known of its shape.
    pub fn forget_shape(&mut self, global: &str) {
        if let Some(copy) = self.last_used.get_mut(global) {
            copy.shape = Shape::default();
        }
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

    /// RowDescription body of `(name, table, column, type, typmod, format)`.
    fn columns(cols: &[(&str, u32, i16, u32, i32, i16)]) -> Vec<u8> {
        let mut out = (cols.len() as i16).to_be_bytes().to_vec();
        for (name, table, column, ty, typmod, format) in cols {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(&table.to_be_bytes());
            out.extend_from_slice(&column.to_be_bytes());
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(&(-1i16).to_be_bytes());
            out.extend_from_slice(&typmod.to_be_bytes());
            out.extend_from_slice(&format.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_shape_is_names_types_and_modifiers_of_columns_and_the_parameter_types() {
        let base = columns(&[("x", 16384, 1, 23, -1, 0), ("y", 16384, 2, 25, -1, 0)]);
        let s = columns_fingerprint(Some(&base));
        assert_ne!(s, UNKNOWN);
        // Where the columns come from, and in which format, do not count.
        let moved = columns(&[("x", 16999, 3, 23, -1, 1), ("y", 16999, 4, 25, -1, 1)]);
        assert_eq!(columns_fingerprint(Some(&moved)), s);
        // Names, types, modifiers and the column count do.
        for other in [
            columns(&[("x", 16384, 1, 20, -1, 0), ("y", 16384, 2, 25, -1, 0)]),
            columns(&[("x", 16384, 1, 23, -1, 0), ("z", 16384, 2, 25, -1, 0)]),
            columns(&[("x", 16384, 1, 23, 12, 0), ("y", 16384, 2, 25, -1, 0)]),
            columns(&[("x", 16384, 1, 23, -1, 0)]),
        ] {
            assert_ne!(columns_fingerprint(Some(&other)), s);
        }
        assert_ne!(
            columns_fingerprint(None),
            columns_fingerprint(Some(&columns(&[])))
        );
        // A cut body still gives a fingerprint, and not the whole one's.
        assert_ne!(columns_fingerprint(Some(&base[..base.len() - 3])), s);
        assert_ne!(
            parameters_fingerprint(&[0, 1, 0, 0, 0, 23]),
            parameters_fingerprint(&[0, 1, 0, 0, 0, 20])
        );
    }

    #[test]
    fn a_copy_fits_on_the_parts_the_client_was_told() {
        let told = Shape { params: 5, rows: 7 };
        assert_eq!(told.fit(told), Fit::Same);
        assert_eq!(told.fit(Shape { params: 5, rows: 0 }), Fit::Unknown);
        assert_eq!(told.fit(Shape { params: 0, rows: 8 }), Fit::Different);
        let rows_only = Shape { params: 0, rows: 7 };
        assert_eq!(rows_only.fit(Shape { params: 9, rows: 7 }), Fit::Same);
        assert!(Shape::default().is_unknown() && !rows_only.is_unknown());
        let mut learned = Shape { params: 5, rows: 0 };
        learned.learn(rows_only);
        assert_eq!(learned, told);
    }

    #[test]
    fn a_copy_made_again_has_no_shape_until_described() {
        let told = Shape { params: 5, rows: 7 };
        let mut s = ServerStatements::new(4);
        assert_eq!(s.shape("a"), None);
        s.insert("a");
        assert_eq!(s.shape("a"), Some(Shape::default()));
        s.learn("a", told);
        assert!(s.touch("a"));
        assert_eq!(s.shape("a"), Some(told), "use keeps the shape");
        s.forget_shape("a");
        assert_eq!(s.shape("a"), Some(Shape::default()));
        s.learn("missing", told);
        assert_eq!(s.shape("missing"), None);
        let shared = Statement::from_parse_rest(b"select 1\0\0\0", SessionHints::default());
        assert!(shared.shape().is_unknown());
        shared.learn(Shape { params: 0, rows: 9 });
        shared.learn(Shape { params: 3, rows: 0 });
        assert_eq!(shared.shape(), Shape { params: 3, rows: 9 });
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
