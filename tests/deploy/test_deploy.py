"""Offline checks of the deployment files in deploy/.

1. the production nginx site passes `nginx -t` when included from a minimal main config (and
   from Debian's own /etc/nginx/nginx.conf, and with its TLS block uncommented), and nginx's
   own errors get the same JSON answers from it, the Cloud Run config and the dev/test config
   (each writes them out: they are installed in three different ways);
2. `systemd-analyze verify` prints nothing for every unit (in a scratch root holding a dummy
   executable and env file, since the units name /usr/local/bin/crm-service);
3. `install.sh --root <tmp> --no-systemctl`, run twice, leaves the same files with the same
   bytes, modes and mtimes, and never overwrites an existing env file;
4. the env example lists every variable of API.md's Configuration section (and README's table),
   and its commented-out defaults are the documented ones;
5. the Cloud Run entrypoint and install.sh pass `bash -n`, and the Cloud Run nginx config
   rendered by the entrypoint for PORT=8080 passes `nginx -t`.
Plus, where the kernel allows a private mount namespace with overlayfs: install.sh into the
real root (overlaid, so the host is untouched) creates the user, sets owners, and the result
passes `nginx -t` with Debian's config and `systemd-analyze verify` without --root.

nginx -t needs root (it opens pid and log files); the tests that need it skip otherwise.
systemd-analyze comes from Debian's systemd package, installed with apt-get when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
ENTRYPOINT = DEPLOY / "cloudrun" / "entrypoint.sh"
SITE = DEPLOY / "nginx" / "crm-service.conf"
CLOUDRUN_NGINX = DEPLOY / "cloudrun" / "nginx.conf"
ENV_EXAMPLE = DEPLOY / "crm-service.env.example"
UNIT_FILES = [
    "crm-service.service",
    "crm-service.socket",
    "crm-service-socket.service",
    "crm-service-migrate.service",
    "crm-service@.service",
]
SERVICE_UNITS = ["crm-service.service", "crm-service-socket.service", "crm-service-migrate.service", "crm-service@2.service"]

# API.md's Configuration section, for when ../shared/API.md is not there.
API_VARIABLES = [
    "DB_DSN", "INSTANCE_CONNECTION_NAME", "ENVIRONMENT", "DEBUG", "LOG_LEVEL", "CRM_ENCRYPTION_KEY",
    "PORT", "API_KEY", "CORS_ALLOWED_ORIGINS", "FCGI_SOCKET", "FCGI_THREADS", "CRM_HTTP_TIMEOUT_S",
    "CRM_RETRY_MAX_ATTEMPTS", "CRM_RETRY_BASE_DELAY_S", "DB_POOL_SIZE", "CRM_KLAVIYO_BASE_URL",
    "CRM_HUBSPOT_BASE_URL", "CRM_SALESFORCE_LOGIN_URL", "CRM_KLAVIYO_REVISION",
    "CRM_SALESFORCE_API_VERSION", "CRM_HUBSPOT_API_VERSION", "CRM_ALLOW_PRIVATE_URLS",
]


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="nginx -t and install.sh's owners need root")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def apt_install(*packages: str) -> None:
    """apt-get install, with `apt-get update` first only when the package is not found.
    Service starts are forbidden while installing (as scripts/deps.sh does)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        if run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=900).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, timeout=900, check=True)
            run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=900, check=True)
    finally:
        if own_policy:
            policy.unlink()


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if not is_root():
            pytest.skip(f"{name} is missing and installing {package} needs root")
        apt_install(package)
        path = shutil.which(name)
    assert path, f"{name} still missing after apt-get install {package}"
    return path


@pytest.fixture(scope="session")
def nginx() -> str:
    if not is_root():
        pytest.skip("nginx -t needs root (it opens pid and log files)")
    return require_tool("nginx", "nginx")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    return require_tool("systemd-analyze", "systemd")


def nginx_test(nginx: str, prefix: Path, conf: Path) -> None:
    result = run([nginx, "-t", "-p", f"{prefix}/", "-c", conf, "-e", prefix / "error.log"])
    assert result.returncode == 0, f"nginx -t failed for {conf}:\n{result.stderr}\n--- config ---\n{conf.read_text()}"


