// node-postgres (pg) through Tidepool in transaction mode: a Pool of 10
// clients over 3 server connections, named queries ({name, text, values},
// which pg prepares once per connection and then only binds), transactions,
// and a rollback after an error.
'use strict';

const { Client, Pool } = require('pg');
const { CLIENTS, ROUNDS, Report, expect, range, idleClientsHoldNoServer } = require('./report');

async function createTable(pool) {
  await pool.query('DROP TABLE IF EXISTS pg_items');
  await pool.query('CREATE TABLE pg_items (worker int, round int, note text, PRIMARY KEY (worker, round))');
}

// Holds all CLIENTS pool clients at once and runs work(client, worker) on each.
async function onEveryClient(pool, work) {
  const clients = await Promise.all(range(CLIENTS).map(() => pool.connect()));
  try {
    await Promise.all(clients.map((client, worker) => work(client, worker)));
  } finally {
    clients.forEach((client) => client.release());
  }
}

async function namedQueriesAndTransactions(client, worker) {
  for (const round of range(ROUNDS)) {
    const sum = await client.query({ name: 'add', text: 'SELECT $1::int + $2::int AS sum', values: [round, worker] });
    expect(sum.rows[0].sum === round + worker, `${round} + ${worker} came back as ${sum.rows[0].sum}`);
    await client.query('BEGIN');
    await client.query({
      name: 'insert-item',
      text: 'INSERT INTO pg_items (worker, round, note) VALUES ($1, $2, $3)',
      values: [worker, round, `w${worker}r${round}`],
    });
    const count = await client.query({
      name: 'count-items',
      text: 'SELECT count(*)::int AS n FROM pg_items WHERE worker = $1',
      values: [worker],
    });
    expect(count.rows[0].n === round + 1, `round ${round}: ${count.rows[0].n} rows inside the transaction`);
    await client.query('COMMIT');
  }
}

async function rollbackOnError(client, worker) {
  await client.query('BEGIN');
  await client.query({ name: 'insert-item', text: 'INSERT INTO pg_items (worker, round, note) VALUES ($1, $2, $3)', values: [worker, 9999, 'doomed'] });
  let failed = false;
  try {
    await client.query({ name: 'divide', text: 'SELECT 1 / $1::int', values: [0] });
  } catch (error) {
    expect(error.code === '22012', `expected division_by_zero, got ${error.code} ${error.message}`);
    failed = true;
  }
  expect(failed, '1 / 0 succeeded');
  await client.query('ROLLBACK');
  const count = await client.query({ name: 'count-doomed', text: 'SELECT count(*)::int AS n FROM pg_items WHERE worker = $1 AND round = 9999', values: [worker] });
  expect(count.rows[0].n === 0, 'the failed transaction was not rolled back');
  // The named statements prepared before the error still work.
  const sum = await client.query({ name: 'add', text: 'SELECT $1::int + $2::int AS sum', values: [1, worker] });
  expect(sum.rows[0].sum === 1 + worker, 'named query after the rollback');
}

async function shortCheckouts(pool) {
  // Twenty concurrent callers through pool.query: each borrows any client.
  await Promise.all(range(CLIENTS * 2).map(async (caller) => {
    for (const round of range(ROUNDS)) {
      const res = await pool.query({ name: 'mul', text: 'SELECT $1::int * 1000 + $2::int AS v', values: [caller, round] });
      expect(res.rows[0].v === caller * 1000 + round, `caller ${caller} round ${round}: got ${res.rows[0].v}`);
    }
  }));
}

async function openAndQuery(n, opened) {
  const client = new Client({ connectionTimeoutMillis: 10000 });
  opened.push(() => client.end());
  await client.connect();
  const res = await client.query({ name: 'probe', text: 'SELECT $1::int AS v', values: [n] });
  expect(res.rows[0].v === n, 'wrong answer');
}

async function main() {
  const report = new Report();
  const pool = new Pool({ max: CLIENTS, connectionTimeoutMillis: 10000, statement_timeout: 60000 });
  pool.on('error', (error) => console.error('idle client error', error));
  try {
    await report.check('create table', () => createTable(pool));
    await report.check('Pool of 10: named queries in transactions', () => onEveryClient(pool, namedQueriesAndTransactions));
    await report.check('rollback after an error, named queries still prepared', () => onEveryClient(pool, rollbackOnError));
    await report.check('20 callers through pool.query with a named query', () => shortCheckouts(pool));
    await report.check('idle clients hold no server connection',
      () => idleClientsHoldNoServer(openAndQuery, 'a named query'));
  } finally {
    await pool.end();
  }
  process.exitCode = report.exitCode();
}

main();
