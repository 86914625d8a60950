"""End-to-end harness: the real crm-service worker behind the real nginx, a private
PostgreSQL (scripts/pg.sh) and the fake CRMs (tests/fakes/fake_crm.py).

conftest.py turns these into pytest fixtures (`pg`, `fakes`, `service`, `service_factory`);
tests may also import from here directly: `from crm_harness import uid, Service`.

Every process is started and stopped by its PID; nothing is looked up by name.
"""
from __future__ import annotations

import http.client
import json as jsonlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / ".run"
PG_SH = REPO / "scripts" / "pg.sh"
NGINX_TEMPLATE = REPO / "nginx.conf"
FAKE_CRM = REPO / "tests" / "fakes" / "fake_crm.py"

# A fixed 32-character key: the tests' data is throwaway.
TEST_ENCRYPTION_KEY = "e2e-test-key-0123456789abcdefghi"
assert len(TEST_ENCRYPTION_KEY) == 32

# Configuration variables a developer's shell might carry: never inherited by a test worker.
_CONFIG_VARS = re.compile(
    r"^(DB_|CRM_|FCGI_|API_KEY$|PORT$|LOG_LEVEL$|CORS_|ENVIRONMENT$|DEBUG$|"
    r"INSTANCE_CONNECTION_NAME$|PG[A-Z]+$)"
)


def uid() -> str:
    """A fresh random user id, e.g. u_3f9a1c0b2d4e5f60."""
    return "u_" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, alive=None, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process exited while we waited")
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready within {timeout} s")