def site_for_test(tmp: Path, text: str | None = None) -> Path:
    """The site, with its log files moved into tmp (nginx -t creates the files it logs to)."""
    text = SITE.read_text() if text is None else text
    assert "/var/log/nginx/" in text
    site = tmp / "crm-service.conf"
    site.write_text(text.replace("/var/log/nginx/", f"{tmp}/"))
    return site


def minimal_main(tmp: Path, site: Path) -> Path:
    main = tmp / "nginx.conf"
    main.write_text(textwrap.dedent(f"""\
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log;
        events {{ worker_connections 64; }}
        http {{
            client_body_temp_path {tmp}/client_body_temp;
            fastcgi_temp_path {tmp}/fastcgi_temp;
            proxy_temp_path {tmp}/proxy_temp;
            uwsgi_temp_path {tmp}/uwsgi_temp;
            scgi_temp_path {tmp}/scgi_temp;
            include {site};
        }}
        """))
    return main


# --- 1. nginx site ---------------------------------------------------------------------------

def test_site_passes_nginx_t_from_minimal_main_config(nginx, tmp_path):
    nginx_test(nginx, tmp_path, minimal_main(tmp_path, site_for_test(tmp_path)))


def test_site_with_tls_block_uncommented_passes_nginx_t(nginx, tmp_path):
    openssl = require_tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-keyout", key, "-out", cert])
    assert made.returncode == 0, made.stderr
    lines, uncommented = [], 0
    for line in SITE.read_text().splitlines():
        m = re.match(r"^(\s*)# ((listen .*443 ssl.*)|(ssl_\w+\s.*))$", line)
        if m:
            line = m.group(1) + m.group(2)
            uncommented += 1
        lines.append(line)
    assert uncommented >= 4, "the TLS block was not found"
    text = "\n".join(lines).replace("/etc/ssl/certs/crm-service.pem", str(cert))
    text = text.replace("/etc/ssl/private/crm-service.key", str(key))
    nginx_test(nginx, tmp_path, minimal_main(tmp_path, site_for_test(tmp_path, text)))


def test_site_passes_nginx_t_inside_debians_main_config(nginx, tmp_path):
    debian = Path("/etc/nginx/nginx.conf")
    if not debian.exists():
        pytest.skip("no /etc/nginx/nginx.conf")
    text = debian.read_text()
    include = "include /etc/nginx/sites-enabled/*;"
    assert include in text, "Debian's nginx.conf no longer includes sites-enabled"
    site = site_for_test(tmp_path)
    text = text.replace(include, f"include {site};")  # instead of the default site, as install.sh does
    text = re.sub(r"(?m)^pid .*;$", f"pid {tmp_path}/nginx.pid;", text)
    main = tmp_path / "nginx.conf"
    main.write_text(text)
    result = run([nginx, "-t", "-c", main])  # Debian's relative includes (mime.types) resolve from /etc/nginx
    assert result.returncode == 0, result.stderr


def test_site_has_the_required_parts():
    text = SITE.read_text()
    active = "\n".join(l.split("#", 1)[0] for l in text.splitlines())  # without comments
    assert re.search(r"upstream crm_service \{\s*server unix:/run/crm-service/fcgi\.sock max_fails=0;", active)
    assert "fastcgi_keep_conn" not in active and not re.search(r"^\s*keepalive \d", active, re.M), \
        "upstream keep-alive must stay off by default (PLATFORM-NOTES.md)"
    assert re.search(r"^\s*# keepalive \d+;", text, re.M), "the commented keepalive line documents how to turn it on"
    for needle in ["listen 80", "server_tokens off;", "client_max_body_size 1m;", "error_page 413",
                   "error_page 502 504", "Retry-After", "error_page 400", "error_page 414",
                   "location = /metrics", "deny  all;", "fastcgi_pass crm_service;",
                   "fastcgi_param REQUEST_URI", "fastcgi_param HTTP_PROXY"]:
        assert needle in active, needle
    # Every fastcgi_param of the dev config is in the production site too.
    dev = set(re.findall(r"fastcgi_param\s+(\w+)", (REPO / "nginx.conf").read_text()))
    prod = set(re.findall(r"fastcgi_param\s+(\w+)", active))
    assert dev <= prod, dev - prod



