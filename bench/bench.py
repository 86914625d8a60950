#!/usr/bin/env python3
"""`make bench`: crm-service under load, next to a C floor, on this machine.

Run through bench/run.sh (it installs wrk and nginx's echo module, builds the release worker and
the C floor, then runs this). Everything runs on loopback:

    wrk ──▶ nginx (nginx.conf, the dev/test template) ──FastCGI──▶ crm-service serve (release)
    wrk ──▶ nginx (the same template, another port)   ──FastCGI──▶ bench/floor/floor (C)
    both ──libpq──▶ the private PostgreSQL (scripts/pg.sh), database crm_bench
    both ──libcurl──▶ the fake CRM: nginx + echo module (bench/fake-crm.nginx.conf)

Scenarios (each: a warm-up, then BENCH_ROUNDS rounds of BENCH_SECONDS; the median round is
reported; worker and floor rounds alternate so drift hits both alike):
  1. GET /crm/list, 16 and 64 connections, worker vs floor
  2. POST /crm/sync/event (fake answers at once), 16 and 64 connections, worker vs floor
  3. POST /crm/sync/contact (fake answers after 200 ms), 256 connections
  4. the same with Prefer: respond-async, then the background drain rate until the backlog is empty
Also: the fake CRM alone (is it the limit?), the worker with LOG_LEVEL=info, and (optional)
a sweep over FCGI_THREADS.

Prints a Markdown table and writes bench/results/latest.json. Every process it starts is
stopped by PID, also on Ctrl-C / SIGTERM. See bench/README.md for the knobs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RUN = REPO / ".run" / "bench"
RESULTS = BENCH / "results"
LUA = BENCH / "wrk" / "bench.lua"
PGBIN = Path("/usr/lib/postgresql/15/bin")
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

BENCH_DB = "crm_bench"
BENCH_KEY = "bench-key-0123456789abcdefghijkl"   # 32 characters; throwaway data
assert len(BENCH_KEY) == 32
USERS = 10_000
TYPES = ("klaviyo", "hubspot", "salesforce")
# What the service writes (IntegrationStore.encryptionOptions): the seed must cost the same to decrypt.
ENCRYPTION_OPTIONS = "cipher-algo=aes256, s2k-count=1024"
# What POST /crm/connect stores for settings left at their defaults (IntegrationSettings.json).
STORED_SETTINGS = '{"sync_contacts": true, "sync_events": true}'


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


ROUNDS = env_int("BENCH_ROUNDS", 5)
SECONDS = env_int("BENCH_SECONDS", 5)
WARMUP = env_int("BENCH_WARMUP_S", 2)
THREADS = env_int("BENCH_FCGI_THREADS", 16)             # the worker's default; scenarios 1-2, worker and floor alike
# Scenarios 3-4: the same thread count. A request waiting on the CRM holds no thread, so 256
# connections need no more threads than scenarios 1-2 (BENCH_SLOW_FCGI_THREADS to try others).
SLOW_THREADS = env_int("BENCH_SLOW_FCGI_THREADS", THREADS)
POOL = env_int("BENCH_DB_POOL_SIZE", 16)
# Background deliveries at once: scenario 4's drain gets as many as scenario 3 has request threads.
SWEEP = env_int("BENCH_SWEEP_CONCURRENCY", 256)
WRK_THREADS = env_int("BENCH_WRK_THREADS", 2)
DRAIN_MAX_S = env_int("BENCH_DRAIN_MAX_S", 300)
SLOW_S = env_float("BENCH_CRM_DELAY_S", 0.2)
SYNC_COMMIT = os.environ.get("BENCH_SYNCHRONOUS_COMMIT", "").strip()   # "", on, off, local, remote_write
THREAD_SWEEP = [int(x) for x in os.environ.get("BENCH_THREAD_SWEEP", "").replace(",", " ").split()]
SKIP_INFO = os.environ.get("BENCH_SKIP_INFO", "") == "1"
SMAPS = os.environ.get("BENCH_SMAPS", "") == "1"   # copy the worker's /proc/PID/smaps mid-round into bench/results/
INFO_ROUNDS = env_int("BENCH_INFO_ROUNDS", 3)
FLOOR_UNPREPARED = os.environ.get("BENCH_FLOOR_UNPREPARED", "") == "1"
# A subset for quick iterations (the full set is the benchmark): list, event, slow (scenarios 3-4).
SCENARIOS = [x for x in os.environ.get("BENCH_SCENARIOS", "list,event,slow").replace(" ", "").split(",") if x]

# Configuration variables a developer's shell might carry: never inherited by the worker.
CONFIG_VARS = re.compile(r"^(DB_|CRM_|FCGI_|API_KEY$|PORT$|LOG_LEVEL$|CORS_|ENVIRONMENT$|DEBUG$|"
                         r"INSTANCE_CONNECTION_NAME$|PG[A-Z]+$)")


def say(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ------------------------------------------------------------------------------------------
# Processes: every one is started here, remembered, and stopped by its PID.

STARTED: list["Proc"] = []


class Proc:
    def __init__(self, name: str, args: list, env: dict | None = None, cwd: Path | None = None,
                 log: Path | None = None, stop_signal: int = signal.SIGTERM):
        self.name = name
        self.stop_signal = stop_signal
        self.log_path = log
        self._log = open(log, "ab") if log else subprocess.DEVNULL
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid
        STARTED.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        if self.alive():
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} (pid {self.pid}) did not stop in {timeout} s: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        if self in STARTED:
            STARTED.remove(self)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        return self.popen.returncode

    def pids(self) -> list[int]:
        """This process and its direct children (nginx's workers)."""
        out = [self.pid]
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                out += [int(p) for p in Path(f"/proc/{self.pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
        return out

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all threads) and its children, in seconds."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict:
        values = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                    values[key] = int(rest.split()[0])
        except OSError:
            pass
        return values

    def reset_peak(self):
        """Resets VmHWM to the current RSS (Linux: echo 5 > /proc/PID/clear_refs)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass


class External:
    """A process we did not start (the PostgreSQL postmaster): only read, never signalled."""

    def __init__(self, name: str, pid: int):
        self.name, self.pid = name, pid

    pids = Proc.pids
    cpu_seconds = Proc.cpu_seconds


def stop_all():
    for proc in reversed(list(STARTED)):
        try:
            proc.stop()
        except Exception as e:  # keep stopping the others
            say(f"stopping {proc.name}: {e}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and not proc.alive():
            tail = proc.log_path.read_text(errors="replace")[-3000:] if proc.log_path else ""
            raise RuntimeError(f"{what}: {proc.name} exited ({proc.popen.returncode}) while we waited\n{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready within {timeout} s")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------
# PostgreSQL

def pg_sh(*args) -> str:
    return subprocess.run([str(REPO / "scripts/pg.sh"), *args], check=True, capture_output=True, text=True).stdout.strip()


def dsn(db: str = BENCH_DB) -> str:
    return pg_sh("dsn", db)


def psql(sql: str, db: str = BENCH_DB, variables: dict | None = None, timeout: float = 300) -> str:
    args = [str(PGBIN / "psql"), dsn(db), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    for k, v in (variables or {}).items():
        args += ["-v", f"{k}={v}"]
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    result = subprocess.run(args, input=sql, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr.strip()}\nSQL: {sql[:300]}")
    return result.stdout.strip()


def prepare_database(binary: Path) -> dict:
    """crm_bench: created and seeded once (10,000 users x 3 integrations), reset on every run."""
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DB}'", db="postgres") == "1"
    if exists and os.environ.get("BENCH_RESEED") == "1":
        say(f"dropping {BENCH_DB} (BENCH_RESEED=1)")
        psql(f"DROP DATABASE {BENCH_DB} WITH (FORCE)", db="postgres")
        exists = False
    if not exists:
        psql(f"CREATE DATABASE {BENCH_DB}", db="postgres")
    psql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    env = worker_env(threads=1, fake_url="http://127.0.0.1:9")
    migrate = subprocess.run([str(binary), "migrate"], env=env, cwd=RUN, capture_output=True, text=True, timeout=120)
    if migrate.returncode != 0:
        raise RuntimeError(f"crm-service migrate failed:\n{migrate.stdout}{migrate.stderr}")
    count = int(psql("SELECT count(*) FROM crm.crm_integrations WHERE user_id LIKE 'bench\\_user\\_%'"))
    readable = count == USERS * len(TYPES) and psql(
        "SELECT pgp_sym_decrypt(credentials, :'key') || encode(substring(credentials from 3 for 2), 'hex') FROM crm.crm_integrations "
        "WHERE user_id = 'bench_user_1' AND crm_type = 'klaviyo'",
        variables={"key": BENCH_KEY}) == '{"api_key":"pk_bench"}0409'   # AES-256: the service's options (below)
    seeded_s = None
    if not readable:
        say(f"seeding {USERS} users x {len(TYPES)} integrations (pgp_sym_encrypt each; once per database)")
        started = time.monotonic()
        psql("TRUNCATE crm.crm_integrations, crm.crm_sync_logs, crm.crm_idempotency_keys")
        # One statement; the key is a psql variable (a throwaway benchmark key).
        psql("""
            INSERT INTO crm.crm_integrations (user_id, crm_type, credentials, settings)
            SELECT 'bench_user_' || u, t, pgp_sym_encrypt('{"api_key":"pk_bench"}', :'key', :'options'), :'settings'::jsonb
              FROM generate_series(1, %d) AS u, unnest(ARRAY['klaviyo', 'hubspot', 'salesforce']) AS t
            """ % USERS, variables={"key": BENCH_KEY, "options": ENCRYPTION_OPTIONS, "settings": STORED_SETTINGS}, timeout=900)
        seeded_s = round(time.monotonic() - started, 1)
    # Every run starts from the same state: no logs, no last sync, the settings a connect
    # stores (a seed from before had '{}').
    psql("""
        TRUNCATE crm.crm_sync_logs, crm.crm_idempotency_keys;
        UPDATE crm.crm_integrations SET last_sync_at = NULL, last_sync_status = NULL, status = 'connected',
               status_detail = NULL, is_active = true, settings = :'settings'::jsonb
         WHERE last_sync_at IS NOT NULL OR status <> 'connected' OR NOT is_active OR settings <> :'settings'::jsonb;
        """, variables={"settings": STORED_SETTINGS})
    if SYNC_COMMIT:
        psql(f"ALTER DATABASE {BENCH_DB} SET synchronous_commit = '{SYNC_COMMIT}'")
    else:
        psql(f"ALTER DATABASE {BENCH_DB} RESET synchronous_commit")
    psql("VACUUM ANALYZE crm.crm_integrations; VACUUM ANALYZE crm.crm_sync_logs")
    return {
        "database": BENCH_DB,
        "integrations": int(psql("SELECT count(*) FROM crm.crm_integrations")),
        "seeded_now_s": seeded_s,
        "synchronous_commit": psql("SHOW synchronous_commit"),
        "fsync": psql("SHOW fsync"),
        "server_version": psql("SHOW server_version"),
    }


def last_log_id() -> int:
    return int(psql("SELECT COALESCE(max(id), 0) FROM crm.crm_sync_logs"))


def deliveries_since(log_id: int, settle_s: float = 15) -> dict:
    """Rows written after log_id: waits until none is in flight, then counts them by status."""
    deadline = time.monotonic() + settle_s
    while True:
        rows = psql(f"SELECT status, count(*) FROM crm.crm_sync_logs WHERE id > {log_id} GROUP BY status")
        counts = {s: int(n) for s, n in (line.split("|") for line in rows.splitlines() if line)}
        if not counts.get("in_flight") or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def backlog() -> int:
    return int(psql_retry("SELECT count(*) FROM crm.crm_sync_logs WHERE status IN ('queued', 'retrying', 'in_flight')"))


def psql_retry(sql: str, seconds: float = 20) -> str:
    """psql, retried for a while: the shared cluster may be restarted under us (make test's outage tests)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return psql(sql)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# ------------------------------------------------------------------------------------------
# The processes under test

def worker_env(threads: int, fake_url: str, socket_path: str = "", log_level: str = "warning") -> dict:
    env = {k: v for k, v in os.environ.items() if not CONFIG_VARS.match(k)}
    env.update({
        "DB_DSN": dsn(),
        "FCGI_SOCKET": socket_path or str(RUN / "unused.sock"),
        "FCGI_THREADS": str(threads),
        "DB_POOL_SIZE": str(POOL),
        "CRM_SWEEP_CONCURRENCY": str(SWEEP),
        "CRM_ENCRYPTION_KEY": BENCH_KEY,
        "CRM_ALLOW_PRIVATE_URLS": "true",
        "CRM_KLAVIYO_BASE_URL": fake_url,
        # Nothing may leave the machine even by mistake: every CRM points at the fake.
        "CRM_HUBSPOT_BASE_URL": fake_url,
        "CRM_SALESFORCE_LOGIN_URL": fake_url,
        "LOG_LEVEL": log_level,
        "ENVIRONMENT": "bench",
        # As the deployment's units set it (deploy/systemd): GnuTLS, loaded but unused, skips its initialisation.
        "GNUTLS_NO_IMPLICIT_INIT": "1",
    })
    # BENCH_WORKER_<NAME>=value sets <NAME> for the worker (e.g. BENCH_WORKER_CRM_SWEEP_CONCURRENCY=128).
    for key, value in os.environ.items():
        if key.startswith("BENCH_WORKER_") and len(key) > len("BENCH_WORKER_"):
            env[key[len("BENCH_WORKER_"):]] = value
    return env


def render_nginx(port: int, fcgi_socket: Path, run_dir: Path) -> Path:
    text = (REPO / "nginx.conf").read_text()
    text = text.replace("__PORT__", str(port)).replace("__FCGI_SOCKET__", str(fcgi_socket)).replace("__RUN_DIR__", str(run_dir))
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    return conf


def start_nginx(name: str, conf: Path, run_dir: Path, port: int) -> Proc:
    pidfile = run_dir / ("fake-crm.pid" if name == "fake-crm" else "nginx.pid")
    pidfile.unlink(missing_ok=True)
    proc = Proc(name, ["nginx", "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "error.log"), "-g", "daemon off;"],
                log=run_dir / "nginx.stderr", stop_signal=signal.SIGQUIT)
    wait_for(lambda: pidfile.exists() and port_open(port), 10, name, proc)
    return proc


class Target:
    """A worker or a floor: its process, its socket and the nginx in front of it."""

    def __init__(self, name: str, binary: Path, fake_url: str, kind: str = "", extra_env: dict | None = None):
        self.name = name
        self.kind = kind or name       # "worker" or "floor"
        self.binary = binary
        self.fake_url = fake_url
        self.extra_env = dict(extra_env or {})
        self.dir = RUN / name
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "fcgi.sock"
        self.port = free_port()
        self.proc: Proc | None = None
        self.threads = 0
        self.log_level = "warning"
        self.nginx = start_nginx(f"nginx-{name}", render_nginx(self.port, self.socket, self.dir), self.dir, self.port)

    def start(self, threads: int, log_level: str = "warning"):
        if self.proc:
            self.stop()
        self.threads, self.log_level = threads, log_level
        self.socket.unlink(missing_ok=True)
        env = worker_env(threads, self.fake_url, str(self.socket), log_level)
        env.update(self.extra_env)
        args = [str(self.binary), "serve"] if self.kind == "worker" else [str(self.binary)]
        self.proc = Proc(self.name, args, env=env, cwd=self.dir, log=self.dir / f"{self.name}.log")
        wait_for(self.socket.exists, 30, f"{self.name} socket", self.proc)
        time.sleep(0.3)  # the worker's threads and sweep settle

    def stop(self):
        if self.proc:
            status = self.proc.stop(timeout=30)
            if status not in (0, None) and self.kind == "worker":
                say(f"worker exited {status}; see {self.dir / 'worker.log'}")
            self.proc = None

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            h = dict(headers or {})
            if payload is not None:
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()


def shape(value):
    """The keys (in order) and value types of a JSON document, for comparing two responses."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def sanity_check(targets: list[Target]) -> dict:
    """One request of each benchmarked kind through each target: the right answers, the same shapes."""
    shapes = {}
    event = {"event": "Bench Event", "email": "bench_user_1@example.com", "properties": {"plan": "pro", "items": 3},
             "crm_types": ["klaviyo"]}
    for t in targets:
        status, body = t.request("GET", "/crm/list", headers={"X-User-Id": "bench_user_1"})
        if status != 200 or not isinstance(body, dict) or body.get("count") != 3:
            raise RuntimeError(f"{t.name}: GET /crm/list answered {status} {str(body)[:300]}")
        status2, body2 = t.request("POST", "/crm/sync/event", event, headers={"X-User-Id": "bench_user_1"})
        if status2 != 200 or not isinstance(body2, dict) or body2.get("success_count") != 1:
            raise RuntimeError(f"{t.name}: POST /crm/sync/event answered {status2} {str(body2)[:300]}")
        shapes[t.name] = {"list": shape(body), "event": shape(body2)}
    if "worker" in shapes:
        contact = {"email": "bench_user_2@example.com", "first_name": "Bench", "last_name": "User 2", "crm_types": ["klaviyo"]}
        w = next(t for t in targets if t.name == "worker")
        status, body = w.request("POST", "/crm/sync/contact", contact, headers={"X-User-Id": "bench_user_2"})
        if status != 200 or not isinstance(body, dict) or body.get("success_count") != 1:
            raise RuntimeError(f"worker: POST /crm/sync/contact answered {status} {str(body)[:300]}")
    same = len({json.dumps(s, sort_keys=False) for s in shapes.values()}) == 1
    if not same:
        say("WARNING: the worker's and the floor's responses differ in shape:\n" + json.dumps(shapes, indent=1))
    return {"same_shape": same, "shapes": shapes}


# ------------------------------------------------------------------------------------------
# Load

WRK_RUNNING: list[subprocess.Popen] = []
WATCH: list = []   # processes whose CPU every round records (PostgreSQL, the fake CRM)


def wrk(port: int, route: str, conns: int, seconds: float, asynchronous: bool = False, timeout_s: int = 5) -> dict:
    env = dict(os.environ, BENCH_ROUTE=route, BENCH_USERS=str(USERS), BENCH_ASYNC="1" if asynchronous else "0")
    args = ["wrk", "-t", str(max(1, min(WRK_THREADS, conns))), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", f"{timeout_s}s", "-s", str(LUA), f"http://127.0.0.1:{port}"]
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    WRK_RUNNING.append(p)
    try:
        out, err = p.communicate(timeout=seconds + 60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        WRK_RUNNING.remove(p)
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {err.strip()[:500]}\n{out[-1000:]}")
    data = json.loads(line[len("BENCH_JSON "):])
    errors = sum(data["errors"].values())
    secs = data["duration_us"] / 1e6
    lat = data["latency_us"]
    return {
        "requests": data["requests"], "seconds": round(secs, 3), "rps": round(data["requests"] / secs, 1),
        "p50_ms": round(lat["p50"] / 1000, 2), "p90_ms": round(lat["p90"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2), "max_ms": round(lat["max"] / 1000, 2),
        "http_errors": errors, "error_detail": data["errors"],
    }


# The worker's own histograms (its /metrics) that say where a synchronous sync's time goes.
STAGES = (("crm_call", "crm_call_duration_seconds", ("crm_type", "klaviyo")),
          ("log_write", "crm_db_write_duration_seconds", ("writer", "sync_logs")),
          ("outcome_write", "crm_db_write_duration_seconds", ("writer", "outcomes")),
          # The whole request inside the worker, from the accept thread's read to the answer
          # (admission included): what wrk measures beyond it is nginx, the sockets and wrk.
          ("request", "crm_http_request_duration_seconds", ("route", "/crm/sync/event")),
          ("request", "crm_http_request_duration_seconds", ("route", "/crm/sync/contact")))
BATCHES = (("log_batch", ("writer", "sync_logs")), ("outcome_batch", ("writer", "outcomes")))
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')


def worker_histograms(target: Target) -> dict | None:
    """{(metric, (label, value)): {le or "count"/"sum": value}} from the worker's /metrics; None if unreadable."""
    status, text = target.request("GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        return None
    out: dict = {}
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix):
                base, key = name[: -len(suffix)], suffix[1:]
                if key == "bucket":
                    key = float(labels.pop("le"))
                for pair in labels.items():
                    out.setdefault((base, pair), {})[key] = value
    return out


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket that holds the q-th observation."""
    edges = sorted(buckets)
    total = buckets[edges[-1]] if edges else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for edge in edges:
        if buckets[edge] >= rank:
            if edge == float("inf"):
                return lower
            return lower + (edge - lower) * (rank - below) / max(buckets[edge] - below, 1e-9)
        lower, below = edge, buckets[edge]
    return lower


def stage_times(before: dict | None, after: dict | None) -> dict | None:
    """Per stage over one round: p50/p99 in ms (interpolated in the histogram's buckets) and the mean;
    per group-commit writer: the mean batch size."""
    if not before or not after:
        return None
    out = {}
    for stage, metric, label in STAGES:
        a, b = after.get((metric, label), {}), before.get((metric, label), {})
        delta = {k: v - b.get(k, 0) for k, v in a.items()}
        count = delta.get("count", 0)
        if count <= 0:
            continue
        buckets = {k: v for k, v in delta.items() if isinstance(k, float)}
        out[stage] = {"count": int(count), "mean_ms": round(delta["sum"] * 1000 / count, 2),
                      "p50_ms": round((bucket_quantile(0.5, buckets) or 0) * 1000, 1),
                      "p99_ms": round((bucket_quantile(0.99, buckets) or 0) * 1000, 1)}
    for name, label in BATCHES:
        a, b = after.get(("crm_db_write_batch_size", label), {}), before.get(("crm_db_write_batch_size", label), {})
        count = a.get("count", 0) - b.get("count", 0)
        if count > 0:
            out[name] = round((a["sum"] - b.get("sum", 0)) / count, 1)
    return out


def measure(target: Target, route: str, conns: int, seconds: float, asynchronous: bool = False,
            watch: list | None = None) -> dict:
    """One round: wrk through the target's nginx, plus CPU (target, its nginx, PostgreSQL, the fake),
    memory and delivery outcomes."""
    writes = route in ("event", "contact")
    first_id = last_log_id() if writes else 0
    # Where a synchronous sync's time goes, by the worker's own histograms (scraped through nginx),
    # and what PostgreSQL did meanwhile: read before and after the CPU counters, so that these
    # reads' own work is not counted as the requests'.
    staged = writes and not asynchronous and target.kind == "worker"
    histograms_before = worker_histograms(target) if staged else None
    database_before = database_counters()
    procs = [target.proc, target.nginx] + (watch or [])
    cpu_before = [p.cpu_seconds() for p in procs]
    stat_before = cpu_stat()
    snapshot = None
    if SMAPS and target.proc.pid:
        # Where the memory is, mid-round: the worker's mappings (stacks, malloc arenas, files).
        name = f"smaps-{target.proc.name}-{route}{'-async' if asynchronous else ''}-{conns}.txt"
        snapshot = threading.Timer(seconds * 0.6, lambda: shutil.copyfile(f"/proc/{target.proc.pid}/smaps", RESULTS / name))
        snapshot.start()
    result = wrk(target.port, route, conns, seconds, asynchronous)
    if snapshot:
        snapshot.join()
    cpu = [p.cpu_seconds() - b for p, b in zip(procs, cpu_before)]
    stat_after = cpu_stat()
    database = [a - b for a, b in zip(database_counters(), database_before)]
    if staged:
        result["stages"] = stage_times(histograms_before, worker_histograms(target))
    total = sum(stat_after) - sum(stat_before)
    result["machine"] = {"busy": round(1 - (stat_after[3] + stat_after[4] - stat_before[3] - stat_before[4]) / total, 3) if total else None,
                         "steal": round((stat_after[7] - stat_before[7]) / total, 3) if total else None}
    mem = target.proc.memory_kib()
    n = max(1, result["requests"])
    result["database"] = {"wal_bytes_per_request": round(database[0] / n), "checkpoints": database[1], "autovacuums": database[2]}
    result.update({
        "cpu_s": round(cpu[0], 2), "cpu_us_per_request": round(cpu[0] * 1e6 / n, 1),
        "cpu_us_per_request_by_process": {("nginx" if p is target.nginx else p.name): round(c * 1e6 / n, 1) for p, c in zip(procs, cpu)},
        "cpu_cores_by_process": {("nginx" if p is target.nginx else p.name): round(c / result["seconds"], 2) for p, c in zip(procs, cpu)},
        "rss_kib": mem.get("VmRSS"), "peak_rss_kib": mem.get("VmHWM"), "rss_anon_kib": mem.get("RssAnon"),
        "rss_file_kib": mem.get("RssFile"), "threads": mem.get("Threads")})
    if writes and not asynchronous:
        counts = deliveries_since(first_id)
        result["deliveries"] = counts
        result["failed_deliveries"] = sum(n for s, n in counts.items() if s != "success")
    result["errors"] = result["http_errors"] + result.get("failed_deliveries", 0)
    return result


def database_counters() -> tuple[int, int, int]:
    """WAL bytes written so far, checkpoints begun, and autovacuum + autoanalyze runs on the log table:
    what PostgreSQL itself did during a round, beside the requests (a checkpoint makes every page's
    next change write its whole page to the WAL)."""
    out = psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
               "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), "
               "COALESCE((SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables "
               "WHERE relid = 'crm.crm_sync_logs'::regclass), 0)")
    wal, checkpoints, autovacuums = out.split("|")
    return int(wal), int(checkpoints), int(autovacuums)


def cpu_stat() -> list[int]:
    """The machine's CPU time counters (/proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def summarize(rounds: list[dict]) -> dict:
    """The median round (by requests/s), errors over all rounds, peak and growth of RSS."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    median = ordered[(len(ordered) - 1) // 2]
    rss = [r["rss_kib"] for r in rounds if r.get("rss_kib")]
    growth = None
    if len(rss) >= 3:
        # From the second round on: the first may still be touching thread stacks and arenas for
        # the first time. Growing = up by > 1 MiB and > 3%, never down.
        base = rss[1]
        delta = rss[-1] - base
        growth = {"by_round_kib": rss, "delta_kib": delta,
                  "growing": delta > max(1024, base * 0.03) and all(b >= a for a, b in zip(rss[1:], rss[2:]))}
    steal = [r["machine"]["steal"] for r in rounds if r.get("machine", {}).get("steal") is not None]
    return {
        "steal": round(max(steal), 3) if steal else None,
        "rps": median["rps"], "p50_ms": median["p50_ms"], "p90_ms": median["p90_ms"], "p99_ms": median["p99_ms"],
        "max_ms": median["max_ms"], "cpu_us_per_request": median["cpu_us_per_request"],
        "errors": sum(r["errors"] for r in rounds), "requests": sum(r["requests"] for r in rounds),
        "peak_rss_kib": max((r.get("peak_rss_kib") or 0) for r in rounds),
        "peak_rss_anon_kib": max((r.get("rss_anon_kib") or 0) for r in rounds), "rss_growth": growth,
        "max_threads": max((int(r.get("threads") or 0) for r in rounds), default=0),
        "cpu_us_per_request_by_process": median.get("cpu_us_per_request_by_process"),
        "cpu_cores_by_process": median.get("cpu_cores_by_process"),
        "stages": median.get("stages"),
        "rounds": rounds,
    }


def describe(r: dict) -> str:
    """One round on one line, for the progress log."""
    return (f"{r['rps']:.0f} req/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms errors {r['errors']} "
            f"rss {r['rss_kib'] // 1024 if r['rss_kib'] else '?'} MiB cpu {r['cpu_us_per_request']} us/req "
            f"steal {r['machine']['steal'] or 0:.0%} wal {r['database']['wal_bytes_per_request']} B/req"
            + (f" checkpoint {r['database']['checkpoints']}" if r['database']['checkpoints'] else "")
            + (f" autovacuum {r['database']['autovacuums']}" if r['database']['autovacuums'] else ""))


IN_PROGRESS_RE = re.compile(r"^crm_http_requests_in_progress (\S+)$", re.M)


def settle(target: Target, timeout: float = 10):
    """Waits until the load before has left the target: wrk's connections close at once, but
    requests nginx has passed on may still be waiting on the CRM (~200 of them for 0.2 s after
    scenario 3's warm-up). A round that began beside them would carry more requests than its
    connections, and count their memory in its peak. The worker says how many requests it has
    in progress (the scrape itself is one); the floor gets the 0.3 s a worker needs at most
    after the fast scenarios."""
    time.sleep(0.3)
    if target.kind != "worker":
        return
    deadline = time.monotonic() + timeout
    while True:
        status, text = target.request("GET", "/metrics")
        m = IN_PROGRESS_RE.search(text) if status == 200 and isinstance(text, str) else None
        if m is None or float(m.group(1)) <= 1:
            return
        if time.monotonic() > deadline:
            say(f"  {target.name}: {float(m.group(1)):.0f} requests still in progress after {timeout:.0f} s")
            return
        time.sleep(0.05)


def run_rounds(targets: list[Target], route: str, conns: int, asynchronous: bool = False,
               rounds: int = ROUNDS, seconds: float = SECONDS, watch: list | None = None) -> dict:
    """Warm-up each target, then `rounds` rounds alternating between targets. The order within a
    round alternates too (worker first, then the other first), so that the machine's drift
    within a pair favours neither side of the round-by-round ratios."""
    for t in targets:
        t.proc.reset_peak()
        if WARMUP > 0:
            wrk(t.port, route, conns, WARMUP, asynchronous)
        settle(t)
    per: dict[str, list] = {t.name: [] for t in targets}
    for i in range(rounds):
        for t in (targets if i % 2 == 0 else targets[::-1]):
            r = measure(t, route, conns, seconds, asynchronous, watch=WATCH + (watch or []))
            per[t.name].append(r)
            say(f"  {route}{' async' if asynchronous else ''} c={conns} {t.name} round {i + 1}/{rounds}: {describe(r)}")
            settle(t)
    out = {name: summarize(rs) for name, rs in per.items()}
    if len(targets) > 1:
        # Worker / other, round by round (each pair ran back to back, in turn first), and its median.
        first = targets[0].name
        for t in targets[1:]:
            ratios = sorted(a["rps"] / b["rps"] for a, b in zip(per[first], per[t.name]) if b["rps"])
            out[t.name]["ratio_by_round"] = [round(a["rps"] / b["rps"], 3) for a, b in zip(per[first], per[t.name]) if b["rps"]]
            out[t.name]["ratio_median"] = round(statistics.median(ratios), 3) if ratios else None
    return out


class ActivitySampler(threading.Thread):
    """Samples the worker's database sessions (pg_stat_activity) while a scenario runs."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[dict] = []

    def run(self):
        sql = ("SELECT COALESCE(state, '?'), count(*) FROM pg_stat_activity "
               f"WHERE datname = '{BENCH_DB}' AND application_name = 'crm-service' GROUP BY 1")
        while not self.stop_event.wait(self.interval):
            try:
                rows = psql(sql, timeout=10)
                self.samples.append({s: int(n) for s, n in (l.split("|") for l in rows.splitlines() if l)})
            except Exception:
                pass

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(timeout=15)
        keys = {k for s in self.samples for k in s}
        return {"samples": len(self.samples), "max_by_state": {k: max(s.get(k, 0) for s in self.samples) for k in sorted(keys)},
                "mean_by_state": {k: round(sum(s.get(k, 0) for s in self.samples) / max(1, len(self.samples)), 1) for k in sorted(keys)}}


def cancel_backlog() -> int:
    """Cancels the queued deliveries and waits for those in flight, so that later rounds start with
    no drain beside them; then vacuums the log table, so that the dead rows the cancel leaves do
    not bring an autovacuum into the rounds that follow (the cancel is the bench's, not the load's),
    and the integrations, whose rows every delivery updates (`last_sync_at`) and every list and
    202 reads: each pair starts from the state scenario 1 ran in."""
    n = int(psql_retry("WITH c AS (UPDATE crm.crm_sync_logs SET status = 'cancelled', next_attempt_at = NULL "
                       "WHERE status IN ('queued', 'retrying') RETURNING 1) SELECT count(*) FROM c"))
    wait_for(lambda: backlog() == 0, 30, "the deliveries in flight to end")
    started = time.monotonic()
    psql("VACUUM crm.crm_sync_logs, crm.crm_integrations")
    say(f"  cancelled {n} queued deliveries; VACUUM took {time.monotonic() - started:.1f} s")
    return n


def async_rounds(worker: Target) -> dict:
    """Scenario 4's 202s, each round paired with list rounds (16 and 64 connections, the faster
    one being that round's scenario-1 speed) run back to back with it on the same worker: paired
    round by round as the floor comparisons are, since this machine's speed drifts by a third
    within minutes and by ~10 % within one. The order alternates (lists first, then 202s first),
    so that a drift within a pair favours neither. Every 202 round's backlog is cancelled before
    the next round, so no drain runs beside a list (with 16 connections the sweep is not held
    back for requests) and every 202 round starts from an empty queue; the 202s themselves run
    with their drain beside them, held to an eighth. The last round puts its lists first, and
    its backlog is left for the drain that follows."""
    for conns in (16, 64):
        wrk(worker.port, "list", conns, WARMUP)
    worker.proc.reset_peak()
    wrk(worker.port, "contact", 256, WARMUP, True)
    settle(worker)
    cancel_backlog()
    lists: dict[int, list] = {16: [], 64: []}
    accepted: list[dict] = []
    references: list[float] = []   # per pair: the faster of its two list rounds

    def list_rounds(i: int):
        for conns in (16, 64):
            r = measure(worker, "list", conns, SECONDS, watch=WATCH)
            lists[conns].append(r)
            say(f"  list c={conns} worker (pair {i + 1}/{ROUNDS}): {describe(r)}")
            settle(worker)

    def async_round(i: int):
        r = measure(worker, "contact", 256, SECONDS, True, watch=WATCH)
        accepted.append(r)
        say(f"  contact async c=256 worker (pair {i + 1}/{ROUNDS}): {describe(r)}")
        settle(worker)

    for i in range(ROUNDS):
        lists_first = i % 2 == 0 or i == ROUNDS - 1
        if lists_first:
            list_rounds(i)
            async_round(i)
        else:
            async_round(i)
            cancel_backlog()
            list_rounds(i)
        if i + 1 < ROUNDS and backlog():
            cancel_backlog()
        references.append(max(lists[16][-1]["rps"], lists[64][-1]["rps"]))
        say(f"  pair {i + 1}/{ROUNDS}: 202s at {accepted[-1]['rps'] / references[-1]:.0%} of the faster list round")
    result = {"worker": summarize(accepted)}
    ratios = [round(r["rps"] / ref, 3) for r, ref in zip(accepted, references) if ref]
    result["worker"]["ratio_by_round"] = ratios
    result["worker"]["ratio_median"] = round(statistics.median(ratios), 3) if ratios else None
    result["list_reference"] = {"rps": statistics.median(references), "by_round": references,
                                "lists": {str(c): summarize(rs) for c, rs in lists.items()}}
    return result


def drain(started_backlog: int) -> dict:
    """Background deliveries after the async load: rate until the backlog is empty (or the cap)."""
    start = time.monotonic()
    done0 = int(psql_retry("SELECT count(*) FROM crm.crm_sync_logs WHERE status NOT IN ('queued', 'retrying', 'in_flight')"))
    left = started_backlog
    while time.monotonic() - start < DRAIN_MAX_S:
        time.sleep(0.5)
        left = backlog()
        if left == 0:
            break
    elapsed = time.monotonic() - start
    counts = {s: int(n) for s, n in (l.split("|") for l in psql_retry(
        "SELECT status, count(*) FROM crm.crm_sync_logs GROUP BY status").splitlines() if l)}
    delivered = sum(n for s, n in counts.items() if s not in ("queued", "retrying", "in_flight")) - done0
    rate = delivered / elapsed if elapsed > 0 else 0
    result = {"backlog_at_start": started_backlog, "delivered": delivered, "seconds": round(elapsed, 1),
              "deliveries_per_s": round(rate, 1), "left": left, "emptied": left == 0,
              "failed": counts.get("failed", 0) + counts.get("retrying", 0)}
    if left:
        result["estimated_s_to_empty"] = round(left / rate, 0) if rate else None
        # Stop the rest: later runs and other scenarios start from an empty queue.
        psql_retry("UPDATE crm.crm_sync_logs SET status = 'cancelled', next_attempt_at = NULL WHERE status IN ('queued', 'retrying')")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and backlog():
            time.sleep(0.3)
    return result


# ------------------------------------------------------------------------------------------
# The report

def iter_summaries(report: dict):
    for key, value in report.get("scenarios", {}).items():
        if key in ("list", "event"):
            for pair in value.values():
                yield from (v for v in pair.values() if isinstance(v, dict))
        elif isinstance(value, dict) and "worker" in value:
            yield value["worker"]


def pct(x):
    return f"{x * 100:.0f}%" if x is not None else "-"


def mib(kib):
    return f"{kib / 1024:.1f}" if kib else "-"


def cpu(r: dict) -> str:
    by = r.get("cpu_us_per_request_by_process") or {}
    return f"{r['cpu_us_per_request']:.0f} +{by.get('postgres', 0):.0f}"


def render(report: dict) -> str:
    s = report["scenarios"]
    m = report["meta"]
    lines = [
        f"## crm-service benchmark ({m['date']}, commit {m['git']}{' + uncommitted Sources changes' if m['sources_dirty'] else ''}"
        f"{'; the binary is OLDER than Sources/' if m.get('binary_older_than_sources') else ''})",
        "",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}. PostgreSQL {m['db']['server_version']}, "
        f"**synchronous_commit = {m['db']['synchronous_commit']}** (fsync = {m['db']['fsync']}). "
        f"Worker: release build, FCGI_THREADS={THREADS} (scenarios 1-2; floor the same) / {SLOW_THREADS} (scenarios 3-4), "
        f"DB_POOL_SIZE={POOL}, CRM_SWEEP_CONCURRENCY={SWEEP}, LOG_LEVEL=warning"
        + "".join(f", {k}={v}" for k, v in (m.get("worker_overrides") or {}).items())
        + f". wrk -t{WRK_THREADS}, warm-up {WARMUP} s, then {ROUNDS} rounds x {SECONDS} s: "
        f"the median round is shown; worker/floor is the median of the round-by-round ratios (each pair ran back to back, worker and floor first in turn); "
        f"errors are summed over all rounds (non-2xx, socket errors, deliveries not `success`). "
        f"Floor values in parentheses. CPU: µs of CPU per request of the worker (or floor) process, + of all PostgreSQL "
        f"backends. RSS: VmHWM over the scenario [its anonymous part, RssAnon]; growth = VmRSS rising from the second "
        f"round on, never down, by > 3% and > 1 MiB in all. CPU steal by the hypervisor, worst round: {m.get('max_steal', 0):.0%}.",
        "",
        "| scenario | conns | worker req/s | floor req/s | worker/floor | p50 ms | p99 ms | errors | CPU µs/req: process, +PostgreSQL | peak RSS MiB [anon] | RSS growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in (("list", "1. GET /crm/list"), ("event", "2. POST /crm/sync/event")):
        for c, pair in sorted(s.get(key, {}).items(), key=lambda kv: int(kv[0])):
            w, f = pair["worker"], pair.get("floor")
            ratio = f.get("ratio_median") if f else None
            growth = "yes" if (w.get("rss_growth") or {}).get("growing") else "no"
            lines.append(
                f"| {label} | {c} | {w['rps']:.0f} | {f['rps']:.0f} | {pct(ratio)} | {w['p50_ms']} ({f['p50_ms']}) | "
                f"{w['p99_ms']} ({f['p99_ms']}) | {w['errors']} ({f['errors']}) | {cpu(w)} ({cpu(f)}) | "
                f"{mib(w['peak_rss_kib'])} [{mib(w['peak_rss_anon_kib'])}] ({mib(f['peak_rss_kib'])} [{mib(f['peak_rss_anon_kib'])}]) | {growth} |")
    for key, label in (("contact", f"3. POST /crm/sync/contact, CRM {int(SLOW_S * 1000)} ms"),
                       ("contact_async", "4. … Prefer: respond-async (202)")):
        if key in s:
            w = s[key]["worker"]
            growth = "yes" if (w.get("rss_growth") or {}).get("growing") else "no"
            ref = (s[key].get("list_reference") or {}).get("rps")
            # Scenario 4's "floor" columns: the list rounds paired with its 202 rounds (the faster
            # connection count of each pair; the median, and the median of the pairs' ratios).
            against = f"{ref:.0f} (lists) | {pct(w.get('ratio_median') or w['rps'] / ref)}" if ref else "- | -"
            lines.append(f"| {label} | {s[key]['connections']} | {w['rps']:.0f} | {against} | {w['p50_ms']} | {w['p99_ms']} | "
                         f"{w['errors']} | {cpu(w)} | {mib(w['peak_rss_kib'])} [{mib(w['peak_rss_anon_kib'])}] | {growth} |")
    if "drain" in s:
        d = s["drain"]
        lines.append(f"| 4. background drain | - | {d['deliveries_per_s']:.0f} deliveries/s | - | - | - | - | {d['failed']} | - | - | "
                     f"{'emptied' if d['emptied'] else 'NOT emptied'} in {d['seconds']} s |")
    lines.append("")
    staged = [("scenario 2", c, pair["worker"]["stages"]) for c, pair in sorted(s.get("event", {}).items(), key=lambda kv: int(kv[0]))
              if (pair.get("worker") or {}).get("stages")]
    if "contact" in s and (s["contact"].get("worker") or {}).get("stages"):
        staged.append(("scenario 3", s["contact"]["connections"], s["contact"]["worker"]["stages"]))
    if staged:
        def stage(st, name, what):
            v = st.get(name)
            return f"{what} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms (mean {v['mean_ms']})" if v else f"{what} -"
        lines.append("Where a sync's time went in the worker (its own /metrics histograms, median round; quantiles "
                     "interpolated within buckets of 1/2/5/10/25/50/100/250 ms; a write includes waiting for a pool connection): "
                     + "; ".join(f"{label} at {c}: " + ", ".join((
                         stage(st, "log_write", f"log-row write (batches of {st.get('log_batch', '-')})"),
                         stage(st, "crm_call", "CRM call"),
                         stage(st, "outcome_write", f"outcome write (batches of {st.get('outcome_batch', '-')})"),
                         stage(st, "request", "the whole request in the worker")))
                         for label, c, st in staged) + ".")
        lines.append("")
    if "fake" in report:
        fk = report["fake"]
        lines.append(f"Fake CRM alone (nginx+echo, {fk['workers']} worker process): /api/events {fk['events']['rps']:.0f} req/s at 64 connections "
                     f"(p99 {fk['events']['p99_ms']} ms); /api/profile-import ({int(SLOW_S * 1000)} ms) {fk['contacts']['rps']:.0f} req/s at 256 "
                     f"connections (p50 {fk['contacts']['p50_ms']} ms; ideal {256 / SLOW_S:.0f}).")
        if "cpu_during_s2" in fk:
            lines.append(f"During scenario 2 at 64 connections the fake used {fk['cpu_during_s2']['core_share']:.0%} of one core "
                         f"({fk['cpu_during_s2']['us_per_call']:.0f} µs per call).")
        lines.append("")
    unprep = [(k, c, p["floor-unprepared"], p["floor"]) for k in ("list", "event") for c, p in s.get(k, {}).items() if "floor-unprepared" in p]
    if unprep:
        lines.append("The floor without prepared statements (PQexecParams with the text, as the worker does): " + "; ".join(
            f"{k}@{c} {u['rps']:.0f} req/s = {u['rps'] / f['rps']:.0%} of the prepared floor (PostgreSQL "
            f"{(u.get('cpu_us_per_request_by_process') or {}).get('postgres', 0):.0f} vs {(f.get('cpu_us_per_request_by_process') or {}).get('postgres', 0):.0f} µs/req)"
            for k, c, u, f in unprep) + ".")
        lines.append("")
    if "info_logging" in report:
        il = report["info_logging"]
        parts = [f"{k} {v['rps']:.0f} vs {v['warning_rps']:.0f} req/s (median rounds; round by round {v['delta']:+.0%}); CPU {v['cpu_us_per_request']:.0f} vs "
                 f"{v['warning_cpu_us_per_request']:.0f} µs/req" for k, v in il.items()]
        lines.append(f"LOG_LEVEL=info vs warning (two workers side by side, {INFO_ROUNDS} alternating rounds, 64 connections): "
                     + "; ".join(parts) + ".")
        lines.append("")
    if "thread_sweep" in report:
        lines.append("FCGI_THREADS sweep (worker, one round each): " + "; ".join(
            f"{t}: list {v['list']:.0f} (p99 {v['list_p99_ms']} ms), event {v['event']:.0f} (p99 {v['event_p99_ms']} ms), "
            f"contact {v['contact']:.0f} req/s, peak RSS {mib(max(v['list_peak_rss_kib'], v['event_peak_rss_kib'], v['contact_peak_rss_kib']))} MiB"
            for t, v in report["thread_sweep"].items()) + ".")
        lines.append("")
    if "aborted" in report:
        lines.append(f"**The run was cut short** (the scenarios above are complete, the rest is missing): {report['aborted'][:300]}")
        lines.append("")
    lines.append("Targets:")
    for t in report["targets"]:
        lines.append(f"- [{'PASS' if t['pass'] else 'FAIL'}] {t['name']}: {t['detail']}")
    return "\n".join(lines)


def evaluate(report: dict) -> list[dict]:
    s = report["scenarios"]
    out = []

    def add(name, ok, detail):
        out.append({"name": name, "pass": bool(ok), "detail": detail})

    for key, label in (("list", "scenario 1"), ("event", "scenario 2")):
        for c, pair in sorted(s.get(key, {}).items(), key=lambda kv: int(kv[0])):
            w, f = pair["worker"], pair["floor"]
            ratio = f.get("ratio_median") or 0
            add(f"{label} at {c} connections >= 90% of the C floor", ratio >= 0.9,
                f"median of the round-by-round ratios {ratio:.0%} (" + ", ".join(f"{x:.0%}" for x in f.get("ratio_by_round", []))
                + f"); median rounds {w['rps']:.0f} / {f['rps']:.0f} req/s")
            if int(c) == 64:
                add(f"{label} p99 < 50 ms at 64 connections", w["p99_ms"] < 50, f"p99 {w['p99_ms']} ms")
            add(f"{label} at {c} connections without errors", w["errors"] == 0, f"{w['errors']} errors")
    if "contact" in s:
        w = s["contact"]["worker"]
        s2 = max((p["worker"]["rps"] for p in s.get("event", {}).values()), default=0)
        goal = 0.8 * min(s["contact"]["connections"] / SLOW_S, s2)
        add("scenario 3 >= 80% of min(1280 req/s, scenario 2's rate), no error", w["rps"] >= goal and w["errors"] == 0,
            f"{w['rps']:.0f} req/s vs goal {goal:.0f} (80% of min({s['contact']['connections'] / SLOW_S:.0f}, {s2:.0f})), {w['errors']} errors")
        act = s["contact"].get("db_activity", {})
        held_cap = POOL / SLOW_S
        add("scenario 3 holds no DB connection across a CRM call", w["rps"] > held_cap * 1.1,
            f"{w['rps']:.0f} req/s > {held_cap:.0f} req/s = DB_POOL_SIZE/{SLOW_S} s, the most it could do if each request held a "
            f"connection through its CRM call; worker sessions sampled: max {act.get('max_by_state', {})}")
        thread_cap = SLOW_THREADS / SLOW_S
        add("scenario 3 is not capped by the thread count", w["rps"] > thread_cap * 1.1,
            f"{w['rps']:.0f} req/s > {thread_cap:.0f} req/s = FCGI_THREADS/{SLOW_S} s, the most it could do if each request held a "
            f"thread through its CRM call; worker threads sampled: {w.get('max_threads', '?')}")
    if "contact_async" in s and ("list" in s or "list_reference" in s["contact_async"]):
        w = s["contact_async"]["worker"]
        s1 = max(p["worker"]["rps"] for p in s["list"].values()) if "list" in s else None
        ref = (s["contact_async"].get("list_reference") or {}).get("rps")
        # Against the list rounds paired with the 202 rounds (the same minute's machine); scenario
        # 1's own figure, minutes older, is shown beside it. Older reports: lists run just before.
        paired = w.get("ratio_median")
        if paired is not None:
            # Pair by pair (async_rounds).
            ok, detail = paired >= 0.9, (f"median of the pairs' ratios to the list rounds paired with them (the faster of 16 and 64 "
                                         f"connections) {paired:.0%} (" + ", ".join(f"{x:.0%}" for x in w["ratio_by_round"])
                                         + f"); median rounds {w['rps']:.0f} / {ref:.0f} req/s")
        elif ref:
            ok, detail = w["rps"] >= 0.9 * ref, f"{w['rps']:.0f} vs {ref:.0f} req/s (lists just before, the faster of 16 and 64 connections) = {w['rps'] / ref:.0%}"
        else:
            ok, detail = w["rps"] >= 0.9 * s1, f"{w['rps']:.0f} vs {s1:.0f} req/s = {w['rps'] / s1:.0%}"
        add("scenario 4: 202s at scenario-1 speed (>= 90%)", ok and w["errors"] == 0,
            detail + (f"; vs scenario 1's {s1:.0f} req/s: {w['rps'] / s1:.0%}" if ref and s1 else "") + f", {w['errors']} errors")
    if "drain" in s and "contact" in s:
        d = s["drain"]
        add("scenario 4: drain >= scenario 3's rate, backlog emptied", d["deliveries_per_s"] >= s["contact"]["worker"]["rps"] and d["emptied"],
            f"{d['deliveries_per_s']:.0f} deliveries/s vs {s['contact']['worker']['rps']:.0f} req/s; "
            + ("emptied" if d["emptied"] else f"{d['left']} left after {d['seconds']} s (est. {d.get('estimated_s_to_empty')} s more)"))
    rss = []
    for key in ("list", "event"):
        for c, pair in s.get(key, {}).items():
            rss.append((f"{key}@{c}", pair["worker"]))
    for key in ("contact", "contact_async"):
        if key in s:
            rss.append((key, s[key]["worker"]))
    peak = max((w["peak_rss_kib"] for _, w in rss), default=0)
    add("worker RSS < 32 MiB in every scenario", peak < 32 * 1024,
        ", ".join(f"{n} {mib(w['peak_rss_kib'])}" for n, w in rss) + " MiB")
    growing = [n for n, w in rss if (w.get("rss_growth") or {}).get("growing")]
    add("no RSS growth across rounds", not growing, "growing: " + ", ".join(growing) if growing else
        "; ".join(f"{n} {w['rss_growth']['delta_kib']:+d} KiB" for n, w in rss if w.get("rss_growth")))
    if "fake" in report:
        fk = report["fake"]
        s2 = max((p["worker"]["rps"] for p in s.get("event", {}).values()), default=0)
        f2 = max((p["floor"]["rps"] for p in s.get("event", {}).values()), default=0)
        s3 = s.get("contact", {}).get("worker", {}).get("rps", 0)
        ideal = 256 / SLOW_S
        # It can serve (nearly) what 256 connections x the delay allow, and more than scenario 3 did.
        slow_ok = fk["contacts"]["rps"] >= 0.85 * ideal and fk["contacts"]["rps"] > s3
        ok = fk["events"]["rps"] >= 3 * max(s2, f2) and slow_ok
        share = fk.get("cpu_during_s2", {}).get("core_share")
        add("the fake CRM is not the limit", ok and (share is None or share < 0.5),
            f"alone it serves {fk['events']['rps']:.0f} events/s at 64 connections (>= 3x the fastest scenario 2: {max(s2, f2):.0f}) and "
            f"{fk['contacts']['rps']:.0f} delayed profile-imports/s at 256 (>= 85% of the {ideal:.0f} that 256 connections x "
            f"{SLOW_S} s allow, and more than scenario 3's {s3:.0f})"
            + (f"; it used {share:.0%} of a core during scenario 2" if share is not None else ""))
    return out


# ------------------------------------------------------------------------------------------
# Profiling (bench/bench.py --profile perf): where the worker spends its CPU

def profile(worker: Target, kind: str, seconds: int) -> None:
    out_dir = RESULTS / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    # BENCH_PROFILE_ROUTES picks the routes (list, event, contact: the last at 256 connections with the slow CRM).
    # BENCH_PROFILE_CALLGRAPH=dwarf also sees callers through libraries built without frame pointers (libc's malloc).
    CALL_GRAPH = os.environ.get("BENCH_PROFILE_CALLGRAPH", "fp")
    routes = [r for r in os.environ.get("BENCH_PROFILE_ROUTES", "list,event").replace(" ", "").split(",") if r]
    for route in routes:
        conns = 256 if route == "contact" else 64
        if route == "contact":
            worker.start(SLOW_THREADS)
        if kind == "callgrind":
            callgrind_profile(worker, route, seconds)
            continue
        if kind == "stat":
            # Scheduler and memory counters per request (cycles and instructions where the VM exposes them).
            say(f"perf stat -p {worker.proc.pid}: {route} at {conns} connections for {seconds} s")
            rec = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions",
                                    "-p", str(worker.proc.pid), "--", "sleep", str(seconds)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
            r = wrk(worker.port, route, conns, seconds)
            _, err = rec.communicate(timeout=60)
            requests = max(1, round(r["rps"] * seconds))
            print(f"\n### {worker.name} {route}: {r['rps']:.0f} req/s; per request")
            for line in err.splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                    print(f"  {parts[2]:<18} {float(parts[0]) / requests:12.2f} {parts[1]}")
            continue
        if kind == "strace":
            # System calls per request, by name: counts are what to compare (strace slows the target).
            out = out_dir / f"strace-{worker.name}-{route}.txt"
            say(f"strace -c -f -p {worker.proc.pid}: {route} at {conns} connections for {seconds} s")
            rec = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(worker.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(1)
            r = wrk(worker.port, route, conns, seconds)
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=60)
            requests = max(1, round(r["rps"] * seconds))
            print(f"\n### {worker.name} {route}: ~{requests} requests under strace; calls per request")
            for line in out.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[3].isdigit():
                    print(f"  {parts[-1]:<20} {int(parts[3]) / requests:8.2f}")
            continue
        data = out_dir / f"perf-{worker.name}-{route}.data"
        say(f"perf record -p {worker.proc.pid}: {route} at {conns} connections for {seconds} s")
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "--call-graph", CALL_GRAPH, "-p", str(worker.proc.pid), "-o", str(data),
                                "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        r = wrk(worker.port, route, conns, seconds)
        rec.wait(timeout=60)
        say(f"  {r['rps']:.0f} req/s under perf")
        for title, args in (("self", ["--no-children", "--sort", "dso,sym"]), ("inclusive", ["--children", "--sort", "sym"])):
            rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--percent-limit", "1", "-g", "none", *args],
                                 capture_output=True, text=True)
            text = "\n".join(l for l in rep.stdout.splitlines() if l and not l.startswith("#"))
            (out_dir / f"perf-{worker.name}-{route}-{title}.txt").write_text(rep.stdout)
            print(f"\n### {route}: top symbols ({title})\n" + "\n".join(text.splitlines()[:45]))


def callgrind_wrapper(binary: Path) -> Path:
    """A script that runs `binary` under callgrind. valgrind 3.19 cannot read the DWARF 5 that
    clang writes: it runs a copy without debug information (the same code and symbols)."""
    out = RUN / "callgrind"
    out.mkdir(parents=True, exist_ok=True)
    stripped = out / binary.name
    subprocess.run(["objcopy", "--strip-debug", str(binary), str(stripped)], check=True)
    wrapper = out / f"{binary.name}.callgrind"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.%p.out {stripped} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def callgrind_profile(target: Target, route: str, seconds: int) -> None:
    """Instructions per request at steady state: counters zeroed after a warm-up, dumped after
    `seconds` of load at 16 connections; requests counted by FCGX_Accept_r calls. Instruction
    counts repeat to ~1 % from run to run, where timings on this machine vary by 10 %."""
    pid = target.proc.pid
    # "contact-async": the 202 path (Prefer: respond-async); with BENCH_WORKER_CRM_SWEEP_CONCURRENCY=0 alone.
    asynchronous = route.endswith("-async")
    route = route.removesuffix("-async")
    wrk(target.port, route, 16, 3, asynchronous)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    r = wrk(target.port, route, 16, seconds, asynchronous)
    before = set((RUN / "callgrind").glob(f"callgrind.{pid}.out*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dumps = sorted(set((RUN / "callgrind").glob(f"callgrind.{pid}.out*")) - before, key=lambda f: f.stat().st_mtime)
    if not dumps:
        say("callgrind wrote no dump")
        return
    inclusive, calls, total = callgrind_read(dumps[-1])
    requests = max(1, calls.get("FCGX_Accept_r", 0))
    copy = RESULTS / "profile" / f"callgrind-{target.name}-{route}{'-async' if asynchronous else ''}.out"
    shutil.copy(dumps[-1], copy)
    print(f"\n### {target.name} {route}{' async' if asynchronous else ''}: {requests} requests ({r['rps']:.0f} req/s under callgrind), "
          f"{total / requests:,.0f} instructions per request (all threads); {copy}")
    print("inclusive instructions per request, by function (callees of the request path):")
    for name, cost in sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]:
        print(f"  {cost / requests:10,.0f}  {name[:140]}")


def callgrind_read(path: Path) -> tuple[dict, dict, int]:
    """Per function: the inclusive cost of its calls (summed over call sites) and the number
    of calls; and the program total."""
    names: dict[str, str] = {}
    inclusive: dict[str, int] = {}
    calls: dict[str, int] = {}
    total = 0
    lines = path.read_text(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
        m = re.match(r"^cfn=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            name = names.get(m.group(1), "?")
            count = int(lines[i + 1].split("=")[1].split()[0]) if lines[i + 1].startswith("calls=") else 0
            cost = lines[i + 2].split()
            calls[name] = calls.get(name, 0) + count
            inclusive[name] = inclusive.get(name, 0) + (int(cost[1]) if len(cost) > 1 else 0)
            i += 3
            continue
        m = re.match(r"^c?fn=\((\d+)\) (.*)$", line)
        if m:
            names[m.group(1)] = m.group(2)
        i += 1
    return inclusive, calls, total


# ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(REPO / ".build/release/crm-service"))
    parser.add_argument("--floor", default=str(RUN / "bin" / "floor"))
    parser.add_argument("--profile", choices=["perf", "stat", "strace", "callgrind"],
                        help="profile the worker (BENCH_PROFILE_TARGET=floor: the floor) under load instead of the benchmark")
    parser.add_argument("--profile-seconds", type=int, default=10)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    binary, floor_bin = Path(args.binary).resolve(), Path(args.floor).resolve()
    for b in (binary, floor_bin):
        if not os.access(b, os.X_OK):
            say(f"{b} is not built (run bench/run.sh)")
            return 2
    RUN.mkdir(parents=True, exist_ok=True)
    os.chmod(RUN, 0o755)
    for old in RUN.iterdir():   # the previous run's sockets, logs and nginx folders
        if old.is_dir() and old.name != "bin":
            shutil.rmtree(old, ignore_errors=True)

    started_pg = False
    report: dict = {"scenarios": {}}
    # What is measured: the commit, whether Sources/ differed from it, when the binary was built.
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    newest_source = max((f.stat().st_mtime for f in (REPO / "Sources").rglob("*") if f.is_file()), default=0)
    measured = {"git": git("rev-parse", "--short", "HEAD"), "sources_dirty": bool(git("status", "--porcelain", "--", "Sources")),
                "binary": str(binary),
                "binary_built": dt.datetime.fromtimestamp(binary.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "binary_older_than_sources": binary.stat().st_mtime < newest_source,
                "worker_overrides": {k[len("BENCH_WORKER_"):]: v for k, v in os.environ.items() if k.startswith("BENCH_WORKER_")}}
    t0 = time.monotonic()
    try:
        # Stopped at the end only if this run started it: as pg.sh itself reports (a status
        # read first can race with another caller's start or stop).
        started = subprocess.run([str(REPO / "scripts/pg.sh"), "start"], check=True, stdout=subprocess.PIPE, text=True).stdout
        sys.stderr.write(started)
        started_pg = "starting PostgreSQL" in started
        db = prepare_database(binary)
        say(f"database ready: {db}")

        fake_dir = RUN / "fake-crm"
        fake_dir.mkdir(exist_ok=True)
        os.chmod(fake_dir, 0o755)
        fake_port = free_port()
        fake_workers = env_int("BENCH_FAKE_WORKERS", 1)
        conf = (BENCH / "fake-crm.nginx.conf").read_text()
        for k, v in {"__PORT__": fake_port, "__RUN_DIR__": fake_dir, "__SLOW_S__": f"{SLOW_S:g}", "__SLOW_MS__": int(SLOW_S * 1000),
                     "__WORKERS__": fake_workers, "__ECHO_MODULE__": ECHO_MODULE}.items():
            conf = conf.replace(k, str(v))
        (fake_dir / "fake-crm.conf").write_text(conf)
        fake = start_nginx("fake-crm", fake_dir / "fake-crm.conf", fake_dir, fake_port)
        fake_url = f"http://127.0.0.1:{fake_port}"
        postmaster = int(Path(REPO / ".run/pg/data/postmaster.pid").read_text().split()[0])
        WATCH[:] = [External("postgres", postmaster), fake]

        if args.profile:
            target = os.environ.get("BENCH_PROFILE_TARGET", "worker")
            profiled_bin = floor_bin if target == "floor" else binary
            if args.profile == "callgrind":
                profiled_bin = callgrind_wrapper(profiled_bin)
            profiled = Target(target, profiled_bin, fake_url, kind=target)
            profiled.start(THREADS)
            profile(profiled, args.profile, args.profile_seconds)
            return 0
        worker = Target("worker", binary, fake_url)
        worker.start(THREADS)
        floor = Target("floor", floor_bin, fake_url)
        floor.start(THREADS)
        pairs = [worker, floor]
        if FLOOR_UNPREPARED:
            unprepared = Target("floor-unprepared", floor_bin, fake_url, kind="floor", extra_env={"FLOOR_UNPREPARED": "1"})
            unprepared.start(THREADS)
            pairs.append(unprepared)
        try:
            report["sanity"] = sanity_check(pairs)

            # The fake alone: what it can do without the worker in the way.
            say("fake CRM alone")
            report["fake"] = {"workers": fake_workers,
                              "events": wrk(fake_port, "fake-event", 64, SECONDS),
                              "contacts": wrk(fake_port, "fake-contact", 256, SECONDS)}

            for route in [r for r in ("list", "event") if r in SCENARIOS]:
                report["scenarios"][route] = {}
                for conns in (16, 64):
                    say(f"scenario {'1' if route == 'list' else '2'}: {route}, {conns} connections")
                    result = run_rounds(pairs, route, conns)
                    report["scenarios"][route][str(conns)] = result
            if "event" in SCENARIOS:
                # How busy the fake was while the worker ran scenario 2 at 64 connections (median round).
                w64 = report["scenarios"]["event"]["64"]["worker"]
                med = sorted(w64["rounds"], key=lambda r: r["rps"])[(len(w64["rounds"]) - 1) // 2]
                report["fake"]["cpu_during_s2"] = {"core_share": med["cpu_cores_by_process"]["fake-crm"],
                                                   "us_per_call": med["cpu_us_per_request_by_process"]["fake-crm"]}
            for t in pairs[1:]:
                t.stop()
                t.nginx.stop()

            if not SKIP_INFO and "list" in SCENARIOS and "event" in SCENARIOS:
                # A second worker with LOG_LEVEL=info, rounds alternating with the warning-level one.
                say(f"LOG_LEVEL=info vs warning, {INFO_ROUNDS} alternating rounds each")
                chatty = Target("worker-info", binary, fake_url, kind="worker")
                chatty.start(THREADS, log_level="info")
                info = {}
                for route in ("list", "event"):
                    r = run_rounds([worker, chatty], route, 64, rounds=INFO_ROUNDS)
                    base, loud = r["worker"], r["worker-info"]
                    info[route] = {"rps": loud["rps"], "p99_ms": loud["p99_ms"], "warning_rps": base["rps"],
                                   "cpu_us_per_request": loud["cpu_us_per_request"], "warning_cpu_us_per_request": base["cpu_us_per_request"],
                                   # round by round: info rps / warning rps, median
                                   "delta": 1 / loud["ratio_median"] - 1 if loud.get("ratio_median") else 0}
                chatty.stop()
                chatty.nginx.stop()
                report["info_logging"] = info
                report["info_log_bytes"] = (chatty.dir / "worker-info.log").stat().st_size

            if "slow" in SCENARIOS:
                say(f"scenario 3: contact, CRM {SLOW_S} s, 256 connections, FCGI_THREADS={SLOW_THREADS}")
                worker.start(SLOW_THREADS)
                sampler = ActivitySampler()
                sampler.start()
                try:
                    result = run_rounds([worker], "contact", 256)
                finally:
                    activity = sampler.stop()
                report["scenarios"]["contact"] = {"connections": 256, "threads": SLOW_THREADS, "db_activity": activity, **result}

                say("scenario 4: contact with Prefer: respond-async, then the drain")
                wait_for(lambda: backlog() == 0, 30, "an empty backlog before scenario 4")
                # Scenario 1 ran minutes ago, and this machine's speed drifts by a third within
                # minutes: each 202 round is held to list rounds paired with it (async_rounds).
                report["scenarios"]["contact_async"] = {"connections": 256, "threads": SLOW_THREADS, **async_rounds(worker)}
                left = backlog()
                say(f"  drain: {left} deliveries queued")
                report["scenarios"]["drain"] = drain(left)
                say(f"  drain: {report['scenarios']['drain']}")

            if THREAD_SWEEP:
                sweep = {}
                for n in THREAD_SWEEP:
                    say(f"FCGI_THREADS={n}")
                    worker.start(n)
                    sweep[str(n)] = {}
                    for route, conns in (("list", 64), ("event", 64), ("contact", 256)):
                        r = run_rounds([worker], route, conns, rounds=1)["worker"]
                        sweep[str(n)][route] = r["rps"]
                        sweep[str(n)][route + "_p99_ms"] = r["p99_ms"]
                        sweep[str(n)][route + "_peak_rss_kib"] = r["peak_rss_kib"]
                report["thread_sweep"] = sweep

        except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
            # Report what was measured up to here (e.g. when someone else restarts the shared PostgreSQL).
            say(f"ABORTED: {e}")
            report["aborted"] = str(e)[:2000]
        if worker.proc:
            worker.stop()
        report["meta"] = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **measured,
            "cpus": os.cpu_count(),
            "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
            "db": db, "rounds": ROUNDS, "seconds": SECONDS, "warmup_s": WARMUP, "fcgi_threads": THREADS,
            "slow_fcgi_threads": SLOW_THREADS, "db_pool_size": POOL, "sweep_concurrency": SWEEP, "wrk_threads": WRK_THREADS, "crm_delay_s": SLOW_S,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "max_steal": max([v.get("steal") or 0 for v in iter_summaries(report)] + [0]),
        }
        report["targets"] = evaluate(report)
        RESULTS.mkdir(exist_ok=True)
        text = json.dumps(report, indent=1) + "\n"
        (RESULTS / "latest.json").write_text(text)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        (RESULTS / f"bench-{stamp}-{report['meta']['git']}.json").write_text(text)   # history, for comparisons
        print(render(report))
        print(f"\n(written to {(RESULTS / 'latest.json').relative_to(REPO)}; {report['meta']['elapsed_s']} s)")
        return 1 if "aborted" in report else 0
    except Interrupted as e:
        say(f"interrupted ({e}): stopping everything")
        return 130
    finally:
        for p in list(WRK_RUNNING):
            if p.poll() is None:
                p.kill()
        stop_all()
        if started_pg:
            subprocess.run([str(REPO / "scripts/pg.sh"), "stop"], stdout=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
