//! Client bytes on their way to the server: scanned and forwarded untouched, or, with
//! statement tracking, cut into messages and rewritten (see `rewrite`).

use bytes::{Buf, BytesMut};
use pgwire::frame::decode_head;
use pgwire::{frame::Frame, tag, MessageHead, WireError};

use super::{RelayEnd, RelayState, StatementCtx};
use crate::client::rewrite::{BindCheck, CheckedBind, Pass, Rewriter};
use crate::client::txn::{ClientIntent, TxnTracker};
use crate::sql_hint::{may_drop_statements, might_touch_session, session_hints};
use crate::sql_hint::{CleanMemo, SessionHints};

/// Client messages up to this size are taken whole; larger ones that need no rewrite
/// (a long Query, COPY data) stream through as they arrive.
const STREAM_THRESHOLD: usize = 64 * 1024;
/// A named statement's Parse must be taken whole; beyond this it is refused.
const MAX_NAMED_PARSE: usize = 64 << 20;
/// Portal and statement names of a Bind must fit in this many bytes.
const MAX_BIND_NAMES: usize = 1024;

/// A named Parse, or a Describe or Close of a named statement: work that follows
/// the client to any server, unlike unnamed statements and portals.
fn touches_only_named_statements(msg_tag: u8, body: &[u8]) -> bool {
    match msg_tag {
        tag::PARSE => body.first().is_some_and(|&b| b != 0),
        tag::DESCRIBE | tag::CLOSE => {
            body.first() == Some(&b'S') && body.get(1).is_some_and(|&b| b != 0)
        }
        _ => false,
    }
}

/// The SQL of a Parse body, unchecked: the bytes between the statement name's NUL
/// and the next one. The pre-check must see the SQL alone: the name's NUL before
/// it would hide a leading `SET`.
fn parse_sql(body: &[u8]) -> &[u8] {
    let Some(name_end) = memchr::memchr(0, body) else {
        return &[];
    };
    let sql = &body[name_end + 1..];
    &sql[..memchr::memchr(0, sql).unwrap_or(sql.len())]
}

impl RelayState {
    /// Scans `n` fresh client bytes forwarded untouched; cuts a Terminate out.
    pub(super) fn scan_client(&mut self, n: usize) -> Option<RelayEnd> {
        let tracker = &mut self.tracker;
        let mut terminate_at: Option<isize> = None;
        let chunk = &self.to_server.buf.as_slice()[..n];
        let scanned = self.to_server.scanner.scan::<WireError>(chunk, |head| {
            if terminate_at.is_none() && tracker.on_client_message(&head) == ClientIntent::Terminate
            {
                terminate_at = Some(head.start);
            }
            Ok(())
        });
        if let Some(at) = terminate_at {
            if at < 0 {
                self.server_dirty = true;
            }
            self.to_server.end = at.max(0) as usize;
            return Some(RelayEnd::ClientTerminated);
        }
        if let Err(e) = scanned {
            self.to_server.end = 0;
            return Some(RelayEnd::ClientProtocol(e));
        }
        None
    }

    /// Takes in `n` fresh client bytes with statement tracking: whole messages are
    /// rewritten for the server; answers the pooler owes go to the client-bound
    /// buffer. When nothing waits before them, the bytes are cut where they were
    /// read, and the messages that pass untouched are written from there; only
    /// a message cut short by the read is copied aside to wait for its end.
    pub(super) fn ingest_client(
        &mut self,
        n: usize,
        ctx: &mut StatementCtx<'_>,
    ) -> Option<RelayEnd> {
        let in_place = self.client_inbox.is_empty() && self.to_server.out.is_empty();
        if !in_place {
            self.client_inbox
                .extend_from_slice(&self.to_server.buf.as_slice()[..n]);
            self.to_server.consume_raw();
        }
        let mut cutter = Cutter {
            tracker: &mut self.tracker,
            hints: &mut self.hints,
            clean: &mut self.clean_parse,
            barrier: &mut self.barrier,
            server_skipping: &mut self.server_skipping,
            stream_left: &mut self.client_stream_left,
            out: &mut self.to_server.out,
            max_message: self.max_client_message,
            rewriter: Rewriter {
                client: ctx.client,
                server: ctx.server,
                plan: &mut self.plan,
            },
            answers: Vec::new(),
        };
        let cut = if in_place {
            cutter.cut(&self.to_server.buf.as_slice()[..n], true)
        } else {
            cutter.cut(&self.client_inbox, false)
        };
        let answers = cutter.answers;
        let failed = matches!(cut.end, Some(RelayEnd::ClientProtocol(_)));
        if in_place {
            if !failed {
                let rest = &self.to_server.buf.as_slice()[cut.used..n];
                self.client_inbox.extend_from_slice(rest);
            }
            self.to_server.start = 0;
            self.to_server.end = cut.untouched;
        } else if failed {
            self.client_inbox.clear();
        } else {
            self.client_inbox.advance(cut.used);
        }
        if !answers.is_empty() {
            self.hold_or_send_answers(&answers);
        }
        cut.end
    }

