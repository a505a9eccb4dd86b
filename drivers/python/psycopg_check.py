"""psycopg 3 through Tidepool in transaction mode.

Every connection uses prepare_threshold=0, so every query is a named
server-side statement (_pg3_0, _pg3_1, ... on each connection: the names
collide across clients). Ten connections run at once over 3 server
connections, each with its own application_name and TimeZone.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import errors, sql

from report import CLIENTS, PROBE_TIMEOUT, ROUNDS, Report, expect

ZONES = [
    "UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris", "Australia/Sydney",
    "Asia/Kolkata", "America/Los_Angeles", "Africa/Cairo", "America/Sao_Paulo",
    "Pacific/Auckland",
]


def connect(**kwargs):
    return psycopg.connect(prepare_threshold=0, connect_timeout=10, **kwargs)


def create_tables():
    with connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS psycopg_items, psycopg_copy")
        conn.execute("CREATE TABLE psycopg_items (worker int, round int, note text, PRIMARY KEY (worker, round))")
        conn.execute("CREATE TABLE psycopg_copy (worker int, n int, note text)")


def run_concurrently(work):
    """Opens CLIENTS connections, waits until all are open, then runs
    work(conn, worker) on each in its own thread."""
    barrier = threading.Barrier(CLIENTS, timeout=60)

    def one(worker):
        with connect(application_name=f"psycopg-{worker}") as conn:
            barrier.wait()
            work(conn, worker)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(one, w) for w in range(CLIENTS)]:
            future.result()


def bounded(seconds, function, *args):
    """Runs function in a daemon thread; raises TimeoutError if it has not
    finished after `seconds` (the thread is then left to end on its own)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"still waiting after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def idle_clients_after_pipeline():
    """CLIENTS clients one after another each run a pipeline and then stay
    connected, idle: every one must still get a server connection, because an
    idle client holds none in transaction mode."""
    idle = []

    def one_pipeline():
        conn = connect(autocommit=True)
        idle.append(conn)
        # The pipeline is the client's last action before it goes idle.
        with conn.pipeline():
            cursor = conn.execute("SELECT %s::int", (1,))
        expect(cursor.fetchone()[0] == 1, "wrong answer from the pipeline")

    try:
        for n in range(CLIENTS):
            try:
                bounded(PROBE_TIMEOUT, one_pipeline)
            except TimeoutError:
                raise AssertionError(
                    f"client {n + 1} waited over {PROBE_TIMEOUT} s for a server connection while"
                    f" {n} clients sat idle after a pipeline (they still hold their servers)") from None
    finally:
        for conn in idle:
            conn.close()


def prepared_transactions_and_settings(conn, worker):
    zone = ZONES[worker % len(ZONES)]
    conn.execute(sql.SQL("SET TimeZone TO {}").format(zone))
    conn.commit()
    for round_ in range(ROUNDS):
        with conn.transaction():
            total = conn.execute("SELECT %s::int + %s::int", (round_, worker)).fetchone()[0]
            expect(total == round_ + worker, f"{round_} + {worker} came back as {total}")
            conn.execute(
                "INSERT INTO psycopg_items (worker, round, note) VALUES (%s, %s, %s)",
                (worker, round_, f"w{worker}r{round_}"),
            )
            count = conn.execute("SELECT count(*) FROM psycopg_items WHERE worker = %s", (worker,)).fetchone()[0]
            expect(count == round_ + 1, f"round {round_}: {count} rows inside the transaction")
        seen = conn.execute("SELECT current_setting('TimeZone'), current_setting('application_name')").fetchone()
        conn.commit()
        expect(seen == (zone, f"psycopg-{worker}"), f"round {round_}: expected {(zone, f'psycopg-{worker}')}, saw {seen}")


def executemany_and_copy(conn, worker):
    rows = [(worker, 1000 + i, f"many {i}") for i in range(50)]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO psycopg_items (worker, round, note) VALUES (%s, %s, %s)", rows)
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY psycopg_copy (worker, n, note) FROM STDIN") as copy:
            for n in range(200):
                copy.write_row((worker, n, f"copied {n}\ttab"))
    with conn.transaction(), conn.cursor() as cur:
        query = sql.SQL("COPY (SELECT n, note FROM psycopg_copy WHERE worker = {} ORDER BY n) TO STDOUT").format(worker)
        with cur.copy(query) as copy:
            copy.set_types(["int4", "text"])
            back = list(copy.rows())
    expect(back == [(n, f"copied {n}\ttab") for n in range(200)], f"COPY TO gave {len(back)} rows, not the 200 written")
    count = conn.execute("SELECT count(*) FROM psycopg_items WHERE worker = %s AND round >= 1000", (worker,)).fetchone()[0]
    conn.commit()
    expect(count == 50, f"executemany left {count} rows, expected 50")


def pipeline(conn, worker):
    for _ in range(5):
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int * 2, %s::int", (i, worker)) for i in range(20)]
            results = [cur.fetchone() for cur in cursors]
        conn.commit()
        expect(results == [(i * 2, worker) for i in range(20)], f"pipelined results out of order or wrong: {results[:3]}...")
    # A transaction inside a pipeline, with an error that must roll it back.
    conn.autocommit = True
    try:
        with conn.pipeline():
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO psycopg_items (worker, round) VALUES (%s, 5000)", (worker,))
                    conn.execute("SELECT 1 / %s::int", (0,))
            except errors.DivisionByZero:
                pass
            else:
                raise AssertionError("1 / 0 succeeded in a pipeline")
            gone = conn.execute("SELECT count(*) FROM psycopg_items WHERE worker = %s AND round = 5000", (worker,)).fetchone()[0]
        expect(gone == 0, "the failed pipelined transaction was not rolled back")
    finally:
        conn.autocommit = False


def cancel():
    with connect(autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        started = time.monotonic()
        timer.start()
        try:
            conn.execute("SELECT pg_sleep(30)")
        except errors.QueryCanceled:
            pass
        else:
            raise AssertionError("pg_sleep(30) finished without being cancelled")
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
        expect(elapsed < 10, f"cancel took {elapsed:.1f} s")
        expect(conn.execute("SELECT 41 + 1").fetchone()[0] == 42, "connection unusable after cancel")


def cancel_while_others_work():
    """The cancel must reach this client's query, not another client's."""
    stop = threading.Event()

    def busy(conn, worker):
        if worker == 0:
            try:
                cancel()
            finally:
                stop.set()
        else:
            while not stop.is_set():
                conn.execute("SELECT %s::int", (worker,)).fetchone()
                conn.commit()

    run_concurrently(busy)


def main():
    report = Report()
    report.check("create tables", create_tables)
    report.check("10 connections, prepare_threshold=0: transactions, per-client TimeZone and application_name",
                 run_concurrently, prepared_transactions_and_settings)
    report.check("executemany, COPY FROM STDIN and COPY TO STDOUT", run_concurrently, executemany_and_copy)
    report.check("pipeline mode, and a failed transaction inside a pipeline", run_concurrently, pipeline)
    report.check("idle clients hold no server connection after pipeline mode", idle_clients_after_pipeline)
    report.check("conn.cancel() stops pg_sleep", cancel)
    report.check("conn.cancel() while 9 other clients keep the pool busy", cancel_while_others_work)
    report.exit()


if __name__ == "__main__":
    main()
