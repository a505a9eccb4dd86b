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

use super::statements::{columns_fingerprint, parameters_fingerprint, Shape, Statement};

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
    /// A Bind or Describe of the server's copy of this statement failed or was
    /// skipped. The copy may be one a schema change made stale (Postgres then
    /// refuses it with 0A000, although a client's statement prepared after the
    /// change is fine): the next use prepares it again.
    UsedCopy {
        statement: Arc<Statement>,
    },
}

/// A shape read off the answer to a Describe of a client's statement: what
/// the server's copy of `statement` has and, when `told`, what the client was
/// told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub statement: Arc<Statement>,
    pub told: bool,
    pub shape: Shape,
}

#[derive(Debug, Clone)]
enum Entry {
    /// The client's own request: forward its response.
    Forward { end: ResponseEnd, undo: Undo },
    /// A request the pooler added: drop its response.
    Hidden { end: ResponseEnd, undo: Undo },
    /// A request the pooler answers itself with this message.
    Answer(&'static [u8], Undo),
    /// A Describe of a client's statement (or of a portal bound from one), its
    /// answer read, and forwarded when the client asked (`told`), else dropped;
    /// `params` is the ParameterDescription's fingerprint once seen (a portal's
    /// answer has none).
    Describe {
        statement: Arc<Statement>,
        told: bool,
        params: u64,
    },
    /// A client request sent so that it fails: its ErrorResponse is replaced by
    /// this one.
    Fail {
        end: ResponseEnd,
        error: &'static [u8],
    },
}

impl Entry {
    /// What ends its response, and what to do with that response's messages.
    fn end_and_verdict(&self) -> Option<(ResponseEnd, Verdict)> {
        match self {
            Self::Forward { end, .. } | Self::Fail { end, .. } => Some((*end, Verdict::Forward)),
            Self::Hidden { end, .. } => Some((*end, Verdict::Drop)),
            Self::Describe { told, .. } => Some((
                ResponseEnd::Description,
                if *told {
                    Verdict::Forward
                } else {
                    Verdict::Drop
                },
            )),
            Self::Answer(..) => None,
        }
    }
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
    /// Send this message in its place.
    Replace(&'static [u8]),
}

/// The queue of owed responses for one bound server connection.
#[derive(Debug, Default)]
pub struct ResponsePlan {
    entries: VecDeque<Entry>,
    /// Entries that are not plain forwards; zero means the stream needs no edits.
    special: usize,
    /// The last portal bound from a client's statement whose columns the client
    /// has not been told, with that statement, so that the answer to a Describe
    /// of the portal tells them. One portal only: one bound earlier is not
    /// followed.
    pub described_portal: Option<(Box<[u8]>, Arc<Statement>)>,
    /// The statement whose server copy was just prepared again for a shape
    /// check, while its Bind waits: a second mismatch then fails the Bind.
    reprepared: Option<Arc<Statement>>,
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
        let Self {
            entries,
            special,
            described_portal,
            reprepared,
        } = self;
        if entries.capacity() > 64 {
            *entries = VecDeque::new();
        } else {
            entries.clear();
        }
        *special = 0;
        *described_portal = None;
        *reprepared = None;
    }

    /// Notes that the server's copy of `s` was just prepared again for a shape
    /// check; the Bind waiting for it is checked again once the answer is in.
    pub fn mark_reprepared(&mut self, s: Arc<Statement>) {
        self.reprepared = Some(s);
    }

