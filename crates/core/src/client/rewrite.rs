//! Client-to-server messages in transaction mode, rewritten so named prepared
//! statements follow their client: a Parse of a named statement is sent under its
//! pooler-wide name (after a Close of that name, so that it replaces a copy the
//! server may have from before a schema change), a Bind or Describe naming it is
//! renamed and preceded by a Parse when the server lacks it, and a Close of it is
//! answered by the pooler. Every request is entered
//! in the [`ResponsePlan`] so the answers can be put in order. Pure.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::{frame::Frame, tag, WireError};

use super::responses::{ResponseEnd, ResponsePlan, Undo, CLOSE_COMPLETE};
use super::statements::{ClientStatements, Fit, ServerStatements, Statement};
use crate::sql_hint::SessionHints;

/// What became of one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing was written: the message goes to the server exactly as the client
    /// sent it (the caller forwards its bytes, without a copy where it can).
    Untouched,
    /// What goes to the server in its place, if anything, was written.
    Rewritten,
}

/// Whether a Bind of a named statement may go to this server as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindCheck {
    /// The server's copy has the shape the client was told (or the client was
    /// told none): send it.
    #[default]
    Go,
    /// The pooler sent a Describe of the server's copy (after preparing it
    /// again, perhaps) and a Flush: hold the Bind until the answer is in.
    Hold,
    /// The statement's shape changed since the client described it: the server
    /// fails the Bind, and the client gets Postgres's error for a stale statement.
    Fail,
}

/// What [`Rewriter::check_bind`] found for one Bind, handed to
/// [`Rewriter::bind_head`] so the statement is looked up once.
#[derive(Debug, Default)]
pub struct CheckedBind {
    pub check: BindCheck,
    /// The client's statement the Bind names, if it names one.
    statement: Option<Arc<Statement>>,
    /// The server's copy was found and marked used: nothing to prepare.
    ready: bool,
}

/// A statement name no server has: a Bind of it fails at once, before reading
/// its parameters, and is how the pooler makes the server fail one.
const NO_SUCH_STATEMENT: &str = "tp_shape_changed";

/// ErrorResponse fields for a statement whose shape changed: Postgres's own
/// (drivers re-prepare on SQLSTATE 0A000 from `RevalidateCachedQuery`), with a
/// detail saying who found it.
const STALE_FIELDS: &[u8] = b"SERROR\0VERROR\0C0A000\0Mcached plan must not change result type\0\
Dthe statement's columns or parameter types differ from those it was described with \
(found by the pooler on another server connection); prepare it again\0\
Fplancache.c\0RRevalidateCachedQuery\0\0";

/// The whole ErrorResponse for a statement whose shape changed.
pub const STALE_STATEMENT_ERROR: [u8; 5 + STALE_FIELDS.len()] = {
    let mut out = [0u8; 5 + STALE_FIELDS.len()];
    out[0] = tag::ERROR_RESPONSE;
    let len = ((4 + STALE_FIELDS.len()) as u32).to_be_bytes();
    let mut i = 0;
    while i < 4 {
        out[1 + i] = len[i];
        i += 1;
    }
    let mut i = 0;
    while i < STALE_FIELDS.len() {
        out[5 + i] = STALE_FIELDS[i];
        i += 1;
    }
    out
};

/// The state a rewrite reads and updates.
pub struct Rewriter<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub plan: &'a mut ResponsePlan,
}

/// Splits a NUL-terminated string off the front of `buf`.
fn split_cstr<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::UnterminatedString { what })?;
    Ok((&buf[..end], &buf[end + 1..]))
}

fn name_str<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { what })
}

