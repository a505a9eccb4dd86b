// One `ok`/`FAIL` line per check, for the driver checks in this folder. The
// programs connect with the libpq variables (PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE) that scripts/drivers.sh sets and exit 1 if any
// check failed.
'use strict';

// Concurrent clients, well above the pool size of 3 that scripts/drivers.sh uses.
const CLIENTS = 10;
// Statements or transactions each client runs.
const ROUNDS = 30;
// How long a new client may wait for a server connection while the others sit
// idle (Tidepool's own checkout timeout is 60 s).
const PROBE_TIMEOUT_MS = 10000;

class Report {
  constructor() {
    this.failed = 0;
  }

  async check(name, fn) {
    try {
      await fn();
      console.log(`ok   ${name}`);
    } catch (error) {
      this.failed += 1;
      console.log(`FAIL ${name}: ${String(error && error.message ? error.message : error).replace(/\n/g, ' | ')}`);
      console.error(error);
    }
  }

  exitCode() {
    return this.failed ? 1 : 0;
  }
}

function expect(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

// Opens CLIENTS clients one after another with open(n, opened), which pushes
// a close function onto `opened` and uses the client once; all then stay
// connected and idle. Each must get a server connection within
// PROBE_TIMEOUT_MS: in transaction mode an idle client holds none.
async function idleClientsHoldNoServer(open, lastAction) {
  const opened = [];
  try {
    for (const n of range(CLIENTS)) {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(
          `client ${n + 1} waited over ${PROBE_TIMEOUT_MS / 1000} s for a server connection while ` +
          `${n} clients sat idle after ${lastAction} (they still hold their servers)`)), PROBE_TIMEOUT_MS);
      });
      try {
        await Promise.race([open(n, opened), timeout]);
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    await Promise.all(opened.map((close) => close().catch(() => {})));
  }
}

module.exports = { CLIENTS, ROUNDS, Report, expect, range, idleClientsHoldNoServer };
