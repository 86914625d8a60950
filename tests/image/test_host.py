"""The systemd units, run by systemd: a Debian 12 host in a container (tests/image/host.Dockerfile:
systemd as PID 1, Debian's PostgreSQL and nginx, crm-service installed by deploy/install.sh),
set up as deploy/README.md ("Install on a Debian 12 host") says. The units' hardening
(system-call filter, address families, read-only system, no capabilities) is in force for
everything the worker does here: migrate, serve, a CRM call, stop.

Run by scripts/image-test.sh (`make image-test`), which builds the image: CRM_HOST_IMAGE names it.
The fake CRMs (tests/fakes/fake_crm.py) run inside the host, as a transient systemd unit.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from docker_cli import docker

IMAGE = os.environ.get("CRM_HOST_IMAGE", "")
pytestmark = pytest.mark.skipif(not IMAGE, reason="needs CRM_HOST_IMAGE: run by scripts/image-test.sh (make image-test)")

REPO = Path(__file__).resolve().parents[2]
API_KEY = "host-test-api-key-0123456789abcdef"
ENCRYPTION_KEY = "host-test-encryption-key-0123456"  # 32 characters
DB_PASSWORD = "host-test-db-password"
ENV_FILE = "/etc/crm-service/crm-service.env"

# Linux capability names by number (capability.h), for those this process lacks.
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
                "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
                "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
                "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
                "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
                "CHECKPOINT_RESTORE"]


class Host:
    """The container: commands run in it as root (`sh`), units and the journal read through it."""

    def __init__(self):
        self.name = "crm-host-test-" + uuid.uuid4().hex[:10]
        # systemd needs most capabilities and a writable cgroup tree. --privileged would do, but
        # fails where this process itself lacks a capability: ask for all that it has.
        bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", Path("/proc/self/status").read_text()).group(1), 16)
        drops = [f"--cap-drop={name}" for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
        docker("run", "-d", "--name", self.name, "--cap-add=ALL", *drops,
               "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
               "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
               "--network", "none", IMAGE)
        try:
            # Until systemd answers at all (just after the start, systemctl cannot reach it yet),
            # then until it has booted.
            deadline = time.monotonic() + 90
            while True:
                r = self.sh("systemctl is-system-running --wait", check=False, timeout=90)
                state = r.stdout.strip()
                if state in ("running", "degraded", "maintenance", "stopping") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if state != "running":
                failed = self.sh("systemctl --failed --no-legend", check=False).stdout
                raise RuntimeError(f"the host's systemd is {state!r} ({r.stderr.strip()}); failed units:\n{failed}")
        except BaseException:
            self.remove()
            raise

    def sh(self, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", self.name, "sh", "-c", command, check=check, timeout=timeout)

    def unit(self, unit: str, *properties: str) -> dict:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl --no-pager -o cat -u {unit}").stdout

    def curl(self, path: str, method: str = "GET", body=None, user: str | None = None, key: bool = True) -> tuple[int, str]:
        """The status and body of a request to this host's nginx (the site on port 80)."""
        args = ["curl", "-s", "-o", "/tmp/body", "-w", "%{http_code}", "-X", method]
        if key:
            args += ["-H", f"X-API-Key: {API_KEY}"]
        if user:
            args += ["-H", f"X-User-Id: {user}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        status = self.sh(shlex.join(args + ["http://localhost" + path]) + "; echo; cat /tmp/body")
        code, _, text = status.stdout.partition("\n")
        return int(code), text

    def wait_active(self, unit: str, timeout: float = 15):
        deadline = time.monotonic() + timeout
        while self.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active":
            if time.monotonic() > deadline:
                raise AssertionError(f"{unit} is not active:\n{self.journal(unit)[-3000:]}")
            time.sleep(0.1)

    def set_env(self, name: str, value: str):
        self.sh(f"sed -i '/^{name}=/d' {ENV_FILE} && printf '%s\\n' {shlex.quote(f'{name}={value}')} >> {ENV_FILE}")

    def remove(self):
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def host():
    h = Host()
    try:
        # deploy/README.md, step 3: a role that may create the schema, its database, pgcrypto,
        # and no bound parameters in PostgreSQL's log; then the env file's three settings.
        h.sh(f"""su postgres -c "psql -q -v ON_ERROR_STOP=1 \\
                -c \\"CREATE ROLE crm_service LOGIN PASSWORD '{DB_PASSWORD}'\\" \\
                -c 'CREATE DATABASE crm OWNER crm_service' \\
                -c 'ALTER ROLE crm_service SET log_parameter_max_length = 0'" \\
              && su postgres -c "psql -q -d crm -c 'CREATE EXTENSION pgcrypto'" """)
        h.set_env("DB_DSN", f"host=127.0.0.1 dbname=crm user=crm_service password={DB_PASSWORD}")
        h.set_env("CRM_ENCRYPTION_KEY", ENCRYPTION_KEY)
        h.set_env("API_KEY", API_KEY)
        # The fake CRMs on this host's loopback.
        docker("cp", str(REPO / "tests/fakes/fake_crm.py"), f"{h.name}:/opt/fake_crm.py")
        h.sh("systemd-run --unit fake-crm python3 /opt/fake_crm.py --ports-file /run/fakes.json")
        deadline = time.monotonic() + 20
        while h.sh("test -s /run/fakes.json", check=False).returncode != 0:
            assert time.monotonic() < deadline, h.journal("fake-crm")
            time.sleep(0.1)
        urls = json.loads(h.sh("cat /run/fakes.json").stdout)
        h.set_env("CRM_ALLOW_PRIVATE_URLS", "true")
        h.set_env("CRM_KLAVIYO_BASE_URL", urls["klaviyo"])
        yield h
    finally:
        h.remove()


@pytest.fixture
def worker(host):
    """crm-service.service started (and stopped after the test)."""
    host.sh("systemctl start crm-service")
    host.wait_active("crm-service")
    yield host
    host.sh("systemctl stop crm-service crm-service@2 crm-service-socket crm-service.socket; systemctl reset-failed", check=False)


def test_the_documented_install_migrates_starts_and_serves_through_nginx(worker):
    migrate = worker.unit("crm-service-migrate", "Result", "ExecMainStatus")
    assert migrate == {"Result": "success", "ExecMainStatus": "0"}, worker.journal("crm-service-migrate")
    assert worker.sh("su postgres -c \"psql -At -d crm -c 'SELECT count(*) > 0 FROM crm.schema_migrations'\"").stdout.strip() == "t"
    assert worker.curl("/health", key=False)[0] == 200
    status, body = worker.curl("/crm/list", user="host_user_1")
    assert status == 200 and json.loads(body) == {"integrations": [], "count": 0}, body
    # check-config printed the effective configuration, secrets masked.
    journal = worker.journal("crm-service")
    assert "API_KEY=********" in journal and "password=********" in journal, journal[-2000:]
    for secret in (API_KEY, ENCRYPTION_KEY, DB_PASSWORD):
        assert secret not in journal


def test_a_sync_under_the_units_hardening_reaches_the_crm(worker):
    user = "host_user_" + uuid.uuid4().hex[:8]
    status, body = worker.curl("/crm/connect", "POST", {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}}, user)
    assert status == 200, body
    status, body = worker.curl("/crm/sync/event", "POST", {"event": "Host Test", "email": "host@example.com"}, user)
    assert status == 200, body
    assert [r["status"] for r in json.loads(body)["results"]] == ["success"], body
    assert "pk_test_valid_key" not in worker.journal("crm-service")