def effective(directive: str, location: str, config: str) -> str | None:
    """A directive's value in a location: its own, else the one it inherits from the server or
    http level (the config without its location blocks)."""
    own = re.findall(rf"\b{directive}\s+([^;]+);", location)
    outer = re.findall(rf"\b{directive}\s+([^;]+);", re.sub(r"location[^{]*\{.*?\n\s*\}", "", config, flags=re.S))
    return (own or outer or [None])[-1]


def error_answers(text: str) -> dict[str, tuple]:
    """The JSON error answers of a config's first (API) server block: for each error_page code,
    what its location returns, with its headers and (inherited or own) content type and charset."""
    active = "\n".join(l.split("#", 1)[0] for l in text.splitlines())
    start = re.search(r"^\s*server\s*\{", active, re.M).end()
    depth, end = 1, start
    while depth:  # to the brace that closes the server block
        depth += {"{": 1, "}": -1}.get(active[end], 0)
        end += 1
    server = active[start:end]
    locations = {name: body for name, body in re.findall(r"location\s+(?:=\s+)?(@\w+|/__nginx_error__/\d+)\s*\{(.*?)\n\s*\}", server, re.S)}
    answers = {}
    for codes, target in re.findall(r"error_page\s+([\d ]+?)\s+=?\s*(@\w+|/__nginx_error__/\d+);", server):
        body = locations[target]
        answer = (re.search(r"return\s+(\d+\s+'[^']*')", body).group(1),
                  tuple(sorted(re.findall(r"add_header\s+([^;]+);", body))),
                  tuple(effective(directive, body, active) for directive in ("default_type", "charset", "charset_types")),
                  "internal;" in body or target.startswith("@"))
        for code in codes.split():
            answers[code] = answer
    return answers


def test_the_three_nginx_configs_answer_errors_alike():
    """nginx's own errors are written out in each config (dev/test, the Debian site, Cloud Run):
    they must give the same statuses, JSON bodies and headers everywhere."""
    site = error_answers(SITE.read_text())
    cloudrun = error_answers(CLOUDRUN_NGINX.read_text())
    dev = error_answers((REPO / "nginx.conf").read_text())
    assert {"400", "404", "405", "413", "414", "494", "501", "502", "504", "505"} <= set(site), sorted(site)
    assert cloudrun == site
    # The dev config has no access rules (no 403); every answer it has is the site's.
    assert set(site) - set(dev) == {"403"}, sorted(set(site) ^ set(dev))
    assert {code: site[code] for code in dev} == dev
    for code, (answer, headers, types, internal) in site.items():
        assert re.fullmatch(r"\d{3} '\{\"detail\":\"[^\"]+\"\}'", answer), (code, answer)
        assert any(h.startswith("X-Request-Id") for h in headers), (code, headers)
        assert types[0] == "application/json" and types[1] == "utf-8" and internal, (code, types)


# --- 2. systemd units -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unit_root(tmp_path_factory, systemd_analyze) -> Path:
    """A scratch root for systemd-analyze --root: the distribution's units (sysinit.target,
    network-online.target, ...), our units, and dummy executables and env file."""
    root = tmp_path_factory.mktemp("unit-root")
    system_units = Path("/usr/lib/systemd/system")
    if not system_units.is_dir():
        system_units = Path("/lib/systemd/system")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    for exe in ["usr/local/bin/crm-service", "usr/bin/env"]:
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    env = root / "etc/crm-service/crm-service.env"
    env.parent.mkdir(parents=True)
    env.write_text(ENV_EXAMPLE.read_text())
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNIT_FILES:
        shutil.copy(DEPLOY / "systemd" / unit, root / "etc/systemd/system" / unit)
    return root


@pytest.mark.parametrize("unit", UNIT_FILES + ["crm-service@2.service"])
def test_unit_passes_systemd_analyze_verify(systemd_analyze, unit_root, unit):
    # A unit file is verified by path; a template instance by name (loaded from the root).
    target = unit_root / "etc/systemd/system" / unit if "@." in unit or "@" not in unit else unit
    result = run([systemd_analyze, "verify", f"--root={unit_root}", target], cwd=unit_root / "etc/systemd/system")
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify {unit}:\n{output}"