    /// Sends answers owed to the client now if the server stream is between
    /// messages, else holds them until it is.
    pub(super) fn hold_or_send_answers(&mut self, answers: &[u8]) {
        if self.to_client.scanner.at_boundary()
            && self.server_inbox.is_empty()
            && self.held_answers.is_empty()
        {
            self.to_client.out.extend_from_slice(answers);
        } else {
            self.held_answers.extend_from_slice(answers);
        }
    }
}

/// The relay state that cutting client messages updates, borrowed apart from the
/// bytes being cut (the read buffer or the inbox).
struct Cutter<'a, 'b> {
    tracker: &'a mut TxnTracker,
    hints: &'a mut SessionHints,
    /// The last Parse text found clean (kept from client to client).
    clean: &'a mut CleanMemo,
    barrier: &'a mut bool,
    /// The server skips to Sync after an error and will skip what is cut next
    /// (it answers no Describe): cleared when a Sync or Query is cut.
    server_skipping: &'a mut bool,
    /// Bytes of a large message still to stream through untouched.
    stream_left: &'a mut usize,
    /// Server-bound bytes the pooler wrote (rewritten, or copied after them).
    out: &'a mut BytesMut,
    max_message: usize,
    rewriter: Rewriter<'b>,
    /// Answers the pooler owes the client.
    answers: Vec<u8>,
}

/// How far one cut went.
struct Cut {
    /// Bytes of the source taken in; the rest waits for the end of its message.
    used: usize,
    /// Leading bytes of the source that go to the server as they are, straight
    /// from the source (only when cutting in place).
    untouched: usize,
    end: Option<RelayEnd>,
}

