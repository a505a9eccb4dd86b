//! Server bytes on their way to the client: scanned and forwarded untouched, or,
//! while the pooler must answer or hide responses, cut into whole messages and
//! edited according to the response plan. Either way the session learns the
//! transaction status, errors, parameter changes and statement resets.

use bytes::Buf;
use pgwire::frame::decode_frame;
use pgwire::{tag, MessageHead, WireError, DEFAULT_MAX_MESSAGE_LEN};

use super::{RelayState, StatementCtx};
use crate::client::responses::{ResponsePlan, Undo, Verdict};
use crate::client::rewrite::Rewriter;
use crate::client::txn::TxnTracker;
use crate::params::ParamValues;

/// Longest ParameterStatus body collected; longer ones pass but are not tracked.
const MAX_CAPTURE: usize = 8 * 1024;
/// CommandComplete bodies that mean the server dropped its prepared statements.
const STATEMENT_RESETS: [&[u8]; 2] = [b"DISCARD ALL\0", b"DEALLOCATE ALL\0"];

/// A small server message split across reads, being collected.
pub(super) struct Capture {
    tag: u8,
    body: Vec<u8>,
    missing: usize,
}

/// What the server's messages tell the session, gathered while scanning.
struct Observer<'a, 'b> {
    tracker: &'a mut TxnTracker,
    error_seen: &'a mut bool,
    skipping: &'a mut bool,
    params: &'a mut ParamValues,
    plan: &'a mut ResponsePlan,
    statements: Option<&'a mut StatementCtx<'b>>,
    /// Answers released by the plan, to insert after the current message.
    after: Vec<u8>,
    undo: Vec<Undo>,
}

/// Whether a message's body must be seen whole by [`Observer::body`].
fn wants_body(tag: u8, body_len: usize) -> bool {
    (tag == pgwire::tag::PARAMETER_STATUS && body_len <= MAX_CAPTURE)
        || (tag == pgwire::tag::COMMAND_COMPLETE
            && STATEMENT_RESETS.iter().any(|r| r.len() == body_len))
}

impl Observer<'_, '_> {
    fn head(&mut self, head: &MessageHead) -> Verdict {
        *self.error_seen |= head.tag == tag::ERROR_RESPONSE;
        self.tracker.on_server_message(head);
        let verdict = if self.statements.is_some() {
            self.plan
                .on_server_message(head.tag, &mut self.after, &mut self.undo)
        } else {
            Verdict::Forward
        };
        match head.tag {
            // The server skips what follows up to the next Sync: only what the
            // client sends from now on if that Sync is not already on its way.
            tag::ERROR_RESPONSE => *self.skipping = !self.plan.owes_ready(),
            tag::READY_FOR_QUERY => *self.skipping = false,
            _ => {}
        }
        verdict
    }

    fn body(&mut self, msg_tag: u8, body: &[u8]) {
        match msg_tag {
            tag::PARAMETER_STATUS => {
                let frame = pgwire::Frame { tag: msg_tag, body };
                if let Ok(pgwire::backend::BackendMessage::ParameterStatus { name, value }) =
                    pgwire::backend::BackendMessage::decode(frame)
                {
                    self.params.set(name, value);
                }
            }
            tag::COMMAND_COMPLETE if STATEMENT_RESETS.contains(&body) => {
                if let Some(ctx) = self.statements.as_deref_mut() {
                    ctx.client.clear();
                    ctx.server.clear();
                }
            }
            _ => {}
        }
    }

    /// Reads the shape off the answer to a Describe of a statement: the server's
    /// copy has it, and the client, if it asked, was told it.
    fn describe_answer(&mut self, msg_tag: u8, body: &[u8]) {
        let Some(ctx) = self.statements.as_deref_mut() else {
            return;
        };
        if let Some(seen) = self.plan.observe(msg_tag, body) {
            ctx.server.learn(&seen.statement.global, seen.shape);
            if seen.told {
                seen.statement.learn(seen.shape);
            }
        }
    }

