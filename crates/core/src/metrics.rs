//! Statistics per (tenant, user) and their Prometheus text rendering.
//!
//! Counting costs one relaxed atomic add per event, done once per transaction or
//! login, never per message and never under a lock; a scrape reads them all.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The sum of all observations, in microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }
}

/// Counters of one (tenant, user).
#[derive(Debug, Default)]
pub struct UserStats {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Bytes received from clients.
    pub client_bytes_in: AtomicU64,
    /// Bytes sent to clients.
    pub client_bytes_out: AtomicU64,
    /// Time clients waited for a server connection.
    pub checkout: Histogram,
    /// Time a server connection was held per transaction (transaction mode).
    pub transaction: Histogram,
    /// Named statements answered from a server's cache, prepared on a server, and
    /// evicted from a server's cache.
    pub statements_hit: AtomicU64,
    pub statements_prepared: AtomicU64,
    pub statements_evicted: AtomicU64,
    /// Server copies prepared again and described to compare their shape with a
    /// client's, and Binds failed because the client's statement was stale.
    pub statements_shape_checked: AtomicU64,
    pub statements_stale: AtomicU64,
}

impl UserStats {
    /// Adds one transaction's work, counted locally by the relay.
    pub fn add_transaction(&self, t: &TxCounts, held: Duration) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if t.queries > 0 {
            self.queries.fetch_add(t.queries, Ordering::Relaxed);
        }
        self.client_bytes_in
            .fetch_add(t.bytes_in, Ordering::Relaxed);
        self.client_bytes_out
            .fetch_add(t.bytes_out, Ordering::Relaxed);
        self.transaction.observe(held);
    }
}

impl UserStats {
    /// Adds a server connection's statement cache events.
    pub fn add_statements(&self, c: crate::client::statements::StatementCounts) {
        for (counter, n) in [
            (&self.statements_hit, c.hits),
            (&self.statements_prepared, c.prepares),
            (&self.statements_evicted, c.evictions),
            (&self.statements_shape_checked, c.shape_checks),
            (&self.statements_stale, c.stale),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// Work of one transaction, counted without atomics while it runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxCounts {
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Labels of one series.
pub struct Labels<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub db: &'a str,
    pub mode: &'a str,
}

/// Gauges read from the pool and the client counts at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub clients: u64,
    pub servers_idle: u64,
    pub servers_active: u64,
    pub clients_waiting: u64,
    pub clients_parked: u64,
}

/// One (tenant, user) row of a scrape.
pub struct Row<'a> {
    pub labels: Labels<'a>,
    pub gauges: Gauges,
    pub stats: &'a UserStats,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const FAMILIES: [Family; 18] = [
    Family {
        name: "tidepool_client_connections",
        kind: "gauge",
        help: "Client connections logged in.",
    },
    Family {
        name: "tidepool_client_logins_total",
        kind: "counter",
        help: "Client logins that succeeded.",
    },
    Family {
        name: "tidepool_client_login_failures_total",
        kind: "counter",
        help: "Client logins refused (authentication or limits).",
    },
    Family {
        name: "tidepool_server_connections_idle",
        kind: "gauge",
        help: "Server connections idle in the pool.",
    },
    Family {
        name: "tidepool_server_connections_active",
        kind: "gauge",
        help: "Server connections lent to clients.",
    },
    Family {
        name: "tidepool_clients_waiting",
        kind: "gauge",
        help: "Clients waiting for a server connection.",
    },
    Family {
        name: "tidepool_client_connections_parked",
        kind: "gauge",
        help: "Idle clients parked outside the runtime until they send something.",
    },
    Family {
        name: "tidepool_transactions_total",
        kind: "counter",
        help: "Transactions (or session-mode relays) served.",
    },
    Family {
        name: "tidepool_queries_total",
        kind: "counter",
        help: "Simple queries and extended-protocol Syncs sent by clients.",
    },
    Family {
        name: "tidepool_client_received_bytes_total",
        kind: "counter",
        help: "Bytes received from clients.",
    },
    Family {
        name: "tidepool_client_sent_bytes_total",
        kind: "counter",
        help: "Bytes sent to clients.",
    },
    Family {
        name: "tidepool_prepared_statement_hits_total",
        kind: "counter",
        help: "Named statements a server already had.",
    },
    Family {
        name: "tidepool_prepared_statement_prepares_total",
        kind: "counter",
        help: "Named statements prepared on a server.",
    },
    Family {
        name: "tidepool_prepared_statement_evictions_total",
        kind: "counter",
        help: "Named statements closed to keep a server's cache bounded.",
    },
    Family {
        name: "tidepool_prepared_statement_shape_checks_total",
        kind: "counter",
        help: "Server copies of named statements prepared again and described before a Bind, to compare their columns and parameter types with what the client was told.",
    },
    Family {
        name: "tidepool_prepared_statement_stale_total",
        kind: "counter",
        help: "Binds failed with SQLSTATE 0A000 because a schema change altered the statement since its client described it.",
    },
    Family {
        name: "tidepool_checkout_duration_seconds",
        kind: "histogram",
        help: "Time a client waited for a server connection.",
    },
    Family {
        name: "tidepool_transaction_duration_seconds",
        kind: "histogram",
        help: "Time a server connection was held per transaction.",
    },
];

