"""Creates N tenants through Tidepool's management API and logs in to a sample.

Called by bench/tenants-scale.sh, which starts Postgres and Tidepool. Standard
library only: http.client with one kept-alive connection, an HS256 JWT made with
hmac, and psql for the logins. Prints one JSON object with what it measured.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import subprocess
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret: str) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"role": "bench", "exp": int(time.time()) + 3600}
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    api_port = int(os.environ["API_PORT"])
    pooler_port = int(os.environ["POOLER_PORT"])
    pg_port = int(os.environ["PG_PORT"])
    pid = int(os.environ["TIDEPOOL_PID"])
    count = int(os.environ.get("TENANTS", "10000"))
    sample = int(os.environ.get("SAMPLE", "100"))
    psql = os.environ.get("PSQL", "psql")
    token = jwt(os.environ["API_JWT_SECRET"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
    rss_before = rss_kb(pid)
    started = time.monotonic()
    for i in range(count):
        body = {
            "tenant": {
                "db_host": "127.0.0.1",
                "db_port": pg_port,
                "db_database": "scale",
                "default_pool_size": 2,
                "users": [
                    {"db_user": "scale", "db_password": "scale-pass", "mode_type": "transaction"}
                ],
            }
        }
        conn.request("PUT", f"/api/tenants/t{i}", json.dumps(body), headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201):
            sys.exit(f"PUT t{i}: HTTP {resp.status}")
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} tenants", file=sys.stderr, flush=True)
    create_secs = time.monotonic() - started
    time.sleep(2)
    rss_after = rss_kb(pid)

    picks = random.sample(range(count), min(sample, count))
    env = dict(os.environ, PGPASSWORD="scale-pass", PGCONNECT_TIMEOUT="10")
    started = time.monotonic()
    failures = 0
    for i in picks:
        out = subprocess.run(
            [psql, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(pooler_port),
             "-U", f"scale.t{i}", "-d", "scale", "-c", "SELECT 1"],
            env=env, capture_output=True, text=True, timeout=30,
        )
        if out.returncode != 0 or out.stdout.strip() != "1":
            failures += 1
            print(f"  login to t{i} failed: {out.stderr.strip()}", file=sys.stderr)
    connect_secs = time.monotonic() - started
    rss_connected = rss_kb(pid)

    print(json.dumps({
        "tenants": count,
        "create_seconds": round(create_secs, 2),
        "creates_per_second": round(count / create_secs, 1),
        "rss_before_kb": rss_before,
        "rss_after_create_kb": rss_after,
        "kb_per_tenant": round((rss_after - rss_before) / count, 2),
        "sample_logins": len(picks),
        "sample_failures": failures,
        "sample_seconds": round(connect_secs, 2),
        "rss_after_logins_kb": rss_connected,
    }))


if __name__ == "__main__":
    main()