    fn finish(self) {
        if let Some(ctx) = self.statements {
            if !self.undo.is_empty() {
                Rewriter {
                    client: ctx.client,
                    server: ctx.server,
                    plan: self.plan,
                }
                .undo(&self.undo);
            }
        }
    }
}

impl RelayState {
    /// Takes in `n` fresh server bytes.
    pub(super) fn ingest_server(
        &mut self,
        n: usize,
        statements: Option<&mut StatementCtx<'_>>,
    ) -> Result<(), WireError> {
        let editing = statements.is_some()
            && (!self.plan.is_plain()
                || !self.server_inbox.is_empty()
                || !self.held_answers.is_empty());
        let super::leg::Leg {
            buf,
            scanner,
            out,
            start,
            end,
            ..
        } = &mut self.to_client;
        let chunk = &buf.as_slice()[..n];
        let mut obs = Observer {
            tracker: &mut self.tracker,
            error_seen: &mut self.server_error_seen,
            skipping: &mut self.server_skipping,
            params: &mut self.param_changes,
            plan: &mut self.plan,
            statements,
            after: Vec::new(),
            undo: Vec::new(),
        };
        // A body split across reads, begun in the previous chunk.
        let mut pos = 0;
        if let Some(c) = &mut self.capture {
            let take = c.missing.min(n);
            c.body.extend_from_slice(&chunk[..take]);
            c.missing -= take;
            if c.missing == 0 {
                obs.body(c.tag, &c.body);
                self.capture = None;
            }
        }
        // Untouched bytes: the whole chunk, or, when editing, the end of the message
        // already in flight (it cannot be one to hide: it began before).
        let capture = &mut self.capture;
        let mut scan = |head: MessageHead, obs: &mut Observer<'_, '_>| -> Result<(), WireError> {
            let verdict = obs.head(&head);
            if verdict != Verdict::Forward {
                tracing::warn!("server response to edit arrived mid-stream; forwarding it");
            }
            if wants_body(head.tag, head.body_len) {
                let body_start = (head.start + 5).max(0) as usize;
                let body_end = body_start + head.body_len;
                if body_end <= n {
                    obs.body(head.tag, &chunk[body_start..body_end]);
                } else {
                    *capture = Some(Capture {
                        tag: head.tag,
                        body: chunk[body_start..].to_vec(),
                        missing: body_end - n,
                    });
                }
            }
            Ok(())
        };
        if !editing {
            scanner.scan::<WireError>(chunk, |h| scan(h, &mut obs))?;
            if !obs.after.is_empty() {
                // Answers released in untouched mode come after this whole chunk,
                // which then ends at a message boundary (a plan with answers is
                // never plain, so this is only a safety net).
                out.extend_from_slice(&obs.after);
            }
            obs.finish();
            return Ok(());
        }
        if self.server_inbox.is_empty() {
            pos = scanner.scan_to_boundary::<WireError>(chunk, |h| scan(h, &mut obs))?;
        }
        // From here on whole messages only: copy what stays, hide what must go,
        // and put the pooler's answers in their place.
        out.extend_from_slice(&chunk[..pos]);
        out.extend_from_slice(&std::mem::take(&mut obs.after));
        out.extend_from_slice(&std::mem::take(&mut self.held_answers));
        self.server_inbox.extend_from_slice(&chunk[pos..]);
        *start = 0;
        *end = 0;
        while let Some(frame) = decode_frame(&self.server_inbox, DEFAULT_MAX_MESSAGE_LEN)? {
            let head = MessageHead {
                tag: frame.tag,
                body_len: frame.body.len(),
                first_byte: frame.body.first().copied(),
                start: 0,
            };
            let len = frame.wire_len();
            if wants_body(frame.tag, frame.body.len()) {
                obs.body(frame.tag, frame.body);
            }
            obs.describe_answer(frame.tag, frame.body);
            match obs.head(&head) {
                Verdict::Forward => out.extend_from_slice(&self.server_inbox[..len]),
                Verdict::Drop => {}
                Verdict::Replace(message) => out.extend_from_slice(message),
            }
            out.extend_from_slice(&std::mem::take(&mut obs.after));
            self.server_inbox.advance(len);
        }
        obs.finish();
        Ok(())
    }
}
