"""Operations: /metrics, the JSON request log (and that no secret reaches it), rotate-key."""
import json
import re
import secrets
import subprocess

import pytest

from crm_harness import uid

SECRETS = {
    "klaviyo": {"api_key": "pk_test_valid_key"},
    "hubspot": {"access_token": "pat-na1-valid-token"},
}


def connect_all(service, fakes, user):
    """Connects every CRM type for `user`; returns the secret strings that were sent."""
    creds = {
        "klaviyo": {"api_key": "pk_test_valid_key"},
        "hubspot": {"access_token": "pat-na1-valid-token"},
        "salesforce": {"client_id": "sf_client_id", "client_secret": "sf_client_secret",
                       "instance_url": fakes.urls["salesforce"]},
        "creatio": {"base_url": fakes.urls["creatio"], "username": "Supervisor", "password": "creatio_pass"},
    }
    for crm_type, c in creds.items():
        r = service.request("POST", "/crm/connect", headers={"X-User-Id": user}, json={"crm_type": crm_type, "credentials": c})
        assert r.status == 200, (crm_type, r.status, r.text)
    return ["pk_test_valid_key", "pat-na1-valid-token", "sf_client_secret", "creatio_pass"]


def parse_prometheus(text):
    """{(name, frozenset(labels)): value} from the Prometheus text format; fails on bad lines."""
    samples = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


def test_metrics_count_the_request_just_made(service):
    def count():
        r = service.request("GET", "/metrics")
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        samples = parse_prometheus(r.text)
        key = ("crm_http_requests_total", frozenset({("route", "/crm/list"), ("status", "200")}))
        return samples, samples.get(key, 0)

    _, before = count()
    r = service.request("GET", "/crm/list", headers={"X-User-Id": uid()})
    assert r.status == 200
    samples, after = count()
    assert after == before + 1
    names = {name for name, _ in samples}
    assert "crm_http_request_duration_seconds_bucket" in names
    assert "crm_db_pool_size" in names
    assert "crm_sync_retry_backlog" in names