def test_verify_would_notice_a_missing_executable(systemd_analyze, unit_root, tmp_path):
    """The check above is meaningful: without the dummy binary, verify complains."""
    root = tmp_path / "root"
    shutil.copytree(unit_root, root, symlinks=True)
    (root / "usr/local/bin/crm-service").unlink()
    result = run([systemd_analyze, "verify", f"--root={root}", root / "etc/systemd/system/crm-service.service"])
    assert "crm-service" in (result.stdout + result.stderr)


@pytest.mark.parametrize("unit", SERVICE_UNITS)
def test_service_is_hardened(systemd_analyze, unit_root, unit):
    result = run([systemd_analyze, "security", "--offline=true", f"--root={unit_root}", unit],
                 cwd=unit_root / "etc/systemd/system")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.0, result.stdout


def unit_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("unit", ["crm-service.service", "crm-service-socket.service", "crm-service@.service"])
def test_worker_units_have_the_required_settings(unit):
    s = unit_settings(unit)
    expected = {
        "User": "crm-service", "Group": "crm-service", "DynamicUser": "no", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "", "EnvironmentFile": "/etc/crm-service/crm-service.env",
        "ExecStartPre": "/usr/local/bin/crm-service check-config", "Restart": "on-failure",
        "RestartSec": "2", "KillSignal": "SIGTERM", "WorkingDirectory": "/var/lib/crm-service",
        "StateDirectory": "crm-service",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], f"{unit}: {key}={s.get(key)}"
    assert s["ExecStart"][0].endswith("/usr/local/bin/crm-service serve")
    assert int(s["TimeoutStopSec"][0]) >= 35
    if unit == "crm-service.service":
        assert s["RuntimeDirectory"] == ["crm-service"]
    if unit == "crm-service-socket.service":
        assert "RuntimeDirectory" not in s, "it would remove the socket unit's directory on stop"


def test_socket_unit():
    s = unit_settings("crm-service.socket")
    assert s["ListenStream"] == ["/run/crm-service/fcgi.sock"]
    assert (s["SocketUser"], s["SocketGroup"], s["SocketMode"]) == (["crm-service"], ["www-data"], ["0660"])
    assert s["Service"] == ["crm-service-socket.service"]


def test_migrate_unit():
    s = unit_settings("crm-service-migrate.service")
    assert s["Type"] == ["oneshot"]
    assert s["ExecStart"] == ["/usr/local/bin/crm-service migrate"]
    assert s["EnvironmentFile"] == ["/etc/crm-service/crm-service.env"]
    assert "crm-service.service" in s["Before"][0].split()


