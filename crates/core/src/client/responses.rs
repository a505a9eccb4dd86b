//! The order of responses a transaction-mode server owes its client, so the pooler
//! can answer some messages itself (a Parse the server already has, a Close of a
//! statement kept for others) and hide the answers to messages it added (a Parse
//! re-preparing a statement on a server that lacks it). Pure.
//!
//! Every message sent to the server that gets a response has one entry, in order.
//! A server message is matched with the entry at the head; the entry ends with its
//! response's last message. After an ErrorResponse in the extended protocol the
//! server skips everything up to Sync, so the entries in between end unanswered.
//! Reference: <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY>.

use std::collections::VecDeque;

use std::sync::Arc;

use pgwire::tag;

use super::statements::Statement;

/// Which message ends the response to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseEnd {
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// RowDescription or NoData (Describe).
    Description,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended (Execute).
    ExecuteDone,
    /// ReadyForQuery (Sync, Query, FunctionCall).
    Ready,
}

impl ResponseEnd {
    fn ends_with(self, msg: u8) -> bool {
        match self {
            Self::ParseComplete => msg == tag::PARSE_COMPLETE,
            Self::BindComplete => msg == tag::BIND_COMPLETE,
            Self::CloseComplete => msg == tag::CLOSE_COMPLETE,
            Self::Description => msg == tag::ROW_DESCRIPTION || msg == tag::NO_DATA,
            Self::ExecuteDone => {
                msg == tag::COMMAND_COMPLETE
                    || msg == tag::EMPTY_QUERY_RESPONSE
                    || msg == tag::PORTAL_SUSPENDED
            }
            Self::Ready => msg == tag::READY_FOR_QUERY,
        }
    }
}

