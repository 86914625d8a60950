"""Resilience end to end: the database going away and coming back, a burst of malformed
requests, misbehaving CRMs, slow CRMs next to fast requests, and SIGTERM with a request in
flight. The worker must answer every one of these with a proper JSON status, never crash, and
never restart.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import secrets
import signal
import socket
import threading
import time

import pytest

from crm_harness import parse_raw_response, uid


def hdr(user: str, **extra) -> dict:
    return dict({"X-User-Id": user}, **extra)


def is_json_body(r) -> bool:
    if not r.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        json.loads(r.body)
        return True
    except ValueError:
        return False


def klaviyo_account_body(account_id="SLOW_ACCT"):
    return {"data": [{"type": "account", "id": account_id,
                      "attributes": {"contact_information": {"organization_name": "Slow Org"}}}]}


def worker_alive(svc) -> bool:
    return svc.worker is not None and svc.worker.poll() is None


# ------------------------------------------------------------------------------------------ database outage


def test_database_outage_gives_503_fast_and_recovers_without_restart(service, fakes, pg, user_id):
    pid = service.worker_pid
    timeout_s = float(service.env["DB_CONNECT_TIMEOUT_S"])
    bound = timeout_s + 3
    # warm the pool: these connections die with the server
    r = service.post("/crm/connect", headers=hdr(user_id),
                     json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert r.status == 200, r
    for _ in range(4):
        assert service.get("/crm/list", headers=hdr(user_id)).status == 200

    def timed(method, path, **kw):
        t0 = time.monotonic()
        resp = service.request(method, path, timeout=bound + 15, **kw)
        return resp, time.monotonic() - t0

    problems = []
    try:
        pg.stop()
        checks = [("GET", "/crm/list", {}), ("GET", "/crm/klaviyo/status", {}), ("GET", "/crm/sync/logs", {}),
                  ("GET", "/crm/sync/logs/1", {}), ("DELETE", "/crm/klaviyo/disconnect", {}),
                  ("POST", "/crm/connect", {"json": {"crm_type": "klaviyo",
                                                     "credentials": {"api_key": "pk_test_valid_key"}}}),
                  ("GET", "/crm/list", {})]
        for method, path, kw in checks:
            resp, elapsed = timed(method, path, headers=hdr(user_id), **kw)
            if resp.status != 503 or not is_json_body(resp) or set(resp.json()) != {"detail"}:
                problems.append(f"{method} {path}: {resp.status} {resp.text[:200]}")
            elif not resp.headers.get("retry-after", "").strip().isdigit():
                problems.append(f"{method} {path}: 503 without a Retry-After in seconds: {resp.headers}")
            if elapsed > bound:
                problems.append(f"{method} {path}: answered after {elapsed:.1f} s (bound {bound} s)")

        # many at once: nobody waits on a pool slot forever
        with cf.ThreadPoolExecutor(12) as ex:
            results = list(ex.map(lambda _: timed("GET", "/crm/list", headers=hdr(uid())), range(12)))
        for resp, elapsed in results:
            if resp.status != 503 or elapsed > bound + timeout_s:
                problems.append(f"concurrent GET /crm/list: {resp.status} after {elapsed:.1f} s")

        h, elapsed = timed("GET", "/health")
        if h.status != 200 or elapsed > 2:
            problems.append(f"/health during the outage: {h.status} after {elapsed:.1f} s")
        ready, elapsed = timed("GET", "/health/ready")
        if ready.status != 503 or not is_json_body(ready) or elapsed > bound:
            problems.append(f"/health/ready during the outage: {ready.status} after {elapsed:.1f} s {ready.text[:200]}")
        if not worker_alive(service) or service.worker_pid != pid:
            problems.append("the worker died during the outage")
    finally:
        if not pg.is_running():
            pg.start()

    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        last = service.get("/crm/list", headers=hdr(user_id), timeout=bound + 5)
        if last.status == 200:
            break
        time.sleep(0.25)
    assert not problems, "during the outage:\n" + "\n".join(problems)
    assert last is not None and last.status == 200, f"/crm/list did not recover within 20 s: {last}"
    assert last.json()["count"] == 1, "the integration connected before the outage is still there"
    assert service.worker_pid == pid and worker_alive(service), "the worker was restarted"
    assert service.get("/health/ready").status == 200
    # writes work again too
    other = uid()
    r = service.post("/crm/connect", headers=hdr(other),
                     json={"crm_type": "hubspot", "credentials": {"access_token": "pat-na1-valid-token"}})
    assert r.status == 200, r


# ------------------------------------------------------------------------------------------ malformed burst


J = "application/json"
BODY_ROUTES = ["/crm/validate", "/crm/connect", "/crm/sync/contact", "/crm/sync/event"]

MALFORMED_JSON = [
    b"{", b"}", b"[", b"{\"crm_type\":", b"{\"crm_type\": \"klaviyo\", \"credentials\": {\"api_key\": \"x\"}",
    b"[1,2", b"nul", b"tru", b"{'crm_type': 'klaviyo'}", b"{\"a\":1,}", b"{\"a\" 1}", b"\"unterminated",
    b"{\"a\":\"\\uZZZZ\"}", b"{\"a\":\"\\x41\"}", b"-", b"01", b"{\"a\":01}", b"{\"a\":1}}", b"{}{}", b"{,}",
    b"{\"crm_type\":\"klav\x00iyo\"}", b"\x00", b"{\x00}", b"{\"a\":\"tab\there\"}", b"\x1f\x8b\x08\x00",
    b"{\"crm_type\":\"\xff\xfe\"}", b"\xc3\x28", b"\xef\xbb\xbf", b"[" * 50000 + b"]" * 50000,
    b"[" * 50000, b"{\"a\":" * 50000 + b"1" + b"}" * 50000, b"{\"a\":[" * 20000, b"1e99999999999",
    b"{\"crm_type\":\"klaviyo\",\"credentials\":" + b"[" * 100 + b"]" * 100 + b"}",
]
# bodies that are JSON but not what the routes take: 422 as well
WRONG_SHAPE = [b"null", b"[]", b"42", b"\"klaviyo\"", b"true", b"{}", b"{\"crm_type\":null}",
               b"{\"crm_type\":\"klaviyo\",\"credentials\":[]}", b"{\"crm_type\":[\"klaviyo\"]}",
               b"{\"email\":123}", b"{\"event\":{}}", b"{\"crm_type\":\"klaviyo\",\"credentials\":{\"api_key\":{}}}"]
WRONG_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
               "application/xml", "text/json", "application/jsonx", "image/png", "*/*", "application/",
               "json"]
BAD_USER_IDS = ["a b", "../etc/passwd", "user;drop table", "a" * 129, "a" * 1000, "a" * 8000, "é", "u\tx",
                "<script>", "a,b", "%41", "\"quoted\"", "a/b", "a.b", "a@b", "a:b", "=", "a" * 128 + "b"]


class Case:
    def __init__(self, label, raw: bytes, allowed: set, head=False):
        self.label, self.raw, self.allowed, self.head = label, raw, allowed, head


def http_request(method, path, headers=(), body: bytes | None = None, user=True, host=True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1") if isinstance(path, str) else
             method.encode() + b" " + path + b" HTTP/1.1"]
    if host:
        lines.append(b"Host: 127.0.0.1")
    if user:
        lines.append(b"X-User-Id: " + uid().encode())
    for h in headers:
        lines.append(h if isinstance(h, bytes) else h.encode("latin-1"))
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def malformed_cases() -> list:
    cases = []
    for route in BODY_ROUTES:
        for body in MALFORMED_JSON + WRONG_SHAPE:
            cases.append(Case(f"POST {route} body {body[:40]!r}",
                              http_request("POST", route, [f"Content-Type: {J}"], body), {422}))
        for ctype in WRONG_TYPES:
            cases.append(Case(f"POST {route} Content-Type {ctype}",
                              http_request("POST", route, [f"Content-Type: {ctype}"], b'{"crm_type":"klaviyo"}'),
                              {415}))
        cases.append(Case(f"POST {route} no content type", http_request("POST", route, [], b'{"a":1}'), {415}))
        cases.append(Case(f"POST {route} no body", http_request("POST", route, [], b""), {422}))
        cases.append(Case(f"POST {route} 2 MiB", http_request("POST", route, [f"Content-Type: {J}"],
                                                              b"[" + b"1," * (1 << 20) + b"1]"), {413}))
        cases.append(Case(f"POST {route} 2 MiB text", http_request("POST", route, ["Content-Type: text/plain"],
                                                                   b"x" * (2 << 20)), {413}))
        cases.append(Case(f"POST {route} chunked garbage",
                          http_request("POST", route, [f"Content-Type: {J}", "Transfer-Encoding: chunked"])
                          + b"zz\r\nnot hex\r\n0\r\n\r\n", {400}))
        cases.append(Case(f"POST {route} Content-Length too big", http_request(
            "POST", route, [f"Content-Type: {J}", "Content-Length: 99999999999999999999"]), {400, 413}))
    for route in ("/crm/list", "/crm/validate"):
        method = "GET" if route == "/crm/list" else "POST"
        body = None if method == "GET" else b'{"crm_type":"klaviyo","credentials":{}}'
        ctype = [] if method == "GET" else [f"Content-Type: {J}"]
        cases.append(Case(f"{method} {route} without X-User-Id", http_request(method, route, ctype, body, user=False), {401}))
        cases.append(Case(f"{method} {route} empty X-User-Id",
                          http_request(method, route, ctype + ["X-User-Id: "], body, user=False), {401}))
        cases.append(Case(f"{method} {route} X_User_Id (underscore)",
                          http_request(method, route, ctype + ["X_User_Id: abc"], body, user=False), {401}))
        for bad in BAD_USER_IDS:
            cases.append(Case(f"{method} {route} X-User-Id {bad[:20]!r}",
                              http_request(method, route, ctype + [b"X-User-Id: " + bad.encode()], body,
                                           user=False), {400}))
        cases.append(Case(f"{method} {route} X-User-Id 20000 chars", http_request(
            method, route, ctype + ["X-User-Id: " + "a" * 20000], body, user=False), {400}))
        cases.append(Case(f"{method} {route} X-User-Id invalid UTF-8", http_request(
            method, route, ctype + [b"X-User-Id: \xff\xfe\xc3\x28"], body, user=False), {400}))
        cases.append(Case(f"{method} {route} X-User-Id with NUL", http_request(
            method, route, ctype + [b"X-User-Id: ab\x00cd"], body, user=False), {400}))
        cases.append(Case(f"{method} {route} X-User-Id with CR", http_request(
            method, route, ctype + [b"X-User-Id: ab\rX-Admin: 1"], body, user=False), {400}))
        cases.append(Case(f"{method} {route} two X-User-Id", http_request(
            method, route, ctype + ["X-User-Id: alice", "X-User-Id: bob"], body, user=False), {400}))
        cases.append(Case(f"{method} {route} folded header", http_request(
            method, route, ctype + ["X-User-Id: abc", " continued"], body, user=False), {400}))
    # header injection and garbage through raw sockets
    for raw in [b"X-Request-Id: abc\rdef", b"X-Request-Id: a\x00b", b"Garbage line without colon",
                b": no name", b"X-Evil\x01: 1", b"X-Big: " + b"b" * 20000, b"Cookie: " + b"c=" + b"x" * 17000,
                b"X-Request-Id: " + b"r" * 5000, b"X-Request-Id: \xff\xfe", b"Content-Length: -1",
                b"Content-Length: abc"]:
        cases.append(Case(f"GET /crm/list header {raw[:30]!r}", http_request("GET", "/crm/list", [raw]), {200, 400, 411}))
    many = [f"X-H{i}: {i}" for i in range(90)]
    cases.append(Case("GET /crm/list 90 headers", http_request("GET", "/crm/list", many), {200, 400}))
    for line in [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET /crm/list\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /crm/list HTTP/1.1\rHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
                 b"GET /crm/list HTTP/1.1\r\n\r\n", b"get /crm/list HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET  /crm/list  HTTP/1.1\r\nHost: x\r\n\r\n", b"GET http://evil.example.com/crm/list HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /crm/list HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"]:
        cases.append(Case(f"raw {line[:40]!r}", line, {400, 401, 404, 405}))
    # methods
    for method in ("PUT", "PATCH", "TRACE", "FOO", "PROPFIND", "OPTIONS", "DELETE", "CONNECT"):
        for path in ("/crm/list", "/crm/validate", "/health", "/crm/klaviyo/status"):
            allowed = {405}
            if method == "CONNECT":
                allowed = {400, 405}
            if method == "DELETE" and path == "/crm/klaviyo/status":
                allowed = {405}
            body = b"{}" if method in ("PUT", "PATCH") else None
            cases.append(Case(f"{method} {path}", http_request(method, path, [f"Content-Type: {J}"] if body else [], body),
                              allowed))
    cases.append(Case("HEAD /health", http_request("HEAD", "/health"), {200, 405}, head=True))
    # paths
    paths = {
        "/crm/../health": {200, 404}, "/../../etc/passwd": {400, 404}, "/crm/klaviyo/../list": {200, 404},
        "/crm/%2e%2e/health": {200, 400, 404}, "/crm/klaviyo%2Fstatus": {404}, "//crm//list": {200, 404},
        "/crm/list/": {404}, "/crm/list?%00": {200}, "/crm/sync/logs/%00": {422, 400}, "/crm/sync/logs/1%00": {422, 400},
        "/crm/klaviyo%00/status": {400, 404}, "/health%00": {400, 404}, "/crm/list;jsessionid=1": {404},
        "/crm/%ff%fe/status": {404}, "/crm/" + "a" * 8000 + "/status": {404}, "/crm/list?" + "q" * 70000: {414},
        "/crm/sync/logs?limit=%ZZ": {422}, "/crm/sync/logs?limit=1&limit=2": {200, 422},
        "/crm/sync/logs?before_id=99999999999999999999999": {422}, "/crm/sync/logs?crm_type=%00": {422},
        "/crm/sync/logs?=&&&=": {200}, "/crm/sync/logs/..%2f..%2fetc%2fpasswd": {404, 422},
        "/%2e%2e/%2e%2e/etc/passwd": {400, 404}, "/crm/field-mappings/%2e%2e": {404},
        "/crm/sync/logs/1/../2": {200, 404}, "/docs/../openapi.json": {200, 404}, "/crm/{crm_type}/status": {400, 404},
    }
    for path, allowed in paths.items():
        cases.append(Case(f"GET {path[:60]}", http_request("GET", path), allowed))
    cases.append(Case("GET raw \\xff path", b"GET /crm/\xff\xfe/status HTTP/1.1\r\nHost: x\r\nX-User-Id: a\r\n\r\n",
                      {400, 404}))
    return cases


def send_case(service, case: Case):
    try:
        data = service.raw(case.raw, timeout=15)
    except OSError as e:
        return case, None, f"socket error {e}"
    if not data:
        return case, None, "no response at all"
    return case, parse_raw_response(data), None


def test_burst_of_malformed_requests_never_5xx_always_json(service, fakes):
    pid = service.worker_pid
    cases = malformed_cases()
    assert len(cases) >= 200, len(cases)
    mark = service.log_mark()
    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda c: send_case(service, c), cases))
    problems = []
    for case, r, error in results:
        if error:
            problems.append(f"{case.label}: {error}")
            continue
        what = []
        if r.status >= 500 or r.status < 100:
            what.append(f"status {r.status}")
        elif r.status not in case.allowed:
            what.append(f"status {r.status}, expected {sorted(case.allowed)}")
        if not case.head and r.status != 204 and not is_json_body(r):
            what.append(f"non-JSON body ({r.headers.get('content-type')!r}: {r.text[:60]!r})")
        if not r.headers.get("x-request-id"):
            what.append("no X-Request-Id")
        if what:
            problems.append(f"{case.label}: {', '.join(what)}")
    assert worker_alive(service) and service.worker_pid == pid, "the worker died or was restarted"
    health = service.get("/health")
    assert health.status == 200, health
    # still serving real work
    ok = service.post("/crm/validate", headers=hdr(uid()),
                      json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert ok.status == 200 and ok.json()["valid"] is True, ok
    log = service.log_text(mark)
    assert "unhandled error" not in log
    assert not problems, f"{len(problems)} of {len(cases)} malformed requests were mishandled:\n" + "\n".join(problems)


def test_crlf_in_credentials_cannot_inject_headers_into_crm_requests(service_factory, fakes, user_id):
    """A credential value goes into an outbound header (Authorization): CR/LF in it must be
    refused (422) or at least never reach the CRM as extra header lines. (Its own instance: a
    successful injection can leave the worker's pooled CRM connections out of step.)"""
    service = service_factory()
    token = "00DFAKE!" + secrets.token_urlsafe(16)
    fakes.config("salesforce", {"access_tokens": [token]})
    vectors = [
        ("klaviyo", "klaviyo", {"api_key": "pk_test_valid_key\r\nX-Injected: yes"}),
        ("klaviyo", "klaviyo", {"api_key": "pk_test_valid_key\nX-Injected: yes"}),
        ("klaviyo", "klaviyo", {"api_key": "pk_test_valid_key\r\n\r\nGET /api/accounts HTTP/1.1"}),
        ("hubspot", "hubspot", {"access_token": "pat-na1-valid-token\r\nX-Injected: yes"}),
        ("salesforce", "salesforce", {"access_token": token + "\r\nX-Injected: yes",
                                      "instance_url": fakes.urls["salesforce"]}),
    ]
    problems = []
    for crm_type, vendor, creds in vectors:
        before = len(fakes.requests(vendor))
        r = service.post("/crm/validate", headers=hdr(user_id), json={"crm_type": crm_type, "credentials": creds})
        sent = fakes.requests(vendor)[before:]
        label = f"{crm_type} {json.dumps(creds)}"
        if r.status not in (200, 422):
            problems.append(f"{label}: {r.status} {r.text[:200]}")
        elif r.status == 200 and r.json()["valid"] is not False:
            problems.append(f"{label}: accepted as valid ({r.text[:120]})")
        for req in sent:
            if "x-injected" in req["headers"]:
                problems.append(f"{label}: the CRM received an injected header line: {req['headers']}")
    # a CR/LF in a URL is not a URL: 422, and nothing reaches the CRM
    before = len(fakes.requests("creatio"))
    r = service.post("/crm/validate", headers=hdr(user_id), json={"crm_type": "creatio", "credentials": {
        "base_url": fakes.urls["creatio"] + "/\r\nX-Injected: 1", "username": "Supervisor", "password": "creatio_pass"}})
    if r.status != 422:
        problems.append(f"creatio base_url with CR/LF: {r.status} {r.text[:200]} (expected 422)")
    for req in fakes.requests("creatio")[before:]:
        if "x-injected" in req["headers"]:
            problems.append(f"creatio base_url with CR/LF: injected header reached the CRM: {req['headers']}")
    assert not problems, "\n".join(problems)


def test_request_smuggled_in_a_credential_does_not_desync_later_crm_answers(service_factory, fakes):
    """A key carrying CR/LF CR/LF plus a second request line makes the CRM see two requests and
    send two answers; the second answer must never be taken as the answer to a later request
    (possibly another user's) on a reused connection."""
    svc = service_factory()
    smuggled = "pk_test_valid_key\r\n\r\nGET /api/accounts HTTP/1.1"
    first = svc.post("/crm/validate", headers=hdr(uid()),
                     json={"crm_type": "klaviyo", "credentials": {"api_key": smuggled}})
    assert first.status in (200, 422), first
    fakes.down("klaviyo")  # from now on Klaviyo answers every request with 503
    r = svc.post("/crm/validate", headers=hdr(uid()),
                 json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert r.status == 502, (f"Klaviyo is down, so this must be 502; got {r.status} {r.text[:200]} "
                             "(a stale answer left on a pooled connection)")


def test_nginx_own_error_responses_are_json(service):
    """Responses nginx makes itself (not the worker) still follow the JSON contract."""
    problems = []
    for raw in (b"TRACE /health HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /crm/list HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"):
        r = parse_raw_response(service.raw(raw, timeout=10))
        if not is_json_body(r) or not r.headers.get("x-request-id"):
            problems.append(f"{raw.splitlines()[0]!r} -> {r.status} {r.headers.get('content-type')!r} "
                            f"X-Request-Id={r.headers.get('x-request-id')!r}")
    assert not problems, "non-JSON nginx error pages:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------ misbehaving CRMs


@pytest.mark.parametrize("fault", [
    {"hang_s": 8},
    {"close": True},
    {"status": 500, "body": "<html>oops</html>", "headers": {"Content-Type": "text/html"}},
    {"status": 502},
    {"status": 504, "delay_s": 1},
    {"status": 429, "headers": {"Retry-After": "30"}},
    {"status": 408},
], ids=["hang", "close", "500-html", "502", "504-slow", "429", "408"])
def test_crm_failures_are_502_within_the_http_timeout(service, fakes, user_id, fault):
    timeout_s = float(service.env["CRM_HTTP_TIMEOUT_S"])
    fakes.faults("klaviyo", [fault] * 3)
    t0 = time.monotonic()
    r = service.post("/crm/validate", headers=hdr(user_id),
                     json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}}, timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status == 502, r
    assert is_json_body(r) and set(r.json()) == {"detail"} and r.json()["detail"]
    assert elapsed < timeout_s + 2.5, f"took {elapsed:.1f} s with CRM_HTTP_TIMEOUT_S={timeout_s}"
    assert "pk_test_valid_key" not in r.text


def test_unreachable_crm_is_502(service, fakes, user_id):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for creds, crm_type in (({"base_url": f"http://127.0.0.1:{port}", "username": "Supervisor",
                              "password": "creatio_pass"}, "creatio"),
                            ({"client_id": "sf_client_id", "client_secret": "sf_client_secret",
                              "instance_url": f"http://127.0.0.1:{port}"}, "salesforce"),
                            ({"base_url": "http://does-not-resolve.invalid", "username": "Supervisor",
                              "password": "creatio_pass"}, "creatio")):
        t0 = time.monotonic()
        r = service.post("/crm/validate", headers=hdr(user_id), json={"crm_type": crm_type, "credentials": creds})
        assert r.status == 502, (creds, r)
        assert set(r.json()) == {"detail"}
        assert time.monotonic() - t0 < float(service.env["CRM_HTTP_TIMEOUT_S"]) + 2.5
        c = service.post("/crm/connect", headers=hdr(user_id), json={"crm_type": crm_type, "credentials": creds})
        assert c.status == 502, (creds, c)
    assert service.get("/crm/list", headers=hdr(user_id)).json()["count"] == 0


def test_slow_crm_does_not_block_other_requests(service, fakes):
    fakes.faults("klaviyo", [{"delay_s": 2.5, "status": 200, "body": klaviyo_account_body(),
                              "headers": {"Content-Type": "application/vnd.api+json"}}] * 4)
    with cf.ThreadPoolExecutor(4) as ex:
        slow = [ex.submit(service.post, "/crm/validate", headers=hdr(uid()), timeout=20,
                          json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
                for _ in range(4)]
        deadline = time.monotonic() + 5
        while len(fakes.requests("klaviyo")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fakes.requests("klaviyo")) == 4, "the slow requests did not all reach the CRM at once"
        t0 = time.monotonic()
        assert service.get("/health").status == 200
        assert service.get("/crm/list", headers=hdr(uid())).status == 200
        fast = time.monotonic() - t0
        results = [f.result() for f in slow]
    assert fast < 1.5, f"/health and /crm/list took {fast:.2f} s while 4 CRM calls were slow"
    for r in results:
        assert r.status == 200 and r.json()["valid"] is True and r.json()["account"]["id"] == "SLOW_ACCT", r


# ------------------------------------------------------------------------------------------ SIGTERM


def test_sigterm_lets_the_in_flight_request_finish_and_exits_0(service_factory, fakes):
    svc = service_factory()
    fakes.faults("klaviyo", [{"delay_s": 2, "status": 200, "body": klaviyo_account_body("DRAIN_ACCT"),
                              "headers": {"Content-Type": "application/vnd.api+json"}}])
    result = {}

    def slow():
        try:
            result["r"] = svc.post("/crm/validate", headers=hdr(uid()), timeout=30,
                                   json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    while not fakes.requests("klaviyo") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fakes.requests("klaviyo"), "the request never reached the fake CRM"
    worker = svc.worker
    t_sig = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    # the worker no longer takes new requests, but nginx still answers with JSON (no hang)
    during = svc.get("/health", timeout=10)
    assert during.status in (200, 503), during
    assert is_json_body(during), during
    t.join(timeout=30)
    assert "error" not in result, f"the in-flight request failed: {result.get('error')!r}"
    r = result["r"]
    assert r.status == 200, r
    assert r.json()["valid"] is True and r.json()["account"]["id"] == "DRAIN_ACCT", r.json()
    try:
        status = worker.wait(timeout=10)
    except Exception:  # noqa: BLE001
        status = None
    assert status == 0, f"worker exit status {status}; log tail:\n{svc.log_text()[-2000:]}"
    assert time.monotonic() - t_sig < 6, "the worker waited far longer than its last request"
    assert "worker stopped" in svc.log_text()


def test_sigterm_with_a_502_in_flight(service_factory, fakes):
    svc = service_factory()
    fakes.faults("hubspot", [{"delay_s": 2, "status": 503}])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=svc.post(
        "/crm/validate", headers=hdr(uid()), timeout=30,
        json={"crm_type": "hubspot", "credentials": {"access_token": "pat-na1-valid-token"}})))
    t.start()
    deadline = time.monotonic() + 5
    while not fakes.requests("hubspot") and time.monotonic() < deadline:
        time.sleep(0.02)
    worker = svc.worker
    os.kill(worker.pid, signal.SIGTERM)
    t.join(timeout=30)
    assert result.get("r") is not None and result["r"].status == 502, result
    assert set(result["r"].json()) == {"detail"}
    assert worker.wait(timeout=10) == 0