# --- 3. install.sh ----------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: type, mode, and content hash (files) or link target, plus the
    mtime of files (a rewrite with the same bytes would still change it)."""
    tree: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                tree[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), digest, st.st_mtime_ns)
    return tree


@pytest.fixture
def dummy_binary(tmp_path) -> Path:
    binary = tmp_path / "crm-service-dummy"
    binary.write_text("#!/bin/sh\necho dummy crm-service \"$@\"\n")
    binary.chmod(0o644)  # install.sh must make it 0755
    return binary


def install(root: Path, binary: Path, *extra: str) -> subprocess.CompletedProcess:
    result = run(["bash", INSTALL, "--root", root, "--binary", binary, "--no-systemctl", *extra])
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_install_twice_leaves_identical_tree(tmp_path, dummy_binary):
    root = tmp_path / "root"
    install(root, dummy_binary)
    first = snapshot(root)
    install(root, dummy_binary)
    second = snapshot(root)
    assert first == second
    # And the same again when asked for the socket variant (it changes only what is enabled).
    install(root, dummy_binary, "--socket-activation")
    assert snapshot(root) == first

    expected = {
        "usr/local/bin/crm-service": "0o755",
        "etc/crm-service/crm-service.env": "0o640",
        "etc/nginx/sites-available/crm-service.conf": "0o644",
        "usr/local/share/crm-service/crm-service.env.example": "0o644",
        "usr/local/share/crm-service/crm-service.conf": "0o644",
        **{f"etc/systemd/system/{u}": "0o644" for u in UNIT_FILES},
    }
    for rel, mode in expected.items():
        assert first[rel][0] == "file" and first[rel][1] == mode, (rel, first.get(rel))
    assert (root / "usr/local/bin/crm-service").read_bytes() == dummy_binary.read_bytes()
    assert (root / "etc/crm-service/crm-service.env").read_bytes() == ENV_EXAMPLE.read_bytes()
    for unit in UNIT_FILES:
        assert (root / "etc/systemd/system" / unit).read_bytes() == (DEPLOY / "systemd" / unit).read_bytes()
    assert first["etc/nginx/sites-enabled/crm-service.conf"] == ("link", "/etc/nginx/sites-available/crm-service.conf")
    assert first["var/lib/crm-service"] == ("dir", "0o750")
    assert first["etc/crm-service"] == ("dir", "0o750")


def test_install_never_overwrites_env_file(tmp_path, dummy_binary):
    root = tmp_path / "root"
    env = root / "etc/crm-service/crm-service.env"
    env.parent.mkdir(parents=True)
    secret = b"DB_DSN=host=db dbname=crm user=crm password=s3cret\nCRM_ENCRYPTION_KEY=0123456789abcdef0123456789abcdef\n"
    env.write_bytes(secret)
    env.chmod(0o600)
    for _ in range(2):
        install(root, dummy_binary)
        assert env.read_bytes() == secret
        assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_install_replaces_a_changed_binary_and_reports_nothing_when_unchanged(tmp_path, dummy_binary):
    root = tmp_path / "root"
    install(root, dummy_binary)
    again = install(root, dummy_binary)
    assert "installed" not in again.stderr, again.stderr
    newer = tmp_path / "crm-service-newer"
    newer.write_text("#!/bin/sh\necho newer\n")
    result = install(root, newer)
    assert "usr/local/bin/crm-service" in result.stderr
    assert (root / "usr/local/bin/crm-service").read_text() == newer.read_text()


def test_install_keeps_an_edited_site_and_puts_the_new_one_beside_it(tmp_path, dummy_binary):
    root = tmp_path / "root"
    install(root, dummy_binary)
    site = root / "etc/nginx/sites-available/crm-service.conf"
    edited = site.read_text().replace(
        "    # server unix:/run/crm-service-2/fcgi.sock max_fails=0;",
        "    server unix:/run/crm-service-2/fcgi.sock max_fails=0;")
    assert edited != site.read_text()
    site.write_text(edited)
    result = install(root, dummy_binary)
    assert site.read_text() == edited
    assert (root / "etc/nginx/sites-available/crm-service.conf.new").read_bytes() == SITE.read_bytes()
    assert "kept your edited" in result.stderr
    before = snapshot(root)
    install(root, dummy_binary)
    assert snapshot(root) == before
    # Back to the shipped version: the .new file goes away, updates resume.
    site.write_bytes(SITE.read_bytes())
    install(root, dummy_binary)
    assert not (root / "etc/nginx/sites-available/crm-service.conf.new").exists()


def test_install_disables_debians_default_site_unless_kept(tmp_path, dummy_binary):
    for keep in (False, True):
        root = tmp_path / ("keep" if keep else "drop")
        enabled = root / "etc/nginx/sites-enabled"
        enabled.mkdir(parents=True)
        (enabled / "default").symlink_to("/etc/nginx/sites-available/default")
        install(root, dummy_binary, *(["--keep-default-site"] if keep else []))
        assert (enabled / "default").is_symlink() == keep


def test_install_fails_clearly_without_a_binary(tmp_path):
    result = run(["bash", INSTALL, "--root", tmp_path / "root", "--binary", tmp_path / "missing", "--no-build"])
    assert result.returncode != 0
    assert "missing" in result.stderr
    result = run(["bash", INSTALL, "--bogus"])
    assert result.returncode != 0 and "unknown argument" in result.stderr


# --- 4. env example -------------------------------------------------------------------------

def api_md_variables() -> list[str]:
    for candidate in (REPO.parent / "shared" / "API.md", Path("/work/shared/API.md")):
        if candidate.exists():
            text = candidate.read_text()
            m = re.search(r"^## Configuration.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
            assert m, f"no Configuration section in {candidate}"
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", m.group(1))
            assert len(names) >= 15, names
            return sorted(set(names))
    return API_VARIABLES


def readme_defaults() -> dict[str, str]:
    """README's configuration table: variable -> default column."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Configuration$(.*?)(?=^## )", text, re.M | re.S).group(1)
    return dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]*) \|", section, re.M))


