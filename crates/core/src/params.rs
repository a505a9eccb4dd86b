//! Session parameters a client sets at startup or with SET, which Postgres reports
//! with ParameterStatus: the pooler tracks what each client wants and what each
//! server connection has, and brings a server in line (with SET) when it lends it to
//! a client that wants different values. Pure.
//!
//! Only reported parameters can be tracked reliably: a change made by any means
//! (SET, RESET, SET LOCAL and its end, DISCARD ALL, a function's SET clause) reaches
//! the pooler as ParameterStatus.

use std::sync::Arc;

/// The parameters tracked per client and per server, in a fixed order.
pub const TRACKED: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// Index of `application_name`, which Postgres reports as given (no canonical form).
const APPLICATION_NAME: usize = 0;
/// Postgres truncates application_name to NAMEDATALEN - 1 bytes.
const MAX_APPLICATION_NAME: usize = 63;

/// Values of the tracked parameters; `None` where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamValues([Option<Arc<str>>; TRACKED.len()]);

/// Position of a tracked parameter (names are case-insensitive, as in SET).
pub fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

impl ParamValues {
    /// The values among a ParameterStatus list.
    pub fn from_reported(params: &[(String, String)]) -> Self {
        let mut v = Self::default();
        for (name, value) in params {
            v.set(name, value);
        }
        v
    }

    /// Records a value; returns false if the parameter is not tracked.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match tracked_index(name) {
            Some(i) => {
                self.0[i] = Some(value.into());
                true
            }
            None => false,
        }
    }

    /// Takes every known value of `changes`.
    pub fn apply(&mut self, changes: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(&changes.0) {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }

    /// True when no value is known.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        tracked_index(name).and_then(|i| self.0[i].as_deref())
    }

    /// Overlays the tracked parameters a client gave in its StartupMessage.
    pub fn overlay_startup<'a>(&mut self, startup: impl Iterator<Item = (&'a str, &'a str)>) {
        for (name, value) in startup {
            if let Some(i) = tracked_index(name) {
                let value = if i == APPLICATION_NAME {
                    truncate(value, MAX_APPLICATION_NAME)
                } else {
                    value
                };
                // An equal value keeps the shared string: no copy per client.
                if self.0[i].as_deref() != Some(value) {
                    self.0[i] = Some(value.into());
                }
            }
        }
    }

    /// True if, apart from application_name, every value is known to equal `other`'s.
    /// When false, only the server can say what the canonical form of a value is.
    pub fn same_except_application_name(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .enumerate()
            .all(|(i, (a, b))| i == APPLICATION_NAME || a.is_none() || a == b)
    }

    /// SQL that makes a server holding `current` hold `self`, or `None` if nothing
    /// differs. Values unknown on our side are left as the server has them. A
    /// value equal to ours but stored apart is replaced in `current` by ours, so
    /// that the next look (every transaction) compares pointers, not strings.
    pub fn sync_sql(&self, current: &mut Self) -> Option<String> {
        let mut sql = String::new();
        for (i, (want, have)) in self.0.iter().zip(current.0.iter_mut()).enumerate() {
            let Some(want) = want else { continue };
            match have {
                Some(have) if Arc::ptr_eq(have, want) => {}
                Some(have) if **have == **want => *have = want.clone(),
                _ => {
                    sql.push_str("SET ");
                    sql.push_str(TRACKED[i]);
                    sql.push_str(" TO ");
                    push_literal(&mut sql, want);
                    sql.push(';');
                }
            }
        }
        (!sql.is_empty()).then_some(sql)
    }
}

/// Session settings that Postgres does not report (search_path, statement_timeout,
/// ...): what a client has set with SET, read back from `pg_settings` after a
/// transaction that may have changed them, and what a server connection carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings(std::collections::BTreeMap<Box<str>, Box<str>>);

/// The query that reads a connection's session-level settings.
pub const READ_SESSION_SETTINGS: &str =
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

/// No settings (what a client that set none compares with).
pub static NO_SETTINGS: SessionSettings = SessionSettings(std::collections::BTreeMap::new());

impl SessionSettings {
    /// Builds the settings from rows of [`READ_SESSION_SETTINGS`], leaving out the
    /// reported parameters (tracked by [`ParamValues`]).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            rows.into_iter()
                .filter(|(name, _)| tracked_index(name).is_none())
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// SQL that turns a server carrying `current` into one carrying `self`.
    pub fn sync_sql(&self, current: &Self) -> Option<String> {
        let mut sql = String::new();
        for name in current.0.keys() {
            if !self.0.contains_key(name) && is_guc_name(name) {
                sql.push_str("RESET ");
                sql.push_str(name);
                sql.push(';');
            }
        }
        for (name, value) in &self.0 {
            if current.0.get(name) != Some(value) {
                sql.push_str("SELECT pg_catalog.set_config(");
                push_literal(&mut sql, name);
                sql.push_str(", ");
                push_literal(&mut sql, value);
                sql.push_str(", false);");
            }
        }
        (!sql.is_empty()).then_some(sql)
    }
}

/// A setting name that can follow RESET unquoted (pg_settings names always can).
fn is_guc_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A string literal that means the same whatever `standard_conforming_strings` is.
fn push_literal(sql: &mut String, value: &str) {
    if value.contains('\\') {
        sql.push('E');
    }
    sql.push('\'');
    for c in value.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            c => sql.push(c),
        }
    }
    sql.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(kv: &[(&str, &str)]) -> ParamValues {
        let v: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ParamValues::from_reported(&v)
    }

    #[test]
    fn sync_only_what_differs() {
        let server = reported(&[
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"),
            ("server_version", "15"),
        ]);
        let mut server = server;
        // Equal values stored apart: nothing to send, and the server's copy now
        // shares the client's.
        let mut client = reported(&[("DateStyle", "ISO, MDY")]);
        assert_eq!(client.sync_sql(&mut server), None);
        let index = tracked_index("DateStyle").unwrap();
        let (ours, theirs) = (&client.0[index], &server.0[index]);
        assert!(matches!((ours, theirs), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
        client.overlay_startup([("timezone", "Europe/Paris"), ("user", "x")].into_iter());
        assert_eq!(
            client.sync_sql(&mut server).as_deref(),
            Some("SET TimeZone TO 'Europe/Paris';")
        );
        assert!(!client.same_except_application_name(&server));
    }

    #[test]
    fn session_settings_sync() {
        let client = SessionSettings::from_rows([
            ("search_path".to_string(), "a, b".to_string()),
            ("TimeZone".to_string(), "UTC".to_string()),
        ]);
        let server =
            SessionSettings::from_rows([("statement_timeout".to_string(), "5000".to_string())]);
        assert_eq!(
            client.sync_sql(&server).as_deref(),
            Some("RESET statement_timeout;SELECT pg_catalog.set_config('search_path', 'a, b', false);")
        );
        assert_eq!(client.sync_sql(&client), None);
    }

    #[test]
    fn quoting_is_safe() {
        let mut client = ParamValues::default();
        client.set("application_name", "it's a \\ test");
        assert_eq!(
            client.sync_sql(&mut ParamValues::default()).as_deref(),
            Some("SET application_name TO E'it''s a \\\\ test';")
        );
    }

    #[test]
    fn application_name_is_truncated_like_postgres() {
        let mut client = ParamValues::default();
        let long = "é".repeat(40);
        client.overlay_startup([("application_name", long.as_str())].into_iter());
        let got = client.get("application_name").unwrap();
        assert!(got.len() <= 63 && long.starts_with(got));
        assert!(client.same_except_application_name(&ParamValues::default()));
    }
}