    /// Whether the copy of `global` was prepared again for the check under way;
    /// forgets the mark either way.
    pub fn take_reprepared(&mut self, global: &str) -> bool {
        self.reprepared.take().is_some_and(|s| *s.global == *global)
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

    /// A Describe whose answer is read for the shape of a client's statement:
    /// the client's own (`told`: of the statement, or of a portal bound from it)
    /// or one the pooler added (its answer dropped).
    pub fn describe(&mut self, statement: Arc<Statement>, told: bool) {
        self.special += 1;
        self.entries.push_back(Entry::Describe {
            statement,
            told,
            params: super::statements::UNKNOWN,
        });
    }

    /// A client request rewritten so that the server fails it: the client gets
    /// `error` instead of the server's ErrorResponse.
    pub fn fail(&mut self, end: ResponseEnd, error: &'static [u8]) {
        self.special += 1;
        self.entries.push_back(Entry::Fail { end, error });
    }

    /// Reads a whole server message that may answer an observed Describe at the
    /// head (ParameterDescription, then RowDescription or NoData). Returns the
    /// shape once its last message is in; call before [`Self::on_server_message`].
    pub fn observe(&mut self, msg: u8, body: &[u8]) -> Option<Observed> {
        let Some(Entry::Describe {
            statement,
            told,
            params,
        }) = self.entries.front_mut()
        else {
            return None;
        };
        let rows = match msg {
            tag::PARAMETER_DESCRIPTION => {
                *params = parameters_fingerprint(body);
                return None;
            }
            tag::ROW_DESCRIPTION => columns_fingerprint(Some(body)),
            tag::NO_DATA => columns_fingerprint(None),
            _ => return None,
        };
        Some(Observed {
            statement: statement.clone(),
            told: *told,
            shape: Shape {
                params: *params,
                rows,
            },
        })
    }

    /// True when a Sync or Query sent is still unanswered: after an error, the
    /// server stops skipping there, before anything sent later.
    pub fn owes_ready(&self) -> bool {
        self.entries.iter().any(|e| {
            e.end_and_verdict()
                .is_some_and(|(end, _)| end == ResponseEnd::Ready)
        })
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
        let (end, verdict) = match self.entries.front() {
            None => return Verdict::Forward,
            // Answers never wait at the head: they are released as soon as they get
            // there. Forward whatever this is rather than lose it.
            Some(entry) => match entry.end_and_verdict() {
                Some(found) => found,
                None => return Verdict::Forward,
            },
        };
        if msg == tag::READY_FOR_QUERY && end != ResponseEnd::Ready {
            // Requests sent after the server failed one and before the Sync were
            // skipped: nothing answers them, and the ReadyForQuery is the Sync's.
            self.skip_to_ready(undo);
            let verdict = match self.pop() {
                Some(Entry::Hidden { .. }) => Verdict::Drop,
                _ => Verdict::Forward,
            };
            self.release_answers(after);
            return verdict;
        }
        if msg == tag::ERROR_RESPONSE && end != ResponseEnd::Ready {
            // Extended protocol: the server now skips to the next Sync.
            let failed = self.pop();
            let verdict = match &failed {
                Some(Entry::Fail { error, .. }) => Verdict::Replace(error),
                // The client must see why its request failed, even one the pooler
                // added.
                _ => Verdict::Forward,
            };
            push_undo(failed, undo);
            self.skip_to_ready(undo);
            return verdict;
        }
        if end.ends_with(msg) {
            self.pop();
            self.release_answers(after);
        }
        verdict
    }
}

impl ResponsePlan {
    /// Ends the requests before the next Sync or Query: after an error the server
    /// skips them, and nothing will answer them.
    fn skip_to_ready(&mut self, undo: &mut Vec<Undo>) {
        while let Some(e) = self.entries.front() {
            if e.end_and_verdict()
                .is_some_and(|(end, _)| end == ResponseEnd::Ready)
            {
                break;
            }
            let skipped = self.pop();
            push_undo(skipped, undo);
        }
    }
}

fn push_undo(entry: Option<Entry>, undo: &mut Vec<Undo>) {
    match entry {
        Some(
            Entry::Forward { undo: u, .. } | Entry::Hidden { undo: u, .. } | Entry::Answer(_, u),
        ) if u != Undo::None => undo.push(u),
        Some(Entry::Describe { statement, .. }) => undo.push(Undo::UsedCopy { statement }),
        _ => {}
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
    fn a_describes_answer_gives_its_shape_and_is_dropped_when_the_pooler_asked() {
        let mut plan = ResponsePlan::default();
        let statement = Arc::new(Statement::from_parse_rest(
            b"select 1\0\0\0",
            crate::sql_hint::SessionHints::default(),
        ));
        plan.describe(statement.clone(), false);
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        assert!(!plan.is_plain(), "answers to read need whole messages");
        assert_eq!(plan.observe(tag::PARAMETER_DESCRIPTION, &[0, 0]), None);
        let (v, _, _) = run(&mut plan, b"t");
        assert_eq!(v, vec![(b't', Verdict::Drop)]);
        let seen = plan.observe(tag::NO_DATA, &[]).expect("NoData ends it");
        assert!(Arc::ptr_eq(&seen.statement, &statement) && !seen.told);
        assert_ne!(seen.shape.params, super::super::statements::UNKNOWN);
        assert_ne!(seen.shape.rows, super::super::statements::UNKNOWN);
        let (v, _, _) = run(&mut plan, b"n2");
        assert_eq!(v, vec![(b'n', Verdict::Drop), (b'2', Verdict::Forward)]);
        assert!(plan.is_empty() && plan.is_plain());
        assert_eq!(plan.observe(tag::NO_DATA, &[]), None, "nothing observed");
    }

    #[test]
    fn a_request_sent_to_fail_has_its_error_replaced() {
        const MINE: &[u8] = b"E\0\0\0\x05\0";
        let mut plan = ResponsePlan::default();
        plan.fail(ResponseEnd::BindComplete, MINE);
        plan.forward(ResponseEnd::ExecuteDone, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        let (v, _, _) = run(&mut plan, b"EZ");
        assert_eq!(
            v,
            vec![(b'E', Verdict::Replace(MINE)), (b'Z', Verdict::Forward)]
        );
        assert!(plan.is_empty() && plan.is_plain());
    }

    /// A client that sent more after a failed request (before its Sync): the
    /// server skipped those, and its ReadyForQuery answers the Sync.
    #[test]
    fn ready_for_query_ends_what_the_server_skipped() {
        let mut plan = ResponsePlan::default();
        plan.forward(ResponseEnd::ParseComplete, Undo::None);
        let (v, _, _) = run(&mut plan, b"E");
        assert_eq!(v, vec![(b'E', Verdict::Forward)]);
        assert!(plan.is_empty());
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.hidden(
            ResponseEnd::ParseComplete,
            Undo::AddedParse { global: "g".into() },
        );
        plan.forward(ResponseEnd::ExecuteDone, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        let (v, _, undo) = run(&mut plan, b"Z");
        assert_eq!(v, vec![(b'Z', Verdict::Forward)]);
        assert_eq!(undo, vec![Undo::AddedParse { global: "g".into() }]);
        assert!(!plan.is_empty(), "the second Sync is still owed");
        let (_, _, _) = run(&mut plan, b"Z");
        assert!(plan.is_empty() && plan.is_plain());
    }

    /// After the swept Sync, a Close the pooler answers is due at once.
    #[test]
    fn an_answer_after_a_swept_sync_is_released() {
        let mut plan = ResponsePlan::default();
        plan.forward(ResponseEnd::ParseComplete, Undo::None);
        run(&mut plan, b"E");
        let mut now = Vec::new();
        plan.forward(ResponseEnd::BindComplete, Undo::None);
        plan.forward(ResponseEnd::ExecuteDone, Undo::None);
        plan.forward(ResponseEnd::Ready, Undo::None);
        plan.answer(CLOSE_COMPLETE, Undo::None, &mut now);
        plan.forward(ResponseEnd::Ready, Undo::None);
        assert!(now.is_empty() && plan.owes_ready());
        let (_, after, _) = run(&mut plan, b"Z");
        assert_eq!(after, CLOSE_COMPLETE);
        run(&mut plan, b"Z");
        assert!(plan.is_empty() && !plan.owes_ready());
    }

    #[test]
    fn a_reprepared_mark_is_taken_once_and_ends_with_the_transaction() {
        let s = Arc::new(Statement::from_parse_rest(
            b"select 1\0\0\0",
            crate::sql_hint::SessionHints::default(),
        ));
        let mut plan = ResponsePlan::default();
        plan.mark_reprepared(s.clone());
        assert!(!plan.take_reprepared("other"), "another statement's check");
        assert!(!plan.take_reprepared(&s.global), "the mark was taken");
        plan.mark_reprepared(s.clone());
        assert!(plan.take_reprepared(&s.global));
        plan.mark_reprepared(s.clone());
        plan.reset();
        assert!(
            !plan.take_reprepared(&s.global),
            "a new transaction starts clean"
        );
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
