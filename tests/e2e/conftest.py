"""pytest fixtures for the end-to-end tests: the REAL nginx in front of the REAL worker binary.

Fixtures
  pg               (session) PostgreSQL: .dsn, .stop(), .start(), .sql(query, *params) -> rows
  fakes            (session) the fake CRMs: .urls, .reset(), .requests(v), .faults(v, responses,
                   match=None), .down(v, bool), .config(v, dict), .state(v)
  service          (session) crm-service behind nginx: .base_url, .worker_pid, .request(...),
                   .raw(bytes), .log_path, .log_text(), .restart(extra_env), .clone(extra_env)
  service_factory  (function) service_factory(API_KEY="k") -> a new Service, closed after the test
  user_id          (function) a fresh random X-User-Id

Helpers (import them from crm_harness): uid(), Service, Response, parse_raw_response.

Environment: TEST_DB_DSN (else scripts/pg.sh is started here), CRM_BINARY (else
.build/debug/crm-service). Fake vendors are reset before every test.
"""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crm_harness import (  # noqa: E402,F401  (re-exported for tests)
    PG, Fakes, Headers, Response, Service, TEST_ENCRYPTION_KEY, free_port, parse_raw_response,
    uid,
)


def pytest_configure(config):
    # SIGTERM (scripts/test.sh's timeout, a CI stop) ends the run like Ctrl-C does, so the
    # fixtures' teardown still stops nginx, the workers, the fakes and PostgreSQL by PID.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def pg():
    db = PG()
    yield db
    db.close()


@pytest.fixture(scope="session")
def fakes():
    f = Fakes()
    yield f
    f.close()


@pytest.fixture(scope="session")
def service(pg, fakes):
    svc = Service(pg.dsn, fakes.urls)
    yield svc
    svc.close()  # asserts the worker exited 0 within 10 s of SIGTERM


@pytest.fixture(autouse=True)
def _reset_fakes(request):
    # Only when the test (directly or through `service`) uses the fakes.
    if "fakes" in request.fixturenames:
        request.getfixturevalue("fakes").reset()
    yield


@pytest.fixture
def service_factory(pg, fakes):
    """Start extra instances with their own env: service_factory(API_KEY="secret")."""
    started = []

    def make(**extra_env):
        svc = Service(pg.dsn, fakes.urls, extra_env)
        started.append(svc)
        return svc

    yield make
    errors = []
    for svc in started:
        try:
            svc.close()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def user_id():
    return uid()
