//! A light look at SQL text a transaction-mode client sends, for the few statements
//! whose effect outlives the transaction on that server connection: SET / RESET
//! (session settings), LISTEN / UNLISTEN, and state that cannot move between servers
//! (session advisory locks, temporary tables, WITH HOLD cursors, SQL PREPARE).
//!
//! It is not a parser: it splits statements on `;` outside quotes, comments and
//! dollar quotes, and looks at their leading keywords, plus a search for the session
//! advisory-lock functions. Pure.

/// What a piece of SQL may do to session state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionHints {
    /// SET, RESET, DISCARD or set_config(): session settings may have changed.
    pub settings: bool,
    /// State that must stay on this server: the client is pinned to it.
    pub pin: bool,
}

impl SessionHints {
    /// Adds what `other` may do.
    pub fn merge(&mut self, other: Self) {
        self.settings |= other.settings;
        self.pin |= other.pin;
    }
}

/// The single LISTEN or UNLISTEN a simple Query may consist of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenCommand {
    Listen(String),
    Unlisten(String),
    UnlistenAll,
}

/// Splits SQL into statements, skipping comments and not splitting inside quotes.
/// Each statement is returned with comments removed and whitespace trimmed.
fn statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                cur.push(' ');
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                cur.push(' ');
                continue;
            }
            b'\'' | b'"' => {
                let start = i;
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                cur.push_str(&sql[start..i]);
                continue;
            }
            b'$' => {
                // $tag$ ... $tag$ (a bare $1 parameter has no closing $ before a non-tag byte).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&x| !(x.is_ascii_alphanumeric() || x == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(te) = tag_end.filter(|&te| b.get(te) == Some(&b'$')) {
                    let tag = &sql[i..=te];
                    let body_start = te + 1;
                    let end = sql[body_start..]
                        .find(tag)
                        .map(|p| body_start + p + tag.len())
                        .unwrap_or(b.len());
                    cur.push_str(&sql[i..end]);
                    i = end;
                    continue;
                }
            }
            b';' => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                i += 1;
                continue;
            }
            _ => {}
        }
        let ch_len = sql[i..].chars().next().map_or(1, char::len_utf8);
        cur.push_str(&sql[i..i + ch_len]);
        i += ch_len;
    }
    out.push(cur.trim().to_owned());
    out.retain(|s| !s.is_empty());
    out
}

fn words(stmt: &str) -> impl Iterator<Item = String> + '_ {
    stmt.split(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
}

/// Words whose presence makes [`session_hints`] (or a statement reset check) worth
/// running, each with where it must stand to count (see [`Place`]).
const TRIGGERS: [(&[u8], Place); 8] = [
    (b"set", Place::Leading),
    (b"discard", Place::Anywhere),
    (b"dealloc", Place::Anywhere),
    (b"advisory", Place::Anywhere),
    (b"temp", Place::WordStart),
    (b"hold", Place::WordStart),
    (b"prepare", Place::WordStart),
    (b"listen", Place::WordStart),
];

/// Where a trigger word must stand for [`session_hints`] or [`may_drop_statements`]
/// to care about it. Each place is a necessary condition of what those functions
/// look for, so the pre-check never hides a statement they would flag.
#[derive(Clone, Copy)]
enum Place {
    /// Inside any word (`pg_advisory_lock`), or anywhere for the statement-dropping
    /// search.
    Anywhere,
    /// At the start of a word: `CREATE TEMP`, `WITH HOLD`, `PREPARE`, `LISTEN`
    /// (not `threshold` or `attempt`).
    WordStart,
    /// The first word of a statement (`SET`, or `RESET` around it; not
    /// `UPDATE t SET` or `OFFSET`), or `set_config`.
    Leading,
}

/// For each byte folded with `| 0x20` (which lower-cases ASCII letters): the
/// triggers whose byte at `at` it is, one bit each.
const fn triggers_by_byte(at: usize) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < TRIGGERS.len() {
        table[TRIGGERS[i].0[at] as usize] |= 1 << i;
        i += 1;
    }
    table
}
const TRIGGERS_BY_FIRST: [u8; 256] = triggers_by_byte(0);
const TRIGGERS_BY_SECOND: [u8; 256] = triggers_by_byte(1);

