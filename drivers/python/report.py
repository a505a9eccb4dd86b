"""One `ok`/`FAIL` line per check, for the driver checks in this folder.

The programs connect with the libpq variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE) that scripts/drivers.sh sets, and exit 1 if any
check failed.
"""

import sys
import traceback

# Concurrent clients, well above the pool size of 3 that scripts/drivers.sh uses.
CLIENTS = 10
# Statements or transactions each client runs.
ROUNDS = 30
# How long a new client may wait for a server connection while the others sit
# idle (Tidepool's own checkout timeout is 60 s).
PROBE_TIMEOUT = 10


def _describe(error):
    return f"{type(error).__name__}: {error}".strip().replace("\n", " | ")


class Report:
    def __init__(self):
        self.failed = 0

    def _done(self, name, error):
        if error is None:
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {_describe(error)}", flush=True)
            traceback.print_exception(error, file=sys.stderr)

    def check(self, name, function, *args):
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            self._done(name, error)
        else:
            self._done(name, None)

    async def acheck(self, name, coroutine_function, *args):
        try:
            await coroutine_function(*args)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            self._done(name, error)
        else:
            self._done(name, None)

    def exit(self):
        sys.exit(1 if self.failed else 0)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)