def test_a_crashed_worker_is_restarted(worker):
    before = worker.unit("crm-service", "MainPID", "NRestarts")
    worker.sh("systemctl kill -s KILL crm-service")
    deadline = time.monotonic() + 10   # RestartSec=2
    while True:
        now = worker.unit("crm-service", "MainPID", "NRestarts", "ActiveState")
        if now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"]):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    assert worker.curl("/health", key=False)[0] == 200


def test_stop_drains_and_exits_0(worker):
    worker.sh("systemctl stop crm-service")
    assert worker.unit("crm-service", "Result", "ExecMainStatus", "ActiveState") == \
        {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}
    assert re.search(r'"msg":"worker stopped".*"drained":"true"', worker.journal("crm-service"))


def test_socket_activation_starts_the_worker_at_the_first_request(worker):
    worker.sh("systemctl stop crm-service && systemctl start crm-service.socket")
    # Only nginx's group and the service may connect.
    assert worker.sh("stat -c '%A %U:%G' /run/crm-service/fcgi.sock").stdout.strip() == "srw-rw---- crm-service:www-data"
    assert worker.sh("systemctl is-active crm-service-socket", check=False).stdout.strip() == "inactive"
    assert worker.curl("/health", key=False)[0] == 200
    assert worker.sh("systemctl is-active crm-service-socket").stdout.strip() == "active"
    assert worker.curl("/crm/list", user="host_user_2")[0] == 200
    worker.sh("systemctl stop crm-service.socket crm-service-socket")
    assert worker.unit("crm-service-socket", "Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}


def test_an_extra_instance_runs_beside_the_first_on_its_own_socket(worker):
    worker.sh("systemctl start crm-service@2")
    worker.wait_active("crm-service@2")
    assert worker.sh("stat -c '%A %U' /run/crm-service-2/fcgi.sock").stdout.strip() == "srw-rw-rw- crm-service"
    assert worker.curl("/health", key=False)[0] == 200   # the first one, through nginx
    worker.sh("systemctl stop crm-service@2")
    assert worker.unit("crm-service@2", "Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}


def test_a_configuration_error_is_reported_and_given_up_on(host):
    host.set_env("CRM_ENCRYPTION_KEY", "short")
    try:
        assert host.sh("systemctl start crm-service", check=False).returncode != 0
        # check-config refuses (exit 2); the unit tries 5 times in its minute, then stays failed.
        deadline = time.monotonic() + 30
        while host.unit("crm-service", "ActiveState")["ActiveState"] != "failed":
            assert time.monotonic() < deadline, host.unit("crm-service", "ActiveState", "NRestarts")
            time.sleep(0.2)
        journal = host.journal("crm-service")
        assert "CRM_ENCRYPTION_KEY must be exactly 32 characters" in journal
        assert journal.count("refusing to start") == 5
    finally:
        host.set_env("CRM_ENCRYPTION_KEY", ENCRYPTION_KEY)
        host.sh("systemctl reset-failed crm-service", check=False)


def test_the_worker_units_exposure_is_what_deploy_readme_says(host):
    # deploy/README.md, "What the units do": `systemd-analyze security` rates the worker 1.4 ("OK").
    for unit in ("crm-service.service", "crm-service-socket.service", "crm-service@2.service"):
        out = host.sh(f"systemd-analyze security --no-pager {unit}").stdout
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out)
        assert level and float(level.group(1)) <= 1.4 and level.group(2) == "OK", (unit, out[-600:])


INSTALL = "/opt/crm-service-deploy/install.sh --binary /opt/crm-service-deploy/crm-service --no-build"


def test_rerunning_install_sh_upgrades_in_place_and_switches_variants(worker):
    # An upgrade, as deploy/README.md says: the same command again, with systemd running.
    user = "host_user_" + uuid.uuid4().hex[:8]
    status, _ = worker.curl("/crm/connect", "POST", {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}}, user)
    assert status == 200
    env_before = worker.sh(f"sha256sum {ENV_FILE}").stdout
    before = worker.unit("crm-service", "MainPID")["MainPID"]
    nginx_before = worker.unit("nginx", "MainPID")["MainPID"]
    migrations_before = worker.journal("crm-service-migrate").count("Finished crm-service-migrate.service")

    out = worker.sh(INSTALL, timeout=120).stderr
    assert "restarted crm-service.service" in out and "reloaded nginx" in out, out
    assert worker.unit("crm-service", "MainPID")["MainPID"] not in (before, "0")
    assert worker.sh("systemctl is-enabled crm-service").stdout.strip() == "enabled"
    assert worker.journal("crm-service-migrate").count("Finished crm-service-migrate.service") == migrations_before + 1
    assert worker.unit("nginx", "MainPID")["MainPID"] == nginx_before   # reloaded, not restarted
    assert worker.sh(f"sha256sum {ENV_FILE}").stdout == env_before      # the secrets are never touched
    status, body = worker.curl("/crm/list", user=user)
    assert status == 200 and json.loads(body)["count"] == 1, body

    # To the socket-activated variant and back.
    out = worker.sh(INSTALL + " --socket-activation", timeout=120).stderr
    assert "restarted crm-service-socket.service" in out, out
    assert worker.sh("systemctl is-enabled crm-service", check=False).stdout.strip() == "disabled"
    assert worker.sh("systemctl is-active crm-service", check=False).stdout.strip() == "inactive"
    assert worker.sh("systemctl is-active crm-service.socket crm-service-socket").stdout.split() == ["active", "active"]
    assert worker.curl("/crm/list", user=user)[0] == 200
    out = worker.sh(INSTALL, timeout=120).stderr
    assert "restarted crm-service.service" in out, out
    assert worker.sh("systemctl is-enabled crm-service.socket", check=False).stdout.strip() == "disabled"
    assert worker.sh("systemctl is-active crm-service.socket", check=False).stdout.strip() == "inactive"
    assert worker.curl("/crm/list", user=user)[0] == 200
