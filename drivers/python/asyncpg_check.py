"""asyncpg through Tidepool in transaction mode.

A pool of 10 connections over Tidepool's 3 server connections, with
asyncpg's default statement cache (every query is a named statement,
__asyncpg_stmt_N__, and the names collide across connections), transactions,
executemany, COPY in both directions, explicitly prepared statements reused
across transactions, the reset asyncpg runs when a connection goes back to
its pool, and cached statements that a schema change makes stale.
"""

import asyncio
import io

import asyncpg

from report import CLIENTS, PROBE_TIMEOUT, ROUNDS, Report, expect


async def create_tables(pool):
    await pool.execute("DROP TABLE IF EXISTS asyncpg_items, asyncpg_copy")
    await pool.execute("CREATE TABLE asyncpg_items (worker int, round int, note text, PRIMARY KEY (worker, round))")
    await pool.execute("CREATE TABLE asyncpg_copy (worker int, n int, note text)")


async def on_every_connection(pool, work):
    """Holds all CLIENTS pool connections at once and runs work(conn, worker)
    on each concurrently."""
    barrier = asyncio.Barrier(CLIENTS)

    async def one(worker):
        async with pool.acquire() as conn:
            await barrier.wait()
            await work(conn, worker)

    await asyncio.wait_for(asyncio.gather(*(one(w) for w in range(CLIENTS))), 120)


async def cached_statements_and_transactions(conn, worker):
    for round_ in range(ROUNDS):
        total = await conn.fetchval("SELECT $1::int + $2::int", round_, worker)
        expect(total == round_ + worker, f"{round_} + {worker} came back as {total}")
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO asyncpg_items (worker, round, note) VALUES ($1, $2, $3)",
                worker, round_, f"w{worker}r{round_}",
            )
            count = await conn.fetchval("SELECT count(*) FROM asyncpg_items WHERE worker = $1", worker)
            expect(count == round_ + 1, f"round {round_}: {count} rows inside the transaction")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO asyncpg_items (worker, round) VALUES ($1, 9999)", worker)
            await conn.fetchval("SELECT 1 / $1::int", 0)
    except asyncpg.DivisionByZeroError:
        pass
    else:
        raise AssertionError("1 / 0 succeeded")
    gone = await conn.fetchval("SELECT count(*) FROM asyncpg_items WHERE worker = $1 AND round = 9999", worker)
    expect(gone == 0, "the failed transaction was not rolled back")


async def prepared_across_transactions(conn, worker):
    triple = await conn.prepare("SELECT $1::int * 3, $2::int")
    count = await conn.prepare("SELECT count(*) FROM asyncpg_items WHERE worker = $1")
    for round_ in range(ROUNDS):
        async with conn.transaction():
            row = await triple.fetchrow(round_, worker)
            expect(tuple(row) == (round_ * 3, worker), f"round {round_}: got {tuple(row)}")
            expect(await count.fetchval(worker) == ROUNDS, "wrong row count from a reused statement")
        # And outside any transaction.
        expect(await triple.fetchval(round_, worker) == round_ * 3, "reused statement outside a transaction")


async def executemany_and_copy(conn, worker):
    rows = [(worker, 1000 + i, f"many {i}") for i in range(50)]
    await conn.executemany("INSERT INTO asyncpg_items (worker, round, note) VALUES ($1, $2, $3)", rows)
    count = await conn.fetchval("SELECT count(*) FROM asyncpg_items WHERE worker = $1 AND round >= 1000", worker)
    expect(count == 50, f"executemany left {count} rows, expected 50")

    records = [(worker, n, f"copied {n},\"quoted\"") for n in range(300)]
    await conn.copy_records_to_table("asyncpg_copy", records=records, columns=["worker", "n", "note"])
    out = io.BytesIO()
    await conn.copy_from_query("SELECT n, note FROM asyncpg_copy WHERE worker = $1 ORDER BY n", worker,
                               output=out, format="csv")
    lines = out.getvalue().decode().splitlines()
    expected = [f'{n},"copied {n},""quoted"""' for n in range(300)]
    expect(lines == expected, f"copy_from_query gave {len(lines)} lines, first {lines[:1]}, not the 300 written")
    async with conn.transaction():
        await conn.copy_records_to_table("asyncpg_copy", records=[(worker, -1, "in a transaction")],
                                         columns=["worker", "n", "note"])
        expect(await conn.fetchval("SELECT count(*) FROM asyncpg_copy WHERE worker = $1", worker) == 301,
               "COPY inside a transaction not visible to it")