/// A single pass without allocation: false when `sql` cannot hold any statement
/// [`session_hints`] or [`may_drop_statements`] cares about (the common case, kept
/// cheap for the hot path). A whole word is compared, and its place checked, only
/// where its first two letters are: found sixteen bytes at a time with SSE2 on
/// x86-64, else with two table look-ups per byte.
pub fn might_touch_session(sql: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        pairs_sse2::might_touch_session(sql)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        might_touch_session_from(sql, 0)
    }
}

/// [`might_touch_session`] for the trigger words starting at `from` or later, a
/// byte at a time.
fn might_touch_session_from(sql: &[u8], from: usize) -> bool {
    let Some(&first) = sql.get(from) else {
        return false;
    };
    let mut comments = Comments::Unknown;
    // Triggers that the previous byte may begin, carried to the next byte.
    let mut begun = TRIGGERS_BY_FIRST[usize::from(first | 0x20)];
    for (i, &byte) in sql.iter().enumerate().skip(from + 1) {
        let folded = usize::from(byte | 0x20);
        let candidates = begun & TRIGGERS_BY_SECOND[folded];
        if candidates != 0 && trigger_at(sql, i - 1, candidates, &mut comments) {
            return true;
        }
        begun = TRIGGERS_BY_FIRST[folded];
    }
    false
}

/// The pair search of [`might_touch_session`] over sixteen starting bytes at once.
#[cfg(target_arch = "x86_64")]
mod pairs_sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };

    use super::{trigger_at, Comments, TRIGGERS, TRIGGERS_BY_FIRST, TRIGGERS_BY_SECOND};

    pub(super) fn might_touch_session(sql: &[u8]) -> bool {
        let mut comments = Comments::Unknown;
        let mut at = 0;
        // A block looks at the pairs starting at `at..at + 16`: bytes up to
        // `at + 16` must be there.
        while at + 17 <= sql.len() {
            let mut starts = pair_starts(&sql[at..at + 17]);
            while starts != 0 {
                let i = at + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let candidates = TRIGGERS_BY_FIRST[usize::from(sql[i] | 0x20)]
                    & TRIGGERS_BY_SECOND[usize::from(sql[i + 1] | 0x20)];
                if trigger_at(sql, i, candidates, &mut comments) {
                    return true;
                }
            }
            at += 16;
        }
        super::might_touch_session_from(sql, at)
    }

    /// One bit per byte of `block[..16]` that, with the byte after it, spells the
    /// first two letters of a trigger word, either case.
    fn pair_starts(block: &[u8]) -> u32 {
        assert!(block.len() >= 17);
        // SAFETY: SSE2 is part of x86-64; both unaligned loads read 16 bytes
        // within `block`, whose length was checked above.
        unsafe {
            let fold = _mm_set1_epi8(0x20);
            let first = _mm_or_si128(_mm_loadu_si128(block.as_ptr().cast::<__m128i>()), fold);
            let second = _mm_or_si128(
                _mm_loadu_si128(block.as_ptr().add(1).cast::<__m128i>()),
                fold,
            );
            let mut hits = _mm_setzero_si128();
            for (word, _) in TRIGGERS {
                let a = _mm_cmpeq_epi8(first, _mm_set1_epi8(word[0] as i8));
                let b = _mm_cmpeq_epi8(second, _mm_set1_epi8(word[1] as i8));
                hits = _mm_or_si128(hits, _mm_and_si128(a, b));
            }
            _mm_movemask_epi8(hits) as u32
        }
    }
}

/// The last text [`might_touch_session`] found clean, to skip the pass when the
/// same text comes again. Drivers send the same Parse again and again (an unnamed
/// statement per query); its SQL compares equal far faster than it scans.
#[derive(Debug, Default)]
pub struct CleanMemo(Vec<u8>);

impl CleanMemo {
    /// Longest text remembered (a copy per relay state).
    const MAX_LEN: usize = 1024;