impl Cutter<'_, '_> {
    /// Cuts whole messages off the front of `src`. In place, messages pass straight
    /// from `src` until the first one the pooler rewrites; from there on, and
    /// always when not in place, what passes is copied into `out`.
    fn cut(&mut self, src: &[u8], in_place: bool) -> Cut {
        let mut pos = 0;
        let mut untouched = Untouched {
            len: 0,
            passing: in_place,
        };
        let end = loop {
            if *self.barrier {
                break None;
            }
            let rest = &src[pos..];
            if *self.stream_left > 0 {
                let take = (*self.stream_left).min(rest.len());
                if take == 0 {
                    break None;
                }
                self.pass(&rest[..take], &mut untouched, pos + take);
                pos += take;
                *self.stream_left -= take;
                continue;
            }
            let Some(head) = rest.get(..5) else {
                break None;
            };
            let head = [head[0], head[1], head[2], head[3], head[4]];
            let (msg_tag, body_len) = match decode_head(head, self.max_message) {
                Ok(h) => h,
                Err(e) => break Some(RelayEnd::ClientProtocol(e)),
            };
            let total = 5 + body_len;
            let head = MessageHead {
                tag: msg_tag,
                body_len,
                first_byte: rest.get(5).copied(),
                start: 0,
            };
            if msg_tag == tag::TERMINATE {
                pos = src.len();
                break Some(RelayEnd::ClientTerminated);
            }
            // Messages are taken whole when small, or when they must be rewritten and
            // are bounded (a named Parse, Describe, Close); a large Bind has only its
            // head rewritten; everything else large streams through.
            let named_parse = msg_tag == tag::PARSE && head.first_byte.is_some_and(|b| b != 0);
            let whole = match msg_tag {
                tag::DESCRIBE | tag::CLOSE if total > STREAM_THRESHOLD => {
                    break Some(RelayEnd::ClientProtocol(WireError::TooLong {
                        len: total,
                        max: STREAM_THRESHOLD,
                    }));
                }
                tag::PARSE if named_parse && total > MAX_NAMED_PARSE => {
                    break Some(RelayEnd::ClientProtocol(WireError::TooLong {
                        len: total,
                        max: MAX_NAMED_PARSE,
                    }));
                }
                tag::DESCRIBE | tag::CLOSE => true,
                _ => named_parse || total <= STREAM_THRESHOLD,
            };
            if msg_tag == tag::BIND && !whole {
                // Portal and statement names lie within the first bytes of the body.
                let window = &rest[5..rest.len().min(total).min(5 + MAX_BIND_NAMES)];
                let mut nuls = window
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == 0)
                    .map(|(i, _)| i);
                let (Some(p1), Some(p2)) = (nuls.next(), nuls.next()) else {
                    if window.len() == MAX_BIND_NAMES {
                        break Some(RelayEnd::ClientProtocol(WireError::Malformed {
                            what: "Bind (names too long)",
                        }));
                    }
                    break None;
                };
                let (portal, statement) = (&window[..p1], &window[p1 + 1..p2]);
                let checked = match self.check_bind(statement, &mut untouched, pos) {
                    Ok(Some(checked)) => checked,
                    Ok(None) => break None,
                    Err(e) => break Some(RelayEnd::ClientProtocol(e)),
                };
                self.tracker.on_client_message(&head);
                let head_len = 5 + p2 + 1;
                let rest_len = total - head_len;
                match self
                    .rewriter
                    .bind_head(portal, checked, rest_len, self.hints, self.out)
                {
                    Pass::Untouched => self.pass(&rest[..head_len], &mut untouched, pos + head_len),
                    Pass::Rewritten => Self::stop_passing(&mut untouched, pos),
                }
                pos += head_len;
                *self.stream_left = rest_len;
                continue;
            }
            if matches!(msg_tag, tag::SYNC | tag::QUERY | tag::FUNCTION_CALL) {
                // The server stops skipping there, before what follows.
                *self.server_skipping = false;
            }
            if !whole {
                if matches!(msg_tag, tag::QUERY | tag::PARSE) {
                    // Too long to look at whole: assume the worst about settings.
                    self.hints.settings = true;
                }
                self.tracker.on_client_message(&head);
                self.rewriter.note_streamed(msg_tag);
                *self.stream_left = total;
                continue;
            }
            let Some(raw) = rest.get(..total) else {
                break None;
            };
            let frame = Frame {
                tag: msg_tag,
                body: &raw[5..],
            };
            let mut checked = CheckedBind::default();
            if msg_tag == tag::BIND {
                // Only a named statement is checked (the unnamed one never
                // leaves its transaction).
                let statement = memchr::memchr(0, frame.body)
                    .map(|p| &frame.body[p + 1..])
                    .and_then(|rest| memchr::memchr(0, rest).map(|q| &rest[..q]))
                    .filter(|name| !name.is_empty());
                if let Some(statement) = statement {
                    checked = match self.check_bind(statement, &mut untouched, pos) {
                        Ok(Some(checked)) => checked,
                        Ok(None) => break None,
                        Err(e) => break Some(RelayEnd::ClientProtocol(e)),
                    };
                }
            }
            if touches_only_named_statements(msg_tag, frame.body) {
                self.tracker.on_portable_message();
            } else {
                self.tracker.on_client_message(&head);
            }
            // Most SQL holds none of the words that matter: skip decoding it.
            let worth_a_look = match msg_tag {
                tag::QUERY => might_touch_session(frame.body),
                tag::PARSE => self.clean.might_touch_session(parse_sql(frame.body)),
                _ => false,
            };
            let sql = match msg_tag {
                _ if !worth_a_look => None,
                tag::QUERY => pgwire::frontend::decode_query(frame.body).ok(),
                tag::PARSE => pgwire::frontend::decode_parse_head(frame.body)
                    .ok()
                    .map(|(_, q)| q),
                _ => None,
            };
            let mut barrier = false;
            let mut hints = SessionHints::default();
            if let Some(sql) = sql {
                hints = session_hints(sql);
                barrier = msg_tag == tag::QUERY && may_drop_statements(sql);
            }
            let passed = self.rewriter.on_client_message(
                frame,
                barrier,
                checked,
                &mut hints,
                self.out,
                &mut self.answers,
            );
            self.hints.merge(hints);
            match passed {
                Ok(Pass::Untouched) => self.pass(raw, &mut untouched, pos + total),
                Ok(Pass::Rewritten) => Self::stop_passing(&mut untouched, pos),
                Err(e) => {
                    pos += total;
                    break Some(RelayEnd::ClientProtocol(e));
                }
            }
            pos += total;
            if barrier {
                // What follows may depend on statements this query drops: wait for
                // its outcome before deciding (`poll_run` resumes when it is answered).
                *self.barrier = true;
                break None;
            }
        };
        Cut {
            used: pos,
            untouched: untouched.len,
            end,
        }
    }

    /// The shape check before a Bind at `pos` (see [`Rewriter::check_bind`]).
    /// `None` means hold: the pooler sent a Describe and a Flush, and the Bind
    /// waits, not taken in, until the answer is in (the barrier).
    fn check_bind(
        &mut self,
        statement: &[u8],
        untouched: &mut Untouched,
        pos: usize,
    ) -> Result<Option<CheckedBind>, WireError> {
        let checked = self
            .rewriter
            .check_bind(statement, *self.server_skipping, self.out)?;
        if checked.check == BindCheck::Hold {
            Self::stop_passing(untouched, pos);
            *self.barrier = true;
            return Ok(None);
        }
        Ok(Some(checked))
    }

    /// Bytes that go to the server as they are, ending at `upto` in the source.
    fn pass(&mut self, bytes: &[u8], untouched: &mut Untouched, upto: usize) {
        if untouched.passing {
            untouched.len = upto;
        } else {
            self.out.extend_from_slice(bytes);
        }
    }

    /// The pooler rewrote the message at `at`: from there on, what passes is copied
    /// after the rewritten bytes, to keep the order.
    fn stop_passing(untouched: &mut Untouched, at: usize) {
        debug_assert!(!untouched.passing || untouched.len == at);
        untouched.passing = false;
    }
}

