"""Smoke tests: the harness works end to end (nginx -> worker -> PostgreSQL)."""
import time

from crm_harness import uid


def test_health(service):
    r = service.request("GET", "/health")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "ok"
    assert isinstance(body.get("version"), str) and body["version"]
    assert r.headers.get("X-Request-Id")


def test_health_echoes_a_sane_request_id(service):
    r = service.request("GET", "/health", headers={"X-Request-Id": "smoke-test.1"})
    assert r.status == 200, r
    assert r.headers["x-request-id"] == "smoke-test.1"


def test_list_for_a_new_user_is_empty(service):
    r = service.request("GET", "/crm/list", headers={"X-User-Id": uid()})
    assert r.status == 200, r
    assert r.json() == {"integrations": [], "count": 0}
    assert r.headers.get("X-Request-Id")


def test_missing_user_id_is_401(service):
    r = service.request("GET", "/crm/list")
    assert r.status == 401, r
    body = r.json()
    assert isinstance(body.get("detail"), str) and body["detail"]


def test_request_id_appears_in_the_worker_log(service):
    mark = service.log_mark()
    rid = "smoke-" + uid()
    r = service.request("GET", "/crm/list", headers={"X-User-Id": uid(), "X-Request-Id": rid})
    assert r.status == 200, r
    assert r.headers["x-request-id"] == rid
    # The worker may write its line just after answering.
    deadline = time.monotonic() + 3
    while rid not in service.log_text(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rid in service.log_text(mark)


def test_body_over_1_mib_is_413_json(service):
    r = service.request("POST", "/crm/sync/contact",
                        headers={"X-User-Id": uid(), "Content-Type": "application/json"},
                        body=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert r.status == 413, r
    assert "detail" in r.json()


def test_database_query_helper(pg):
    assert pg.sql("SELECT $1::text, $2::int + 1, $3::text IS NULL", "a'b|c", 41, None) == [["a'b|c", "42", "t"]]
    assert pg.sql("SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'") == [["pgcrypto"]]
