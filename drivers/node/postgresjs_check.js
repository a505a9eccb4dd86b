// postgres.js (the `postgres` package) through Tidepool in transaction mode:
// 10 connections over 3 server connections with prepared statements on (its
// default), sql.begin transactions, a rollback after an error, pipelined
// queries on one connection, and prepared statements a schema change makes
// stale.
'use strict';

const postgres = require('postgres');
const { CLIENTS, ROUNDS, Report, expect, range, idleClientsHoldNoServer } = require('./report');

// postgres.js reads PGHOST and the like but not PGSSLMODE; the check takes
// libpq's variable as an application would pass its TLS setting. verify-full
// checks the certificate against Node's roots plus NODE_EXTRA_CA_CERTS.
const SSL = ['require', 'verify-ca', 'verify-full'].includes(process.env.PGSSLMODE)
  ? process.env.PGSSLMODE : false;

async function createTable(sql) {
  await sql`DROP TABLE IF EXISTS postgresjs_items`;
  await sql`CREATE TABLE postgresjs_items (worker int, round int, note text, PRIMARY KEY (worker, round))`;
}

// CLIENTS workers; with max: CLIENTS and every worker inside a transaction
// most of the time, all connections are open at once.
async function concurrentTransactions(sql) {
  await Promise.all(range(CLIENTS).map(async (worker) => {
    for (const round of range(ROUNDS)) {
      const [{ sum }] = await sql`SELECT ${round}::int + ${worker}::int AS sum`;
      expect(sum === round + worker, `${round} + ${worker} came back as ${sum}`);
      await sql.begin(async (tx) => {
        await tx`INSERT INTO postgresjs_items (worker, round, note) VALUES (${worker}, ${round}, ${`w${worker}r${round}`})`;
        const [{ n }] = await tx`SELECT count(*)::int AS n FROM postgresjs_items WHERE worker = ${worker}`;
        expect(n === round + 1, `round ${round}: ${n} rows inside the transaction`);
      });
    }
  }));
}

async function rollbackOnError(sql) {
  await Promise.all(range(CLIENTS).map(async (worker) => {
    let failed = false;
    try {
      await sql.begin(async (tx) => {
        await tx`INSERT INTO postgresjs_items (worker, round) VALUES (${worker}, 9999)`;
        await tx`SELECT 1 / ${0}::int`;
      });
    } catch (error) {
      expect(error.code === '22012', `expected division_by_zero, got ${error.code} ${error.message}`);
      failed = true;
    }
    expect(failed, '1 / 0 succeeded');
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM postgresjs_items WHERE worker = ${worker} AND round = 9999`;
    expect(n === 0, 'the failed transaction was not rolled back');
  }));
}

async function pipelined() {
  // One connection: postgres.js pipelines queries sent before earlier ones answer.
  const one = postgres({ max: 1, connect_timeout: 10, ssl: SSL });
  try {
    const results = await Promise.all(range(50).map((i) => one`SELECT ${i}::int * 2 AS v`));
    results.forEach(([{ v }], i) => expect(v === i * 2, `pipelined query ${i} got ${v}`));
  } finally {
    await one.end({ timeout: 5 });
  }
}

// CLIENTS connections of their own, one after another, run the same prepared
// SELECT *; then the table gains a column and changes a type. On Postgres each
// connection's next run meets "cached plan must not change result type" once,
// which postgres.js answers by preparing again and retrying: every connection
// must see the new columns.
async function schemaChange() {
  const conns = range(CLIENTS).map(() => postgres({ max: 1, connect_timeout: 10, ssl: SSL, onnotice: () => {} }));
  try {
    const [first] = conns;
    await first`DROP TABLE IF EXISTS postgresjs_shape`;
    await first`CREATE TABLE postgresjs_shape (id int PRIMARY KEY, v int)`;
    await first`INSERT INTO postgresjs_shape VALUES (1, 10)`;
    const runAll = async (expected) => {
      for (const [n, one] of conns.entries()) {
        for (const _ of range(3)) {
          const [row] = await one`SELECT * FROM postgresjs_shape WHERE id = ${1}`;
          const got = JSON.stringify(row);
          expect(got === JSON.stringify(expected), `connection ${n}: ${got}, expected ${JSON.stringify(expected)}`);
        }
      }
    };
    await runAll({ id: 1, v: 10 });
    await first`ALTER TABLE postgresjs_shape ADD COLUMN note text DEFAULT 'added'`;
    await runAll({ id: 1, v: 10, note: 'added' });
    await first`ALTER TABLE postgresjs_shape ALTER COLUMN v TYPE bigint`;
    await first`UPDATE postgresjs_shape SET v = 5000000000`;
    // postgres.js returns bigint as a string by default.
    await runAll({ id: 1, v: '5000000000', note: 'added' });
  } finally {
    await Promise.all(conns.map((one) => one.end({ timeout: 5 })));
  }
}

async function openAndQuery(n, opened) {
  const one = postgres({ max: 1, connect_timeout: 10, ssl: SSL });
  opened.push(() => one.end({ timeout: 5 }));
  const [{ v }] = await one`SELECT ${n}::int AS v`;
  expect(v === n, 'wrong answer');
}

async function main() {
  const report = new Report();
  const sql = postgres({ max: CLIENTS, connect_timeout: 10, ssl: SSL, onnotice: () => {} });
  try {
    await report.check('create table', () => createTable(sql));
    await report.check('10 connections, prepared statements: transactions with sql.begin', () => concurrentTransactions(sql));
    await report.check('rollback after an error', () => rollbackOnError(sql));
    await report.check('50 pipelined queries on one connection', pipelined);
    await report.check('idle clients hold no server connection',
      () => idleClientsHoldNoServer(openAndQuery, 'a prepared query'));
    await report.check('prepared statements after ALTER TABLE: new columns, no stale rows', schemaChange);
  } finally {
    await sql.end({ timeout: 5 });
  }
  process.exitCode = report.exitCode();
}

main();
