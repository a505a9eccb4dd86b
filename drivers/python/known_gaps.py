"""Known gaps of transaction mode, checked with psycopg 3: session state
that outlives a transaction. Usage: known_gaps.py listen|advisory-lock|temp-table

Each check runs its client while other clients keep the 3 server
connections busy, so that a client whose state is not carried along lands
on a server without it (or another client lands on the server with it).
scripts/drivers.sh reports these apart and does not fail on them.
"""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg

from report import CLIENTS, Report, expect

CHANNEL = "tidepool_known_gap"
LOCK_KEY = 4242


def connect():
    return psycopg.connect(autocommit=True, connect_timeout=10)


def with_bystanders(bystander, main):
    """Runs main() while CLIENTS - 1 threads each call bystander(conn, stop)
    until main returns; returns main's result and the bystanders' findings."""
    stop = threading.Event()
    findings = []

    def one():
        with connect() as conn:
            findings.extend(bystander(conn, stop))

    with ThreadPoolExecutor(CLIENTS - 1) as pool:
        futures = [pool.submit(one) for _ in range(CLIENTS - 1)]
        try:
            main()
        finally:
            stop.set()
            for future in futures:
                future.result(timeout=60)
    return findings


def busy_until(conn, stop, query):
    seen = []
    while not stop.is_set():
        with conn.transaction():
            seen.append(conn.execute(query).fetchone()[0])
    return seen


def listen_notify():
    received_by_bystanders = []

    def bystander(conn, stop):
        conn.add_notify_handler(received_by_bystanders.append)
        busy_until(conn, stop, "SELECT 1")
        return []

    def main():
        with connect() as listener, connect() as notifier:
            listener.execute(f"LISTEN {CHANNEL}")
            for n in range(5):
                listener.execute("SELECT 1")  # a few transactions on whatever server comes
                notifier.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"hello {n}"))
            got = [n.payload for n in listener.notifies(timeout=5, stop_after=5)]
            expect(got == [f"hello {n}" for n in range(5)], f"listener got {got}, expected hello 0..4")

    with_bystanders(bystander, main)
    expect(not received_by_bystanders, f"clients that never listened got {len(received_by_bystanders)} notifications")


def advisory_lock():
    # Bystanders look at pg_locks rather than trying the lock themselves: a
    # pg_try_advisory_lock would pin each of them to a server too.
    def bystander(conn, stop):
        query = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                 f" AND objid = {LOCK_KEY} AND pid = pg_backend_pid()")
        return [held for held in busy_until(conn, stop, query) if held]

    def main():
        with connect() as holder:
            holder.execute(f"SELECT pg_advisory_lock({LOCK_KEY})")
            for round_ in range(20):
                with holder.transaction():
                    held = holder.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
                        " AND pid = pg_backend_pid() AND granted", (LOCK_KEY,)).fetchone()[0]
                expect(held == 1, f"transaction {round_}: the holder's session does not hold the lock")
            expect(holder.execute(f"SELECT pg_advisory_unlock({LOCK_KEY})").fetchone()[0], "unlock found no lock to release")

    stolen = with_bystanders(bystander, main)
    expect(not stolen, f"other clients ran {len(stolen)} times on the session that holds the lock")


def temp_table():
    def bystander(conn, stop):
        return [name for name in busy_until(conn, stop, "SELECT to_regclass('gap_temp')::text") if name]

    def main():
        with connect() as owner:
            owner.execute("CREATE TEMP TABLE gap_temp (x int)")
            for round_ in range(20):
                with owner.transaction():
                    owner.execute("INSERT INTO gap_temp VALUES (%s)", (round_,))
                    count = owner.execute("SELECT count(*) FROM gap_temp").fetchone()[0]
                expect(count == round_ + 1, f"transaction {round_}: {count} rows in the temp table")

    seen = with_bystanders(bystander, main)
    expect(not seen, f"other clients saw the temp table {len(seen)} times")


CHECKS = {
    "listen": ("LISTEN in one client, NOTIFY from another, nothing to bystanders", listen_notify),
    "advisory-lock": ("session advisory lock held across transactions", advisory_lock),
    "temp-table": ("TEMP table used across transactions, invisible to others", temp_table),
}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: known_gaps.py {'|'.join(CHECKS)}")
    report = Report()
    report.check(*CHECKS[sys.argv[1]])
    report.exit()


if __name__ == "__main__":
    main()
