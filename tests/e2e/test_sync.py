"""Contact and event sync end to end: the real worker behind nginx delivering to the fake CRMs.

What a user of POST /crm/sync/* cares about: one record per CRM for one email (holding the
latest values), every mapped field arriving under the name GET /crm/field-mappings promises,
events reaching every CRM, idempotent replays, async delivery, and the sync logs (pagination,
per-user scoping, manual retry).

These tests run their worker on a PRIVATE database (created here, dropped afterwards): the
shared `crm_test` database is used by other test runs at the same time, and their workers'
retry sweeps would otherwise claim (and deliver elsewhere) the rows these tests create.
test_delivery.py imports the helpers below.
"""
from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
import uuid

import pytest

from crm_harness import PG, Service, uid

CRM_TYPES = ["creatio", "hubspot", "klaviyo", "salesforce"]
# CRM_RETRY_BASE_DELAY_S=1: retries come after ~1 s, ~2 s, ~4 s (±20 %) instead of 30 s, 60 s ...
BASE_ENV = {"CRM_RETRY_BASE_DELAY_S": "1"}
FINAL = ("success", "failed", "cancelled")


# ------------------------------------------------------------------------------------------ helpers


def hdr(user: str, **extra) -> dict:
    return dict({"X-User-Id": user}, **extra)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls predicate() until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def dsn_with_db(dsn: str, name: str) -> str:
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))
    if re.search(r"(^|\s)dbname=\S+", dsn):
        return re.sub(r"(^|\s)dbname=\S+", lambda m: f"{m.group(1)}dbname={name}", dsn)
    return f"{dsn} dbname={name}"


class PrivateDatabases:
    """Creates throwaway databases next to the test database; drops them on close()."""

    def __init__(self, pg: PG):
        self.pg = pg
        self.names: list[str] = []

    def create(self) -> PG:
        name = f"crm_e2e_sync_{secrets.token_hex(5)}"
        self.pg.sql(f"CREATE DATABASE {name}")
        self.names.append(name)
        return PG(dsn_with_db(self.pg.dsn, name))

    def close(self):
        for name in self.names:
            try:
                self.pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except RuntimeError:
                pass  # the cluster was stopped by someone else: nothing to clean up now


@pytest.fixture(scope="module")
def db(pg):
    """A private database for this module's worker (see the module docstring)."""
    dbs = PrivateDatabases(pg)
    yield dbs.create()
    dbs.close()


@pytest.fixture
def fresh_db(pg):
    """Factory: fresh_db() -> a new private database (a PG), dropped after the test."""
    dbs = PrivateDatabases(pg)
    yield dbs.create
    dbs.close()


@pytest.fixture(scope="module")
def svc(db, fakes):
    """One worker (behind its own nginx) on the module's private database, retries after ~1 s."""
    s = Service(db.dsn, fakes.urls, dict(BASE_ENV))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_leftover_deliveries(request):
    """After each test, cancel whatever is still waiting for delivery in the private database,
    so that a retry scheduled by one test never reaches the fakes during the next one."""
    yield
    if "db" in request.fixturenames:
        database = request.getfixturevalue("db")
        try:
            database.sql("UPDATE crm.crm_sync_logs SET status = 'cancelled', next_attempt_at = NULL "
                         "WHERE status IN ('pending', 'queued', 'retrying')")
        except RuntimeError:
            pass


def credentials(fakes, crm_type: str) -> dict:
    """The fakes' valid credentials (tests/fakes/README.md)."""
    return {
        "klaviyo": {"api_key": "pk_test_valid_key"},
        "salesforce": {"client_id": "sf_client_id", "client_secret": "sf_client_secret",
                       "instance_url": fakes.urls["salesforce"]},
        "creatio": {"base_url": fakes.urls["creatio"], "username": "Supervisor", "password": "creatio_pass"},
        "hubspot": {"access_token": "pat-na1-valid-token"},
    }[crm_type]


def connect(svc, fakes, user: str, crm_type: str, settings: dict | None = None) -> dict:
    body = {"crm_type": crm_type, "credentials": credentials(fakes, crm_type)}
    if settings is not None:
        body["settings"] = settings
    r = svc.post("/crm/connect", headers=hdr(user), json=body)
    assert r.status == 200, r
    return r.json()