/// What to undo if a request fails (or is skipped after an earlier error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    None,
    /// A Parse of a client's named statement sent to the server (a name it did not
    /// have: a name in use is refused): forget the client name and the pooler-wide
    /// name on the server.
    ClientParse {
        client_name: Box<str>,
        global: Box<str>,
    },
    /// A Close of a client's named statement the pooler answered: the client still
    /// has the statement.
    AnsweredClose {
        client_name: Box<str>,
        statement: Arc<Statement>,
    },
    /// A Parse the pooler added: forget the pooler-wide name on the server.
    AddedParse {
        global: Box<str>,
    },
    /// A Close the pooler added (cache eviction) that the server skipped: the
    /// statement is still there.
    AddedClose {
        global: Box<str>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// The client's own request: forward its response.
    Forward { end: ResponseEnd, undo: Undo },
    /// A request the pooler added: drop its response.
    Hidden { end: ResponseEnd, undo: Undo },
    /// A request the pooler answers itself with this message.
    Answer(&'static [u8], Undo),
}

/// ParseComplete as the pooler sends it.
pub const PARSE_COMPLETE: &[u8] = &[tag::PARSE_COMPLETE, 0, 0, 0, 4];
/// CloseComplete as the pooler sends it.
pub const CLOSE_COMPLETE: &[u8] = &[tag::CLOSE_COMPLETE, 0, 0, 0, 4];

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// The queue of owed responses for one bound server connection.
#[derive(Debug, Default)]
pub struct ResponsePlan {
    entries: VecDeque<Entry>,
    /// Entries that are not plain forwards; zero means the stream needs no edits.
    special: usize,
}

impl ResponsePlan {
    /// True when no server message will be dropped and nothing will be inserted.
    pub fn is_plain(&self) -> bool {
        self.special == 0
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties this plan in place for another transaction, keeping its queue's
    /// room (unless a long pipeline made it large).
    pub fn reset(&mut self) {
        let Self { entries, special } = self;
        if entries.capacity() > 64 {
            *entries = VecDeque::new();
        } else {
            entries.clear();
        }
        *special = 0;
    }

    /// A client request forwarded to the server.
    pub fn forward(&mut self, end: ResponseEnd, undo: Undo) {
        self.entries.push_back(Entry::Forward { end, undo });
    }

    /// A request the pooler added.
    pub fn hidden(&mut self, end: ResponseEnd, undo: Undo) {
        self.special += 1;
        self.entries.push_back(Entry::Hidden { end, undo });
    }

    /// A request the pooler answers itself. Answers due at once are written to `out`.
    pub fn answer(&mut self, message: &'static [u8], undo: Undo, out: &mut Vec<u8>) {
        self.special += 1;
        self.entries.push_back(Entry::Answer(message, undo));
        self.release_answers(out);
    }

    fn pop(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        if !matches!(e, Entry::Forward { .. }) {
            self.special -= 1;
        }
        Some(e)
    }

    /// Writes the answers that are now at the head of the queue.
    fn release_answers(&mut self, out: &mut Vec<u8>) {
        while let Some(Entry::Answer(msg, _)) = self.entries.front() {
            out.extend_from_slice(msg);
            self.pop();
        }
    }

    /// Matches one server message (by its tag) with the head of the queue. Answers
    /// that become due after it go to `after`; undo work for failed requests goes
    /// to `undo`.
    pub fn on_server_message(
        &mut self,
        msg: u8,
        after: &mut Vec<u8>,
        undo: &mut Vec<Undo>,
    ) -> Verdict {
        if matches!(
            msg,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE
        ) {
            return Verdict::Forward;
        }
        let verdict = match self.entries.front() {
            None => return Verdict::Forward,
            Some(Entry::Forward { .. }) => Verdict::Forward,
            Some(Entry::Hidden { .. }) => Verdict::Drop,
            // Answers never wait at the head: they are released as soon as they get
            // there. Forward whatever this is rather than lose it.
            Some(Entry::Answer(..)) => return Verdict::Forward,
        };
        let (end, is_error) = match self.entries.front() {
            Some(Entry::Forward { end, .. } | Entry::Hidden { end, .. }) => {
                (*end, msg == tag::ERROR_RESPONSE)
            }
            _ => return verdict,
        };
        if is_error && end != ResponseEnd::Ready {
            // Extended protocol: the server now skips to the next Sync.
            let failed = self.pop();
            push_undo(failed, undo);
            while let Some(e) = self.entries.front() {
                if matches!(
                    e,
                    Entry::Forward {
                        end: ResponseEnd::Ready,
                        ..
                    } | Entry::Hidden {
                        end: ResponseEnd::Ready,
                        ..
                    }
                ) {
                    break;
                }
                let skipped = self.pop();
                push_undo(skipped, undo);
            }
            // The client must see why its request failed, even one the pooler added.
            return Verdict::Forward;
        }
        if end.ends_with(msg) {
            self.pop();
            self.release_answers(after);
        }
        verdict
    }
}

fn push_undo(entry: Option<Entry>, undo: &mut Vec<Undo>) {
    if let Some(
        Entry::Forward { undo: u, .. } | Entry::Hidden { undo: u, .. } | Entry::Answer(_, u),
    ) = entry
    {
        if u != Undo::None {
            undo.push(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(plan: &mut ResponsePlan, msgs: &[u8]) -> (Vec<(u8, Verdict)>, Vec<u8>, Vec<Undo>) {
        let mut out = Vec::new();
        let mut after = Vec::new();
        let mut undo = Vec::new();
        for &m in msgs {
            let v = plan.on_server_message(m, &mut after, &mut undo);
            out.push((m, v));
        }
        (out, after, undo)
    }

    #[test]
    fn answer_released_immediately_when_nothing_is_owed() {
        let mut plan = ResponsePlan::default();
        let mut out = Vec::new();
        plan.answer(PARSE_COMPLETE, Undo::None, &mut out);
        assert_eq!(out, PARSE_COMPLETE);
        assert!(plan.is_empty() && plan.is_plain());
    }

    #[test]
    fn answer_waits_for_earlier_responses() {
        let mut plan = ResponsePlan::default();
        let mut now = Vec::new();
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.forward(ResponseEnd::ExecuteDone, Undo::None);
        plan.answer(PARSE_COMPLETE, Undo::None, &mut now);
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        assert!(now.is_empty());
        let (_, after, _) = run(&mut plan, b"2DDC");
        assert_eq!(
            after, PARSE_COMPLETE,
            "ParseComplete right after CommandComplete"
        );
        let (v, after, _) = run(&mut plan, b"2Z");
        assert!(after.is_empty());
        assert!(v.iter().all(|(_, v)| *v == Verdict::Forward));
        assert!(plan.is_empty());
    }

    #[test]
    fn hidden_parse_response_is_dropped() {
        let mut plan = ResponsePlan::default();
        plan.hidden(
            ResponseEnd::ParseComplete,
            Undo::AddedParse { global: "g".into() },
        );
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        let (v, _, undo) = run(&mut plan, b"12Z");
        assert_eq!(
            v,
            vec![
                (b'1', Verdict::Drop),
                (b'2', Verdict::Forward),
                (b'Z', Verdict::Forward)
            ]
        );
        assert!(undo.is_empty() && plan.is_empty() && plan.is_plain());
    }

    #[test]
    fn error_skips_to_sync_and_undoes() {
        let mut plan = ResponsePlan::default();
        let mut now = Vec::new();
        plan.hidden(
            ResponseEnd::ParseComplete,
            Undo::AddedParse { global: "g".into() },
        );
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.answer(CLOSE_COMPLETE, Undo::None, &mut now);
        plan.forward(
            ResponseEnd::ParseComplete,
            Undo::ClientParse {
                client_name: "s2".into(),
                global: "h".into(),
            },
        );
        plan.forward(ResponseEnd::Ready, Undo::None);
        let (v, after, undo) = run(&mut plan, b"EZ");
        assert_eq!(v, vec![(b'E', Verdict::Forward), (b'Z', Verdict::Forward)]);
        assert!(after.is_empty(), "answers after an error are never sent");
        assert_eq!(
            undo,
            vec![
                Undo::AddedParse { global: "g".into() },
                Undo::ClientParse {
                    client_name: "s2".into(),
                    global: "h".into(),
                }
            ]
        );
        assert!(plan.is_empty() && plan.is_plain());
    }

    #[test]
    fn simple_query_error_waits_for_ready() {
        let mut plan = ResponsePlan::default();
        plan.forward(ResponseEnd::Ready, Undo::None);
        let (v, _, _) = run(&mut plan, b"TDCEZ");
        assert!(v.iter().all(|(_, v)| *v == Verdict::Forward));
        assert!(plan.is_empty());
    }
}