/// Writes the gauges of the whole process (not per tenant).
pub fn render_process(process: &ProcessCounts, out: &mut String) {
    for (name, kind, help, value) in [
        (
            "tidepool_parked_clients",
            "gauge",
            "Idle clients parked outside the runtime (no task, no reactor slot) until they send something.",
            process.parked_clients,
        ),
        (
            "tidepool_console_logins_total",
            "counter",
            "Admin console logins that succeeded.",
            process.console_logins_ok,
        ),
        (
            "tidepool_console_logins_failed_total",
            "counter",
            "Admin console logins refused: a wrong password, another user, or TLS required.",
            process.console_logins_failed,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Counts of the whole process, not of a tenant.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCounts {
    pub parked_clients: u64,
    pub console_logins_ok: u64,
    pub console_logins_failed: u64,
}

/// Admin console logins, counted as they end.
#[derive(Debug, Default)]
pub struct ConsoleLogins {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Writes `rows` in the Prometheus text format (version 0.0.4).
pub fn render(rows: &[Row<'_>], out: &mut String) {
    for (i, family) in FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for row in rows {
            let labels = label_text(&row.labels);
            let s = row.stats;
            let g = row.gauges;
            let value = match i {
                0 => g.clients,
                1 => s.logins_ok.load(Ordering::Relaxed),
                2 => s.logins_failed.load(Ordering::Relaxed),
                3 => g.servers_idle,
                4 => g.servers_active,
                5 => g.clients_waiting,
                6 => g.clients_parked,
                7 => s.transactions.load(Ordering::Relaxed),
                8 => s.queries.load(Ordering::Relaxed),
                9 => s.client_bytes_in.load(Ordering::Relaxed),
                10 => s.client_bytes_out.load(Ordering::Relaxed),
                11 => s.statements_hit.load(Ordering::Relaxed),
                12 => s.statements_prepared.load(Ordering::Relaxed),
                13 => s.statements_evicted.load(Ordering::Relaxed),
                14 => s.statements_shape_checked.load(Ordering::Relaxed),
                15 => s.statements_stale.load(Ordering::Relaxed),
                16 => {
                    histogram(out, family.name, &labels, &s.checkout);
                    continue;
                }
                _ => {
                    histogram(out, family.name, &labels, &s.transaction);
                    continue;
                }
            };
            let _ = writeln!(out, "{}{{{labels}}} {value}", family.name);
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(&h.buckets) {
        cumulative += count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn label_text(l: &Labels<'_>) -> String {
    let mut s = String::with_capacity(64);
    for (i, (k, v)) in [
        ("tenant", l.tenant),
        ("user", l.user),
        ("db", l.db),
        ("mode", l.mode),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let stats = UserStats::default();
        stats.add_transaction(
            &TxCounts {
                queries: 2,
                bytes_in: 10,
                bytes_out: 20,
            },
            Duration::from_millis(3),
        );
        stats.checkout.observe(Duration::from_micros(50));
        let rows = [Row {
            labels: Labels {
                tenant: "t1",
                user: "a\"b",
                db: "app",
                mode: "transaction",
            },
            gauges: Gauges {
                clients: 3,
                ..Gauges::default()
            },
            stats: &stats,
        }];
        let mut out = String::new();
        render(&rows, &mut out);
        let l = r#"tenant="t1",user="a\"b",db="app",mode="transaction""#;
        assert!(out.contains(&format!("tidepool_client_connections{{{l}}} 3\n")));
        assert!(out.contains(&format!("tidepool_queries_total{{{l}}} 2\n")));
        assert!(out.contains(&format!("tidepool_client_sent_bytes_total{{{l}}} 20\n")));
        assert!(out.contains(&format!(
            "tidepool_transaction_duration_seconds_bucket{{{l},le=\"0.0025\"}} 0\n"
        )));
        assert!(out.contains(&format!(
            "tidepool_transaction_duration_seconds_bucket{{{l},le=\"0.005\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "tidepool_checkout_duration_seconds_count{{{l}}} 1\n"
        )));
        assert!(out.contains("# TYPE tidepool_transactions_total counter\n"));
    }
}
