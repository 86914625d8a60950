"""The Cloud Run image (deploy/cloudrun/Dockerfile), run as Cloud Run runs it: one container,
its entrypoint, its nginx on $PORT and its worker, against the private PostgreSQL and the fake
CRMs on the host's loopback (the container shares the host's network).

Run by scripts/image-test.sh (`make image-test`), which builds the image and starts the engine
and PostgreSQL: CRM_IMAGE names the image, TEST_DB_DSN the database (dropped and created
afresh here, so the first container's MIGRATE_ON_START creates the schema).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from crm_harness import PG, Fakes, free_port  # noqa: E402
from docker_cli import docker  # noqa: E402

IMAGE = os.environ.get("CRM_IMAGE", "")
# Collected by a bare `pytest tests`: without the image and engine that the script provides, skip.
pytestmark = pytest.mark.skipif(not IMAGE, reason="needs CRM_IMAGE: run by scripts/image-test.sh (make image-test)")
API_KEY = "image-test-api-key-0123456789abcdef"
ENCRYPTION_KEY = "image-test-encryption-key-012345"  # 32 characters, as required


class Answer:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


def call(url: str, method: str = "GET", headers: dict | None = None, body=None, timeout: float = 10) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    h = dict(headers or {})
    if data is not None:
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


class Container:
    """One container of the image: `docker run -d`, then waits until /health answers."""

    def __init__(self, dsn: str, extra_env: dict | None = None, mounts: tuple[str, ...] = (), image: str = IMAGE):
        self.name = "crm-image-test-" + uuid.uuid4().hex[:10]
        self.port, self.metrics_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {"PORT": str(self.port), "METRICS_PORT": str(self.metrics_port), "ENVIRONMENT": "production",
               "DB_DSN": dsn, "CRM_ENCRYPTION_KEY": ENCRYPTION_KEY, "API_KEY": API_KEY, **(extra_env or {})}
        args = ["run", "-d", "--name", self.name, "--network", "host"]
        for mount in mounts:
            args += ["--mount", mount]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        docker(*args, image)
        deadline = time.monotonic() + 30
        while True:
            try:
                if call(self.base + "/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if not self.running() or time.monotonic() > deadline:
                log = self.logs()
                self.remove()
                raise RuntimeError(f"the container did not serve /health; its log:\n{log}")
            time.sleep(0.1)

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        r = docker("logs", self.name, check=False)
        return r.stdout + r.stderr

    def processes(self) -> list[tuple[int, str, str]]:
        """(host pid, user, command line) of every process in the container."""
        lines = docker("top", self.name, "-eo", "pid,user,args").stdout.splitlines()[1:]
        return [(int(p), u, a) for p, u, a in (line.split(None, 2) for line in lines)]

    def wait_exit(self, timeout: float):
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s; its log:\n{self.logs()}")
            time.sleep(0.05)

    def remove(self):
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def database():
    admin = PG(re.sub(r"dbname=\S+", "dbname=postgres", os.environ["TEST_DB_DSN"]))
    name = re.search(r"dbname=(\S+)", os.environ["TEST_DB_DSN"]).group(1)
    admin.sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.sql(f'CREATE DATABASE "{name}"')
    return PG(os.environ["TEST_DB_DSN"])


@pytest.fixture(scope="module")
def fakes():
    f = Fakes()
    yield f
    f.close()


@pytest.fixture(scope="module")
def first(database, fakes):
    """The first container: it migrates the new database (MIGRATE_ON_START), as a first deploy does."""
    c = Container(database.dsn, {"MIGRATE_ON_START": "true", "CRM_ALLOW_PRIVATE_URLS": "true",
                                 "CRM_KLAVIYO_BASE_URL": fakes.urls["klaviyo"]})
    yield c
    c.remove()


@pytest.fixture
def container(first, database):
    """A container of its own (the schema is there: no migration)."""
    c = Container(database.dsn)
    yield c
    c.remove()


def test_the_first_start_migrates_and_serves_the_api_through_its_nginx(first, database):
    assert "migrating the database" in first.logs()
    assert database.sql("SELECT count(*) > 0 FROM information_schema.tables WHERE table_schema = 'crm'") == [["t"]]

    health = call(first.base + "/health")
    assert health.status == 200 and health.json()["status"] == "ok", health
    assert health.headers["X-Request-Id"]
    user = {"X-API-Key": API_KEY, "X-User-Id": "image_user_" + uuid.uuid4().hex[:8]}
    listed = call(first.base + "/crm/list", headers=user)
    assert listed.status == 200 and listed.json() == {"integrations": [], "count": 0}, listed
    assert call(first.base + "/crm/list", headers={"X-User-Id": "image_user"}).status == 401
    # /metrics is not public (the config's `deny all`); the instance-local port serves it (with the API key).
    assert call(first.base + "/metrics", headers={"X-API-Key": API_KEY}).status == 403
    metrics = call(f"http://127.0.0.1:{first.metrics_port}/metrics", headers={"X-API-Key": API_KEY})
    assert metrics.status == 200 and b"crm_http_requests_total" in metrics.body, metrics


def test_a_sync_from_the_image_reaches_the_crm(first, fakes):
    user = {"X-API-Key": API_KEY, "X-User-Id": "image_user_" + uuid.uuid4().hex[:8]}
    connected = call(first.base + "/crm/connect", "POST", user,
                     {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert connected.status == 200, connected
    before = len(fakes.state("klaviyo")["events"])
    synced = call(first.base + "/crm/sync/event", "POST", user, {"event": "Image Test", "email": "image@example.com"})
    assert synced.status == 200, synced
    assert [r["status"] for r in synced.json()["results"]] == ["success"], synced
    assert len(fakes.state("klaviyo")["events"]) == before + 1
    assert "pk_test_valid_key" not in first.logs()


def test_the_worker_runs_as_its_own_user_and_nginx_workers_unprivileged(container):
    processes = container.processes()
    workers = [u for _, u, a in processes if a.endswith("crm-service serve")]
    assert workers and all(u not in ("root", "0") for u in workers), processes
    nginx_workers = [u for _, u, a in processes if a.startswith("nginx: worker")]
    assert nginx_workers and all(u not in ("root", "0") for u in nginx_workers), processes


def test_sigterm_stops_nginx_and_the_worker_and_exits_0(container):
    start = time.monotonic()
    docker("stop", "-t", "10", container.name, timeout=30)
    # Cloud Run sends SIGKILL 10 s after SIGTERM: an idle instance must be gone long before.
    assert time.monotonic() - start < 5
    assert container.exit_code() == 0, container.logs()
    log = container.logs()
    assert re.search(r'"msg":"worker stopped".*"drained":"true"', log), log


def test_a_worker_that_dies_takes_the_container_down_with_a_failure(container):
    [worker] = [p for p, _, a in container.processes() if a.endswith("crm-service serve")]
    os.kill(worker, signal.SIGKILL)
    container.wait_exit(10)
    assert container.exit_code() != 0
    assert "crm-service exited" in container.logs()


def test_cloud_sql_through_its_unix_socket_by_instance_connection_name(first, database):
    # Cloud Run mounts a Cloud SQL instance's socket directory at /cloudsql/<instance>; here,
    # the private PostgreSQL's socket directory stands in for it. DB_DSN names no host: the
    # worker adds host=/cloudsql/<instance> (the port only because this cluster's is not 5432).
    socket_dir = os.environ.get("TEST_DB_SOCKET_DIR")
    if not socket_dir:
        pytest.skip("TEST_DB_SOCKET_DIR (the private PostgreSQL's socket directory) is not set")
    instance = "crm-project:europe-west1:crm-db"
    port = re.search(r"port=(\d+)", database.dsn).group(1)
    dbname = re.search(r"dbname=(\S+)", database.dsn).group(1)
    c = Container(f"dbname={dbname} user=postgres port={port}", {"INSTANCE_CONNECTION_NAME": instance},
                  mounts=(f"type=bind,source={socket_dir},target=/cloudsql/{instance}",))
    try:
        user = {"X-API-Key": API_KEY, "X-User-Id": "image_user_" + uuid.uuid4().hex[:8]}
        listed = call(c.base + "/crm/list", headers=user)
        assert listed.status == 200 and listed.json() == {"integrations": [], "count": 0}, (listed, c.logs())
        # The connection came through the socket: no TCP session from the worker at all.
        assert database.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crm-service' "
                            "AND datname = $1 AND client_port = -1", dbname)[0][0] != "0"
    finally:
        c.remove()


# The fake Klaviyo behind TLS: nginx on the host's loopback, with a certificate for localhost
# from a CA made for the test.
TLS_PROXY_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def tls_crm(fakes, tmp_path_factory):
    """(the fake Klaviyo's https:// URL, the image with the test CA added to its trust store)."""
    d = tmp_path_factory.mktemp("tls")
    os.chmod(d, 0o755)

    def openssl(*args: str):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=crm-service test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.crt")
    port = free_port()
    (d / "nginx.conf").write_text(TLS_PROXY_CONF.format(dir=d, port=port, upstream=fakes.urls["klaviyo"]))
    proxy = subprocess.Popen(["nginx", "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trusting = IMAGE + "-test-ca"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proxy.poll() is None and time.monotonic() < deadline, (d / "error.log").read_text()
                time.sleep(0.05)
        (d / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY ca.crt /usr/local/share/ca-certificates/crm-service-test-ca.crt\n"
                                      "RUN update-ca-certificates\n")
        docker("build", "-t", trusting, str(d), timeout=300)
        yield f"https://localhost:{port}", trusting
    finally:
        proxy.terminate()
        proxy.wait(10)
        docker("rmi", "-f", trusting, check=False)


def test_crm_calls_from_the_image_verify_tls_with_the_system_trust_store(first, database, tls_crm):
    url, trusting_image = tls_crm
    env = {"CRM_ALLOW_PRIVATE_URLS": "true", "CRM_KLAVIYO_BASE_URL": url}
    connect = {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}}
    user = {"X-API-Key": API_KEY, "X-User-Id": "image_user_" + uuid.uuid4().hex[:8]}
    # The image as built does not trust the test CA: the certificate is refused.
    plain = Container(database.dsn, env)
    try:
        refused = call(plain.base + "/crm/connect", "POST", user, connect)
        assert refused.status == 502 and "unable to get local issuer certificate" in refused.json()["detail"], refused
    finally:
        plain.remove()
    # With the CA in the system's trust store (update-ca-certificates), the same call goes through.
    trusting = Container(database.dsn, env, image=trusting_image)
    try:
        connected = call(trusting.base + "/crm/connect", "POST", user, connect)
        assert connected.status == 200, connected
        synced = call(trusting.base + "/crm/sync/event", "POST", user, {"event": "TLS Test", "email": "tls@example.com"})
        assert [r["status"] for r in synced.json()["results"]] == ["success"], synced
    finally:
        trusting.remove()