    /// [`might_touch_session`], skipped for the text it last found clean.
    pub fn might_touch_session(&mut self, sql: &[u8]) -> bool {
        if self.0 == sql {
            return false;
        }
        let touches = might_touch_session(sql);
        if !touches && sql.len() <= Self::MAX_LEN {
            self.0.clear();
            self.0.extend_from_slice(sql);
        }
        touches
    }
}

/// Whether `sql` holds a comment opener, found out once and only when needed.
#[derive(Clone, Copy)]
enum Comments {
    Unknown,
    Known(bool),
}

impl Comments {
    fn any(&mut self, sql: &[u8]) -> bool {
        if let Self::Known(any) = *self {
            return any;
        }
        let any = memchr::memchr2_iter(b'-', b'/', sql).any(|i| {
            matches!(
                (sql[i], sql.get(i + 1)),
                (b'-', Some(b'-')) | (b'/', Some(b'*'))
            )
        });
        *self = Self::Known(any);
        any
    }
}

/// An ASCII byte that continues an identifier. Bytes of other characters count as
/// word breaks: some are spaces to the statement splitter.
fn in_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$'
}

/// Whether a word after `before` starts a word of its own.
fn starts_word(before: &[u8]) -> bool {
    before.last().is_none_or(|&b| !in_word(b))
}

/// ASCII white space as Postgres and `char::is_whitespace` see it (with `\x0b`,
/// which `u8::is_ascii_whitespace` leaves out).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Whether one of the `candidates` (bits of [`TRIGGERS`]) begins `sql[at..]`,
/// either case, standing where it counts. Rarely called: kept out of the byte loop.
#[cold]
#[inline(never)]
fn trigger_at(sql: &[u8], at: usize, mut candidates: u8, comments: &mut Comments) -> bool {
    let text = &sql[at..];
    let before = &sql[..at];
    while candidates != 0 {
        let (word, place) = TRIGGERS[candidates.trailing_zeros() as usize];
        candidates &= candidates - 1;
        if !text
            .get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            continue;
        }
        let found = match place {
            Place::Anywhere => true,
            Place::WordStart => starts_word(before),
            Place::Leading => {
                let config = text[word.len()..]
                    .get(..7)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"_config"));
                // `RESET` is `SET` with `RE` before it.
                let re = before
                    .len()
                    .checked_sub(2)
                    .filter(|&re| before[re..].eq_ignore_ascii_case(b"re"))
                    .map(|re| &before[..re]);
                config
                    || [Some(before), re]
                        .into_iter()
                        .flatten()
                        .any(|before| starts_word(before) && leads_statement(before, comments, sql))
            }
        };
        if found {
            return true;
        }
    }
    false
}

/// Whether a word after `before` may be the first of a statement: only white space
/// (or the `(` and `,` the word splitter also skips) lies between it and the last
/// `;` (or the start). A comment may hide where a
/// statement starts (`-- x;` then a new line), so with any comment in `sql` the
/// answer is yes, as it is after a character that is not ASCII (it may be a space
/// to the statement splitter). Scans back over the white space only, so many
/// triggers in one text still cost one pass.
fn leads_statement(before: &[u8], comments: &mut Comments, sql: &[u8]) -> bool {
    match before
        .iter()
        .rev()
        .find(|&&b| !is_space(b) && b != b'(' && b != b',')
    {
        None | Some(b';') => true,
        Some(b) if !b.is_ascii() => true,
        Some(_) => comments.any(sql),
    }
}