impl Rewriter<'_> {
    /// Handles one complete client message. What goes to the server in its place
    /// is appended to `to_server` (unless it passes untouched); answers due at once
    /// go to `to_client`. `may_drop_statements` says whether a Query may be a
    /// DEALLOCATE, and `hints` what a Query's or Parse's SQL may do to session
    /// state (the caller has looked at its SQL already); a Parse keeps them with
    /// its statement, and a Bind of that statement adds them to `hints`. `checked`
    /// is what [`Self::check_bind`] found for a Bind (anything else ignores it).
    pub fn on_client_message(
        &mut self,
        frame: Frame<'_>,
        may_drop_statements: bool,
        checked: CheckedBind,
        hints: &mut SessionHints,
        to_server: &mut BytesMut,
        to_client: &mut Vec<u8>,
    ) -> Result<Pass, WireError> {
        let pass = match frame.tag {
            tag::PARSE => self.parse(frame.body, *hints, to_server)?,
            tag::BIND => {
                let (portal, rest) = split_cstr(frame.body, "Bind")?;
                let (_statement, rest) = split_cstr(rest, "Bind")?;
                let pass = self.bind_head(portal, checked, rest.len(), hints, to_server);
                if pass == Pass::Rewritten {
                    to_server.put_slice(rest);
                }
                pass
            }
            tag::DESCRIBE => match self.statement_target(frame.body, "Describe")? {
                None => {
                    match self.portal_statement(frame.body) {
                        // The answer tells the client the columns of the statement
                        // bound to the portal: read it, unless nothing is new.
                        Some(s) => self.plan.describe(s, true),
                        None => self.plan.forward(ResponseEnd::Description, Undo::None),
                    }
                    Pass::Untouched
                }
                Some(s) => {
                    // The answer tells the client the statement's shape: read it,
                    // for this server's copy and for the client.
                    self.ensure_prepared(&s, to_server);
                    put_target(to_server, tag::DESCRIBE, b'S', &s.global);
                    self.plan.describe(s, true);
                    Pass::Rewritten
                }
            },
            tag::CLOSE => match frame.body.split_first() {
                Some((b'S', rest)) if rest.first().is_some_and(|&b| b != 0) => {
                    let (name, _) = split_cstr(rest, "Close")?;
                    let name = name_str(name, "Close")?;
                    // Other clients may use the same server-side statement: keep it,
                    // forget the client's name, and answer for the server.
                    let undo = match self.client.remove(name) {
                        Some(statement) => Undo::AnsweredClose {
                            client_name: name.into(),
                            statement,
                        },
                        None => Undo::None,
                    };
                    self.plan.answer(CLOSE_COMPLETE, undo, to_client);
                    Pass::Rewritten
                }
                _ => {
                    self.plan.forward(ResponseEnd::CloseComplete, Undo::None);
                    Pass::Untouched
                }
            },
            tag::EXECUTE => {
                self.plan.forward(ResponseEnd::ExecuteDone, Undo::None);
                Pass::Untouched
            }
            tag::QUERY => {
                let pass = if may_drop_statements && self.deallocate(frame.body, to_server)? {
                    Pass::Rewritten
                } else {
                    Pass::Untouched
                };
                self.plan.forward(ResponseEnd::Ready, Undo::None);
                pass
            }
            tag::SYNC | tag::FUNCTION_CALL => {
                self.plan.forward(ResponseEnd::Ready, Undo::None);
                Pass::Untouched
            }
            // Flush, COPY data and anything else: no response of its own.
            _ => Pass::Untouched,
        };
        Ok(pass)
    }

    /// The head of a Bind (taken whole, or too large to be): `head` is its tag,
    /// length, portal and statement name; `rest_len` bytes of body follow, for the
    /// caller to write (or stream through) untouched. Writes the head with the
    /// statement renamed (after a Parse if the server lacks it), or leaves it
    /// untouched when it names no tracked statement; adds the statement's `hints`.
    /// The statement comes from [`Self::check_bind`] (`checked`); with
    /// [`BindCheck::Fail`] the Bind names a statement no server has instead, so
    /// the server fails it before it runs, and the client gets
    /// [`STALE_STATEMENT_ERROR`].
    pub fn bind_head(
        &mut self,
        portal: &[u8],
        checked: CheckedBind,
        rest_len: usize,
        hints: &mut SessionHints,
        to_server: &mut BytesMut,
    ) -> Pass {
        let CheckedBind {
            check,
            statement: bound,
            ready,
        } = checked;
        let pass = match &bound {
            None => {
                self.plan.forward(ResponseEnd::BindComplete, Undo::None);
                Pass::Untouched
            }
            Some(s) => {
                let target = if check == BindCheck::Fail {
                    NO_SUCH_STATEMENT
                } else {
                    hints.merge(s.hints);
                    if !ready {
                        self.ensure_prepared(s, to_server);
                    }
                    &s.global
                };
                to_server.put_u8(tag::BIND);
                to_server.put_i32((4 + portal.len() + 1 + target.len() + 1 + rest_len) as i32);
                to_server.put_slice(portal);
                to_server.put_u8(0);
                to_server.put_slice(target.as_bytes());
                to_server.put_u8(0);
                if check == BindCheck::Fail {
                    self.plan
                        .fail(ResponseEnd::BindComplete, &STALE_STATEMENT_ERROR);
                } else {
                    let undo = Undo::UsedCopy {
                        statement: s.clone(),
                    };
                    self.plan.forward(ResponseEnd::BindComplete, undo);
                }
                Pass::Rewritten
            }
        };
        // Only a client not yet told the columns learns them from a Describe of
        // the portal (once it knows them, check_bind keeps the server's copy in
        // line before each Bind). A portal bound again from anything else is
        // forgotten.
        match bound
            .filter(|s| check != BindCheck::Fail && s.shape().rows == super::statements::UNKNOWN)
        {
            Some(s) => self.plan.described_portal = Some((portal.into(), s)),
            None => {
                if self
                    .plan
                    .described_portal
                    .as_ref()
                    .is_some_and(|(name, _)| **name == *portal)
                {
                    self.plan.described_portal = None;
                }
            }
        }
        pass
    }

    /// For a Describe of a portal (`body` is the Describe's): the client's
    /// statement bound to it, if the client has not been told its columns yet.
    fn portal_statement(&self, body: &[u8]) -> Option<Arc<Statement>> {
        let name = body.strip_prefix(b"P")?.strip_suffix(b"\0")?;
        match &self.plan.described_portal {
            Some((portal, s)) if **portal == *name => Some(s.clone()),
            _ => None,
        }
    }

    /// Before a Bind of `statement`: whether the server's copy has the shape the
    /// client was told by its Describe. Postgres fixes a statement's columns and
    /// parameter types when it is prepared and refuses to run it once a schema
    /// change would alter its columns (SQLSTATE 0A000); a copy the pooler prepares
    /// later, or another client prepared again, has the new ones. So a copy of
    /// unknown or other shape is prepared again and described (the Bind held: one
    /// round trip), and if it then differs the client's statement is stale and its
    /// Bind fails, as on Postgres. Nothing is checked for a client never told a
    /// shape, or while the server skips to Sync after an error (`server_skipping`:
    /// it would not answer).
    pub fn check_bind(
        &mut self,
        statement: &[u8],
        server_skipping: bool,
        to_server: &mut BytesMut,
    ) -> Result<CheckedBind, WireError> {
        let Some(s) = self.named(statement)? else {
            return Ok(CheckedBind::default());
        };
        let want = s.shape();
        let retried = self.plan.take_reprepared(&s.global);
        if want.is_unknown() || server_skipping {
            return Ok(CheckedBind {
                check: BindCheck::Go,
                statement: Some(s),
                ready: false,
            });
        }
        let fit = self.server.use_copy(&s.global).map(|have| want.fit(have));
        let check = match fit {
            Some(Fit::Same) => BindCheck::Go,
            Some(Fit::Unknown) if retried => BindCheck::Go,
            Some(Fit::Different) if retried => {
                self.server.counts.stale += 1;
                BindCheck::Fail
            }
            // A copy is described only just made: Postgres checks a statement
            // when describing it too, and an old copy a schema change made stale
            // would fail the Describe (0A000) where the client's own statement
            // is fine.
            Some(Fit::Unknown | Fit::Different) | None => {
                self.prepare_copy(&s, fit.is_some(), to_server);
                self.plan.mark_reprepared(s.clone());
                self.server.counts.shape_checks += 1;
                self.hidden_describe(s, to_server);
                return Ok(CheckedBind {
                    check: BindCheck::Hold,
                    statement: None,
                    ready: false,
                });
            }
        };
        Ok(CheckedBind {
            check,
            statement: Some(s),
            ready: check == BindCheck::Go,
        })
    }

    /// A Describe of the server's copy of `s`, its answer read and dropped,
    /// and a Flush so the server answers before the client's next Sync.
    fn hidden_describe(&mut self, s: Arc<Statement>, to_server: &mut BytesMut) {
        put_target(to_server, tag::DESCRIBE, b'S', &s.global);
        self.plan.describe(s, false);
        to_server.put_slice(&pgwire::frontend::FLUSH_MESSAGE);
    }

    /// Notes a large message streamed through without rewriting (a long Query, COPY
    /// data), for the order of responses.
    pub fn note_streamed(&mut self, msg_tag: u8) {
        match msg_tag {
            tag::SYNC | tag::QUERY | tag::FUNCTION_CALL => {
                self.plan.forward(ResponseEnd::Ready, Undo::None)
            }
            tag::EXECUTE => self.plan.forward(ResponseEnd::ExecuteDone, Undo::None),
            tag::PARSE => self.plan.forward(ResponseEnd::ParseComplete, Undo::None),
            _ => {}
        }
    }

    fn parse(
        &mut self,
        body: &[u8],
        hints: SessionHints,
        to_server: &mut BytesMut,
    ) -> Result<Pass, WireError> {
        let (name, rest) = split_cstr(body, "Parse")?;
        if name.is_empty() {
            self.plan.forward(ResponseEnd::ParseComplete, Undo::None);
            return Ok(Pass::Untouched);
        }
        let name = name_str(name, "Parse")?;
        if self.client.get(name).is_some() {
            self.refuse_duplicate(name, body, to_server);
            return Ok(Pass::Rewritten);
        }
        let statement = Arc::new(Statement::from_parse_rest(rest, hints));
        self.client.insert(name, statement.clone());
        // A client's own Parse reaches the server even when the server has the
        // statement from another client (or from this one): that copy may predate
        // a schema change (a driver prepares again after "cached plan must not
        // change result type"), and its parameter types were inferred then.
        if !self.server.touch(&statement.global) {
            self.evict_for(&statement.global, to_server);
        }
        self.put_parse(&statement, to_server);
        // A new copy: its shape is known again once something describes it.
        self.server.forget_shape(&statement.global);
        self.plan.forward(
            ResponseEnd::ParseComplete,
            Undo::ClientParse {
                client_name: name.into(),
                global: statement.global.clone(),
            },
        );
        Ok(Pass::Rewritten)
    }

    /// A Parse of a name the client already has. Postgres parses the text, then
    /// refuses the name (42P05, "prepared statement ... already exists"), keeps the
    /// old statement and, inside a transaction block, aborts it. The server is made
    /// to do exactly that: the name is put on it first (a Close, then a Parse of
    /// empty text, both hidden from the client), and the client's Parse follows
    /// unchanged, its answer the client's. Client names are not otherwise used on
    /// the server (this one is closed when the transaction ends), and the
    /// client's own statement stays as it was.
    fn refuse_duplicate(&mut self, name: &str, body: &[u8], to_server: &mut BytesMut) {
        self.hidden_close(name, to_server);
        pgwire::frontend::parse(name, "", to_server);
        self.plan.hidden(ResponseEnd::ParseComplete, Undo::None);
        // A client may name a statement as the pooler names shared ones: if it
        // did, that one is gone from this server now. The empty one stays until
        // the transaction ends (a failed request skips any Close after it).
        self.server.remove(name);
        self.server.add_stray(name);
        to_server.put_u8(tag::PARSE);
        to_server.put_i32((4 + body.len()) as i32);
        to_server.put_slice(body);
        self.plan.forward(ResponseEnd::ParseComplete, Undo::None);
    }

    /// The client's statement of this name, if the name is not empty. An unknown name
    /// is left for the server to reject, as Postgres would.
    fn named(&self, name: &[u8]) -> Result<Option<Arc<Statement>>, WireError> {
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.client.get(name_str(name, "statement name")?).cloned())
    }

    /// For Describe: the named statement it targets, if it targets one we know.
    fn statement_target(
        &self,
        body: &[u8],
        what: &'static str,
    ) -> Result<Option<Arc<Statement>>, WireError> {
        match body.split_first() {
            Some((b'S', rest)) => {
                let (name, _) = split_cstr(rest, what)?;
                self.named(name)
            }
            Some(_) => Ok(None),
            None => Err(WireError::Truncated { what }),
        }
    }

    /// Makes sure the server has `s` before a message that uses it.
    fn ensure_prepared(&mut self, s: &Statement, to_server: &mut BytesMut) {
        if !self.server.touch(&s.global) {
            self.prepare_copy(s, false, to_server);
        }
    }

    /// Prepares the server's copy of `s` afresh, hidden from the client (a Close,
    /// then the Parse), making room in the cache first unless the server has it
    /// (`present`); nothing is known of the new copy's shape.
    fn prepare_copy(&mut self, s: &Statement, present: bool, to_server: &mut BytesMut) {
        if !present {
            self.evict_for(&s.global, to_server);
        }
        self.put_parse(s, to_server);
        self.server.forget_shape(&s.global);
        self.plan.hidden(
            ResponseEnd::ParseComplete,
            Undo::AddedParse {
                global: s.global.clone(),
            },
        );
    }

    /// Writes the Parse of `s`, after a Close of its name (hidden from the client):
    /// Postgres ignores a Close of a statement it lacks, so the Parse succeeds
    /// whether or not the server has the name, even where the cache is wrong about
    /// it (a request skipped after an error leaves it unsure).
    fn put_parse(&mut self, s: &Statement, to_server: &mut BytesMut) {
        self.hidden_close(&s.global, to_server);
        to_server.put_slice(&s.parse);
    }

    /// A Close of the server's statement `name`, its CloseComplete hidden from
    /// the client.
    fn hidden_close(&mut self, name: &str, to_server: &mut BytesMut) {
        put_target(to_server, tag::CLOSE, b'S', name);
        self.plan.hidden(ResponseEnd::CloseComplete, Undo::None);
    }

    /// Records `global` in the server's cache, closing the least recently used
    /// statement on the server first if the cache is full.
    fn evict_for(&mut self, global: &str, to_server: &mut BytesMut) {
        if let Some(evicted) = self.server.insert(global) {
            put_target(to_server, tag::CLOSE, b'S', &evicted);
            self.plan.hidden(
                ResponseEnd::CloseComplete,
                Undo::AddedClose { global: evicted },
            );
        }
    }

    /// Applies the undo work for requests that failed or were skipped, the last
    /// request first: a Close answered by the pooler and a Parse of the same text
    /// under the same name after it are undone back to the statement before both.
    pub fn undo(&mut self, undo: &[Undo]) {
        for u in undo.iter().rev() {
            match u {
                Undo::None => {}
                Undo::ClientParse {
                    client_name,
                    global,
                } => {
                    self.forget_name(client_name, global);
                    self.server.remove(global);
                }
                Undo::AnsweredClose {
                    client_name,
                    statement,
                } => self.client.insert(client_name, statement.clone()),
                Undo::AddedParse { global } => self.server.remove(global),
                Undo::AddedClose { global } => self.server.restore(global),
                Undo::UsedCopy { statement } => self.server.remove(&statement.global),
            }
        }
    }
}