def _stop_pid(proc: subprocess.Popen, sig: int, timeout: float) -> int | None:
    """Send sig to proc (by its PID) and wait; returns its exit status, None if it still runs."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------------------------
# HTTP responses


class Headers(Mapping):
    """Case-insensitive, multi-valued response headers. h["x-request-id"], h.get_all("vary")."""

    def __init__(self, items):
        self._items = list(items)

    def __getitem__(self, name):
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def get_all(self, name) -> list:
        name = name.lower()
        return [v for k, v in self._items if k.lower() == name]

    def __iter__(self):
        seen = []
        for k, _ in self._items:
            if k.lower() not in seen:
                seen.append(k.lower())
                yield k.lower()

    def __len__(self):
        return len({k.lower() for k, _ in self._items})

    def __contains__(self, name):
        return isinstance(name, str) and bool(self.get_all(name))

    def items_raw(self) -> list:
        return list(self._items)

    def __repr__(self):
        return f"Headers({self._items!r})"


class Response:
    def __init__(self, status: int, reason: str, headers: Headers, body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return jsonlib.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.text[:200]!r}>"


# --------------------------------------------------------------------------------------------
# PostgreSQL


class PG:
    """The private cluster of scripts/pg.sh (or whatever TEST_DB_DSN points at)."""

    def __init__(self, dsn: str | None = None):
        self.started_here = False
        if dsn is None:
            dsn = os.environ.get("TEST_DB_DSN") or None
        if dsn is None:
            self.started_here = not self.is_running()
            self.start()
            dsn = subprocess.run([str(PG_SH), "dsn", "crm_test"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        self.dsn = dsn

    def _pg_sh(self, command: str):
        result = subprocess.run([str(PG_SH), command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/pg.sh {command} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")

    def is_running(self) -> bool:
        return subprocess.run([str(PG_SH), "status"], capture_output=True).returncode == 0

    def start(self):
        """Start the cluster (no-op when it runs); waits until it accepts connections."""
        self._pg_sh("start")

    def stop(self):
        """Stop the cluster (fast shutdown: open connections are cut)."""
        self._pg_sh("stop")

    def sql(self, query: str, *params) -> list:
        """Run SQL through psql; returns the rows as lists of strings (NULL -> "").

        Parameters are psql variables, never pasted into the SQL text: write $1, $2, ... (or
        psql's own :'p1') in the query; None becomes NULL.
        """
        args = ["psql", self.dsn, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-F", "\x1f", "-R", "\x1e"]
        nulls = set()
        for i, value in enumerate(params, start=1):
            if value is None:
                nulls.add(i)
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                value = jsonlib.dumps(value)
            args += ["-v", f"p{i}={value}"]

        def placeholder(m):
            n = int(m.group(1))
            if n < 1 or n > len(params):
                raise ValueError(f"${n} in the query but {len(params)} parameter(s) given")
            return "NULL" if n in nulls else f":'p{n}'"

        text = re.sub(r"(?<![\w$])\$(\d+)(?!\w)", placeholder, query)
        env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
        result = subprocess.run(args, input=text + "\n", capture_output=True, text=True,
                                timeout=60, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        out = result.stdout.rstrip("\n")
        if not out:
            return []
        return [record.split("\x1f") for record in out.split("\x1e") if record != ""]

    def close(self):
        if self.started_here:
            self.stop()


# --------------------------------------------------------------------------------------------
# Fake CRMs


class Fakes:
    """tests/fakes/fake_crm.py as a subprocess, and its control API (/__fake__/...)."""

    def __init__(self, timeout: float = 20):
        if not FAKE_CRM.exists():
            raise RuntimeError(f"{FAKE_CRM} does not exist")
        RUN_DIR.mkdir(exist_ok=True)
        self.ports_file = RUN_DIR / f"fakes-{os.getpid()}.json"
        self.log_path = RUN_DIR / f"fakes-{os.getpid()}.log"
        self.ports_file.unlink(missing_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_CRM), "--ports-file", str(self.ports_file)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))
        self.urls: dict = {}
        try:
            _wait_for(self._read_ports, timeout, "fake_crm.py", alive=lambda: self.proc.poll() is None)
        except Exception:
            self.close()
            raise RuntimeError(f"fake_crm.py did not start; its output:\n{self.log_text()}")

    def _read_ports(self) -> bool:
        try:
            urls = jsonlib.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(urls, dict) or not urls:
            return False
        self.urls = {k: v.rstrip("/") for k, v in urls.items()}
        return True

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _call(self, vendor: str, method: str, path: str, body=None):
        if vendor not in self.urls:
            raise KeyError(f"unknown fake vendor {vendor!r}; known: {sorted(self.urls)}")
        data = None if body is None else jsonlib.dumps(body).encode()
        req = urllib.request.Request(f"{self.urls[vendor]}/__fake__/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"fake {vendor} {method} /__fake__/{path}: {e.code} {e.read()!r}")
        return jsonlib.loads(raw) if raw.strip() else None

    def reset(self, vendor: str | None = None):
        """Forget recorded requests, faults, down flags and config (all vendors by default)."""
        if vendor:
            self._call(vendor, "POST", "reset", {})
        else:  # one call resets every listener
            self._call(next(iter(self.urls)), "POST", "reset", {"all": True})

    def requests(self, vendor: str):
        """The requests this vendor's fake has received, oldest first."""
        return self._call(vendor, "GET", "requests")

    def faults(self, vendor: str, responses: list, match=None, clear: bool = False, method=None, exact=False):
        """Answer the next requests whose path starts with `match` (any, if None; is `match`, if
        exact), and whose method is `method` (any, if None), with these canned responses, in
        order (see tests/fakes/README.md for the response objects)."""
        body = {"responses": responses, "clear": clear, "exact": exact}
        if match is not None:
            body["match"] = match
        if method is not None:
            body["method"] = method
        return self._call(vendor, "POST", "faults", body)

    def down(self, vendor: str, down: bool = True, status: int | None = None,
             retry_after=None):
        """Put the vendor in down mode (every request answered with `status`, 503 by default)
        or bring it back."""
        body = {"down": bool(down)}
        if status is not None:
            body["status"] = status
        if retry_after is not None:
            body["retry_after"] = retry_after
        return self._call(vendor, "POST", "down", body)

    def config(self, vendor: str, cfg: dict):
        return self._call(vendor, "POST", "config", cfg)

    def state(self, vendor: str):
        return self._call(vendor, "GET", "state")

    def close(self):
        if self.proc.poll() is None:
            if _stop_pid(self.proc, signal.SIGTERM, 10) is None:
                _stop_pid(self.proc, signal.SIGKILL, 5)
        self._log.close()
        self.ports_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The service: crm-service serve + nginx


def render_nginx(port: int, fcgi_socket: str, run_dir: str) -> str:
    text = NGINX_TEMPLATE.read_text()
    return (text.replace("__PORT__", str(port))
                .replace("__FCGI_SOCKET__", fcgi_socket)
                .replace("__RUN_DIR__", run_dir))


def _read_http_response(sock: socket.socket, deadline: float) -> bytes:
    """Reads one HTTP response (by Content-Length / chunked / close), or whatever came by the deadline."""
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            body = data[head_end + 4:]
            m = re.search(r"^content-length:\s*(\d+)\s*$", head, re.M)
            if m and len(body) >= int(m.group(1)):
                return data
            if re.search(r"^transfer-encoding:.*chunked", head, re.M) and body.endswith(b"0\r\n\r\n"):
                return data
            status = re.match(r"http/\d\.\d (\d{3})", head)
            if status and (status.group(1) in ("204", "304") or status.group(1).startswith("1")):
                return data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class Service:
    """One crm-service worker (`migrate`, then `serve`) behind its own nginx, in a fresh temp dir.

    Service(dsn, fake_urls, extra_env={"API_KEY": "k"}) starts one; close() stops it and
    asserts the worker exited 0 within 10 s. Usable as a context manager. extra_env values
    of None remove a variable.
    """

    def __init__(self, dsn: str, fake_urls: dict | None = None, extra_env: dict | None = None,
                 binary: str | None = None, start: bool = True):
        self.dsn = dsn
        self.fake_urls = dict(fake_urls or {})
        self.binary = binary or os.environ.get("CRM_BINARY") or str(REPO / ".build/debug/crm-service")
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.binary} is not built (swift build first, or set CRM_BINARY)")
        self.extra_env = dict(extra_env or {})
        self.tmp = tempfile.mkdtemp(prefix="crm-e2e-")
        # nginx's workers run as nobody when started as root: they must reach the socket.
        os.chmod(self.tmp, 0o755)
        self.socket_path = os.path.join(self.tmp, "crm.sock")
        self.nginx_dir = os.path.join(self.tmp, "nginx")
        os.makedirs(self.nginx_dir, mode=0o755)
        self.log_path = os.path.join(self.tmp, "worker.log")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.worker: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self._log = None
        if start:
            try:
                self.start()
            except BaseException:
                self._cleanup_quietly()
                raise

    # -- configuration ------------------------------------------------------------------------
    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not _CONFIG_VARS.match(k)}
        env.update({
            "DB_DSN": self.dsn,
            "FCGI_SOCKET": self.socket_path,
            "FCGI_THREADS": "16",
            "DB_POOL_SIZE": "4",
            "DB_CONNECT_TIMEOUT_S": "2",
            "CRM_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "CRM_ALLOW_PRIVATE_URLS": "true",
            "CRM_HTTP_TIMEOUT_S": "3",
            "LOG_LEVEL": "debug",
            "CORS_ALLOWED_ORIGINS": "https://app.example.com",
            "PORT": str(self.port),
            "GNUTLS_NO_IMPLICIT_INIT": "1",   # as deploy/ runs the worker
        })
        for var, vendor in (("CRM_KLAVIYO_BASE_URL", "klaviyo"), ("CRM_HUBSPOT_BASE_URL", "hubspot"),
                            ("CRM_SALESFORCE_LOGIN_URL", "salesforce")):
            if vendor in self.fake_urls:
                env[var] = self.fake_urls[vendor]
        for k, v in self.extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    @property
    def worker_pid(self) -> int | None:
        return self.worker.pid if self.worker else None

    @property
    def nginx_pid(self) -> int | None:
        return self.nginx.pid if self.nginx else None

    # -- lifecycle ----------------------------------------------------------------------------
    def run_cli(self, *args, timeout: float = 60, extra_env: dict | None = None):
        """Run `crm-service ARGS` with this instance's env in its temp dir; a CompletedProcess."""
        env = self.env
        env.update({k: str(v) for k, v in (extra_env or {}).items()})
        return subprocess.run([self.binary, *args], cwd=self.tmp, env=env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self):
        migrate = self.run_cli("migrate")
        if migrate.returncode != 0:
            raise RuntimeError(f"crm-service migrate exited {migrate.returncode}:\n"
                               f"{migrate.stdout}{migrate.stderr}")
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self._log = open(self.log_path, "ab")
        self.worker = subprocess.Popen([self.binary, "serve"], cwd=self.tmp, env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=self._log,
                                       stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: os.path.exists(self.socket_path), 20, "crm-service serve socket",
                      alive=lambda: self.worker.poll() is None)
        except Exception as e:
            raise RuntimeError(f"{e}\nworker log:\n{self.log_text()[-4000:]}") from None

        conf = os.path.join(self.nginx_dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(render_nginx(self.port, self.socket_path, self.nginx_dir))
        pidfile = os.path.join(self.nginx_dir, "nginx.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        errlog = os.path.join(self.nginx_dir, "error.log")
        self.nginx = subprocess.Popen(
            ["nginx", "-p", self.nginx_dir + "/", "-c", conf, "-e", errlog, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening():
            if not os.path.exists(pidfile):
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        try:
            _wait_for(listening, 10, "nginx", alive=lambda: self.nginx.poll() is None)
        except Exception as e:
            err = self.nginx.stderr.read().decode(errors="replace") if self.nginx.poll() is not None else ""
            raise RuntimeError(f"{e}\n{err}") from None

    def stop(self) -> int | None:
        """Stop nginx (QUIT) and the worker (TERM), each by PID. Returns the worker's exit status
        and asserts that it exited 0 within 10 s."""
        self._stop_nginx()
        if self.worker is None:  # already stopped
            return None
        status = _stop_pid(self.worker, signal.SIGTERM, 10)
        if status is None:  # hung: kill it, then fail
            _stop_pid(self.worker, signal.SIGKILL, 5)
        self.worker = None
        if self._log:
            self._log.close()
            self._log = None
        assert status == 0, (f"crm-service did not exit 0 within 10 s of SIGTERM (status {status});"
                             f" log tail:\n{self.log_text()[-3000:]}")
        return status

    def _stop_nginx(self):
        if self.nginx is not None:
            if _stop_pid(self.nginx, signal.SIGQUIT, 10) is None:
                _stop_pid(self.nginx, signal.SIGTERM, 5)
            if self.nginx.stderr:
                self.nginx.stderr.close()
            self.nginx = None

    def restart(self, extra_env: dict | None = None):
        """Stop this instance and start it again with extra_env merged into its environment."""
        self.stop()
        if extra_env:
            self.extra_env.update(extra_env)
        self.start()

    def clone(self, extra_env: dict | None = None) -> "Service":
        """A second, independent instance with this one's settings plus extra_env. Close it
        (or use `with service.clone({...}) as other:`)."""
        env = dict(self.extra_env)
        env.update(extra_env or {})
        return Service(self.dsn, self.fake_urls, env, binary=self.binary)

    def close(self):
        """Stop everything (asserting a clean worker exit) and remove the temp dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _cleanup_quietly(self):
        self._stop_nginx()
        if self.worker is not None:
            if _stop_pid(self.worker, signal.SIGTERM, 10) is None:
                _stop_pid(self.worker, signal.SIGKILL, 5)
            self.worker = None
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- logs ---------------------------------------------------------------------------------
    def log_text(self, since: int = 0) -> str:
        """The worker's stdout+stderr (from byte offset `since`, see log_mark())."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_mark(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def nginx_log_text(self, name: str = "error.log") -> str:
        try:
            return Path(self.nginx_dir, name).read_text(errors="replace")
        except OSError:
            return ""

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, headers=None, json=None, body=None,
                timeout: float = 10) -> Response:
        """One HTTP request through nginx. headers: a dict or a list of (name, value) pairs
        (repeats allowed). json: an object to send as JSON; body: bytes or str, sent as is."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        names = {k.lower() for k, _ in pairs}
        payload = None
        if json is not None:
            payload = jsonlib.dumps(json).encode()
            if "content-type" not in names:
                pairs.append(("Content-Type", "application/json"))
        elif body is not None:
            payload = body.encode() if isinstance(body, str) else bytes(body)
        if payload is not None and "content-length" not in names and "transfer-encoding" not in names:
            pairs.append(("Content-Length", str(len(payload))))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host="host" in names, skip_accept_encoding=True)
            for k, v in pairs:
                conn.putheader(k, v)
            conn.endheaders()
            if payload:
                conn.send(payload)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.reason, Headers(resp.getheaders()), data)
        finally:
            conn.close()

    def get(self, path, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path, **kw) -> Response:
        return self.request("POST", path, **kw)

    def delete(self, path, **kw) -> Response:
        return self.request("DELETE", path, **kw)

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes to nginx and return the raw response bytes (one response, or all
        that arrived before the server closed or the timeout)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            return _read_http_response(s, time.monotonic() + timeout)


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def parse_raw_response(data: bytes) -> Response:
    """Parse what Service.raw() returned (one response; chunked bodies are decoded)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    reason = parts[2] if len(parts) > 2 else ""
    items = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            items.append((k.strip(), v.strip()))
    headers = Headers(items)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return Response(status, reason, headers, body)