def sync_contact(svc, user: str, contact: dict, headers: dict | None = None, expect: int = 200):
    r = svc.post("/crm/sync/contact", headers=hdr(user, **(headers or {})), json=contact, timeout=30)
    assert r.status == expect, r
    return r


def sync_event(svc, user: str, event: dict, headers: dict | None = None, expect: int = 200):
    r = svc.post("/crm/sync/event", headers=hdr(user, **(headers or {})), json=event, timeout=30)
    assert r.status == expect, r
    return r


def by_type(body: dict) -> dict:
    """{crm_type: result} of a sync response, asserting one result per CRM."""
    results = {res["crm_type"]: res for res in body["results"]}
    assert len(results) == len(body["results"]), body
    return results


def get_log(svc, user: str, log_id: int) -> dict:
    r = svc.get(f"/crm/sync/logs/{log_id}", headers=hdr(user))
    assert r.status == 200, r
    return r.json()


def wait_log(svc, user: str, log_id: int, statuses=FINAL, timeout: float = 20) -> dict:
    """Polls GET /crm/sync/logs/{id} until its status is one of `statuses`."""
    last = {}

    def done():
        last["log"] = get_log(svc, user, log_id)
        return last["log"]["status"] in statuses

    try:
        wait_until(done, timeout, f"log {log_id} to become {statuses}", interval=0.1)
    except AssertionError:
        raise AssertionError(f"log {log_id} still {last.get('log')} after {timeout} s;"
                             f" worker log tail:\n{svc.log_text()[-3000:]}") from None
    return last["log"]


def fake_requests(fakes, vendor: str, method: str | None = None, path: str = "") -> list:
    """The vendor fake's recorded requests whose path contains `path` (and method)."""
    return [q for q in fakes.requests(vendor)
            if path in q["path"] and (method is None or q["method"] == method)]


def email_for(tag: str) -> str:
    return f"{tag}.{secrets.token_hex(4)}@example.com"


def full_contact(email: str, n: int) -> dict:
    """A contact with every standard field set; n varies every value."""
    return {
        "email": email, "first_name": f"Ada{n}", "last_name": f"Lovelace{n}", "phone": f"+1415555010{n}",
        "company": f"Analytical Engines {n}", "title": f"Countess {n}",
        "address": {"line1": f"{n} Main Street", "line2": f"Apt {n}", "city": f"London{n}",
                    "region": f"Region{n}", "postal_code": f"N{n} 9GU", "country": f"Country{n}"},
    }


