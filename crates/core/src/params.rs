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

/// Startup parameters that are not settings (`_pq_.*` protocol options aside).
const NOT_SETTINGS: [&str; 4] = ["user", "database", "options", "replication"];

/// What a client's StartupMessage asks to set, given directly or in `options`:
/// the tracked parameters, and the other settings (search_path,
/// statement_timeout, ...), which a server connection takes with set_config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartupSettings {
    pub tracked: Vec<(String, String)>,
    pub other: Vec<(String, String)>,
}

/// An `options` startup parameter Tidepool cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "unsupported startup option \"{0}\": only -c name=value and --name=value are accepted"
    )]
    Unsupported(String),
    #[error("startup option \"{0}\" requires a value")]
    NoValue(String),
}

impl StartupSettings {
    /// Sorts a client's startup parameters; `options` is read as libpq and
    /// Postgres read it (white space separates, a backslash escapes the next
    /// character). Tidepool's own routing options (`tidepool.tenant`, `reference`)
    /// are left out.
    pub fn of<'a>(
        params: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<StartupSettings, OptionsError> {
        let mut settings = StartupSettings::default();
        for (name, value) in params {
            if name == "options" {
                settings.read_options(value)?;
            } else if !NOT_SETTINGS.contains(&name) && !name.starts_with("_pq_.") {
                settings.push(name.to_owned(), value.to_owned());
            }
        }
        Ok(settings)
    }

    fn push(&mut self, name: String, value: String) {
        if tracked_index(&name).is_some() {
            self.tracked.push((name, value));
        } else {
            self.other.push((name, value));
        }
    }

    fn read_options(&mut self, options: &str) -> Result<(), OptionsError> {
        let mut tokens = option_tokens(options).into_iter();
        while let Some(token) = tokens.next() {
            let setting = if token == "-c" {
                match tokens.next() {
                    Some(s) => s,
                    None => return Err(OptionsError::NoValue(token)),
                }
            } else if let Some(s) = token.strip_prefix("-c") {
                s.to_owned()
            } else if let Some(s) = token.strip_prefix("--") {
                // Postgres reads dashes in a long option's name as underscores.
                match s.split_once('=') {
                    Some((name, value)) => format!("{}={value}", name.replace('-', "_")),
                    None => s.to_owned(),
                }
            } else if token.starts_with("reference=") {
                continue;
            } else {
                return Err(OptionsError::Unsupported(token));
            };
            let Some((name, value)) = setting.split_once('=') else {
                return Err(OptionsError::NoValue(setting));
            };
            if name.is_empty() {
                return Err(OptionsError::Unsupported(setting));
            }
            if name.eq_ignore_ascii_case("tidepool.tenant") {
                continue;
            }
            self.push(name.to_owned(), value.to_owned());
        }
        Ok(())
    }
}

/// Splits an `options` value at unescaped white space, removing the escapes.
fn option_tokens(options: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    token.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !token.is_empty() {
                    tokens.push(std::mem::take(&mut token));
                }
            }
            c => token.push(c),
        }
    }
    if !token.is_empty() {
        tokens.push(token);
    }
    tokens
}

impl SessionSettings {
    /// Settings as given (not yet in the server's canonical form).
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(n, v)| (n.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
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

    fn pairs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn startup_settings_come_from_parameters_and_options() {
        let got = StartupSettings::of(
            [
                ("user", "app.acme"),
                ("database", "acme"),
                ("_pq_.something", "x"),
                ("search_path", "tenant_a, public"),
                ("DateStyle", "ISO"),
                (
                    "options",
                    r"-c statement_timeout=5s -cwork_mem=64MB --lock-timeout=1s -c tidepool.tenant=acme reference=acme -c application_name=my\ app -c standard_conforming_strings=off",
                ),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(
            got.tracked,
            pairs(&[
                ("DateStyle", "ISO"),
                ("application_name", "my app"),
                ("standard_conforming_strings", "off"),
            ])
        );
        assert_eq!(
            got.other,
            pairs(&[
                ("search_path", "tenant_a, public"),
                ("statement_timeout", "5s"),
                ("work_mem", "64MB"),
                ("lock_timeout", "1s"),
            ])
        );
    }

    #[test]
    fn startup_options_tidepool_cannot_honour_are_refused() {
        let of = |options: &str| StartupSettings::of([("options", options)].into_iter());
        assert_eq!(of("-e"), Err(OptionsError::Unsupported("-e".into())));
        assert_eq!(of("-c"), Err(OptionsError::NoValue("-c".into())));
        assert_eq!(
            of("-c work_mem"),
            Err(OptionsError::NoValue("work_mem".into()))
        );
        assert_eq!(of("--=1"), Err(OptionsError::Unsupported("=1".into())));
        assert_eq!(of("   "), Ok(StartupSettings::default()));
    }
}
