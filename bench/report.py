#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into results.md, results.json and
chart.png; also computes the p99 latency of pgbench per-transaction logs.

    report.py p99 LOGFILE...   prints the 99th percentile latency in ms
    report.py report OUT_DIR   reads OUT_DIR/runs.tsv, machine.txt and raw/

It owns the arithmetic (medians, CPU per transaction, memory per client) and
the presentation; it measures nothing itself. Standard library only, except
matplotlib for the chart, which is skipped when it cannot be imported.
"""

import json
import math
import re
import statistics
import sys
from pathlib import Path

POOLERS = ("tidepool", "pgbouncer")
LABELS = {"tidepool": "Tidepool", "pgbouncer": "PgBouncer", "direct": "direct"}
WORKLOAD_TITLES = {
    "select-simple-c50": "-S -M simple -c 50",
    "select-extended-c50": "-S -M extended -c 50",
    "select-prepared-c50": "-S -M prepared -c 50",
    "select-simple-c400": "-S -M simple -c 400",
    "tpcb-c50": "TPC-B -M simple -c 50",
    "select-extended-tls-c50": "-S -M extended -c 50, TLS",
}
# How the poolers reach PostgreSQL (BENCH_UPSTREAM), in words.
UPSTREAM_WORDS = {"tcp": "TCP on 127.0.0.1", "unix": "its Unix-domain socket"}
# Measured and shown, but not among the workloads issue 5's bar names.
OUTSIDE_THE_BAR = {"select-extended-tls-c50"}


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def p99_of_logs(paths):
    """pgbench --log lines: client_id transaction_no time script_no epoch usec.
    `time` is the transaction's latency in microseconds, or `failed`/`skipped`."""
    latencies = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    value = percentile(latencies, 0.99)
    return None if value is None else value / 1000.0


def read_records(path):
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = {}
        for field in line.split("\t"):
            key, _, value = field.partition("=")
            record[key] = value
        records.append(record)
    return records


def read_machine(path):
    machine = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            machine[key] = value
    return machine


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_pgbench(text):
    """The figures of one pgbench output (PostgreSQL 15 and later wording)."""

    def find(pattern):
        match = re.search(pattern, text, re.MULTILINE)
        return match.group(1) if match else None

    errors = re.findall(r"^pgbench: (?:error|fatal): (.*)$", text, re.MULTILINE)
    return {
        "tps": number(find(r"^tps = ([0-9.]+)")),
        "transactions": number(find(r"^number of transactions actually processed: ([0-9]+)")),
        "failed": number(find(r"^number of failed transactions: ([0-9]+)")),
        "latency_avg_ms": number(find(r"^latency average = ([0-9.]+) ms")),
        "aborted_clients": len(re.findall(r"client \d+ aborted", text)),
        "first_error": errors[0] if errors else None,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pgbench_runs(records, out_dir, clk_tck):
    runs = []
    for record in records:
        if record.get("kind") not in ("workload", "latency", "scaling"):
            continue
        out_file = out_dir / record.get("out", "")
        text = out_file.read_text(encoding="utf-8", errors="replace") if out_file.is_file() else ""
        run = dict(record)
        run.update(parse_pgbench(text))
        run["exit"] = int(record.get("exit") or 0)
        run["clients"] = int(record.get("clients") or 0)
        run["p99_ms"] = number(record.get("p99_ms"))
        peak = number(record.get("rss_peak_kb"))
        run["rss_peak_mb"] = peak / 1024 if peak is not None else None
        ticks = number(record.get("cpu_ticks"))
        run["cpu_us_per_tx"] = (
            ticks * 1e6 / clk_tck / run["transactions"]
            if ticks is not None and run["transactions"]
            else None
        )
        sys_ticks = number(record.get("sys_ticks"))
        run["sys_us_per_tx"] = (
            sys_ticks * 1e6 / clk_tck / run["transactions"]
            if sys_ticks is not None and run["transactions"]
            else None
        )
        run["ok"] = run["exit"] == 0 and not run["failed"] and not run["aborted_clients"] and bool(run["transactions"])
        runs.append(run)
    return runs


def summarize(runs):
    """Medians over rounds per (kind, workload, target)."""
    groups = {}
    for run in runs:
        groups.setdefault((run["kind"], run["workload"], run["target"]), []).append(run)
    summary = {}
    for key, group in groups.items():
        bad = [r for r in group if not r["ok"]]
        problem = None
        if bad:
            first = bad[0]
            if first["first_error"]:
                reason = first["first_error"]
            elif first["failed"]:
                reason = f"{int(first['failed'])} failed transactions"
            elif not first["transactions"]:
                reason = "no transaction processed (did the clients finish connecting within -T?)"
            else:
                reason = f"pgbench exit {first['exit']}"
            problem = f"{len(bad)} of {len(group)} runs failed: {reason}"
        summary[key] = {
            "rounds": len(group),
            "all_failed": len(bad) == len(group),
            "clients": group[0]["clients"],
            "tps": median(r["tps"] for r in group),
            "cpu_us_per_tx": median(r["cpu_us_per_tx"] for r in group),
            "sys_us_per_tx": median(r.get("sys_us_per_tx") for r in group),
            "latency_avg_ms": median(r["latency_avg_ms"] for r in group),
            "p99_ms": median(r["p99_ms"] for r in group),
            # The first round's: client counts rise run by run there, so each
            # peak is what that many clients took (later rounds start from the
            # high-water mark of the largest count).
            "rss_peak_mb": min(group, key=lambda r: int(r.get("round") or 0)).get("rss_peak_mb"),
            "failed_transactions": sum(int(r["failed"] or 0) for r in group),
            "problem": problem,
            "tps_rounds": [r["tps"] for r in group],
        }
    return summary


def fmt(value, digits=0, unit=""):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def cell(entry, metric, digits=0):
    """A table cell for one summary figure; a workload that failed in every
    round shows "failed" rather than the partial figure of an aborted run."""
    if not entry:
        return "n/a"
    if entry.get("all_failed"):
        return "failed"
    return fmt(entry.get(metric), digits)


def good(entry, metric):
    return None if not entry or entry.get("all_failed") else entry.get(metric)


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}x"