def standard_value(contact: dict, field: str):
    node = contact
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def dig(obj, path: str):
    """The value at a CRM field name or dotted path (location.address1); JSON:API
    `{"data": {"attributes": ...}}` wrappers are stepped through. KeyError when absent."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    node = obj
    for part in path.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("data"), dict):
            node = node["data"].get("attributes", {})
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def contact_mapping(svc, user: str, crm_type: str) -> dict:
    r = svc.get(f"/crm/field-mappings/{crm_type}", headers=hdr(user))
    assert r.status == 200, r
    body = r.json()
    assert body["crm_type"] == crm_type
    return body


def assert_contact_fields(crm_type: str, mapping: dict, contact: dict, fields: dict, where: str):
    """Every standard field the mapping sends must be in `fields` under its mapped CRM name,
    carrying the contact's value (several standard fields may share one CRM field, e.g. both
    address lines in one street field: then each value is in it)."""
    targets: dict[str, list] = {}
    for standard, crm_field in mapping["contact"].items():
        if crm_field is None:
            continue
        value = standard_value(contact, standard)
        assert value is not None, f"the test contact lacks {standard}"
        targets.setdefault(crm_field, []).append((standard, value))
    assert targets, mapping
    for crm_field, sources in targets.items():
        try:
            found = dig(fields, crm_field)
        except KeyError:
            raise AssertionError(f"{crm_type}: {where} lacks mapped field {crm_field!r} "
                                 f"(for {[s for s, _ in sources]}); it has {json.dumps(fields)[:1500]}") from None
        if len(sources) == 1:
            assert found == sources[0][1], (crm_type, where, crm_field, found, sources)
        else:
            for standard, value in sources:
                assert isinstance(found, str) and value in found, (crm_type, where, crm_field, found, standard, value)


# Where each CRM's fake keeps contacts, and each contact's fields as the CRM names them.
def crm_records(fakes, crm_type: str, email: str) -> list:
    state = fakes.state(crm_type)
    e = email.lower()
    if crm_type == "klaviyo":
        return [p["attributes"] for p in state["profiles"].values()
                if (p["attributes"].get("email") or "").lower() == e]
    if crm_type == "hubspot":
        return [c["properties"] for c in state["contacts"] if (c["properties"].get("email") or "").lower() == e]
    return [c for c in state["contacts"] if (c.get("Email") or "").lower() == e]


def crm_record_ids(fakes, crm_type: str, email: str) -> list:
    state = fakes.state(crm_type)
    e = email.lower()
    if crm_type == "klaviyo":
        return [pid for pid, p in state["profiles"].items() if (p["attributes"].get("email") or "").lower() == e]
    if crm_type == "hubspot":
        return [str(c["id"]) for c in state["contacts"] if (c["properties"].get("email") or "").lower() == e]
    return [c["Id"] for c in state["contacts"] if (c.get("Email") or "").lower() == e]


# The contact write each CRM's fake received: (method, path fragment, fields of the body).
def contact_writes(fakes, crm_type: str) -> list:
    out = []
    for q in fakes.requests(crm_type):
        if q["method"] not in ("POST", "PATCH"):
            continue
        path, body = q["path"], q["body"]
        if crm_type == "klaviyo" and path.startswith("/api/profile-import"):
            out.append(body["data"]["attributes"])
        elif crm_type == "hubspot" and "/contacts/batch/upsert" in path:
            out.append(body["inputs"][0]["properties"])
        elif crm_type == "salesforce" and "/sobjects/Contact" in path:
            out.append(body)
        elif crm_type == "creatio" and "/0/odata/Contact" in path:
            out.append(body)
    return out


# ------------------------------------------------------------------------------------------ contacts


def test_same_contact_synced_three_times_is_one_record_per_crm_with_latest_values(svc, fakes, user_id):
    for crm_type in CRM_TYPES:
        connect(svc, fakes, user_id, crm_type)
    email = email_for("thrice")
    versions = [full_contact(email, n) for n in (1, 2, 3)]
    record_ids: dict[str, set] = {t: set() for t in CRM_TYPES}
    for i, contact in enumerate(versions):
        body = sync_contact(svc, user_id, contact).json()
        results = by_type(body)
        assert sorted(results) == CRM_TYPES, body
        assert body["success_count"] == 4 and body["failure_count"] == 0, body
        for crm_type, res in results.items():
            assert res["status"] == "success", (i, res)
            assert res["action"] == ("created" if i == 0 else "updated"), (i, res)
            assert isinstance(res["log_id"], int)
            assert res.get("crm_record_id"), res
            record_ids[crm_type].add(res["crm_record_id"])

    for crm_type in CRM_TYPES:
        # One record in the CRM, the one every sync reported, holding version 3's values.
        assert len(record_ids[crm_type]) == 1, (crm_type, record_ids[crm_type])
        records = crm_records(fakes, crm_type, email)
        assert len(records) == 1, (crm_type, records)
        mapping = contact_mapping(svc, user_id, crm_type)
        assert_contact_fields(crm_type, mapping, versions[2], records[0], "the CRM's stored record")
        assert crm_record_ids(fakes, crm_type, email) == list(record_ids[crm_type]), crm_type
        # and no other record was created on the way (the fakes are reset for each test)
        state = fakes.state(crm_type)
        total = len(state["profiles"]) if crm_type == "klaviyo" else len(state["contacts"])
        assert total == 1, (crm_type, state)

    # The log has one success row per sync per CRM, with the record id.
    logs = svc.get("/crm/sync/logs?operation=contact&limit=50", headers=hdr(user_id)).json()["logs"]
    assert len(logs) == 12 and all(log["status"] == "success" and log["attempts"] == 1 for log in logs), logs


def test_contact_sync_sends_every_mapped_field_under_its_mapped_name(svc, fakes, user_id):
    for crm_type in CRM_TYPES:
        connect(svc, fakes, user_id, crm_type)
    email = email_for("mapped")
    first, second = full_contact(email, 4), full_contact(email, 5)
    sync_contact(svc, user_id, first)
    sync_contact(svc, user_id, second)
    for crm_type in CRM_TYPES:
        mapping = contact_mapping(svc, user_id, crm_type)
        writes = contact_writes(fakes, crm_type)
        assert len(writes) == 2, (crm_type, writes)  # one create, one update
        assert_contact_fields(crm_type, mapping, first, writes[0], "the create request's body")
        assert_contact_fields(crm_type, mapping, second, writes[1], "the update request's body")


# ------------------------------------------------------------------------------------------ events


def _event_target(crm_type: str, target: str) -> str:
    """A mapping's event target as a path into the CRM's write body: 'Task.Subject' ->
    'Subject', 'eventName (pe<portalId>_<event>)' -> 'eventName'."""
    target = re.sub(r"\s*\(.*\)\s*$", "", target)
    for prefix in ("Task.", "Activity."):
        if target.startswith(prefix):
            return target[len(prefix):]
    return target


def _event_writes(fakes, crm_type: str) -> list:
    out = []
    for q in fakes.requests(crm_type):
        if q["method"] != "POST":
            continue
        if crm_type == "klaviyo" and q["path"].startswith("/api/events"):
            out.append(q["body"]["data"]["attributes"])
        elif crm_type == "hubspot" and q["path"].startswith("/events/") and q["path"].rstrip("/").endswith("/send"):
            out.append(q["body"])
        elif crm_type == "salesforce" and "/sobjects/Task" in q["path"]:
            out.append(q["body"])
        elif crm_type == "creatio" and "/0/odata/Activity" in q["path"]:
            out.append(q["body"])
    return out


def _hubspot_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "", re.sub(r"[ .\-]", "_", name.lower()))


def _assert_carries(crm_type, standard, found, event, fakes, email):
    expected = event[standard]
    if standard == "email":
        if isinstance(found, str) and found.lower() == email.lower():
            return
        # A lookup (Salesforce WhoId, Creatio ContactId): the record it names has the email.
        records = crm_records(fakes, crm_type, email)
        assert [r.get("Id") for r in records] == [found], (crm_type, standard, found, records)
        return
    if standard == "event":
        assert found == expected or (crm_type == "hubspot" and isinstance(found, str)
                                     and re.fullmatch(r"pe\d+_" + re.escape(_hubspot_name(expected)), found)), \
            (crm_type, standard, found, expected)
        return
    if standard == "timestamp":
        assert found in (expected, expected[:10]), (crm_type, standard, found, expected)
        return
    if standard == "properties":
        if isinstance(found, dict):
            for k, v in expected.items():
                assert k in found and found[k] in (v, str(v)), (crm_type, standard, k, found)
        else:
            assert isinstance(found, str), (crm_type, standard, found)
            for k, v in expected.items():
                assert re.search(re.escape(json.dumps(k)) + r"\s*:\s*" + re.escape(json.dumps(v)), found), \
                    (crm_type, standard, k, v, found)
        return
    if standard == "value":
        if isinstance(found, (int, float)) or (isinstance(found, str) and re.fullmatch(r"-?[\d.]+", found)):
            assert float(found) == expected, (crm_type, standard, found, expected)
        else:
            assert isinstance(found, str) and re.search(r'"value"\s*:\s*' + re.escape(json.dumps(expected)), found), \
                (crm_type, standard, found, expected)
        return
    if standard == "unique_id":
        assert found == expected or (isinstance(found, str) and expected in found), \
            (crm_type, standard, found, expected)
        return
    raise AssertionError(f"{crm_type}: the mapping names a standard event field {standard!r} this test does not know")


def test_event_reaches_every_crm_with_every_mapped_field(svc, fakes, user_id):
    fakes.config("hubspot", {"events": ["order_placed"]})  # the portal's custom event definition
    for crm_type in CRM_TYPES:
        connect(svc, fakes, user_id, crm_type)
    email = email_for("event")
    event = {"event": "Order Placed", "email": email, "properties": {"order_id": "O-1001", "items": 3},
             "value": 42.5, "timestamp": "2026-11-20T10:30:00Z", "unique_id": str(uuid.uuid4())}
    body = sync_event(svc, user_id, event).json()
    results = by_type(body)
    assert sorted(results) == CRM_TYPES, body
    for crm_type, res in results.items():
        assert res["status"] == "success" and res["action"] == "sent", res
    assert body["success_count"] == 4 and body["failure_count"] == 0, body

    for crm_type in CRM_TYPES:
        r = svc.get(f"/crm/field-mappings/{crm_type}", headers=hdr(user_id))
        assert r.status == 200, r
        mapping = r.json()["event"]
        assert set(mapping) >= {"event", "email", "properties", "value", "timestamp", "unique_id"}, mapping
        writes = _event_writes(fakes, crm_type)
        assert len(writes) == 1, (crm_type, writes)
        for standard, target in mapping.items():
            if target is None:
                continue
            path = _event_target(crm_type, target)
            try:
                found = dig(writes[0], path)
            except KeyError:
                raise AssertionError(f"{crm_type}: the event body lacks {target!r} (mapped from {standard});"
                                     f" body: {json.dumps(writes[0])}") from None
            _assert_carries(crm_type, standard, found, event, fakes, email)

    # Stored once in each CRM.
    assert len(fakes.state("klaviyo")["events"]) == 1
    assert len(fakes.state("hubspot")["events"]) == 1
    assert len(fakes.state("salesforce")["tasks"]) == 1
    assert len(fakes.state("creatio")["activities"]) == 1


# ------------------------------------------------------------------------------------------ idempotency, async


def test_idempotent_replay_returns_the_first_response_and_delivers_once(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    key = "idem-" + secrets.token_hex(8)
    contact = full_contact(email_for("idem"), 1)
    first = sync_contact(svc, user_id, contact, headers={"Idempotency-Key": key})
    assert first.headers.get("Idempotent-Replayed", "false").lower() != "true", first.headers
    assert by_type(first.json())["klaviyo"]["status"] == "success", first

    again = sync_contact(svc, user_id, contact, headers={"Idempotency-Key": key})
    assert again.headers.get("Idempotent-Replayed") == "true", again.headers
    assert again.json() == first.json()
    # Delivered once: one profile import at the CRM, one log row.
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 1
    logs = svc.get("/crm/sync/logs", headers=hdr(user_id)).json()["logs"]
    assert [log["id"] for log in logs] == [first.json()["results"][0]["log_id"]], logs

    # The same key with a different body is refused, and nothing is delivered.
    changed = dict(contact, first_name="Someone Else")
    r = svc.post("/crm/sync/contact", headers=hdr(user_id, **{"Idempotency-Key": key}), json=changed)
    assert r.status == 422, r
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"], r.json()
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 1

    # Keys belong to one user: another user's request with the same key is its own sync.
    other = uid()
    connect(svc, fakes, other, "klaviyo")
    theirs = sync_contact(svc, other, contact, headers={"Idempotency-Key": key})
    assert theirs.headers.get("Idempotent-Replayed", "false").lower() != "true"
    assert theirs.json()["results"][0]["log_id"] != first.json()["results"][0]["log_id"]


def test_concurrent_requests_with_one_idempotency_key_deliver_once(svc, fakes, user_id):
    import threading

    connect(svc, fakes, user_id, "klaviyo")
    fakes.config("klaviyo", {"latency_s": 1.0})  # the first request is still running when the second comes
    key = "idem-race-" + secrets.token_hex(6)
    contact = {"email": email_for("race"), "first_name": "Race"}
    responses = [None, None]

    def send(i):
        responses[i] = svc.post("/crm/sync/contact", headers=hdr(user_id, **{"Idempotency-Key": key}),
                                json=contact, timeout=30)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(40)
    statuses = sorted(r.status for r in responses)
    assert statuses in ([200, 200], [200, 409]), responses
    ok = [r for r in responses if r.status == 200]
    assert all(r.json() == ok[0].json() for r in ok), responses
    assert ok[0].json()["results"][0]["status"] == "success", ok[0]
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 1
    # Afterwards the key replays the one result.
    again = sync_contact(svc, user_id, contact, headers={"Idempotency-Key": key})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == ok[0].json()
    assert len(svc.get("/crm/sync/logs", headers=hdr(user_id)).json()["logs"]) == 1


def test_async_sync_answers_202_queued_then_delivers(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    connect(svc, fakes, user_id, "hubspot")
    contact = full_contact(email_for("async"), 6)
    r = sync_contact(svc, user_id, contact, headers={"Prefer": "respond-async"}, expect=202)
    body = r.json()
    results = by_type(body)
    assert sorted(results) == ["hubspot", "klaviyo"], body
    assert all(res["status"] == "queued" and isinstance(res["log_id"], int) for res in results.values()), body
    assert body["success_count"] == 0 and body["failure_count"] == 0, body
    for crm_type, res in results.items():
        log = wait_log(svc, user_id, res["log_id"], timeout=10)
        assert log["status"] == "success" and log["attempts"] == 1, log
        assert log["crm_record_id"], log
        records = crm_records(fakes, crm_type, contact["email"])
        assert len(records) == 1, (crm_type, records)
        assert_contact_fields(crm_type, contact_mapping(svc, user_id, crm_type), contact, records[0], "stored record")


def test_api_only_worker_queues_and_another_worker_delivers(fresh_db, fakes):
    """CRM_SWEEP_CONCURRENCY=0: the worker answers 202 and never delivers; a sweeping one does."""
    database = fresh_db()   # no other worker sweeps this database
    user = uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_SWEEP_CONCURRENCY="0")) as api:
        connect(api, fakes, user, "klaviyo")
        contact = full_contact(email_for("api-only"), 7)
        res = by_type(sync_contact(api, user, contact, headers={"Prefer": "respond-async"}, expect=202).json())["klaviyo"]
        time.sleep(2)
        log = api.get(f"/crm/sync/logs/{res['log_id']}", headers=hdr(user)).json()
        assert log["status"] == "queued" and log["attempts"] == 0, log
        assert crm_records(fakes, "klaviyo", contact["email"]) == []
    with Service(database.dsn, fakes.urls, dict(BASE_ENV)) as sweeper:
        log = wait_log(sweeper, user, res["log_id"], timeout=10)
        assert log["status"] == "success" and log["attempts"] == 1, log
        assert len(crm_records(fakes, "klaviyo", contact["email"])) == 1


def crm_arrivals_of_concurrent_syncs(database, fakes, env: dict, count: int, latency: float, tag: str) -> list:
    """Sends `count` contact syncs at once to a worker with `env`, Klaviyo answering each call
    after `latency` s; asserts all succeed and returns when each call reached the CRM, sorted."""
    import concurrent.futures as cf
    user = uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_SWEEP_CONCURRENCY="0", **env)) as api:
        connect(api, fakes, user, "klaviyo")
        emails = [email_for(f"{tag}{i}") for i in range(count)]
        fakes.config("klaviyo", {"latency_s": latency})
        try:
            with cf.ThreadPoolExecutor(count) as pool:
                responses = list(pool.map(lambda e: sync_contact(api, user, {"email": e}), emails))
        finally:
            fakes.config("klaviyo", {"latency_s": 0})
    assert all(by_type(r.json())["klaviyo"]["status"] == "success" for r in responses)
    calls = [q for q in fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
             if any(e in json.dumps(q["body"]) for e in emails)]
    assert len(calls) == count, calls
    return sorted(q["at"] for q in calls)


def test_requests_waiting_on_a_crm_hold_no_worker_thread(fresh_db, fakes):
    """FCGI_THREADS=2 and ten syncs at once to a CRM that takes 1.5 s per call: all ten calls
    reach the CRM within one call's time (they are in flight together), and every sync
    succeeds. With a thread held per CRM call they would arrive two at a time, 1.5 s apart."""
    latency = 1.5
    arrivals = crm_arrivals_of_concurrent_syncs(fresh_db(), fakes, {"FCGI_THREADS": "2"}, 10, latency, "threadless")
    assert arrivals[-1] - arrivals[0] < latency, f"CRM calls arrived over {arrivals[-1] - arrivals[0]:.2f} s: {arrivals}"


def test_max_requests_bounds_the_requests_in_progress(fresh_db, fakes):
    """FCGI_MAX_REQUESTS=3 with two threads: of six syncs sent at once to a CRM taking 1.2 s per
    call, three are at the CRM together, the other three only once one of those is answered;
    all six succeed (the rest wait in the socket's backlog, nothing is refused)."""
    latency = 1.2
    arrivals = crm_arrivals_of_concurrent_syncs(fresh_db(), fakes, {"FCGI_THREADS": "2", "FCGI_MAX_REQUESTS": "3"}, 6, latency, "capped")
    assert arrivals[2] - arrivals[0] < latency, f"the first three were not in flight together: {arrivals}"
    assert arrivals[3] - arrivals[0] >= latency * 0.9, f"a fourth request was taken before one was answered: {arrivals}"


def test_async_event_with_idempotency_key_is_delivered_once(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    key = "idem-async-" + secrets.token_hex(6)
    event = {"event": "Signed Up", "email": email_for("asyncev"), "properties": {"plan": "pro"}}
    first = sync_event(svc, user_id, event, headers={"Prefer": "respond-async", "Idempotency-Key": key}, expect=202)
    log_id = first.json()["results"][0]["log_id"]
    assert wait_log(svc, user_id, log_id, timeout=10)["status"] == "success"
    again = sync_event(svc, user_id, event, headers={"Prefer": "respond-async", "Idempotency-Key": key}, expect=202)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    time.sleep(1.5)  # give a (wrongly) queued second delivery time to happen
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/events")) == 1
    assert len(fakes.state("klaviyo")["events"]) == 1


# ------------------------------------------------------------------------------------------ logs


def test_log_pagination_walks_every_row_newest_first_without_overlap(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    created = []
    for n in range(7):
        body = sync_contact(svc, user_id, {"email": email_for(f"page{n}"), "first_name": f"P{n}"}).json()
        created.append(body["results"][0]["log_id"])
    assert created == sorted(created) and len(set(created)) == 7

    for limit in (3, 7, 1):
        seen, pages, before = [], 0, None
        while True:
            path = f"/crm/sync/logs?limit={limit}" + (f"&before_id={before}" if before is not None else "")
            r = svc.get(path, headers=hdr(user_id))
            assert r.status == 200, r
            page = r.json()
            ids = [log["id"] for log in page["logs"]]
            assert len(ids) <= limit, page
            assert ids == sorted(ids, reverse=True), ids  # newest first
            if before is not None:
                assert all(i < before for i in ids), (before, ids)
            assert not set(ids) & set(seen), (ids, seen)  # no overlap
            seen += ids
            pages += 1
            before = page["next_before_id"]
            if before is None:
                break
            assert before == ids[-1], page
            assert pages <= 10, "pagination does not end"
        assert seen == sorted(created, reverse=True), (limit, seen, created)
        assert pages <= -(-7 // limit) + 1, (limit, pages)


def test_another_users_log_is_404_and_invisible(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    log_id = sync_contact(svc, user_id, {"email": email_for("mine")}).json()["results"][0]["log_id"]
    assert get_log(svc, user_id, log_id)["id"] == log_id
    other = uid()
    r = svc.get(f"/crm/sync/logs/{log_id}", headers=hdr(other))
    assert r.status == 404, r
    assert isinstance(r.json().get("detail"), str)
    r = svc.post(f"/crm/sync/logs/{log_id}/retry", headers=hdr(other))
    assert r.status == 404, r
    assert svc.get("/crm/sync/logs", headers=hdr(other)).json()["logs"] == []


def test_retry_of_a_log_that_is_not_failed_is_409_and_sends_nothing(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    log_id = sync_contact(svc, user_id, {"email": email_for("ok")}).json()["results"][0]["log_id"]
    before = len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"))
    r = svc.post(f"/crm/sync/logs/{log_id}/retry", headers=hdr(user_id))
    assert r.status == 409, r
    assert isinstance(r.json().get("detail"), str)
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == before
    log = get_log(svc, user_id, log_id)
    assert log["status"] == "success" and log["attempts"] == 1, log


def test_manual_retry_of_a_failed_log_after_the_crm_is_fixed(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    contact = full_contact(email_for("manual"), 7)
    fakes.faults("klaviyo", [{"status": 400}], match="/api/profile-import")
    res = by_type(sync_contact(svc, user_id, contact).json())["klaviyo"]
    assert res["status"] == "failed", res
    assert crm_records(fakes, "klaviyo", contact["email"]) == []

    # The fault was used up: the CRM accepts the data now.
    r = svc.post(f"/crm/sync/logs/{res['log_id']}/retry", headers=hdr(user_id))
    assert r.status == 200, r
    result = r.json()
    assert result["status"] == "success" and result["log_id"] == res["log_id"], result
    assert result["crm_type"] == "klaviyo" and result.get("crm_record_id"), result
    log = get_log(svc, user_id, res["log_id"])
    assert log["status"] == "success" and log["attempts"] == 2, log
    assert log["request"]["email"] == contact["email"]
    assert "pk_test_valid_key" not in json.dumps(log)  # credentials never in a log
    records = crm_records(fakes, "klaviyo", contact["email"])
    assert len(records) == 1
    assert_contact_fields("klaviyo", contact_mapping(svc, user_id, "klaviyo"), contact, records[0], "stored record")
    # Succeeded now: a second retry is refused.
    assert svc.post(f"/crm/sync/logs/{res['log_id']}/retry", headers=hdr(user_id)).status == 409


# U+0000 ("\u0000" in JSON) is valid JSON, but PostgreSQL cannot store it in text or jsonb: a
# sync carrying one could not be logged, and settings carrying one could not be saved. Found by
# `make fuzz` (fuzz/README.md). Each is refused up front with 422 at the string's place.
NUL_BODIES = [
    ("/crm/sync/contact", {"email": "nul@example.com", "first_name": "A\x00B"}, ["body", "first_name"]),
    ("/crm/sync/contact", {"email": "nul@example.com", "address": {"city": "\x00"}}, ["body", "address", "city"]),
    ("/crm/sync/event", {"event": "Order\x00", "email": "nul@example.com"}, ["body", "event"]),
    ("/crm/sync/event", {"event": "Order", "email": "nul@example.com", "properties": {"items": [{"sku": "A\x001"}]}},
     ["body", "properties", "items", 0, "sku"]),
    ("/crm/sync/event", {"event": "Order", "email": "nul@example.com", "properties": {"k\x00": 1}}, ["body", "properties", "k\x00"]),
    ("/crm/connect", {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"},
                      "settings": {"field_mapping": {"first_name": "given\x00name"}}}, ["body", "settings", "field_mapping", "first_name"]),
]


@pytest.mark.parametrize("route,body,loc", NUL_BODIES, ids=[f"{r} {'.'.join(map(str, l[1:]))}" for r, _, l in NUL_BODIES])
def test_a_nul_character_in_a_body_is_refused_with_422_at_its_place(svc, fakes, user_id, route, body, loc):
    connect(svc, fakes, user_id, "klaviyo")
    before = len(fakes.requests("klaviyo"))
    r = svc.post(route, headers=hdr(user_id), json=body)
    assert r.status == 422, r
    detail = r.json()["detail"]
    assert [issue["loc"] for issue in detail] == [loc], detail
    assert "U+0000" in detail[0]["msg"], detail
    # Nothing was logged or sent, and the worker goes on serving.
    assert svc.get("/crm/sync/logs", headers=hdr(user_id)).json()["logs"] == []
    assert len(fakes.requests("klaviyo")) == before
    assert svc.get("/crm/klaviyo/status", headers=hdr(user_id)).status == 200


def test_a_crm_answer_holding_a_nul_character_is_logged(svc, fakes, user_id):
    """A CRM's error body is kept in the log's `response` (jsonb) and its message in `error`
    (text): neither takes U+0000, so the worker writes U+FFFD in its place. The outcome is
    logged, not lost (a row left in flight would be delivered again and again)."""
    connect(svc, fakes, user_id, "klaviyo")
    fakes.faults("klaviyo", [{"status": 400, "body": {"errors": [{"status": 400, "code": "invalid", "title": "Bad\x00value",
                                                                   "detail": "first_name \x00 is not allowed"}]}}],
                 match="/api/profile-import")
    body = sync_contact(svc, user_id, {"email": email_for("nulreply"), "first_name": "Ada"}).json()
    res = by_type(body)["klaviyo"]
    assert res["status"] == "failed", body
    log = get_log(svc, user_id, res["log_id"])
    assert log["status"] == "failed" and log["attempts"] == 1 and log["http_status"] == 400, log
    assert "\x00" not in json.dumps(log, ensure_ascii=False) and "\\u0000" not in json.dumps(log), log
    assert "\ufffd" in json.dumps(log["response"], ensure_ascii=False), log
