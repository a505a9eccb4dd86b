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
use super::statements::{ClientStatements, ServerStatements, Statement};
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
    /// its statement, and a Bind of that statement adds them to `hints`.
    pub fn on_client_message(
        &mut self,
        frame: Frame<'_>,
        may_drop_statements: bool,
        hints: &mut SessionHints,
        to_server: &mut BytesMut,
        to_client: &mut Vec<u8>,
    ) -> Result<Pass, WireError> {
        let pass = match frame.tag {
            tag::PARSE => self.parse(frame.body, *hints, to_server)?,
            tag::BIND => {
                let (portal, rest) = split_cstr(frame.body, "Bind")?;
                let (statement, rest) = split_cstr(rest, "Bind")?;
                let pass = self.bind_head(portal, statement, rest.len(), hints, to_server)?;
                if pass == Pass::Rewritten {
                    to_server.put_slice(rest);
                }
                pass
            }
            tag::DESCRIBE => {
                let pass = match self.statement_target(frame.body, "Describe")? {
                    None => Pass::Untouched,
                    Some(s) => {
                        self.ensure_prepared(&s, to_server);
                        put_target(to_server, tag::DESCRIBE, b'S', &s.global);
                        Pass::Rewritten
                    }
                };
                self.plan.forward(ResponseEnd::Description, Undo::None);
                pass
            }
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
    pub fn bind_head(
        &mut self,
        portal: &[u8],
        statement: &[u8],
        rest_len: usize,
        hints: &mut SessionHints,
        to_server: &mut BytesMut,
    ) -> Result<Pass, WireError> {
        let pass = match self.named(statement)? {
            None => Pass::Untouched,
            Some(s) => {
                hints.merge(s.hints);
                self.ensure_prepared(&s, to_server);
                to_server.put_u8(tag::BIND);
                to_server.put_i32((4 + portal.len() + 1 + s.global.len() + 1 + rest_len) as i32);
                to_server.put_slice(portal);
                to_server.put_u8(0);
                to_server.put_slice(s.global.as_bytes());
                to_server.put_u8(0);
                Pass::Rewritten
            }
        };
        self.plan.forward(ResponseEnd::BindComplete, Undo::None);
        Ok(pass)
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
        if self.server.touch(&s.global) {
            return;
        }
        self.evict_for(&s.global, to_server);
        self.put_parse(s, to_server);
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