def idle_rows(records):
    rows = []
    for record in records:
        if record.get("kind") != "idle":
            continue
        opened = number(record.get("opened")) or 0
        base = number(record.get("rss0_kb"))
        loaded = number(record.get("rss_kb"))
        per_client = (loaded - base) / opened if opened and base is not None and loaded is not None else None
        rows.append(
            {
                "target": record["target"],
                "tls": record.get("tls") == "on",
                "tls_version": record.get("tls_version") or None,
                "count": int(record["count"]),
                "opened": int(opened),
                "failed": int(number(record.get("failed")) or 0),
                "still_open": int(number(record.get("still_open")) or 0),
                "rss0_kb": base,
                "rss_kb": loaded,
                "kb_per_client": per_client,
                "open_secs": number(record.get("open_secs")),
                "first_error": record.get("first_error") or None,
            }
        )
    return rows


def storm_summary(records, clk_tck):
    groups = {}
    for record in records:
        if record.get("kind") != "storm":
            continue
        ok = number(record.get("ok")) or 0
        ticks = number(record.get("cpu_ticks"))
        groups.setdefault((record["target"], record.get("tls") == "on"), []).append(
            {
                "rate": number(record.get("rate")),
                "ok": ok,
                "failed": number(record.get("failed")) or 0,
                "login_p50_ms": number(record.get("login_p50_ms")),
                "login_p99_ms": number(record.get("login_p99_ms")),
                "cpu_us_per_login": ticks * 1e6 / clk_tck / ok if ticks is not None and ok else None,
                "first_error": record.get("first_error") or None,
            }
        )
    # Keyed by (pooler, over TLS).
    return {
        key: {
            "rounds": len(group),
            "rate": median(g["rate"] for g in group),
            "failed": sum(g["failed"] for g in group),
            "login_p50_ms": median(g["login_p50_ms"] for g in group),
            "login_p99_ms": median(g["login_p99_ms"] for g in group),
            "cpu_us_per_login": median(g["cpu_us_per_login"] for g in group),
            "first_error": next((g["first_error"] for g in group if g["first_error"]), None),
        }
        for key, group in groups.items()
    }