/// Looks at the session effects of `sql`. It allocates: run [`might_touch_session`]
/// first, which answers no for most SQL (and never where this would find anything).
pub fn session_hints(sql: &str) -> SessionHints {
    let mut hints = SessionHints::default();
    let lower = sql.to_ascii_lowercase();
    if lower.contains("set_config") {
        hints.settings = true;
    }
    if ["pg_advisory_lock", "pg_try_advisory_lock"]
        .iter()
        .any(|f| lower.contains(f))
    {
        hints.pin = true;
    }
    for stmt in statements(sql) {
        let w: Vec<String> = words(&stmt).take(4).collect();
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["set", "local", ..] => {}
            ["set", "transaction", ..] | ["set", "constraints", ..] => {}
            ["set", "session", "characteristics", ..] => hints.settings = true,
            ["set", "role", ..]
            | ["set", "session", "authorization", ..]
            | ["set", "session", "role", ..] => {
                // The identity must not move to another client's server.
                hints.pin = true;
            }
            ["set", ..] | ["reset", ..] | ["discard", ..] => hints.settings = true,
            ["create", "temp" | "temporary", ..]
            | ["create", "local" | "global", "temp" | "temporary", ..] => hints.pin = true,
            ["create", "unlogged", ..] => {}
            ["prepare", "transaction", ..] => {}
            ["prepare", ..] => hints.pin = true,
            ["declare", ..] if stmt.to_ascii_lowercase().contains("with hold") => hints.pin = true,
            ["listen", ..] => hints.pin = true,
            _ => {}
        }
        // CREATE TEMP ... inside other statements (e.g. SELECT ... INTO TEMP).
        let ls = stmt.to_ascii_lowercase();
        if ls.starts_with("select") && (ls.contains(" into temp") || ls.contains(" into temporary"))
        {
            hints.pin = true;
        }
    }
    hints
}

/// If `sql` is exactly one LISTEN or UNLISTEN, the command (channel names folded to
/// lower case unless quoted, as Postgres does).
pub fn listen_command(sql: &str) -> Option<ListenCommand> {
    let stmts = statements(sql);
    let [stmt] = stmts.as_slice() else {
        return None;
    };
    let (keyword, rest) = stmt.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let channel = || identifier(rest);
    match keyword.to_ascii_lowercase().as_str() {
        "listen" => channel().map(ListenCommand::Listen),
        "unlisten" if rest == "*" => Some(ListenCommand::UnlistenAll),
        "unlisten" => channel().map(ListenCommand::Unlisten),
        _ => None,
    }
}

/// True when `sql` may drop prepared statements (DISCARD ALL, DEALLOCATE): later
/// messages must wait for its outcome before the pooler decides anything about
/// statements.
///
/// Like [`session_hints`], worth running only where [`might_touch_session`] says yes.
pub fn may_drop_statements(sql: &str) -> bool {
    let b = sql.as_bytes();
    [&b"discard"[..], b"deallocate"]
        .iter()
        .any(|w| b.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
}

/// The statement name of a lone `DEALLOCATE [PREPARE] name` (not `ALL`).
pub fn deallocate_target(sql: &str) -> Option<String> {
    let stmts = statements(sql);
    let [stmt] = stmts.as_slice() else {
        return None;
    };
    let (keyword, rest) = stmt.split_once(char::is_whitespace)?;
    if !keyword.eq_ignore_ascii_case("deallocate") {
        return None;
    }
    let rest = rest.trim();
    let rest = match rest.split_once(char::is_whitespace) {
        Some((p, name)) if p.eq_ignore_ascii_case("prepare") => name.trim(),
        _ => rest,
    };
    if rest.eq_ignore_ascii_case("all") {
        return None;
    }
    identifier(rest)
}

/// One SQL identifier making up all of `s`.
fn identifier(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        if inner.is_empty() || inner.replace("\"\"", "").contains('"') {
            return None;
        }
        return Some(inner.replace("\"\"", "\""));
    }
    let ok = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    ok.then(|| s.to_lowercase())
}

