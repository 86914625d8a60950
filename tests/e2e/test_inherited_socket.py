"""The worker on a listening socket it inherits (fd 0, as spawn-fcgi hands it over; systemd
socket activation passes fd 3 the same way): it serves through nginx, and on SIGTERM it exits 0
without shutting the socket down, since the socket belongs to whoever passed it (systemd keeps
it for the next start)."""
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from crm_harness import TEST_ENCRYPTION_KEY, free_port, render_nginx, REPO


def test_inherited_socket_serves_and_survives_the_workers_sigterm(pg):
    tmp = tempfile.mkdtemp(prefix="crm-inherit-")
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "fcgi.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.listen(64)
    binary = os.environ.get("CRM_BINARY") or str(REPO / ".build/debug/crm-service")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DB_DSN": pg.dsn, "CRM_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
           "FCGI_THREADS": "4", "FCGI_SOCKET": os.path.join(tmp, "unused.sock"), "LOG_LEVEL": "info"}
    log = open(os.path.join(tmp, "worker.log"), "wb")
    worker = subprocess.Popen([binary, "serve"], stdin=listener.fileno(), stdout=log, stderr=log, env=env, cwd=tmp)
    port = free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(render_nginx(port, path, tmp))
    nginx = subprocess.Popen(["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf"), "-e", os.path.join(tmp, "error.log"),
                              "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        body = None
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body and b'"status":"ok"' in body, body
        assert not os.path.exists(os.path.join(tmp, "unused.sock")), "the worker listened on FCGI_SOCKET instead of fd 0"

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        text = open(os.path.join(tmp, "worker.log")).read()
        assert '"listen":"inherited(0)"' in text and "worker stopped" in text, text

        # The socket was not shut down: a new connection is still queued for the next worker.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        probe.connect(path)
        probe.close()
    finally:
        if worker.poll() is None:
            worker.kill()
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)
        listener.close()
        log.close()