def markdown(machine, summary, idle, storm, runs):
    quick = machine.get("quick") == "1"
    rounds = machine.get("rounds", "?")
    lines = []
    title = "Tidepool vs PgBouncer"
    if quick:
        title += " (quick run: short runs, smaller client counts; for checking the tool, not for quoting)"
    elif rounds != "3" or machine.get("duration") != "30":
        title += f" ({rounds} round(s) of {machine.get('duration', '?')} s: not the full benchmark's settings)"
    lines += [f"# {title}", ""]
    lines += [
        f"{machine.get('date', '?')}; {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory', '?')}, {machine.get('kernel', '?')}, {machine.get('os', '?')}; "
        f"load average at start {machine.get('loadavg_start', '?')}, at end {machine.get('loadavg_end', '?')}.",
        "",
        f"{machine.get('postgres', '?')}; {machine.get('pgbouncer', '?')}; Tidepool {machine.get('tidepool_rev', '?')} "
        f"(release build); {machine.get('pgbench', '?')}.",
        "",
        f"pgbench scale {machine.get('scale', '?')}, pool size {machine.get('pool_size', '?')}, transaction mode, "
        f"poolers to PostgreSQL over {UPSTREAM_WORDS.get(machine.get('upstream', 'tcp'), '?')}, "
        f"{machine.get('duration', '?')} s per run, {rounds} round(s), -j {machine.get('threads', '?')}; "
        "figures are medians over the rounds. CPU is the pooler's utime+stime from /proc over the whole "
        "pgbench run (logins included) divided by the transactions pgbench counted.",
        "",
        "## Workloads",
        "",
        "| Workload | Tidepool tps | PgBouncer tps | tps ratio | Tidepool CPU µs/tx | PgBouncer CPU µs/tx | CPU ratio | Notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workload, title in WORKLOAD_TITLES.items():
        tp = summary.get(("workload", workload, "tidepool"), {})
        pb = summary.get(("workload", workload, "pgbouncer"), {})
        notes = []
        for label, entry in (("Tidepool", tp), ("PgBouncer", pb)):
            if entry.get("problem"):
                notes.append(f"{label}: {entry['problem']}")
        lines.append(
            f"| `{title}` | {cell(tp, 'tps')} | {cell(pb, 'tps')} | {ratio(good(tp, 'tps'), good(pb, 'tps'))} "
            f"| {cell(tp, 'cpu_us_per_tx', 1)} | {cell(pb, 'cpu_us_per_tx', 1)} "
            f"| {ratio(good(tp, 'cpu_us_per_tx'), good(pb, 'cpu_us_per_tx'))} | {'; '.join(notes).replace('|', '/')} |"
        )
    lines += [
        "",
        "Ratios are Tidepool / PgBouncer: above 1 is better for tps, below 1 is better for CPU. "
        "The TLS workload (both poolers given one self-signed RSA-2048 certificate, "
        "`PGSSLMODE=require`) is not among issue 5's workloads and is left out of the bar below; "
        "every other run is plain TCP.",
        "",
    ]

    lines += [
        "### Where the CPU goes: kernel (system) time per transaction",
        "",
        "| Workload | Tidepool kernel µs/tx | Tidepool user µs/tx | PgBouncer kernel µs/tx | PgBouncer user µs/tx |",
        "|---|---:|---:|---:|---:|",
    ]
    for workload, title in WORKLOAD_TITLES.items():
        tp = summary.get(("workload", workload, "tidepool"), {})
        pb = summary.get(("workload", workload, "pgbouncer"), {})

        def split(entry):
            total, kernel = good(entry, "cpu_us_per_tx"), good(entry, "sys_us_per_tx")
            if total is None or kernel is None:
                return "n/a", "n/a"
            return f"{kernel:.1f}", f"{total - kernel:.1f}"

        tk, tu = split(tp)
        pk, pu = split(pb)
        lines.append(f"| `{title}` | {tk} | {tu} | {pk} | {pu} |")
    lines += [""]

    lines += [
        "## Added latency at 1 client (`-S -M simple -c 1`)",
        "",
        "| Target | avg latency ms | added vs direct µs | tps | Notes |",
        "|---|---:|---:|---:|---|",
    ]
    direct = summary.get(("latency", "select-simple-c1", "direct"), {}).get("latency_avg_ms")
    for target in ("tidepool", "pgbouncer", "direct"):
        entry = summary.get(("latency", "select-simple-c1", target), {})
        latency = entry.get("latency_avg_ms")
        added = (latency - direct) * 1000 if latency is not None and direct is not None and target != "direct" else None
        lines.append(
            f"| {LABELS[target]} | {cell(entry, 'latency_avg_ms', 3)} | {fmt(added, 0) if target != 'direct' else '—'} "
            f"| {cell(entry, 'tps')} | {(entry.get('problem') or '').replace('|', '/')} |"
        )
    lines += ["", "Added latency = average latency through the pooler minus the direct one, same round count.", ""]

    lines += [
        "## Scaling (`-S -M extended`, pool 20)",
        "",
        "| Clients | Tidepool tps | Tidepool p99 ms | Tidepool CPU µs/tx | Tidepool peak RSS MB "
        "| PgBouncer tps | PgBouncer p99 ms | PgBouncer CPU µs/tx | PgBouncer peak RSS MB | Notes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    scaling = sorted(
        {(entry["clients"], workload) for (kind, workload, _), entry in summary.items() if kind == "scaling"}
    )
    for clients, workload in scaling:
        tp = summary.get(("scaling", workload, "tidepool"), {})
        pb = summary.get(("scaling", workload, "pgbouncer"), {})
        notes = [f"{label}: {e['problem']}" for label, e in (("Tidepool", tp), ("PgBouncer", pb)) if e.get("problem")]
        lines.append(
            f"| {clients:,} | {cell(tp, 'tps')} | {cell(tp, 'p99_ms', 2)} | {cell(tp, 'cpu_us_per_tx', 1)} "
            f"| {cell(tp, 'rss_peak_mb', 1)} "
            f"| {cell(pb, 'tps')} | {cell(pb, 'p99_ms', 2)} | {cell(pb, 'cpu_us_per_tx', 1)} "
            f"| {cell(pb, 'rss_peak_mb', 1)} "
            f"| {'; '.join(notes).replace('|', '/')} |"
        )
    lines += [
        "",
        "p99 is the nearest-rank 99th percentile of every transaction's latency in pgbench's "
        "per-transaction log (`--log`), pooled over the run. CPU per transaction includes the "
        "logins of all clients at the start of the run, which weighs at 1,000+ clients. "
        "Peak RSS is the pooler's highest resident memory during the first round's run at that "
        "client count, read every 0.2 s. Client counts rise run by run within a round, so it is "
        "what that many busy clients took, on top of what the runs before left allocated "
        "(neither pooler gives memory back at once); later rounds start from the 5,000-client "
        "high-water mark and are not shown.",
        "",
    ]

    lines += [
        "## Memory per idle client",
        "",
        "| Pooler | Clients over | Idle clients | Opened | Failed | RSS before KB | RSS with clients KB | KB per idle client | Still open at end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(idle, key=lambda r: (r["tls"], r["count"], r["target"] != "tidepool")):
        lines.append(
            f"| {LABELS[row['target']]} | {'TLS' if row['tls'] else 'TCP'} | {row['count']:,} | {row['opened']:,} | {row['failed']:,} "
            f"| {fmt(row['rss0_kb'])} | {fmt(row['rss_kb'])} | {fmt(row['kb_per_client'], 2)} | {row['still_open']:,} |"
        )
    lines += [
        "",
        "Each pooler is restarted before each count; RSS before is read after one short pgbench run "
        "(pool filled), RSS with clients 3 s after the last login; KB per idle client = "
        "(RSS with clients - RSS before) / opened.",
        "",
    ]
    versions = sorted({f"{LABELS[r['target']]} {r['tls_version']}" for r in idle if r["tls"] and r["tls_version"]})
    if versions:
        lines += [
            "TLS clients connect as libpq's sslmode=require does (no certificate check) and log in the "
            f"same way; version agreed: {', '.join(versions)}.",
            "",
        ]
    errors = [r for r in idle if r["first_error"]]
    for row in errors:
        over = " over TLS" if row["tls"] else ""
        lines.append(
            f"- {LABELS[row['target']]}, {row['count']:,} clients{over}: first error: {row['first_error']}"
        )
    if errors:
        lines.append("")

    lines += [
        f"## Connection storm ({machine.get('storm_concurrency', '?')} concurrent clients, "
        f"{machine.get('storm_secs', '?')} s, connect + SCRAM login + Terminate)",
        "",
        "| Pooler | Clients over | Logins/s | Failed | Login p50 ms | Login p99 ms | CPU µs per login | Notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for tls, target in [(tls, target) for tls in (False, True) for target in POOLERS]:
        entry = storm.get((target, tls))
        if not entry:
            continue
        note = f"first error: {entry['first_error']}" if entry["first_error"] else ""
        lines.append(
            f"| {LABELS[target]} | {'TLS' if tls else 'TCP'} | {fmt(entry['rate'])} | {fmt(entry['failed'])} | {fmt(entry['login_p50_ms'], 2)} "
            f"| {fmt(entry['login_p99_ms'], 2)} | {fmt(entry['cpu_us_per_login'], 0)} | {note.replace('|', '/')} |"
        )
    lines += [
        "",
        "CPU per login is the pooler's CPU time over the storm divided by the logins completed; "
        "the client caches the salted password, so only the pooler pays for SCRAM on each login. "
        "Over TLS each login is also a full TLS handshake (no session resumption), "
        "which the pooler signs with the benchmark's RSA-2048 key.",
        "",
    ]
    lines += bar_check(summary, idle)
    lines += all_runs_table(runs)
    return "\n".join(lines)


def bar_check(summary, idle):
    """Issue 5's bar, criterion by criterion, from this run's medians."""

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    tps_misses, cpu_misses, tps_seen, cpu_seen = [], [], 0, 0
    for (kind, workload, target), entry in sorted(summary.items()):
        if target != "tidepool" or kind not in ("workload", "scaling") or workload in OUTSIDE_THE_BAR:
            continue
        other = summary.get((kind, workload, "pgbouncer"), {})
        tp_tps, pb_tps = good(entry, "tps"), good(other, "tps")
        if entry.get("all_failed"):
            tps_misses.append(f"{workload} (Tidepool failed)")
        elif tp_tps is not None and pb_tps:
            tps_seen += 1
            if tp_tps < pb_tps:
                tps_misses.append(f"{workload} ({tp_tps / pb_tps:.2f}x)")
        tp_cpu, pb_cpu = good(entry, "cpu_us_per_tx"), good(other, "cpu_us_per_tx")
        if tp_cpu is not None and pb_cpu:
            cpu_seen += 1
            if tp_cpu > 0.7 * pb_cpu:
                cpu_misses.append(f"{workload} ({tp_cpu / pb_cpu:.2f}x)")
    memory = {}
    for row in idle:
        # The bar is about plain clients; TLS ones are listed in the memory table.
        if row["kb_per_client"] is not None and not row["tls"]:
            memory.setdefault(row["count"], {})[row["target"]] = row["kb_per_client"]
    memory_misses = [
        f"{count:,} clients ({m['tidepool']:.2f} vs {m['pgbouncer']:.2f} KB)"
        for count, m in sorted(memory.items())
        if "tidepool" in m and "pgbouncer" in m and m["tidepool"] > m["pgbouncer"]
    ]
    memory_seen = sum(1 for m in memory.values() if "tidepool" in m and "pgbouncer" in m)
    latency = {t: good(summary.get(("latency", "select-simple-c1", t), {}), "latency_avg_ms") for t in POOLERS}
    latency_ok = None if None in latency.values() else latency["tidepool"] <= latency["pgbouncer"]
    prepared = summary.get(("workload", "select-prepared-c50", "tidepool"))
    prepared_ok = None if prepared is None else not prepared.get("problem")
    lines = [
        "## Against the bar of issue 5 (this run's medians)",
        "",
        f"- tps >= 1.0x PgBouncer on every workload and scaling point: "
        f"{verdict(None if not tps_seen and not tps_misses else not tps_misses)}"
        f"{': ' + ', '.join(tps_misses) if tps_misses else ''}",
        f"- CPU per transaction <= 0.7x PgBouncer's: {verdict(None if not cpu_seen else not cpu_misses)}"
        f"{': ' + ', '.join(cpu_misses) if cpu_misses else ''}",
        f"- memory per idle client <= PgBouncer's: {verdict(None if not memory_seen else not memory_misses)}"
        f"{': ' + ', '.join(memory_misses) if memory_misses else ''}",
        f"- added latency at 1 client <= PgBouncer's: {verdict(latency_ok)}",
        f"- `-M prepared` works through Tidepool: {verdict(prepared_ok)}",
        "",
    ]
    return lines


def all_runs_table(runs):
    lines = [
        "## Every pgbench run",
        "",
        "Connect = pgbench's initial connection time; measured = the -T seconds left after it "
        "(what tps is computed over).",
        "",
        "| Kind | Workload | Target | Round | tps | Failed tx | Exit | CPU µs/tx | p99 ms | Connect s | Measured s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        connect = number(run.get("connect_ms"))
        lines.append(
            f"| {run['kind']} | {run['workload']} | {LABELS.get(run['target'], run['target'])} | {run.get('round')} "
            f"| {fmt(run['tps'])} | {fmt(run['failed'])} | {run['exit']} | {fmt(run['cpu_us_per_tx'], 1)} "
            f"| {fmt(run['p99_ms'], 2)} | {fmt(connect / 1000 if connect is not None else None, 1)} "
            f"| {fmt(number(run.get('steady_secs')), 1)} |"
        )
    lines.append("")
    return lines


def chart(path, summary):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not available: chart.png skipped", file=sys.stderr)
        return False
    colors = {"tidepool": "#1f77b4", "pgbouncer": "#ff7f0e"}
    workloads = list(WORKLOAD_TITLES)
    figure, axes = plt.subplots(2, 2, figsize=(14, 9))
    width = 0.38
    for axis, metric, title in (
        (axes[0][0], "tps", "Throughput (tps, higher is better)"),
        (axes[0][1], "cpu_us_per_tx", "Pooler CPU per transaction (µs, lower is better)"),
    ):
        for index, target in enumerate(POOLERS):
            values = [good(summary.get(("workload", w, target), {}), metric) or 0 for w in workloads]
            positions = [i + (index - 0.5) * width for i in range(len(workloads))]
            bars = axis.bar(positions, values, width, label=LABELS[target], color=colors[target])
            for bar, workload in zip(bars, workloads):
                if summary.get(("workload", workload, target), {}).get("problem"):
                    axis.annotate("failed", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                  ha="center", va="bottom", fontsize=8, color="red")
        axis.set_xticks(range(len(workloads)))
        axis.set_xticklabels([WORKLOAD_TITLES[w].replace(" -c", "\n-c") for w in workloads], fontsize=8)
        axis.set_title(title)
        axis.legend()
        axis.grid(axis="y", alpha=0.3)
    scaling = sorted({(e["clients"], w) for (k, w, _), e in summary.items() if k == "scaling"})
    for axis, metric, title in (
        (axes[1][0], "tps", "Scaling, -S -M extended: tps"),
        (axes[1][1], "p99_ms", "Scaling, -S -M extended: p99 latency (ms)"),
    ):
        for target in POOLERS:
            points = [(c, good(summary.get(("scaling", w, target), {}), metric)) for c, w in scaling]
            points = [(c, v) for c, v in points if v is not None]
            if points:
                axis.plot([c for c, _ in points], [v for _, v in points], marker="o",
                          label=LABELS[target], color=colors[target])
        axis.set_xscale("log")
        axis.set_xticks([c for c, _ in scaling])
        axis.set_xticklabels([f"{c:,}" for c, _ in scaling])
        axis.minorticks_off()
        if metric == "p99_ms":
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0)
        axis.set_xlabel("clients")
        axis.set_title(title)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def report(out_dir):
    machine = read_machine(out_dir / "machine.txt")
    clk_tck = float(machine.get("clk_tck") or 100)
    records = read_records(out_dir / "runs.tsv")
    runs = pgbench_runs(records, out_dir, clk_tck)
    summary = summarize(runs)
    idle = idle_rows(records)
    storm = storm_summary(records, clk_tck)
    (out_dir / "results.md").write_text(markdown(machine, summary, idle, storm, runs), encoding="utf-8")
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "summary": [
                    {"kind": k, "workload": w, "target": t, **entry} for (k, w, t), entry in sorted(summary.items())
                ],
                "runs": runs,
                "idle": idle,
                "storm": [{"target": t, "tls": tls, **entry} for (t, tls), entry in sorted(storm.items())],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    chart(out_dir / "chart.png", summary)


def main(argv):
    if len(argv) >= 2 and argv[1] == "p99":
        value = p99_of_logs(argv[2:])
        if value is None:
            return 1
        print(f"{value:.3f}")
        return 0
    if len(argv) == 3 and argv[1] == "report":
        report(Path(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