def env_example_entries() -> dict[str, tuple[bool, str]]:
    """NAME -> (active, value): active lines set it, '#NAME=value' lines show the default."""
    entries: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            assert m.group(2) not in entries, f"{m.group(2)} appears twice"
            entries[m.group(2)] = (m.group(1) == "", m.group(3))
        else:
            assert line == "" or line.startswith("#"), f"not KEY=value nor a comment: {line!r}"
    return entries


def test_env_example_lists_every_api_variable():
    entries = env_example_entries()
    missing = [name for name in api_md_variables() if name not in entries]
    assert not missing, f"missing from {ENV_EXAMPLE.name}: {missing}"


def test_env_example_lists_every_readme_variable_with_its_default():
    entries = env_example_entries()
    defaults = readme_defaults()
    assert len(defaults) >= 20
    missing = [name for name in defaults if name not in entries]
    assert not missing, missing
    for name, (active, value) in entries.items():
        if active:
            continue
        documented = defaults[name].strip().strip("`")
        if re.fullmatch(r"[\w:/.\-]+", documented) and documented not in ("none", "unset"):
            assert value == documented, f"#{name}={value} but README's default is {documented}"


def test_env_example_leaves_secrets_empty_with_hints():
    entries = env_example_entries()
    for secret in ("DB_DSN", "CRM_ENCRYPTION_KEY", "API_KEY"):
        assert entries[secret] == (True, ""), secret
    text = ENV_EXAMPLE.read_text()
    assert "openssl rand -hex 16" in text
    # One comment line right above each variable.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^#?[A-Z][A-Z0-9_]*=", line):
            assert i > 0 and lines[i - 1].startswith("# "), f"no comment above {line!r}"


# --- 5. Cloud Run ---------------------------------------------------------------------------

@pytest.mark.parametrize("script", [ENTRYPOINT, INSTALL])
def test_scripts_pass_bash_n_and_are_executable(script):
    result = run(["bash", "-n", script])
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


def render_cloudrun(out: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("FCGI_SOCKET", "METRICS_PORT", "NGINX_WORKER_PROCESSES")}
    full_env.update(NGINX_TEMPLATE=str(CLOUDRUN_NGINX), **env)
    return run(["bash", ENTRYPOINT, "render-nginx", out], env=full_env)


def test_cloudrun_nginx_rendered_for_port_8080_passes_nginx_t(nginx, tmp_path):
    out = tmp_path / "run"
    result = render_cloudrun(out, PORT="8080")
    assert result.returncode == 0, result.stderr
    conf = out / "nginx.conf"
    text = conf.read_text()
    assert "__" not in re.sub(r"/__nginx_error__/", "", text), "a placeholder was left"
    assert re.search(r"^\s*listen 8080 default_server;", text, re.M)
    # A socket name unique per container start (the worker's identity is host name + socket).
    assert re.search(r"server unix:/run/crm-service/fcgi-[0-9a-f]{12}\.sock max_fails=0;", text), text
    nginx_test(nginx, out, conf)


def test_cloudrun_render_follows_fcgi_socket_and_rejects_bad_ports(tmp_path):
    result = render_cloudrun(tmp_path / "tcp", PORT="9000", FCGI_SOCKET=":9001")
    assert result.returncode == 0, result.stderr
    assert "server 127.0.0.1:9001 " in (tmp_path / "tcp/nginx.conf").read_text()
    for bad in ({"PORT": "80; evil"}, {"PORT": "0"}, {"PORT": "8080", "METRICS_PORT": "8080"}):
        result = render_cloudrun(tmp_path / "bad", **bad)
        assert result.returncode != 0, bad


def test_dockerfile_paths_agree_with_the_entrypoint():
    dockerfile = (DEPLOY / "cloudrun" / "Dockerfile").read_text()
    entry = ENTRYPOINT.read_text()
    assert "FROM debian:12-slim" in dockerfile
    template = re.search(r'NGINX_TEMPLATE:-([^}]+)\}', entry).group(1)
    assert f"cloudrun/nginx.conf {template}" in dockerfile
    entry_path = re.search(r'ENTRYPOINT \["([^"]+)"\]', dockerfile).group(1)
    assert f"cloudrun/entrypoint.sh {entry_path}" in dockerfile
    assert "install.sh" in dockerfile and "--no-systemctl" in dockerfile
    assert ".build/release/crm-service" in dockerfile