/// The untouched prefix of a source being cut in place.
struct Untouched {
    /// Leading bytes of the source that leave from it as they are.
    len: usize,
    /// Every byte taken so far passed untouched: the prefix still grows.
    passing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::responses::ResponsePlan;
    use crate::client::statements::{ClientStatements, ServerStatements};
    use pgwire::frontend;

    struct Parts {
        tracker: TxnTracker,
        hints: SessionHints,
        clean: CleanMemo,
        barrier: bool,
        skipping: bool,
        stream_left: usize,
        out: BytesMut,
        client: ClientStatements,
        server: ServerStatements,
        plan: ResponsePlan,
    }

    impl Parts {
        fn new() -> Self {
            Self {
                tracker: TxnTracker::default(),
                hints: SessionHints::default(),
                clean: CleanMemo::default(),
                barrier: false,
                skipping: false,
                stream_left: 0,
                out: BytesMut::new(),
                client: ClientStatements::default(),
                server: ServerStatements::new(16),
                plan: ResponsePlan::default(),
            }
        }

        fn cut(&mut self, src: &[u8], in_place: bool) -> (Cut, Vec<u8>) {
            let mut cutter = Cutter {
                tracker: &mut self.tracker,
                hints: &mut self.hints,
                clean: &mut self.clean,
                barrier: &mut self.barrier,
                server_skipping: &mut self.skipping,
                stream_left: &mut self.stream_left,
                out: &mut self.out,
                max_message: 1 << 20,
                rewriter: Rewriter {
                    client: &mut self.client,
                    server: &mut self.server,
                    plan: &mut self.plan,
                },
                answers: Vec::new(),
            };
            let cut = cutter.cut(src, in_place);
            (cut, cutter.answers)
        }
    }

