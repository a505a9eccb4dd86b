//! Client bytes on their way to the server: scanned and forwarded untouched, or, with
//! statement tracking, cut into messages and rewritten (see `rewrite`).

use bytes::Buf;
use pgwire::frame::decode_head;
use pgwire::{frame::Frame, tag, MessageHead, WireError};

use super::{RelayEnd, RelayState, StatementCtx};
use crate::client::rewrite::Rewriter;
use crate::client::txn::ClientIntent;
use crate::sql_hint::{may_drop_statements, might_touch_session, session_hints};

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
    /// rewritten into the server-bound buffer; answers the pooler owes go to the
    /// client-bound one.
    pub(super) fn ingest_client(
        &mut self,
        n: usize,
        ctx: &mut StatementCtx<'_>,
    ) -> Option<RelayEnd> {
        self.client_inbox
            .extend_from_slice(&self.to_server.buf.as_slice()[..n]);
        self.to_server.consume_raw();
        let mut answers = Vec::new();
        let mut rewriter = Rewriter {
            client: ctx.client,
            server: ctx.server,
            plan: &mut self.plan,
        };
        let inbox = &mut self.client_inbox;
        let out = &mut self.to_server.out;
        let end = loop {
            if self.barrier {
                break None;
            }
            if self.client_stream_left > 0 {
                let take = self.client_stream_left.min(inbox.len());
                if take == 0 {
                    break None;
                }
                out.extend_from_slice(&inbox[..take]);
                inbox.advance(take);
                self.client_stream_left -= take;
                continue;
            }
            let Some(head) = inbox.get(..5) else {
                break None;
            };
            let head = [head[0], head[1], head[2], head[3], head[4]];
            let (msg_tag, body_len) = match decode_head(head, self.max_client_message) {
                Ok(h) => h,
                Err(e) => break Some(RelayEnd::ClientProtocol(e)),
            };
            let total = 5 + body_len;
            let head = MessageHead {
                tag: msg_tag,
                body_len,
                first_byte: inbox.get(5).copied(),
                start: 0,
            };
            if msg_tag == tag::TERMINATE {
                inbox.clear();
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
                let window = &inbox[5..inbox.len().min(total).min(5 + MAX_BIND_NAMES)];
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
                self.tracker.on_client_message(&head);
                let head_len = 5 + p2 + 1;
                let (portal, statement) = (&window[..p1], &window[p1 + 1..p2]);
                let rest_len = total - head_len;
                if let Err(e) =
                    rewriter.bind_head(&inbox[..head_len], portal, statement, rest_len, out)
                {
                    break Some(RelayEnd::ClientProtocol(e));
                }
                inbox.advance(head_len);
                self.client_stream_left = rest_len;
                continue;
            }
            if whole {
                if inbox.len() < total {
                    break None;
                }
                if touches_only_named_statements(msg_tag, &inbox[5..total]) {
                    self.tracker.on_portable_message();
                } else {
                    self.tracker.on_client_message(&head);
                }
                // Borrowed, then advanced past: splitting would share (and allocate).
                let raw = &inbox[..total];
                let frame = Frame {
                    tag: msg_tag,
                    body: &raw[5..],
                };
                // Most SQL holds none of the words that matter: skip decoding it.
                let worth_a_look =
                    matches!(msg_tag, tag::QUERY | tag::PARSE) && might_touch_session(frame.body);
                let sql = match msg_tag {
                    _ if !worth_a_look => None,
                    tag::QUERY => pgwire::frontend::decode_query(frame.body).ok(),
                    tag::PARSE => pgwire::frontend::decode_parse_head(frame.body)
                        .ok()
                        .map(|(_, q)| q),
                    _ => None,
                };
                let mut barrier = false;
                if let Some(sql) = sql {
                    let h = session_hints(sql);
                    self.hints.settings |= h.settings;
                    self.hints.pin |= h.pin;
                    barrier = msg_tag == tag::QUERY && may_drop_statements(sql);
                }
                let rewritten = rewriter.on_client_message(frame, raw, out, &mut answers);
                inbox.advance(total);
                if let Err(e) = rewritten {
                    break Some(RelayEnd::ClientProtocol(e));
                }
                if barrier {
                    // What follows may depend on statements this query drops: wait for
                    // its outcome before deciding (`poll_run` resumes when it is answered).
                    self.barrier = true;
                    break None;
                }
            } else {
                if matches!(msg_tag, tag::QUERY | tag::PARSE) {
                    // Too long to look at whole: assume the worst about settings.
                    self.hints.settings = true;
                }
                self.tracker.on_client_message(&head);
                rewriter.note_streamed(msg_tag);
                self.client_stream_left = total;
            }
        };
        if !answers.is_empty() {
            self.hold_or_send_answers(&answers);
        }
        if matches!(end, Some(RelayEnd::ClientProtocol(_))) {
            self.client_inbox.clear();
        }
        end
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