async def acquire_release_cycles(pool):
    """Short acquire/release cycles: each release runs asyncpg's reset query
    (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) through the pooler."""
    async def one(worker):
        for round_ in range(ROUNDS):
            async with pool.acquire() as conn:
                value = await conn.fetchval("SELECT $1::int * 1000 + $2::int", worker, round_)
                expect(value == worker * 1000 + round_, f"worker {worker} round {round_}: got {value}")

    await asyncio.wait_for(asyncio.gather(*(one(w) for w in range(CLIENTS * 2))), 120)


async def idle_clients_after_prepare():
    """CLIENTS connections one after another each run a query and then
    conn.prepare() (asyncpg sends Parse, Describe and Flush, no Sync) and stay
    connected, idle: every one must still get a server connection."""
    idle = []
    try:
        for n in range(CLIENTS):
            async def use_then_prepare():
                conn = await asyncpg.connect(timeout=10)
                idle.append(conn)
                expect(await conn.fetchval("SELECT $1::int", n) == n, "wrong answer")
                await conn.prepare("SELECT $1::int * 2")

            try:
                await asyncio.wait_for(use_then_prepare(), PROBE_TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError(
                    f"client {n + 1} waited over {PROBE_TIMEOUT} s for a server connection while"
                    f" {n} clients sat idle after conn.prepare() (they still hold their servers)") from None
    finally:
        for conn in idle:
            conn.terminate()


async def schema_change_under_cached_statements():
    """CLIENTS connections of their own (not a pool: asyncpg drops a pool's
    statement caches together) cache the same SELECT * and run it; then the
    table gains a column and changes a type. On Postgres each connection's next
    run meets "cached plan must not change result type" once, which asyncpg
    answers by preparing again and retrying: every connection must get the new
    columns, never rows of a shape it was not told."""
    conns = [await asyncpg.connect(timeout=10) for _ in range(CLIENTS)]
    try:
        await conns[0].execute("DROP TABLE IF EXISTS asyncpg_shape")
        await conns[0].execute("CREATE TABLE asyncpg_shape (id int PRIMARY KEY, v int)")
        await conns[0].execute("INSERT INTO asyncpg_shape VALUES (1, 10)")
        query = "SELECT * FROM asyncpg_shape WHERE id = $1"

        async def run_all(expected):
            # One connection after another: the first to meet the change
            # prepares the statement again on its server, and the next ones
            # may land on that server.
            for n, conn in enumerate(conns):
                for _ in range(3):
                    row = await asyncio.wait_for(conn.fetchrow(query, 1), PROBE_TIMEOUT)
                    expect(dict(row) == expected, f"connection {n}: {dict(row)}, expected {expected}")

        await run_all({"id": 1, "v": 10})
        await conns[0].execute("ALTER TABLE asyncpg_shape ADD COLUMN note text DEFAULT 'added'")
        await run_all({"id": 1, "v": 10, "note": "added"})
        await conns[0].execute("ALTER TABLE asyncpg_shape ALTER COLUMN v TYPE bigint")
        await conns[0].execute("UPDATE asyncpg_shape SET v = 5000000000")
        await run_all({"id": 1, "v": 5000000000, "note": "added"})
    finally:
        for conn in conns:
            conn.terminate()


async def cancel_on_timeout(pool):
    async with pool.acquire() as conn:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await conn.fetchval("SELECT pg_sleep(30)", timeout=1)
        except asyncio.TimeoutError:
            pass
        else:
            raise AssertionError("pg_sleep(30) finished within a 1 s timeout")
        expect(await conn.fetchval("SELECT 41 + 1") == 42, "connection unusable after the cancelled query")
        elapsed = loop.time() - started
        expect(elapsed < 10, f"cancel took {elapsed:.1f} s")


async def main():
    report = Report()
    pool = await asyncpg.create_pool(min_size=CLIENTS, max_size=CLIENTS, timeout=10, command_timeout=60)
    try:
        await report.acheck("create tables", create_tables, pool)
        await report.acheck("pool of 10: cached statements, transactions, rollback on error",
                            on_every_connection, pool, cached_statements_and_transactions)
        await report.acheck("prepared statements reused across transactions",
                            on_every_connection, pool, prepared_across_transactions)
        await report.acheck("executemany, copy_records_to_table, copy_from_query",
                            on_every_connection, pool, executemany_and_copy)
        await report.acheck("20 tasks acquiring and releasing (reset query on release)", acquire_release_cycles, pool)
        await report.acheck("query timeout cancels pg_sleep", cancel_on_timeout, pool)
        await report.acheck("idle clients hold no server connection after conn.prepare()", idle_clients_after_prepare)
        await report.acheck("cached statements after ALTER TABLE: new columns, no stale rows",
                            schema_change_under_cached_statements)
    finally:
        await asyncio.wait_for(pool.close(), 30)
    report.exit()


if __name__ == "__main__":
    asyncio.run(main())