    /// A SET prepared through the extended protocol, named or not, is seen.
    #[test]
    fn a_set_in_a_parse_is_seen() {
        for name in ["", "s1"] {
            let mut src = BytesMut::new();
            frontend::parse(name, "SELECT 1", &mut src);
            frontend::parse(name, "SET search_path TO a", &mut src);
            frontend::sync(&mut src);
            let mut parts = Parts::new();
            parts.cut(&src, true);
            assert!(parts.hints.settings, "{name:?}");
        }
        // A named statement runs in a later transaction than its Parse: its Bind
        // brings back what its SQL may do.
        let mut parts = Parts::new();
        for (sql, name) in [
            ("SET search_path TO a", "s1"),
            ("SELECT pg_advisory_lock(1)", "s2"),
        ] {
            let mut src = BytesMut::new();
            frontend::parse(name, sql, &mut src);
            frontend::sync(&mut src);
            parts.cut(&src, true);
        }
        assert!(parts.hints.settings && parts.hints.pin);
        for (name, settings, pin) in [("s1", true, false), ("s2", false, true)] {
            parts.hints = SessionHints::default();
            let mut src = BytesMut::new();
            frontend::bind_text("", name, &[], &mut src);
            frontend::execute("", 0, &mut src);
            frontend::sync(&mut src);
            parts.cut(&src, true);
            assert_eq!(
                (parts.hints.settings, parts.hints.pin),
                (settings, pin),
                "{name}"
            );
        }
        assert_eq!(parse_sql(b"s1\0SET a TO b\0\0\0"), b"SET a TO b");
        assert_eq!(parse_sql(b"\0SELECT 1"), b"SELECT 1");
        assert_eq!(parse_sql(b"no name end"), b"");
    }

    #[test]
    fn untouched_messages_stay_where_they_were_read() {
        let mut src = BytesMut::new();
        frontend::parse("", "SELECT $1", &mut src);
        frontend::bind_text("", "", &[Some("1")], &mut src);
        frontend::execute("", 0, &mut src);
        frontend::sync(&mut src);
        frontend::query("SELECT 1", &mut src);
        let mut parts = Parts::new();
        let (cut, answers) = parts.cut(&src, true);
        assert_eq!((cut.used, cut.untouched), (src.len(), src.len()));
        assert!(cut.end.is_none() && answers.is_empty());
        assert!(parts.out.is_empty(), "nothing copied");
    }

    #[test]
    fn after_a_rewrite_the_rest_is_copied_in_order() {
        let mut first = BytesMut::new();
        frontend::query("SELECT 1", &mut first);
        let mut named = BytesMut::new();
        frontend::parse("s1", "SELECT 2", &mut named);
        let mut last = BytesMut::new();
        frontend::sync(&mut last);
        frontend::query("SELECT 3", &mut last);
        let src = [&first[..], &named[..], &last[..]].concat();
        let mut parts = Parts::new();
        let (cut, _) = parts.cut(&src, true);
        assert_eq!(cut.used, src.len());
        assert_eq!(
            cut.untouched,
            first.len(),
            "only the first query leaves in place"
        );
        assert!(
            parts.out.ends_with(&last),
            "the messages after the rewritten Parse follow it"
        );
        assert!(!parts.out.starts_with(&named), "the Parse was renamed");

        // Not in place, every byte is written to `out`.
        let mut parts = Parts::new();
        let (cut, _) = parts.cut(&src, false);
        assert_eq!((cut.used, cut.untouched), (src.len(), 0));
        assert!(parts.out.starts_with(&first) && parts.out.ends_with(&last));
    }

    #[test]
    fn a_message_cut_short_waits() {
        let mut src = BytesMut::new();
        frontend::query("SELECT 1", &mut src);
        let whole = src.len();
        frontend::query("SELECT 2", &mut src);
        let mut parts = Parts::new();
        let (cut, _) = parts.cut(&src[..src.len() - 3], true);
        assert_eq!((cut.used, cut.untouched), (whole, whole));
        assert!(cut.end.is_none());
    }

    #[test]
    fn terminate_ends_the_cut_and_what_came_before_still_goes() {
        let mut src = BytesMut::new();
        frontend::query("SELECT 1", &mut src);
        let before = src.len();
        src.extend_from_slice(&pgwire::frontend::TERMINATE_MESSAGE);
        let mut parts = Parts::new();
        let (cut, _) = parts.cut(&src, true);
        assert!(matches!(cut.end, Some(RelayEnd::ClientTerminated)));
        assert_eq!((cut.used, cut.untouched), (src.len(), before));
    }
}