def test_metrics_count_sync_outcomes(service, fakes):
    user = uid()
    r = service.request("POST", "/crm/connect", headers={"X-User-Id": user},
                        json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert r.status == 200
    key = ("crm_syncs_total", frozenset({("crm_type", "klaviyo"), ("status", "success")}))
    before = parse_prometheus(service.request("GET", "/metrics").text).get(key, 0)
    r = service.request("POST", "/crm/sync/contact", headers={"X-User-Id": user}, json={"email": "m@example.com"})
    assert r.status == 200 and r.json()["results"][0]["status"] == "success", r.text
    after = parse_prometheus(service.request("GET", "/metrics").text).get(key, 0)
    assert after == before + 1


def test_metrics_show_requests_in_progress_and_crm_calls_in_flight(service, fakes):
    """While a sync waits 1.5 s on the CRM, /metrics counts it (and itself) in progress, and its
    CRM call in flight."""
    import concurrent.futures as cf
    import time
    user = uid()
    r = service.request("POST", "/crm/connect", headers={"X-User-Id": user},
                        json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert r.status == 200
    email = f"inflight.{secrets.token_hex(4)}@example.com"
    fakes.config("klaviyo", {"latency_s": 1.5})
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(service.request, "POST", "/crm/sync/contact", headers={"X-User-Id": user}, json={"email": email})
            deadline = time.monotonic() + 5
            while not any(email in json.dumps(q.get("body")) for q in fakes.requests("klaviyo")):
                assert time.monotonic() < deadline, "the sync never reached the CRM"
                time.sleep(0.05)
            during = parse_prometheus(service.request("GET", "/metrics").text)
            assert pending.result().status == 200
    finally:
        fakes.config("klaviyo", {"latency_s": 0})
    assert during[("crm_http_requests_in_progress", frozenset())] >= 2  # the sync and /metrics itself
    assert during[("crm_outbound_calls_in_flight", frozenset())] >= 1


def histogram(samples, name, **labels):
    """{le: count} of one labelled Prometheus histogram, with its "_count" and "_sum" under those keys."""
    want = set(labels.items())
    out = {}
    for (sample, ls), value in samples.items():
        if not want <= set(ls):
            continue
        if sample == name + "_bucket":
            out[float(dict(ls)["le"])] = value
        elif sample in (name + "_count", name + "_sum"):
            out[sample[len(name) + 1:]] = value
    return out


def test_metrics_time_each_crm_call_and_each_database_write(service, fakes):
    """A sync whose CRM takes 0.4 s: one CRM call in crm_call_duration_seconds{crm_type}, above
    the 0.25 s bucket; its log row and its outcome each written in a timed, counted batch."""
    user = uid()
    r = service.request("POST", "/crm/connect", headers={"X-User-Id": user},
                        json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
    assert r.status == 200
    before = parse_prometheus(service.request("GET", "/metrics").text)
    fakes.config("klaviyo", {"latency_s": 0.4})
    try:
        r = service.request("POST", "/crm/sync/contact", headers={"X-User-Id": user}, json={"email": "timed@example.com"})
    finally:
        fakes.config("klaviyo", {"latency_s": 0})
    assert r.status == 200 and r.json()["results"][0]["status"] == "success", r.text
    after = parse_prometheus(service.request("GET", "/metrics").text)

    call_before = histogram(before, "crm_call_duration_seconds", crm_type="klaviyo")
    call_after = histogram(after, "crm_call_duration_seconds", crm_type="klaviyo")
    assert call_after["count"] == call_before.get("count", 0) + 1
    assert call_after["sum"] - call_before.get("sum", 0) >= 0.4
    assert call_after[0.25] == call_before.get(0.25, 0), "a 0.4 s call counted as faster than 0.25 s"
    assert call_after[float("inf")] == call_before.get(float("inf"), 0) + 1
    assert histogram(after, "crm_call_duration_seconds", crm_type="hubspot").get("count", 0) == \
        histogram(before, "crm_call_duration_seconds", crm_type="hubspot").get("count", 0)

    for writer in ("sync_logs", "outcomes"):
        written_before = histogram(before, "crm_db_write_duration_seconds", writer=writer)
        written_after = histogram(after, "crm_db_write_duration_seconds", writer=writer)
        assert written_after["count"] >= written_before.get("count", 0) + 1, writer
        assert written_after["sum"] > written_before.get("sum", 0), writer
        items_before = histogram(before, "crm_db_write_batch_size", writer=writer)
        items_after = histogram(after, "crm_db_write_batch_size", writer=writer)
        assert items_after["sum"] >= items_before.get("sum", 0) + 1, writer
        assert sorted(k for k in items_after if isinstance(k, float)) == [1, 2, 4, 8, 16, 32, 64, float("inf")], writer


def test_one_json_log_line_per_request_and_no_secret_anywhere(service, fakes):
    user = uid()
    mark = service.log_mark()
    sent = connect_all(service, fakes, user)
    rid = "ops-test-" + secrets.token_hex(4)
    r = service.request("GET", "/crm/list", headers={"X-User-Id": user, "X-Request-Id": rid})
    assert r.status == 200
    r = service.request("POST", "/crm/sync/contact", headers={"X-User-Id": user}, json={"email": "logs@example.com"})
    assert r.status == 200
    text = service.log_text(mark)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    requests = [l for l in lines if l.get("msg") == "request"]
    mine = [l for l in requests if l.get("request_id") == rid]
    assert len(mine) == 1, mine
    line = mine[0]
    assert line["user_id"] == user and line["method"] == "GET" and line["route"] == "/crm/list" and line["status"] == "200"
    assert float(line["duration_ms"]) >= 0
    attempts = [l for l in lines if l.get("msg") == "delivery attempt"]
    assert len(attempts) == 4, attempts
    for secret in sent:
        assert secret not in text, f"a credential reached the log: {secret}"


def scratch_db(pg):
    name = "rot_" + secrets.token_hex(4)
    pg.sql(f"CREATE DATABASE {name}")
    return name, re.sub(r"dbname=\S+", f"dbname={name}", pg.dsn)


def run(service, *args, env=None):
    return service.run_cli(*args, extra_env=env or {})


def test_rotate_key_round_trip_and_wrong_key_refusal(service, pg, fakes):
    name, dsn = scratch_db(pg)
    try:
        old = "o" * 32
        new = "n" * 32
        env = {"DB_DSN": dsn, "CRM_ENCRYPTION_KEY": old}
        assert run(service, "migrate", env=env).returncode == 0
        plaintexts = ['{"api_key": "pk_rot_1"}', '{"access_token": "tok_rot_2"}', '{"api_key": "pk_rot_3"}']
        for i, p in enumerate(plaintexts):
            subprocess.run(["psql", dsn, "-qAtc", f"INSERT INTO crm.crm_integrations (user_id, crm_type, credentials) "
                            f"VALUES ('u{i}', 'klaviyo', pgp_sym_encrypt('{p}', '{old}'))"], check=True)
        before = subprocess.run(["psql", dsn, "-qAtc", "SELECT encode(credentials, 'hex') FROM crm.crm_integrations ORDER BY user_id"],
                                check=True, capture_output=True, text=True).stdout

        wrong = run(service, "rotate-key", env={**env, "CRM_ENCRYPTION_KEY": "w" * 32, "CRM_NEW_ENCRYPTION_KEY": new})
        assert wrong.returncode != 0
        assert "does not decrypt" in wrong.stderr and "nothing was changed" in wrong.stderr
        unchanged = subprocess.run(["psql", dsn, "-qAtc", "SELECT encode(credentials, 'hex') FROM crm.crm_integrations ORDER BY user_id"],
                                   check=True, capture_output=True, text=True).stdout
        assert unchanged == before

        ok = run(service, "rotate-key", env={**env, "CRM_NEW_ENCRYPTION_KEY": new})
        assert ok.returncode == 0, ok.stderr
        assert "re-encrypted 3" in ok.stdout
        rows = subprocess.run(["psql", dsn, "-qAtc", f"SELECT pgp_sym_decrypt(credentials, '{new}') FROM crm.crm_integrations ORDER BY user_id"],
                              check=True, capture_output=True, text=True).stdout.split("\n")
        assert [json.loads(r) for r in rows if r] == [json.loads(p) for p in plaintexts]
        old_try = subprocess.run(["psql", dsn, "-qAtc", f"SELECT pgp_sym_decrypt(credentials, '{old}') FROM crm.crm_integrations"],
                                 capture_output=True, text=True)
        assert old_try.returncode != 0 and "Wrong key" in old_try.stderr
    finally:
        pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