impl Rewriter<'_> {
    /// SQL `DEALLOCATE name` of a statement the client prepared with Parse: it lives
    /// under its pooler-wide name, so deallocate that (preparing it first on a server
    /// that lacks it, so the command succeeds as it would on Postgres). Returns
    /// false when the query is something else, to be forwarded as it is.
    fn deallocate(&mut self, body: &[u8], to_server: &mut BytesMut) -> Result<bool, WireError> {
        let sql = pgwire::frontend::decode_query(body)?;
        let Some(statement) =
            crate::sql_hint::deallocate_target(sql).and_then(|name| self.client.remove(&name))
        else {
            return Ok(false);
        };
        self.ensure_prepared(&statement, to_server);
        self.server.remove(&statement.global);
        let mut query = BytesMut::new();
        pgwire::frontend::query(&format!("DEALLOCATE {}", statement.global), &mut query);
        to_server.put_slice(&query);
        Ok(true)
    }

    /// Forgets the client's `name` from a Parse that did not happen (if it still
    /// means that statement).
    fn forget_name(&mut self, name: &str, global: &str) {
        if self.client.get(name).is_some_and(|s| &*s.global == global) {
            self.client.remove(name);
        }
    }
}

/// Describe or Close of a statement or portal `name`.
fn put_target(out: &mut BytesMut, msg_tag: u8, kind: u8, name: &str) {
    out.put_u8(msg_tag);
    out.put_i32((4 + 1 + name.len() + 1) as i32);
    out.put_u8(kind);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::backend::BackendMessage;

    /// A client told one shape; the server's copy turns out to have another,
    /// before and after it is prepared again: one shape check, then a Fail.
    #[test]
    fn a_copy_of_another_shape_is_prepared_again_once_then_the_bind_fails() {
        use super::super::statements::Shape;
        let told = Shape { params: 5, rows: 7 };
        let other = Shape { params: 5, rows: 8 };
        let mut client = ClientStatements::default();
        let mut server = ServerStatements::new(8);
        let mut plan = ResponsePlan::default();
        let s = Arc::new(Statement::from_parse_rest(
            b"select 1\0\0\0",
            SessionHints::default(),
        ));
        s.learn(told);
        client.insert("s1", s.clone());
        server.insert(&s.global);
        server.learn(&s.global, other);
        let mut out = BytesMut::new();
        let mut rw = Rewriter {
            client: &mut client,
            server: &mut server,
            plan: &mut plan,
        };
        assert_eq!(
            rw.check_bind(b"s1", false, &mut out).unwrap().check,
            BindCheck::Hold
        );
        assert!(
            out.ends_with(&pgwire::frontend::FLUSH_MESSAGE),
            "a Flush ends the check"
        );
        assert_eq!(
            rw.server.shape(&s.global),
            Some(Shape::default()),
            "made again"
        );
        // The Describe's answer: still the other shape.
        rw.server.learn(&s.global, other);
        assert_eq!(
            rw.check_bind(b"s1", false, &mut out).unwrap().check,
            BindCheck::Fail
        );
        assert_eq!(
            (rw.server.counts.shape_checks, rw.server.counts.stale),
            (1, 1)
        );
        // The same shape goes; an unknown or unnamed statement is not checked;
        // nothing is checked while the server skips to Sync.
        rw.server.learn(&s.global, told);
        assert_eq!(
            rw.check_bind(b"s1", false, &mut out).unwrap().check,
            BindCheck::Go
        );
        assert_eq!(
            rw.check_bind(b"", false, &mut out).unwrap().check,
            BindCheck::Go
        );
        assert_eq!(
            rw.check_bind(b"nope", false, &mut out).unwrap().check,
            BindCheck::Go
        );
        rw.server.forget_shape(&s.global);
        assert_eq!(
            rw.check_bind(b"s1", true, &mut out).unwrap().check,
            BindCheck::Go
        );
    }

    #[test]
    fn the_stale_statement_error_is_postgres_own() {
        let frame = pgwire::frame::decode_frame(&STALE_STATEMENT_ERROR, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(frame.wire_len(), STALE_STATEMENT_ERROR.len());
        let BackendMessage::ErrorResponse(e) = BackendMessage::decode(frame).unwrap() else {
            panic!("not an ErrorResponse");
        };
        assert_eq!(e.code(), "0A000");
        assert_eq!(e.severity(), "ERROR");
        assert_eq!(e.message(), "cached plan must not change result type");
        // What asyncpg and pgjdbc recognise it by.
        assert_eq!(e.field(b'R'), Some("RevalidateCachedQuery"));
        assert!(e.field(b'D').is_some_and(|d| d.contains("pooler")));
    }
}