# --- install.sh into the real root, overlaid ----------------------------------------------------

OVERLAY_SCRIPT = r"""
set -u
work="$1"; binary="$2"; install="$3"; python="$4"
for d in etc usr var; do
    mkdir -p "$work/$d/upper" "$work/$d/work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d/upper,workdir=$work/$d/work" "/$d" || exit 77
done
mount -t tmpfs tmpfs /run || exit 77
snap() {
    "$python" - <<'EOF'
import hashlib, json, os, stat
paths = ["/usr/local/bin/crm-service", "/etc/crm-service", "/etc/crm-service/crm-service.env",
         "/var/lib/crm-service", "/etc/nginx/sites-available/crm-service.conf",
         "/etc/nginx/sites-enabled/crm-service.conf", "/etc/systemd/system/crm-service.service"]
out = {}
for p in paths:
    st = os.lstat(p)
    entry = [oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid]
    if stat.S_ISREG(st.st_mode):
        entry += [hashlib.sha256(open(p, "rb").read()).hexdigest(), st.st_mtime_ns]
    if stat.S_ISLNK(st.st_mode):
        entry.append(os.readlink(p))
    out[p] = entry
print(json.dumps(out, sort_keys=True))
EOF
}
bash "$install" --binary "$binary" --no-systemctl || exit 1
first="$(snap)"
bash "$install" --binary "$binary" --no-systemctl || exit 1
second="$(snap)"
[ "$first" = "$second" ] || { echo "second run changed files:"; echo "$first"; echo "$second"; exit 2; }
echo "SNAPSHOT $first"
echo "USER $(getent passwd crm-service)"
echo "OWNERS $(stat -c '%U:%G:%a' /etc/crm-service/crm-service.env /var/lib/crm-service /usr/local/bin/crm-service | tr '\n' ' ')"
[ -e /etc/nginx/sites-enabled/default ] && echo "DEFAULT_SITE still enabled"
nginx -t 2>&1 | sed 's/^/NGINX /'
for u in crm-service.service crm-service.socket crm-service-socket.service crm-service-migrate.service crm-service@2.service; do
    out="$(systemd-analyze verify "$u" 2>&1)"; rc=$?
    [ "$rc" = 0 ] && [ -z "$out" ] && echo "VERIFY_OK $u" || echo "VERIFY_FAIL $u $rc $out"
done
"""


def test_install_into_real_root_in_a_private_overlay(tmp_path, nginx, systemd_analyze, dummy_binary):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare")
    script = tmp_path / "overlay.sh"
    script.write_text(OVERLAY_SCRIPT)
    work = tmp_path / "overlay"
    work.mkdir()
    result = run([unshare, "--mount", "--propagation", "private", "bash", script, work, dummy_binary, INSTALL,
                  sys.executable], timeout=300)
    if result.returncode == 77 or "unshare failed" in result.stderr:
        pytest.skip(f"no private mount namespace with overlayfs here: {result.stderr.strip()[:200]}")
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert re.search(r"^USER crm-service:x:\d+:\d+:[^:]*:/var/lib/crm-service:/usr/sbin/nologin$", out, re.M), out
    owners = re.search(r"^OWNERS (.*)$", out, re.M).group(1).split()
    assert owners == ["root:crm-service:640", "crm-service:crm-service:750", "root:root:755"], owners
    assert "DEFAULT_SITE" not in out
    assert "NGINX nginx: configuration file /etc/nginx/nginx.conf test is successful" in out, out
    for unit in ["crm-service.service", "crm-service.socket", "crm-service-socket.service",
                 "crm-service-migrate.service", "crm-service@2.service"]:
        assert f"VERIFY_OK {unit}" in out, out
    snap = json.loads(re.search(r"^SNAPSHOT (.*)$", out, re.M).group(1))
    assert snap["/etc/nginx/sites-enabled/crm-service.conf"][-1] == "/etc/nginx/sites-available/crm-service.conf"