/// `name` as a quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let s = statements("SELECT ';' -- a;b\n; SELECT $x$ ; $x$; /* ; */ SET a = 1");
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[2].starts_with("SET"));
    }

    #[test]
    fn hints() {
        assert!(session_hints("set search_path to a").settings);
        assert!(session_hints("SELECT 1; RESET ALL").settings);
        assert!(!session_hints("SET LOCAL search_path TO a").settings);
        assert!(!session_hints("SELECT 'set x = 1'").settings);
        assert!(session_hints("select pg_catalog.set_config('a','b',false)").settings);
        assert!(session_hints("SELECT pg_advisory_lock(1)").pin);
        assert!(!session_hints("SELECT pg_advisory_xact_lock(1)").pin);
        assert!(session_hints("CREATE TEMP TABLE t(a int)").pin);
        assert!(session_hints("create local temporary table t(a int)").pin);
        assert!(session_hints("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pin);
        assert!(!session_hints("DECLARE c CURSOR FOR SELECT 1").pin);
        assert!(session_hints("PREPARE p AS SELECT 1").pin);
        assert!(session_hints("SET ROLE admin").pin);
        assert!(!session_hints("SELECT 1").pin);
        assert!(!session_hints("SELECT $1::int").pin);
    }

    #[test]
    fn cheap_precheck() {
        assert!(!might_touch_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(!might_touch_session(
            b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2;"
        ));
        assert!(!might_touch_session(b"SELECT * FROM t LIMIT 5 OFFSET 10"));
        assert!(!might_touch_session(b"SELECT threshold, attempts FROM t"));
        assert!(might_touch_session(b"UPDATE t SET a = 1; SET b = 2"));
        assert!(might_touch_session(b" \n\tset search_path = a"));
        assert!(might_touch_session(b"select 1;reset all"));
        assert!(might_touch_session(b"/* why */ SET a = 1"));
        assert!(might_touch_session(b"-- x;\nUPDATE t SET a = 1"));
        assert!(might_touch_session(
            b"UPDATE t SET a = set_config('x', 'y', false)"
        ));
        assert!(might_touch_session(b"create TEMP table x()"));
        assert!(might_touch_session(b"SELECT pg_advisory_lock(1)"));
    }

    /// Random statements built from words that matter, words that look like them,
    /// separators, quotes and comments.
    fn random_sql(seed: &mut u64, max_tokens: u64) -> String {
        const TOKENS: [&str; 52] = [
            "SET",
            "set",
            "Reset",
            "offset",
            "UPDATE t",
            "SELECT",
            "x",
            "= 1",
            " ",
            " ",
            "\n",
            "\t",
            "\x0b",
            "\u{a0}",
            "\u{2003}",
            ";",
            ";",
            "(",
            ",",
            "'",
            "'a;b'",
            "\"",
            "--",
            "/*",
            "*/",
            "$$",
            "$1",
            "set_config(",
            "SET_CONFIG",
            "pg_advisory_lock(",
            "pg_try_advisory_lock",
            "create",
            "TEMP",
            "temporary",
            "attempt",
            "local",
            "global",
            "WITH",
            "HOLD",
            "threshold",
            "DECLARE c CURSOR",
            "PREPARE p",
            "prepare transaction",
            "prepared",
            "LISTEN",
            "unlisten",
            "discard all",
            "DEALLOCATE",
            "role",
            "session",
            "INTO",
            "é",
        ];
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let n = next() % max_tokens;
        (0..n)
            .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(if next() % 3 == 0 { "" } else { " " })
    }

    /// The pre-check may say yes when nothing matters, never no when something
    /// does: whatever the full look flags, it lets through.
    #[test]
    fn precheck_never_hides_what_the_full_look_flags() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut flagged = 0;
        let mut spared = 0;
        for _ in 0..200_000 {
            let sql = random_sql(&mut seed, 8);
            let matters =
                session_hints(&sql) != SessionHints::default() || may_drop_statements(&sql);
            let passes = might_touch_session(sql.as_bytes());
            assert!(passes || !matters, "hidden: {sql:?}");
            flagged += usize::from(matters);
            spared += usize::from(!passes);
        }
        // The test means something only if both kinds of text came up often.
        assert!(flagged > 10_000 && spared > 10_000, "{flagged} {spared}");
    }

    /// The sixteen-bytes-at-a-time search finds what the byte-at-a-time one does,
    /// wherever the words fall against its blocks.
    #[test]
    fn precheck_by_blocks_matches_byte_by_byte() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut touching = 0;
        for n in 0..100_000 {
            let sql = random_sql(&mut seed, 2 + (n as u64 % 30));
            let pad = " ".repeat(n % 17);
            let sql = format!("{pad}{sql}");
            let bytes = sql.as_bytes();
            let by_byte = might_touch_session_from(bytes, 0);
            assert_eq!(might_touch_session(bytes), by_byte, "{sql:?}");
            touching += usize::from(by_byte);
        }
        // Both answers came up often.
        assert!(touching > 10_000 && touching < 90_000, "{touching}");
    }

    /// The table-driven pre-check agrees with its plain definition: some trigger
    /// word, in any case, starts at some byte, standing where it counts.
    #[test]
    fn precheck_matches_its_definition() {
        let plain = |sql: &[u8]| {
            let comments = sql.windows(2).any(|w| w == b"--" || w == b"/*");
            (0..sql.len()).any(|i| {
                let word_start = |i: usize| i == 0 || !in_word(sql[i - 1]);
                let first = |i: usize| {
                    sql[..i]
                        .iter()
                        .rposition(|&b| !(is_space(b) || b == b'(' || b == b','))
                        .is_none_or(|p| sql[p] == b';' || !sql[p].is_ascii())
                };
                let leading = |i: usize| word_start(i) && (first(i) || comments);
                let re = i >= 2 && sql[i - 2..i].eq_ignore_ascii_case(b"re");
                TRIGGERS.iter().any(|(t, place)| {
                    let found = sql
                        .get(i..i + t.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(t));
                    let config = sql
                        .get(i + t.len()..i + t.len() + 7)
                        .is_some_and(|w| w.eq_ignore_ascii_case(b"_config"));
                    found
                        && match place {
                            Place::Anywhere => true,
                            Place::WordStart => word_start(i),
                            Place::Leading => config || leading(i) || (re && leading(i - 2)),
                        }
                })
            })
        };
        let alphabet = b"sEtDiScaRdeaLlOcADvIsoRYtEmPhOlDpRePaRlIsTeN _;(,\n\x0b-/*_cOnFiG\xc3\xa9\x00\x13\x53";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..2000 {
            let mut sql = Vec::with_capacity(len % 200);
            for _ in 0..len % 200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sql.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            assert_eq!(might_touch_session(&sql), plain(&sql), "{sql:?}");
        }
        for (t, _) in TRIGGERS {
            assert!(might_touch_session(t));
            assert!(might_touch_session(&t.to_ascii_uppercase()));
            assert!(!might_touch_session(&t[..t.len() - 1]));
        }
    }

    /// The memo answers as the pre-check does, whatever came before.
    #[test]
    fn the_memo_answers_as_the_precheck() {
        let mut memo = CleanMemo::default();
        let mut seed = 0x51_7cc1_b727_220a_u64;
        let mut texts: Vec<String> = (0..40).map(|_| random_sql(&mut seed, 6)).collect();
        texts.push("x".repeat(CleanMemo::MAX_LEN + 1));
        for round in 0..2_000 {
            // Mostly the same text again, sometimes another.
            let sql = &texts[(round / 3 + round % 2) % texts.len()];
            let plain = might_touch_session(sql.as_bytes());
            assert_eq!(memo.might_touch_session(sql.as_bytes()), plain, "{sql:?}");
            assert_eq!(memo.might_touch_session(sql.as_bytes()), plain, "{sql:?}");
        }
        assert!(!memo.might_touch_session(b""));
    }

    #[test]
    fn deallocate() {
        assert_eq!(deallocate_target("DEALLOCATE s1"), Some("s1".into()));
        assert_eq!(
            deallocate_target("deallocate prepare \"S1\";"),
            Some("S1".into())
        );
        assert_eq!(deallocate_target("DEALLOCATE ALL"), None);
        assert_eq!(deallocate_target("DEALLOCATE a; SELECT 1"), None);
        assert!(may_drop_statements("discard all"));
        assert!(!may_drop_statements("select 1"));
    }

    #[test]
    fn listen_commands() {
        assert_eq!(
            listen_command("LISTEN Foo;"),
            Some(ListenCommand::Listen("foo".into()))
        );
        assert_eq!(
            listen_command(" listen \"Foo\"\"x\" "),
            Some(ListenCommand::Listen("Foo\"x".into()))
        );
        assert_eq!(
            listen_command("UNLISTEN *"),
            Some(ListenCommand::UnlistenAll)
        );
        assert_eq!(
            listen_command("unlisten a"),
            Some(ListenCommand::Unlisten("a".into()))
        );
        assert_eq!(listen_command("LISTEN a; SELECT 1"), None);
        assert_eq!(listen_command("LISTEN a b"), None);
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
