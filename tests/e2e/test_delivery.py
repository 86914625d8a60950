"""Delivery guarantees end to end: retries with backoff and Retry-After, permanent failures,
credential failures (auth_error), a worker killed mid-delivery, several workers sharing one
database, disconnect cancelling pending retries.

Every test runs its workers on a private database (see test_sync.py): the shared test
database is swept by other test runs' workers at the same time.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse

import pytest

from crm_harness import Service, uid
from test_sync import (  # noqa: F401  (fixtures are used by name)
    BASE_ENV, _no_leftover_deliveries, by_type, connect, contact_mapping, crm_records, crm_record_ids, assert_contact_fields,
    db, email_for, fake_requests, fresh_db, full_contact, get_log, hdr, svc, sync_contact, sync_event,
    wait_log, wait_until,
)


def integration_status(svc, user: str, crm_type: str) -> dict:
    r = svc.get(f"/crm/{crm_type}/status", headers=hdr(user))
    assert r.status == 200, r
    return r.json()


def kill9_and_restart(service: Service, extra_env: dict | None = None):
    """SIGKILL the worker (by its PID), then start it again on the same socket path: the same
    worker identity (<hostname>:<socket>). Service.restart() alone would assert a clean exit."""
    proc = service.worker
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    service.worker = None
    if service._log:
        service._log.close()
        service._log = None
    socket_path = service.socket_path
    service.restart(extra_env)  # stops nginx; starts migrate + serve on the same FCGI_SOCKET
    assert service.socket_path == socket_path


def delivery_attempts_in_log(service: Service) -> list:
    """log_id of every 'delivery attempt' line in this worker's log."""
    ids = []
    for line in service.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "delivery attempt":
            ids.append(int(entry["log_id"]))
    return ids


# ------------------------------------------------------------------------------------------ retries


def test_503_twice_then_200_is_retrying_then_success_after_three_attempts(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    contact = full_contact(email_for("flaky"), 1)
    # Retry-After: 0 must not shorten the backoff (next attempt = max(backoff, Retry-After)).
    fakes.faults("klaviyo", [{"status": 503, "headers": {"Retry-After": "0"}}, {"status": 503}],
                 match="/api/profile-import")
    body = sync_contact(svc, user_id, contact).json()
    res = by_type(body)["klaviyo"]
    assert res["status"] == "retrying", body
    assert body["success_count"] == 0 and body["failure_count"] == 0, body

    log = get_log(svc, user_id, res["log_id"])
    assert log["status"] == "retrying" and log["attempts"] == 1 and log["http_status"] == 503, log
    assert log["next_attempt_at"], log

    log = wait_log(svc, user_id, res["log_id"], timeout=20)
    assert log["status"] == "success", log
    assert log["attempts"] == 3, log
    assert log["http_status"] in (200, 201) and log["crm_record_id"], log
    assert log["next_attempt_at"] is None, log

    calls = fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
    assert len(calls) == 3, calls
    gaps = [b["at"] - a["at"] for a, b in zip(calls, calls[1:])]
    # base 1 s, doubling, ±20 % jitter: >= 0.8 s, then >= 1.6 s
    assert gaps[0] >= 0.8 and gaps[1] >= 1.6, gaps
    records = crm_records(fakes, "klaviyo", contact["email"])
    assert len(records) == 1
    assert_contact_fields("klaviyo", contact_mapping(svc, user_id, "klaviyo"), contact, records[0], "stored record")
    assert integration_status(svc, user_id, "klaviyo")["last_sync_status"] == "success"


def test_429_with_retry_after_is_not_retried_before_that_many_seconds(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    contact = {"email": email_for("throttled"), "first_name": "Thr"}
    fakes.faults("klaviyo", [{"status": 429, "headers": {"Retry-After": "2"}}], match="/api/profile-import")
    res = by_type(sync_contact(svc, user_id, contact).json())["klaviyo"]
    assert res["status"] == "retrying", res
    log = get_log(svc, user_id, res["log_id"])
    assert log["http_status"] == 429 and log["attempts"] == 1, log

    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    calls = fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
    assert len(calls) == 2, calls
    gap = calls[1]["at"] - calls[0]["at"]
    assert gap >= 2.0, f"second attempt {gap:.3f} s after the 429 with Retry-After: 2"
    assert len(crm_records(fakes, "klaviyo", contact["email"])) == 1


@pytest.mark.parametrize("broken", ["token", "instance_url"])
def test_an_unusable_salesforce_token_answer_is_retried_not_kept(svc, fakes, user_id, broken):
    """A renewed session whose token no header can carry, or whose instance_url is no URL, is
    a CRM failure (retried), and not kept: kept, it failed every later call until a restart.
    Found by reading the connectors while writing `make fuzz`'s crm-replies seeds."""
    connect(svc, fakes, user_id, "salesforce")
    contact = {"email": email_for(f"sftoken{broken}"), "last_name": "Token"}
    answer = {"access_token": "00Dfuzz!AQ\r\nX-Injected: 1" if broken == "token" else "00Dfuzz!AQgood",
              "instance_url": fakes.urls["salesforce"] if broken == "token" else "not a url",
              "id": "https://login.salesforce.com/id/00D/005", "token_type": "Bearer"}
    fakes.faults("salesforce", [{"status": 401}], match="/services/data/")       # the session expires
    fakes.faults("salesforce", [{"status": 200, "body": answer}], match="/services/oauth2/token")
    res = by_type(sync_contact(svc, user_id, contact).json())["salesforce"]
    assert res["status"] == "retrying", res
    assert ("no header can carry" if broken == "token" else "usable instance_url") in res["detail"], res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    assert len(crm_records(fakes, "salesforce", contact["email"])) == 1
    assert not any("X-Injected" in json.dumps(q["headers"]) or "x-injected" in q["headers"] for q in fakes.requests("salesforce"))
    assert integration_status(svc, user_id, "salesforce")["status"] == "connected"


def test_hubspot_account_details_without_a_portal_id_are_retried_not_kept(svc, fakes, user_id):
    """Custom events are named after the portal id. Account details without one are HubSpot's
    failure: retried, and not kept (kept for five minutes, every event failed for good)."""
    connect(svc, fakes, user_id, "hubspot")
    fakes.config("hubspot", {"events": ["order_placed"]})  # the portal's custom event definition
    fakes.faults("hubspot", [{"status": 200, "body": {"accountType": "STANDARD", "timeZone": "US/Eastern"}}], match="/account-info/")
    event = {"event": "Order Placed", "email": email_for("hsportal"), "properties": {"sku": "A1"}}
    res = by_type(sync_event(svc, user_id, event).json())["hubspot"]
    assert res["status"] == "retrying" and "portalId" in res["detail"], res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, (log["error"], log)
    sent = fake_requests(fakes, "hubspot", "POST", "/events/")
    assert len(sent) == 1 and sent[0]["body"]["eventName"].startswith("pe"), sent


def test_salesforce_request_limit_exceeded_403_is_retried_not_an_auth_error(svc, fakes, user_id):
    connect(svc, fakes, user_id, "salesforce")
    contact = {"email": email_for("sflimit"), "last_name": "Limit"}
    fakes.faults("salesforce", [{"status": 403, "headers": {"Retry-After": "1"},
                                 "body": [{"message": "TotalRequests Limit exceeded.",
                                           "errorCode": "REQUEST_LIMIT_EXCEEDED"}]}],
                 match="/services/data/")
    res = by_type(sync_contact(svc, user_id, contact).json())["salesforce"]
    assert res["status"] == "retrying", res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    assert integration_status(svc, user_id, "salesforce")["status"] == "connected"
    assert len(crm_records(fakes, "salesforce", contact["email"])) == 1


@pytest.mark.parametrize("faults", [
    [{"status": 408}], [{"status": 500}], [{"status": 502}], [{"status": 504}],
    # The connection dropped without an answer. Twice: libcurl itself re-sends a request once
    # when a reused keep-alive connection turns out dead, so one close may never surface.
    [{"close": True}, {"close": True}],
    [{"hang_s": 6}],    # no answer within CRM_HTTP_TIMEOUT_S (3 s in the harness)
], ids=["408", "500", "502", "504", "connection-closed", "timeout"])
def test_transient_failures_are_retried_until_success(svc, fakes, user_id, faults):
    connect(svc, fakes, user_id, "klaviyo")
    contact = {"email": email_for("transient"), "first_name": "Tra"}
    fakes.faults("klaviyo", faults, match="/api/profile-import")
    res = by_type(sync_contact(svc, user_id, contact).json())["klaviyo"]
    assert res["status"] == "retrying", res
    log = get_log(svc, user_id, res["log_id"])
    assert log["attempts"] == 1 and log["next_attempt_at"], log
    if "status" in faults[0]:
        assert log["http_status"] == faults[0]["status"], log
    log = wait_log(svc, user_id, res["log_id"], timeout=20)
    assert log["status"] == "success", log
    # one attempt per fault, the last succeeds (a close may be absorbed by libcurl's own re-send)
    assert log["attempts"] == len(faults) + 1 or (faults[0].get("close") and log["attempts"] == 2), log
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == len(faults) + 1
    assert len(crm_records(fakes, "klaviyo", contact["email"])) == 1


def test_retries_stop_after_max_attempts(fresh_db, fakes):
    service = Service(fresh_db().dsn, fakes.urls, dict(BASE_ENV, CRM_RETRY_MAX_ATTEMPTS="3"))
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        fakes.down("klaviyo", status=503)
        res = by_type(sync_contact(service, user, {"email": email_for("giveup")}).json())["klaviyo"]
        assert res["status"] == "retrying", res
        log = wait_log(service, user, res["log_id"], timeout=20)
        assert log["status"] == "failed" and log["attempts"] == 3, log
        assert log["http_status"] == 503 and log["next_attempt_at"] is None and log["error"], log
        calls = len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"))
        assert calls == 3
        time.sleep(2.5)
        assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 3
        # Transient failures are not credential failures.
        assert integration_status(service, user, "klaviyo")["status"] == "connected"
        # Once the CRM is back, a manual retry delivers it.
        fakes.down("klaviyo", down=False)
        r = service.post(f"/crm/sync/logs/{res['log_id']}/retry", headers=hdr(user))
        assert r.status == 200 and r.json()["status"] == "success", r
    finally:
        service.close()


@pytest.mark.parametrize("crm_type, data_path", [
    ("klaviyo", "/api/events"), ("hubspot", "/events/"), ("salesforce", "/services/data/"), ("creatio", "/0/odata/"),
])
def test_a_retried_event_keeps_its_unique_id_and_is_recorded_once(svc, fakes, user_id, crm_type, data_path):
    if crm_type == "hubspot":
        fakes.config("hubspot", {"events": ["trial_started"]})
    connect(svc, fakes, user_id, crm_type)
    email = email_for(f"ev{crm_type}")
    event = {"event": "Trial Started", "email": email, "properties": {"plan": "pro"}}  # no unique_id: derived
    fakes.faults(crm_type, [{"status": 503}], match=data_path)
    res = by_type(sync_event(svc, user_id, event).json())[crm_type]
    assert res["status"] == "retrying", res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    state = fakes.state(crm_type)
    if crm_type == "klaviyo":
        ids = [q["body"]["data"]["attributes"]["unique_id"] for q in fake_requests(fakes, "klaviyo", "POST", "/api/events")]
        assert len(ids) == 2 and ids[0] == ids[1], ids
        assert len(state["events"]) == 1
    elif crm_type == "hubspot":
        ids = [q["body"]["uuid"] for q in fake_requests(fakes, "hubspot", "POST", "/events/")]
        assert len(ids) == 1 or (len(ids) == 2 and ids[0] == ids[1]), ids
        assert len(state["events"]) == 1
    elif crm_type == "salesforce":
        assert len(state["tasks"]) == 1, state["tasks"]
    else:
        assert len(state["activities"]) == 1, state["activities"]


def test_event_after_an_ambiguous_timeout_is_not_doubled(svc, fakes, user_id):
    """The CRM stores the event but its answer comes too late: the retry must carry the same
    unique id, so Klaviyo recognises it instead of recording a second event."""
    connect(svc, fakes, user_id, "klaviyo")
    fakes.config("klaviyo", {"latency_s": 4.5})  # > CRM_HTTP_TIMEOUT_S (3): stored after the worker gave up
    event = {"event": "Paid", "email": email_for("ambiguous"), "value": 9.5}
    res = by_type(sync_event(svc, user_id, event).json())["klaviyo"]
    fakes.config("klaviyo", {"latency_s": 0})
    assert res["status"] == "retrying", res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    # The slow first request is stored ~4.5 s after it arrived, as a duplicate of the retry.
    wait_until(lambda: fakes.state("klaviyo")["duplicate_events"] >= 1, 10, "the late first request to arrive")
    ids = [q["body"]["data"]["attributes"]["unique_id"] for q in fake_requests(fakes, "klaviyo", "POST", "/api/events")]
    assert len(ids) == 2 and ids[0] == ids[1], ids
    state = fakes.state("klaviyo")
    assert len(state["events"]) == 1 and state["duplicate_events"] == 1, state


def lookup_path(fakes, crm_type: str) -> str:
    """The path of the connector's contact lookup, as the fake recorded it."""
    part = "/query" if crm_type == "salesforce" else "/0/odata/Contact"
    return next(q["path"] for q in fake_requests(fakes, crm_type, "GET", part))


NO_MATCH = {"salesforce": {"totalSize": 0, "done": True, "records": []},
            "creatio": {"@odata.context": "http://creatio/0/odata/$metadata#Contact(Id)", "value": []}}


@pytest.mark.parametrize("crm_type", ["salesforce", "creatio"])
def test_several_contacts_with_one_email_every_update_and_event_goes_to_the_oldest(svc, fakes, user_id, crm_type):
    """Salesforce and Creatio let several contacts share an email, and answer a lookup in no
    promised order (the fakes: newest first). Every sync must land on one of them, the oldest,
    and say that there were several."""
    connect(svc, fakes, user_id, crm_type)
    email = email_for(f"twins{crm_type}")
    first = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada1", "last_name": "Old"}).json())[crm_type]
    assert first["status"] == "success" and first["action"] == "created", first
    # A second contact with that email appears (made in the CRM's UI, or by a lookup that lagged):
    # here the lookup answers "no match" once, so the connector creates it.
    fakes.faults(crm_type, [{"status": 200, "body": NO_MATCH[crm_type]}], match=lookup_path(fakes, crm_type), method="GET")
    second = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada2", "last_name": "New"}).json())[crm_type]
    assert second["action"] == "created" and second["crm_record_id"] != first["crm_record_id"], second
    assert len(crm_records(fakes, crm_type, email)) == 2

    given = "FirstName" if crm_type == "salesforce" else "GivenName"
    for n in (3, 4):
        res = by_type(sync_contact(svc, user_id, {"email": email, "first_name": f"Ada{n}"}).json())[crm_type]
        assert res["status"] == "success" and res["action"] == "updated", res
        assert res["crm_record_id"] == first["crm_record_id"], (n, res, first)
        assert "several" in res["detail"] and "oldest" in res["detail"], res
        records = {r["Id"]: r for r in crm_records(fakes, crm_type, email)}
        assert records[first["crm_record_id"]][given] == f"Ada{n}", records
        assert records[second["crm_record_id"]][given] == "Ada2", records

    res = by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email}).json())[crm_type]
    assert res["status"] == "success" and "several" in res["detail"], res
    state = fakes.state(crm_type)
    if crm_type == "salesforce":
        assert [t["WhoId"] for t in state["tasks"]] == [first["crm_record_id"]], state["tasks"]
    else:
        assert [a["ContactId"] for a in state["activities"]] == [first["crm_record_id"]], state["activities"]


def test_salesforce_upsert_by_external_id_reaches_an_email_whose_domain_salesforce_reads_as_a_file_type(svc, fakes, user_id):
    """`PATCH …/Contact/Email/jane@acme.inc` is 404 at Salesforce (".inc" is taken for a file
    format): the value is looked up instead, as Salesforce's docs advise, and the contact is
    created once, then updated."""
    connect(svc, fakes, user_id, "salesforce", {"external_id_field": "Email"})
    email = email_for("tld").replace("@example.com", "@acme.inc")
    first = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada", "last_name": "Inc"}).json())["salesforce"]
    assert first["status"] == "success" and first["action"] == "created", first
    again = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Grace"}).json())["salesforce"]
    assert again["status"] == "success" and again["action"] == "updated", again
    assert again["crm_record_id"] == first["crm_record_id"]
    records = crm_records(fakes, "salesforce", email)
    assert len(records) == 1 and records[0]["FirstName"] == "Grace" and records[0]["LastName"] == "Inc", records
    # Another address still goes the direct way: one PATCH by external id, no lookup.
    other = email_for("tld")
    assert by_type(sync_contact(svc, user_id, {"email": other}).json())["salesforce"]["action"] == "created"
    assert [q["method"] for q in fake_requests(fakes, "salesforce", None, "/services/data/")
            if other in urllib.parse.unquote_plus(q["path"] + "?" + q["raw_query"])] == ["PATCH"]


@pytest.mark.parametrize("odd_id", ["00000000-0000-0000-0000-000000000000 or true", "x)/Activity(y", ""])
def test_a_creatio_contact_id_that_is_not_a_guid_goes_into_no_url(svc, fakes, user_id, odd_id):
    """Creatio writes a GUID unquoted into a key and a filter: an Id that is not one must not
    reach either, whatever the lookup answered."""
    connect(svc, fakes, user_id, "creatio")
    email = email_for("oddid")
    sync_contact(svc, user_id, {"email": email, "first_name": "Ada"})
    body = {"@odata.context": "http://creatio/0/odata/$metadata#Contact(Id)", "value": [{"Id": odd_id}]}
    fakes.faults("creatio", [{"status": 200, "body": body}] * 2, match="/0/odata/Contact", method="GET")
    for res in (by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Bob"}).json())["creatio"],
                by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email}).json())["creatio"]):
        assert res["status"] == "failed" and "not a GUID" in res["detail"], res
    assert fake_requests(fakes, "creatio", "PATCH") == []
    assert fake_requests(fakes, "creatio", None, "/0/odata/Activity") == []


@pytest.mark.parametrize("crm_type, write_path", [
    ("salesforce", "/sobjects/Task/"), ("creatio", "/0/odata/Activity"), ("hubspot", "/notes"),
])
def test_an_event_whose_answer_was_lost_is_found_on_retry_not_recorded_twice(svc, fakes, user_id, crm_type, write_path):
    """The CRM stores the Task (Activity, HubSpot note) but its answer never arrives: the retry
    finds it by the event id it carries, among the contact's records, and adds no second one."""
    connect(svc, fakes, user_id, crm_type, {"events": "note"} if crm_type == "hubspot" else None)
    email = email_for(f"lost{crm_type}")
    # Another event of the same name on the same contact, whose id begins with this one's: the
    # lookup must tell them apart.
    assert by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email,
                                             "unique_id": "order-10"}).json())[crm_type]["status"] == "success"
    create = next(q["path"] for q in fake_requests(fakes, crm_type, "POST") if q["path"].endswith(write_path))
    fakes.faults(crm_type, [{"lost": True}], match=create, method="POST", exact=True)
    res = by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email, "unique_id": "order-1",
                                            "properties": {"total": 12}}).json())[crm_type]
    assert res["status"] == "retrying", res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    state = fakes.state(crm_type)
    records, text = {"salesforce": (state.get("tasks"), "Description"), "creatio": (state.get("activities"), "DetailedResult"),
                     "hubspot": ([n["properties"] for n in state.get("notes", [])], "hs_note_body")}[crm_type]
    assert len(records) == 2, records

    def carries(record, event_id):
        return re.search(re.escape(event_id) + r"(?!\d)", record[text]) is not None

    assert [sum(carries(r, i) for r in records) for i in ("order-10", "order-1")] == [1, 1], records
    created = [r for r in records if carries(r, "order-1")][0]
    assert log["crm_record_id"] == created.get("Id", created.get("hs_object_id")), (log, records)
    # Two creates (the first event's, and the second's whose answer was lost), no third.
    assert len([q for q in fake_requests(fakes, crm_type, "POST") if q["path"] == create]) == 2


@pytest.mark.parametrize("crm_type", ["salesforce", "creatio", "hubspot"])
def test_a_retry_looks_for_its_event_among_the_newest(svc, fakes, user_id, crm_type):
    """A lookup must reach the record an attempt created moments ago however many the contact
    has. Salesforce answers a query in batches (of 2,000; here of 2) in no promised order (here
    oldest first), so the lookup asks for the newest Tasks, a bounded number, as Creatio's asks
    for the newest Activities. HubSpot lists a contact's notes in pages (of 100 with the contact,
    up to 500 from the association list; here of 2), the oldest first: the lookup reads every page."""
    connect(svc, fakes, user_id, crm_type, {"events": "note"} if crm_type == "hubspot" else None)
    if crm_type == "salesforce":
        fakes.config("salesforce", {"query_batch_size": 2, "unordered": "oldest_first"})
    if crm_type == "hubspot":
        fakes.config("hubspot", {"association_page_size": 2})
    email = email_for(f"newest{crm_type}")
    for earlier in ("order-a", "order-b"):
        res = by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email, "unique_id": earlier}).json())[crm_type]
        assert res["status"] == "success", res
    write_path = {"salesforce": "/sobjects/Task/", "creatio": "/0/odata/Activity", "hubspot": "/notes"}[crm_type]
    create = next(q["path"] for q in fake_requests(fakes, crm_type, "POST") if q["path"].endswith(write_path))
    fakes.faults(crm_type, [{"lost": True}], match=create, method="POST", exact=True)
    res = by_type(sync_event(svc, user_id, {"event": "Placed Order", "email": email, "unique_id": "order-1"}).json())[crm_type]
    assert res["status"] == "retrying", res
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    records = fakes.state(crm_type)[{"salesforce": "tasks", "creatio": "activities", "hubspot": "notes"}[crm_type]]
    assert len(records) == 3, records  # order-a, order-b and one order-1
    method, path, text = EVENT_LOOKUP[crm_type]
    lookups = [urllib.parse.unquote_plus(q["raw_query"]) for q in fake_requests(fakes, crm_type, method, path)
               if text in urllib.parse.unquote_plus(q["raw_query"])]
    # Each event carries a client id, so each attempt looks (four): the retry's last.
    if crm_type == "hubspot":
        assert lookups == ["limit=500"] * 3 + ["limit=500", "limit=500&after=2"], lookups  # the retry read both pages
        return
    assert len(lookups) == 4, lookups
    for q in lookups:
        if crm_type == "salesforce":
            assert q.endswith(" ORDER BY CreatedDate DESC, Id DESC LIMIT 200"), q
        else:
            assert "$orderby=CreatedOn desc,Id desc" in q and "$top=200" in q, q


EVENT_LOOKUP = {"salesforce": ("GET", "/query", "FROM Task"), "creatio": ("GET", "/0/odata/Activity", ""),
                "hubspot": ("GET", "/associations/notes", "")}


def event_lookups(fakes, crm_type: str) -> int:
    """How many times the connector looked for an already recorded event (HubSpot: listed the
    contact's notes)."""
    method, path, text = EVENT_LOOKUP[crm_type]
    return len([q for q in fake_requests(fakes, crm_type, method, path)
                if text in urllib.parse.unquote_plus(q["raw_query"])])


@pytest.mark.parametrize("crm_type", sorted(EVENT_LOOKUP))
def test_an_event_is_looked_for_only_when_it_may_be_recorded_already(svc, fakes, user_id, crm_type):
    """A request's own first attempt with an id derived from its new log row cannot find the
    event at the CRM: it makes no lookup call (CRM API calls are rationed). The same client
    `unique_id` in a second request may: it is looked for, found, and not recorded twice."""
    connect(svc, fakes, user_id, crm_type, {"events": "note"} if crm_type == "hubspot" else None)
    email = email_for(f"look{crm_type}")
    sync_contact(svc, user_id, {"email": email})  # the contact exists first, as it usually does
    res = by_type(sync_event(svc, user_id, {"event": "Viewed", "email": email}).json())[crm_type]
    assert res["status"] == "success" and res.get("detail") is None, res
    assert event_lookups(fakes, crm_type) == 0
    event = {"event": "Paid", "email": email, "unique_id": "order-77"}
    first = by_type(sync_event(svc, user_id, event).json())[crm_type]
    assert first["status"] == "success" and first.get("detail") is None, first
    again = by_type(sync_event(svc, user_id, event).json())[crm_type]
    assert again["status"] == "success" and again["detail"] == "already recorded", again
    assert again["crm_record_id"] == first["crm_record_id"], (first, again)
    assert event_lookups(fakes, crm_type) == 2  # both requests with the client's id looked
    state = fakes.state(crm_type)
    records = {"salesforce": state.get("tasks"), "creatio": state.get("activities"), "hubspot": state.get("notes")}[crm_type]
    assert len(records) == 2, records  # "Viewed" and one "Paid"


@pytest.mark.parametrize("crm_type", sorted(EVENT_LOOKUP))
def test_an_async_event_is_looked_for_only_when_it_may_be_recorded_already(svc, fakes, user_id, crm_type):
    """The sweep's first attempt at a queued (202) event with a derived id makes no lookup:
    nothing has sent it. Its retry does, and finds it when the first answer was lost."""
    connect(svc, fakes, user_id, crm_type, {"events": "note"} if crm_type == "hubspot" else None)
    email = email_for(f"asynclook{crm_type}")
    sync_contact(svc, user_id, {"email": email})
    queued = by_type(sync_event(svc, user_id, {"event": "Viewed", "email": email},
                                headers={"Prefer": "respond-async"}, expect=202).json())[crm_type]
    log = wait_log(svc, user_id, queued["log_id"], timeout=10)
    assert log["status"] == "success" and log["attempts"] == 1, log
    assert event_lookups(fakes, crm_type) == 0
    create = next(q["path"] for q in fake_requests(fakes, crm_type, "POST")
                  if q["path"].endswith({"salesforce": "/sobjects/Task/", "creatio": "/0/odata/Activity",
                                         "hubspot": "/notes"}[crm_type]))
    fakes.faults(crm_type, [{"lost": True}], match=create, method="POST", exact=True)
    queued = by_type(sync_event(svc, user_id, {"event": "Paid", "email": email},
                                headers={"Prefer": "respond-async"}, expect=202).json())[crm_type]
    log = wait_log(svc, user_id, queued["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == 2, log
    assert event_lookups(fakes, crm_type) == 1  # the retry's, not the first attempt's
    state = fakes.state(crm_type)
    records = {"salesforce": state.get("tasks"), "creatio": state.get("activities"), "hubspot": state.get("notes")}[crm_type]
    assert len(records) == 2, records  # "Viewed" and one "Paid"


CONTACT_WRITE = {"klaviyo": "/api/profile-import", "hubspot": "/contacts/batch/upsert",
                 "salesforce": "/sobjects/Contact/", "creatio": "/0/odata/Contact"}


@pytest.mark.parametrize("crm_type", sorted(CONTACT_WRITE))
def test_a_contact_whose_answer_was_lost_is_one_record_after_the_retry(svc, fakes, user_id, crm_type):
    """The CRM creates the contact but its answer never arrives: the retry must find it (an
    upsert, or a lookup by email before creating) and leave one record with the contact's values."""
    connect(svc, fakes, user_id, crm_type)
    warm = email_for(f"warm{crm_type}")  # a first sync, for the exact path of the write
    sync_contact(svc, user_id, {"email": warm, "first_name": "Warm"})
    write = next(q["path"] for q in fake_requests(fakes, crm_type, "POST") if q["path"].endswith(CONTACT_WRITE[crm_type]))
    fakes.faults(crm_type, [{"lost": True}], match=write, method="POST", exact=True)
    email = email_for(f"lostcontact{crm_type}")
    res = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada", "last_name": "Lost"}).json())[crm_type]
    if crm_type in ("klaviyo", "hubspot"):
        # An upsert may be re-sent at once on a fresh connection (HTTPClient): same attempt.
        assert res["status"] == "success" and res["action"] == "updated", res
    else:
        assert res["status"] == "retrying", res  # a create is never re-sent blindly
    log = wait_log(svc, user_id, res["log_id"], timeout=15)
    assert log["status"] == "success" and log["attempts"] == (1 if res["status"] == "success" else 2), log
    # The warm-up's write and the lost one; then an upsert's re-send, where a create's retry looks
    # the record up and updates it (PATCH) instead.
    upsert = crm_type in ("klaviyo", "hubspot")
    assert len(fake_requests(fakes, crm_type, "POST", CONTACT_WRITE[crm_type])) == (3 if upsert else 2)
    if not upsert:
        assert len(fake_requests(fakes, crm_type, "PATCH")) == 1
    assert len(crm_record_ids(fakes, crm_type, email)) == 1, crm_records(fakes, crm_type, email)
    assert log["crm_record_id"] == crm_record_ids(fakes, crm_type, email)[0], log


@pytest.mark.parametrize("crm_type, data_path", [("salesforce", "/services/data/"), ("creatio", "/0/odata/")])
def test_one_expired_session_is_renewed_transparently(svc, fakes, user_id, crm_type, data_path):
    connect(svc, fakes, user_id, crm_type)
    contact = {"email": email_for(f"renew{crm_type}"), "last_name": "Renew"}
    fakes.faults(crm_type, [{"status": 401}], match=data_path)
    res = by_type(sync_contact(svc, user_id, contact).json())[crm_type]
    assert res["status"] == "success" and res["action"] == "created", res
    assert get_log(svc, user_id, res["log_id"])["attempts"] == 1
    assert integration_status(svc, user_id, crm_type)["status"] == "connected"
    assert len(crm_records(fakes, crm_type, contact["email"])) == 1


def test_a_klaviyo_list_that_refuses_the_profile_leaves_the_contact_synced_and_says_so(svc, fakes, user_id):
    """The profile import succeeded; only adding it to the configured list was refused (a list
    that is gone, a key without lists:write). That is the list's problem, reported in the
    result, not a failed sync nor an authentication error of the whole integration."""
    connect(svc, fakes, user_id, "klaviyo", {"list_id": "LST_GONE"})
    fakes.config("klaviyo", {"lists": ["LST_OTHER"]})
    email = email_for("listgone")
    res = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada"}).json())["klaviyo"]
    assert res["status"] == "success" and res["action"] == "created", res
    assert res["detail"].startswith("not added to list LST_GONE: Klaviyo answered HTTP 404"), res
    assert len(crm_records(fakes, "klaviyo", email)) == 1
    fakes.config("klaviyo", {"lists": None, "scopes": ["accounts:read", "profiles:write", "events:write"]})
    res = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Grace"}).json())["klaviyo"]
    assert res["status"] == "success" and res["action"] == "updated", res
    assert res["detail"].startswith("not added to list LST_GONE: Klaviyo answered HTTP 403"), res
    assert integration_status(svc, user_id, "klaviyo")["status"] == "connected"
    fakes.config("klaviyo", {"scopes": None})
    res = by_type(sync_contact(svc, user_id, {"email": email}).json())["klaviyo"]
    assert res["status"] == "success" and res.get("detail") is None, res
    assert fakes.state("klaviyo")["lists"]["LST_GONE"] == crm_record_ids(fakes, "klaviyo", email)


def test_a_hubspot_token_that_cannot_read_properties_still_syncs_contacts(svc, fakes, user_id):
    """Reading the portal's contact properties takes a scope of its own: a token without it
    syncs contacts without their custom properties (and says why), rather than failing every
    sync and marking the integration as an authentication error."""
    fakes.config("hubspot", {"scopes": ["crm.objects.contacts.read", "crm.objects.contacts.write"]})
    connect(svc, fakes, user_id, "hubspot")
    email = email_for("noschema")
    res = by_type(sync_contact(svc, user_id, {"email": email, "first_name": "Ada",
                                              "custom_properties": {"plan": "pro"}}).json())["hubspot"]
    assert res["status"] == "success" and res["action"] == "created", res
    assert res["detail"] == ("not sent (this token cannot read the portal's contact properties: "
                             "missing scope crm.schemas.contacts.read): plan"), res
    assert crm_records(fakes, "hubspot", email)[0]["firstname"] == "Ada"
    assert integration_status(svc, user_id, "hubspot")["status"] == "connected"


def test_hubspots_daily_limit_is_retried_after_the_accounts_midnight(svc, fakes, user_id):
    """A 429 with policyName DAILY lasts until the account's midnight: backing off from a few
    seconds would spend every attempt before the reset and fail the sync. The retry is due
    just after that midnight (the fake's account is at UTC-05:00)."""
    connect(svc, fakes, user_id, "hubspot")
    sync_contact(svc, user_id, {"email": email_for("daily0")})  # the account's details, as every sync reads them
    body = {"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
            "correlationId": "3f1c2a5e-0000-4000-8000-000000000001", "policyName": "DAILY", "groupName": "publicapi:private-app:daily"}
    fakes.faults("hubspot", [{"status": 429, "body": body}], match="/crm/", method="POST")
    res = by_type(sync_contact(svc, user_id, {"email": email_for("daily")}).json())["hubspot"]
    assert res["status"] == "retrying" and "daily API limit" in res["detail"], res
    log = get_log(svc, user_id, res["log_id"])
    due = dt.datetime.fromisoformat(log["next_attempt_at"])
    # The midnight after the attempt (its outcome's time), not after the test's own clock.
    local = dt.datetime.fromisoformat(log["updated_at"]).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    midnight = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs((due - midnight).total_seconds() - 60) < 120, (due, midnight)


def test_a_hubspot_207_partial_failure_fails_the_contact_with_hubspots_reason(svc, fakes, user_id):
    connect(svc, fakes, user_id, "hubspot")
    body = {"status": "COMPLETE", "results": [], "numErrors": 1, "startedAt": "2026-12-07T10:00:00Z",
            "completedAt": "2026-12-07T10:00:01Z",
            "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
                        "context": {"objectWriteTraceId": ["0"]}}]}
    fakes.faults("hubspot", [{"status": 207, "body": body}], match="/crm/", method="POST")
    res = by_type(sync_contact(svc, user_id, {"email": email_for("partial")}).json())["hubspot"]
    assert res["status"] == "failed", res
    assert res["detail"] == "HubSpot answered HTTP 207: VALIDATION_ERROR: Property values were not valid", res


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_4xx_fails_at_once_without_retry(svc, fakes, user_id, status):
    connect(svc, fakes, user_id, "klaviyo")
    connect(svc, fakes, user_id, "hubspot")
    contact = {"email": email_for("refused"), "first_name": "Ref"}
    fakes.faults("klaviyo", [{"status": status}], match="/api/profile-import")
    body = sync_contact(svc, user_id, contact).json()
    results = by_type(body)
    assert results["klaviyo"]["status"] == "failed", body
    assert results["klaviyo"].get("detail"), body
    assert results["hubspot"]["status"] == "success", body  # the other CRM is unaffected
    assert body["success_count"] == 1 and body["failure_count"] == 1, body

    log_id = results["klaviyo"]["log_id"]
    log = get_log(svc, user_id, log_id)
    assert log["status"] == "failed" and log["attempts"] == 1 and log["http_status"] == status, log
    assert log["next_attempt_at"] is None and log["error"], log
    time.sleep(2.5)  # a (wrongly) scheduled retry would come after ~1 s
    assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 1
    assert get_log(svc, user_id, log_id)["attempts"] == 1
    assert crm_records(fakes, "klaviyo", contact["email"]) == []
    # Refused data is not a credential problem.
    assert integration_status(svc, user_id, "klaviyo")["status"] == "connected"


# The data calls each connector makes with its session or key, and the call that renews a session.
AUTH_CASES = {
    "salesforce": ("/services/data/", "/services/oauth2/token"),
    "creatio": ("/0/odata/", "/ServiceModel/AuthService.svc/Login"),
    "klaviyo": ("/api/profile-import", None),   # a static key: nothing to renew
    "hubspot": ("/crm/", None),
}


@pytest.mark.parametrize("crm_type", sorted(AUTH_CASES))
def test_401_twice_fails_and_marks_the_integration_auth_error(svc, fakes, user_id, crm_type):
    data_path, renew_path = AUTH_CASES[crm_type]
    connect(svc, fakes, user_id, crm_type)
    assert integration_status(svc, user_id, crm_type)["status"] == "connected"
    contact = {"email": email_for(f"auth{crm_type}"), "last_name": "Auth"}
    fakes.faults(crm_type, [{"status": 401}, {"status": 401}], match=data_path)
    start = len(fakes.requests(crm_type))
    body = sync_contact(svc, user_id, contact).json()
    res = by_type(body)[crm_type]
    assert res["status"] == "failed", body
    assert body["failure_count"] == 1, body

    log = get_log(svc, user_id, res["log_id"])
    assert log["status"] == "failed" and log["attempts"] == 1 and log["next_attempt_at"] is None, log
    assert log["http_status"] == 401, log
    status = integration_status(svc, user_id, crm_type)
    assert status["status"] == "auth_error", status
    assert status["last_sync_status"] == "failed", status

    calls = fakes.requests(crm_type)[start:]
    faulted = [i for i, q in enumerate(calls) if q["path"].startswith(data_path)]
    if renew_path:
        # 401, the session renewed once, 401 again: then it gives up.
        assert len(faulted) == 2, [(q["method"], q["path"]) for q in calls]
        assert any(q["path"].startswith(renew_path) for q in calls[faulted[0] + 1:faulted[1]]), \
            [(q["method"], q["path"]) for q in calls]
    time.sleep(2.5)  # no retry of a credential failure
    assert len(fakes.requests(crm_type)) == start + len(calls), fakes.requests(crm_type)[start + len(calls):]
    assert crm_records(fakes, crm_type, contact["email"]) == []


def test_a_401_in_the_background_and_in_a_manual_retry_marks_the_integration_auth_error(svc, fakes, user_id):
    """The sweep and a manual retry read the credentials with their claim: a 401 there marks the
    integration too (the same rule as a synchronous sync's)."""
    connect(svc, fakes, user_id, "klaviyo")
    fakes.faults("klaviyo", [{"status": 401}], match="/api/profile-import")
    contact = {"email": email_for("background401"), "last_name": "Background"}
    queued = sync_contact(svc, user_id, contact, headers={"Prefer": "respond-async"}, expect=202).json()
    log = wait_log(svc, user_id, queued["results"][0]["log_id"])
    assert log["status"] == "failed" and log["http_status"] == 401, log
    assert integration_status(svc, user_id, "klaviyo")["status"] == "auth_error"

    connect(svc, fakes, user_id, "klaviyo")  # fixed
    assert integration_status(svc, user_id, "klaviyo")["status"] == "connected"
    fakes.faults("klaviyo", [{"status": 401}], match="/api/profile-import")
    r = svc.post(f"/crm/sync/logs/{log['id']}/retry", headers=hdr(user_id))
    assert r.status == 200, r
    assert get_log(svc, user_id, log["id"])["http_status"] == 401
    assert integration_status(svc, user_id, "klaviyo")["status"] == "auth_error"


def test_a_401_with_credentials_replaced_meanwhile_does_not_mark_the_new_ones_auth_error(svc, fakes, user_id):
    """The user connects again while a delivery with the old credentials is under way (as one
    does to fix a revoked key): that delivery's 401 is its own failure, not the new key's."""
    import threading
    connect(svc, fakes, user_id, "klaviyo")
    fakes.faults("klaviyo", [{"status": 401, "delay_s": 2}], match="/api/profile-import")
    contact = {"email": email_for("replaced"), "last_name": "Replaced"}
    answer = {}
    call = threading.Thread(target=lambda: answer.update(body=sync_contact(svc, user_id, contact).json()))
    call.start()
    wait_until(lambda: fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"), timeout=5, what="the call with the old key")
    connect(svc, fakes, user_id, "klaviyo")  # while the old key's call waits for its 401
    call.join(timeout=10)
    res = by_type(answer["body"])["klaviyo"]
    assert res["status"] == "failed" and get_log(svc, user_id, res["log_id"])["http_status"] == 401, answer
    status = integration_status(svc, user_id, "klaviyo")
    assert status["status"] == "connected", status
    assert status["last_sync_status"] == "failed", status

    # The same 401 with the credentials still stored does mark them.
    fakes.faults("klaviyo", [{"status": 401}], match="/api/profile-import")
    assert by_type(sync_contact(svc, user_id, contact).json())["klaviyo"]["status"] == "failed"
    assert integration_status(svc, user_id, "klaviyo")["status"] == "auth_error"


# ------------------------------------------------------------------------------------------ crash


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_worker_killed_mid_delivery_is_delivered_exactly_once_after_restart(fresh_db, fakes, mode):
    import threading

    database = fresh_db()
    # A long HTTP timeout: the worker must die while the CRM call hangs, not time out first;
    # the claim then lasts 20*8+30 s, so only the restart's take-back can deliver in time.
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_HTTP_TIMEOUT_S="20"))
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        connect(service, fakes, user, "salesforce")
        email = email_for("crash")
        fakes.faults("klaviyo", [{"hang_s": 25}], match="/api/events")
        fakes.faults("salesforce", [{"hang_s": 25}], match="/services/data/")
        event = {"event": "Order Placed", "email": email, "properties": {"order_id": "C-1"}}
        start = {v: len(fakes.requests(v)) for v in ("klaviyo", "salesforce")}
        answer = {}
        if mode == "async":
            r = sync_event(service, user, event, headers={"Prefer": "respond-async"}, expect=202)
            log_ids = {res["crm_type"]: res["log_id"] for res in r.json()["results"]}
            client = None
        else:
            # A synchronous request: the caller never gets its answer, but the rows exist.
            def call():
                try:
                    answer["r"] = service.post("/crm/sync/event", headers=hdr(user), json=event, timeout=60)
                except OSError as e:
                    answer["error"] = e
            client = threading.Thread(target=call)
            client.start()

        def hanging():
            kl = [q for q in fakes.requests("klaviyo")[start["klaviyo"]:] if q["path"].startswith("/api/events")]
            sf = [q for q in fakes.requests("salesforce")[start["salesforce"]:] if q["path"].startswith("/services/data/")]
            return kl and sf
        wait_until(hanging, 10, "both CRM calls to arrive (and hang)")
        rows = database.sql("SELECT crm_type, id, status FROM crm.crm_sync_logs WHERE user_id = $1 ORDER BY 1", user)
        assert [(t, st) for t, _, st in rows] == [("klaviyo", "in_flight"), ("salesforce", "in_flight")], rows
        if mode == "async":
            assert log_ids == {t: int(i) for t, i, _ in rows}
        log_ids = {t: int(i) for t, i, _ in rows}

        kill9_and_restart(service)
        if client is not None:
            client.join(30)
            assert "r" not in answer or answer["r"].status >= 500, answer  # the caller saw the worker die

        for crm_type, log_id in log_ids.items():
            log = wait_log(service, user, log_id, timeout=20)
            assert log["status"] == "success", (crm_type, log, service.log_text()[-3000:])
        klaviyo = fakes.state("klaviyo")
        assert len(klaviyo["events"]) == 1 and klaviyo["duplicate_events"] == 0, klaviyo["events"]
        assert len(fake_requests(fakes, "klaviyo", "POST", "/api/events")) == 2  # the hung one + one after restart
        sf = fakes.state("salesforce")
        assert len(sf["tasks"]) == 1, sf["tasks"]
        assert len([c for c in sf["contacts"] if c["Email"].lower() == email]) == 1, sf["contacts"]
        assert "released deliveries left in flight" in service.log_text()
    finally:
        service.close()


def test_sigterm_during_a_hanging_delivery_exits_cleanly_and_delivers_after_restart(fresh_db, fakes):
    database = fresh_db()
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV))  # CRM_HTTP_TIMEOUT_S=3 (harness)
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"hang_s": 15}], match="/api/profile-import")
        contact = {"email": email_for("sigterm"), "first_name": "Term"}
        r = sync_contact(service, user, contact, headers={"Prefer": "respond-async"}, expect=202)
        log_id = r.json()["results"][0]["log_id"]
        wait_until(lambda: fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"), 10, "the CRM call to hang")
        started = time.monotonic()
        service.restart()  # SIGTERM: asserts exit status 0 within 10 s
        assert time.monotonic() - started < 10
        log = wait_log(service, user, log_id, timeout=20)
        assert log["status"] == "success", log
        assert len(crm_records(fakes, "klaviyo", contact["email"])) == 1
        assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 2
    finally:
        service.close()


def queue_contacts(database, fakes, user: str, name: str, count: int):
    """`count` queued contact rows for `user`, due now, and a function listing the fake
    Klaviyo's profile-imports for their emails (in the order they arrived)."""
    tag = email_for(name).split("@")[0]
    emails = [f"{tag}.{i}@example.com" for i in range(count)]
    database.sql(
        "INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, next_attempt_at)"
        " SELECT $1, 'klaviyo', 'contact', 'queued', jsonb_build_object('email', $2 || '.' || i || '@example.com'), now()"
        "   FROM generate_series(0, $3::int - 1) i", user, tag, count)

    def calls():
        return [q for q in fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
                if q["body"]["data"]["attributes"]["email"] in emails]
    return calls


def test_rows_claimed_ahead_are_given_back_at_sigterm(fresh_db, fakes):
    """The sweep keeps a row claimed ahead of its free slots; one not yet started when the
    worker stops goes back to the queue as it was (not left in flight until the claim expires)."""
    database = fresh_db()
    # Two slots, so one row in hand (1/16 of the concurrency, at least 1). A 2 s CRM timeout
    # leaves 2 s both ways: to look at the rows before the hung calls give up, and for those
    # calls to end within the 4 s the sweep waits at shutdown.
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_SWEEP_CONCURRENCY="2", CRM_HTTP_TIMEOUT_S="2"))
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"hang_s": 15}] * 5, match="/api/profile-import")
        # Five rows due at once: the first claim takes two for the free slots and one ahead.
        calls = queue_contacts(database, fakes, user, "ahead", 5)

        def in_flight():
            return int(database.sql("SELECT count(*) FROM crm.crm_sync_logs WHERE user_id = $1 AND status = 'in_flight'", user)[0][0])
        wait_until(lambda: len(calls()) == 2, 10, "two calls to hang")
        assert in_flight() == 3, "two rows in flight and one claimed ahead"
        assert len(calls()) == 2, "no more calls than slots"
        service.stop()  # SIGTERM: the two calls time out (CRM_HTTP_TIMEOUT_S=2) and are recorded

        rows = database.sql("SELECT status, attempts, claimed_by IS NULL FROM crm.crm_sync_logs WHERE user_id = $1 ORDER BY id", user)
        assert sorted(tuple(r) for r in rows) == sorted([("retrying", "1", "t")] * 2 + [("queued", "0", "t")] * 3), rows
    finally:
        service.close()


def one_row_in_hand(fresh_db, fakes, name: str):
    """A worker with one sweep slot, busy with a hung call (3 s), and one more row claimed
    ahead, waiting for that slot. Returns the database, the service (the caller closes it),
    the user, a function listing the calls made for the two rows, and the waiting row's id
    and email."""
    database = fresh_db()
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_SWEEP_CONCURRENCY="1"))
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"hang_s": 3}], match="/api/profile-import")
        calls = queue_contacts(database, fakes, user, name, 2)
        wait_until(lambda: len(calls()) == 1, 10, "the first call to hang")
        rows = database.sql("SELECT id, request->>'email' FROM crm.crm_sync_logs WHERE user_id = $1 AND status = 'in_flight'", user)
        assert len(rows) == 2, "one row calling, one claimed ahead"
        hung = calls()[0]["body"]["data"]["attributes"]["email"]
        waiting, email = next((int(r[0]), r[1]) for r in rows if r[1] != hung)
    except BaseException:
        service.close()
        raise
    return database, service, user, calls, waiting, email


@pytest.mark.parametrize("change", ["disconnect", "reconnect", "disconnect_and_connect"])
def test_a_row_that_waited_for_a_slot_goes_to_the_integration_as_it_is_now(fresh_db, fakes, change):
    """A row claimed ahead waits for a free slot, here a whole hung call (3 s). Meanwhile the
    user disconnects, connects again with a new key, or disconnects and connects anew (say,
    another account). Disconnected, the row is cancelled as the disconnect's pending retries
    are, and is sent neither to the old integration nor to a new one; connected again over the
    same integration, it goes out with the new key, not with the credentials read at its claim."""
    database, service, user, calls, waiting, _ = one_row_in_hand(fresh_db, fakes, "waited")
    try:
        if change in ("disconnect", "disconnect_and_connect"):
            assert service.delete("/crm/klaviyo/disconnect", headers=hdr(user)).status == 200
        if change in ("reconnect", "disconnect_and_connect"):
            fakes.config("klaviyo", {"api_key": "pk_test_second_key"})  # the old key is revoked
            r = service.post("/crm/connect", headers=hdr(user), json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_second_key"}})
            assert r.status == 200, r
        log = wait_log(service, user, waiting, timeout=15)
        if change == "reconnect":
            assert log["status"] == "success", log
            assert calls()[-1]["headers"]["authorization"] == "Klaviyo-API-Key pk_test_second_key"
            assert integration_status(service, user, "klaviyo")["status"] == "connected"
        else:
            assert log["status"] == "cancelled" and log["error"] == "integration disconnected", log
            assert log["attempts"] == 0 and log["next_attempt_at"] is None, log
            time.sleep(0.5)
            sent = [q["body"]["data"]["attributes"]["email"] for q in calls()]
            assert len(sent) == 1, f"nothing more goes out, to the old integration or a new one: {sent}"
    finally:
        service.close()


@pytest.mark.parametrize("change", ["disconnect", "disconnect_and_connect"])
def test_a_call_under_way_at_a_disconnect_that_fails_transiently_is_not_retried(fresh_db, fakes, change):
    """The CRM call is under way when the user disconnects (and perhaps connects anew); it then
    times out, a transient failure. The row is not scheduled for a retry: it is cancelled, as
    the disconnect cancelled the rows already waiting for one, and no later call goes anywhere."""
    database = fresh_db()
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV))  # CRM_HTTP_TIMEOUT_S=3 (harness)
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"hang_s": 6}], match="/api/profile-import")
        calls = queue_contacts(database, fakes, user, "undercall", 1)
        wait_until(lambda: len(calls()) == 1, 10, "the call to hang")
        row = int(database.sql("SELECT id FROM crm.crm_sync_logs WHERE user_id = $1", user)[0][0])
        assert service.delete("/crm/klaviyo/disconnect", headers=hdr(user)).status == 200
        if change == "disconnect_and_connect":
            r = service.post("/crm/connect", headers=hdr(user), json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}})
            assert r.status == 200, r
        log = wait_log(service, user, row, timeout=15)
        assert log["status"] == "cancelled" and log["error"] == "integration disconnected", log
        assert log["attempts"] == 1 and log["next_attempt_at"] is None, log
        time.sleep(2.5)  # past when a retry would have been due (BASE_ENV: ~1 s)
        assert len(calls()) == 1, "no retry, to the old integration or a new one"
        # Counted as what the log row says, not as the retry it did not become.
        syncs = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^crm_syncs_total\{(?=[^}]*crm_type="klaviyo")[^}]*status="(\w+)"[^}]*\} (\S+)$', service.get("/metrics").text, re.M)}
        assert syncs.get("cancelled") == 1 and not syncs.get("retrying"), syncs
        if change == "disconnect_and_connect":
            assert integration_status(service, user, "klaviyo")["last_sync_at"] is None, "the old attempt is not the new integration's"
    finally:
        service.close()


def sweep_reports(service: Service, since: int) -> list[dict]:
    """The worker's log lines about the retry sweep since the log offset `since`."""
    lines = []
    for line in service.log_text(since).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("msg", "")).startswith("retry sweep:"):
            lines.append(entry)
    return lines


def test_a_row_in_hand_waits_out_a_database_outage_and_goes_once(fresh_db, fakes, pg):
    """The row claimed ahead has waited past a second for its slot, so it is read again before
    it starts; here the database is down at that moment. The row must stay in hand (not be
    dropped, which would leave it in flight until its claim expires) and go out once, when the
    database is back; the worker says so once, not on every pass."""
    database, service, user, calls, waiting, waiting_email = one_row_in_hand(fresh_db, fakes, "outage")
    try:
        mark = service.log_mark()
        pg.stop()
        try:
            # The hung call ends (~3 s), its slot frees, and the re-read of the waiting row fails.
            wait_until(lambda: any(e.get("while") == "reading rows in hand again" for e in sweep_reports(service, mark)), 15,
                       "the sweep to report the failed re-read")
            time.sleep(1.5)  # more passes of the sweep with the database still away
        finally:
            pg.start()
        log = wait_log(service, user, waiting, timeout=15)
        assert log["status"] == "success" and log["attempts"] == 1, log
        assert [q["body"]["data"]["attributes"]["email"] for q in calls()].count(waiting_email) == 1
        reports = [e["msg"] for e in sweep_reports(service, mark)]
        assert reports == ["retry sweep: cannot use the database; deliveries wait for it",
                           "retry sweep: the database is back"], reports
    finally:
        service.close()


def test_a_slot_takes_its_next_call_while_the_last_outcome_is_still_being_written(fresh_db, fakes):
    """A sweep slot bounds CRM calls, not commits: once the CRM has answered, the next row's
    call starts while the outcome is written. Here an outcome's write waits on a lock held on
    the integration row (it sets last_sync_at); the second row's call must not wait for it."""
    database = fresh_db()
    service = Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_SWEEP_CONCURRENCY="1"))
    locker = None
    try:
        user = uid()
        connect(service, fakes, user, "klaviyo")
        locker = subprocess.Popen(["psql", database.dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"u={user}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        locker.stdin.write("BEGIN;\nSELECT 1 FROM crm.crm_integrations WHERE user_id = :'u' FOR UPDATE;\n"
                           "SELECT pg_sleep(6);\nCOMMIT;\n")
        locker.stdin.close()
        wait_until(lambda: database.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(6)%'")[0][0] == "1",
                   10, "the lock to be held")
        calls = queue_contacts(database, fakes, user, "slot", 2)
        wait_until(lambda: len(calls()) == 2, 4, "both calls while the first outcome waits on the lock")
        statuses = [r[0] for r in database.sql("SELECT status FROM crm.crm_sync_logs WHERE user_id = $1 ORDER BY id", user)]
        assert statuses == ["in_flight", "in_flight"], f"no outcome can be written while the lock is held: {statuses}"
        assert locker.wait(timeout=15) == 0, locker.stderr.read()
        wait_until(lambda: [r[0] for r in database.sql("SELECT status FROM crm.crm_sync_logs WHERE user_id = $1 ORDER BY id", user)]
                   == ["success", "success"], 15, "both outcomes once the lock is gone")
    finally:
        if locker and locker.poll() is None:
            locker.kill()
        service.close()


def test_row_left_in_flight_by_another_worker_is_taken_over_only_after_its_claim_expires(svc, db, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    live_email, dead_email = email_for("live"), email_for("dead")
    insert = ("INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, claimed_by, claimed_until)"
              " VALUES ($1, 'klaviyo', 'contact', 'in_flight', $2::jsonb, $3, now() + make_interval(secs => $4::int))"
              " RETURNING id")
    live = int(db.sql(insert, user_id, {"email": live_email}, "otherhost:/run/other.sock", 3600)[0][0])
    dead = int(db.sql(insert, user_id, {"email": dead_email}, "deadhost:/run/dead.sock", -5)[0][0])
    log = wait_log(svc, user_id, dead, timeout=10)
    assert log["status"] == "success" and log["attempts"] == 1, log
    assert len(crm_records(fakes, "klaviyo", dead_email)) == 1
    time.sleep(2)
    # The other worker's claim still holds: its row is left alone.
    assert get_log(svc, user_id, live)["status"] == "in_flight"
    assert crm_records(fakes, "klaviyo", live_email) == []
    db.sql("UPDATE crm.crm_sync_logs SET status = 'cancelled' WHERE id = $1", live)


def test_a_queued_row_whose_request_cannot_be_read_back_fails_for_good(svc, db, fakes, user_id):
    """A logged request that is no longer a valid contact (edited by hand, say) is not sent
    anywhere: the attempt fails at once with a reason, and is not retried."""
    connect(svc, fakes, user_id, "klaviyo")
    calls = len(fakes.requests("klaviyo"))
    row = int(db.sql("INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, next_attempt_at)"
                     " VALUES ($1, 'klaviyo', 'contact', 'queued', $2::jsonb, now()) RETURNING id",
                     user_id, {"first_name": "No email"})[0][0])
    log = wait_log(svc, user_id, row, timeout=10)
    assert log["status"] == "failed" and log["attempts"] == 1, log
    assert log["error"] == "the logged request is not readable" and log["next_attempt_at"] is None, log
    assert len(fakes.requests("klaviyo")) == calls


def test_credentials_that_cannot_be_decrypted_are_retried_and_never_sent(svc, db, fakes, user_id):
    """Stored credentials that do not decrypt under the worker's key (a wrong
    CRM_ENCRYPTION_KEY, corrupt data) are read with the log row: the sync is answered, its row
    says why and is retried later, nothing reaches the CRM, and a queued row of the same user
    is claimed and recorded alike (the claim does not fail)."""
    connect(svc, fakes, user_id, "klaviyo")
    calls = len(fakes.requests("klaviyo"))
    db.sql("UPDATE crm.crm_integrations SET credentials = pgp_sym_encrypt('{}', 'another key of 32 characters....')"
           " WHERE user_id = $1", user_id)
    result = sync_contact(svc, user_id, {"email": "k@example.com"}).json()["results"][0]
    assert result["status"] == "retrying" and "credentials are not readable" in result["detail"], result
    queued = sync_contact(svc, user_id, {"email": "q@example.com"}, headers={"Prefer": "respond-async"}, expect=202)
    log = wait_log(svc, user_id, queued.json()["results"][0]["log_id"], statuses=("retrying", "failed", "success"), timeout=10)
    assert log["status"] == "retrying" and "credentials are not readable" in log["error"], log
    assert len(fakes.requests("klaviyo")) == calls


# ------------------------------------------------------------------------------------------ two workers


def test_two_workers_deliver_200_due_rows_each_exactly_once(fresh_db, fakes):
    database = fresh_db()
    first = Service(database.dsn, fakes.urls, dict(BASE_ENV))
    try:
        second = Service(database.dsn, fakes.urls, dict(BASE_ENV))
    except BaseException:
        first.close()
        raise
    try:
        assert first.socket_path != second.socket_path
        user = uid()
        connect(first, fakes, user, "klaviyo")
        fakes.config("klaviyo", {"latency_s": 0.01})  # a little overlap between the workers' calls
        tag = email_for("bulk").split("@")[0]
        contacts = [f"{tag}.c{i}@example.com" for i in range(100)]
        events = [f"{tag}-ev-{i}" for i in range(100)]
        # 200 rows due at once: 100 contacts and 100 events (each with its own unique id).
        database.sql(
            "INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, next_attempt_at)"
            " SELECT $1, 'klaviyo', 'contact', 'queued',"
            "        jsonb_build_object('email', $2 || '.c' || i || '@example.com', 'first_name', 'N' || i), now()"
            "   FROM generate_series(0, 99) i", user, tag)
        database.sql(
            "INSERT INTO crm.crm_sync_logs (user_id, crm_type, operation, status, request, unique_id, next_attempt_at)"
            " SELECT $1, 'klaviyo', 'event', 'queued',"
            "        jsonb_build_object('event', 'Bulk', 'email', $2 || '.e' || i || '@example.com',"
            "                           'properties', jsonb_build_object('i', i), 'unique_id', $2 || '-ev-' || i),"
            "        $2 || '-ev-' || i, now()"
            "   FROM generate_series(0, 99) i", user, tag)
        ids = {int(row[0]) for row in database.sql("SELECT id FROM crm.crm_sync_logs WHERE user_id = $1", user)}
        assert len(ids) == 200

        def all_done():
            rows = database.sql("SELECT count(*) FROM crm.crm_sync_logs WHERE user_id = $1"
                                " AND status NOT IN ('success', 'failed', 'cancelled')", user)
            return rows[0][0] == "0"
        wait_until(all_done, 90, "all 200 rows to be delivered", interval=0.25)

        statuses = database.sql("SELECT status, attempts, count(*) FROM crm.crm_sync_logs WHERE user_id = $1"
                                " GROUP BY 1, 2", user)
        assert statuses == [["success", "1", "200"]], statuses

        imports = fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
        sent_emails = [q["body"]["data"]["attributes"]["email"] for q in imports]
        assert len(sent_emails) == 100 and sorted(set(sent_emails)) == sorted(contacts), \
            sorted(e for e in sent_emails if sent_emails.count(e) > 1)
        posted = fake_requests(fakes, "klaviyo", "POST", "/api/events")
        sent_ids = [q["body"]["data"]["attributes"]["unique_id"] for q in posted]
        assert len(sent_ids) == 100 and sorted(set(sent_ids)) == sorted(events), \
            sorted(e for e in sent_ids if sent_ids.count(e) > 1)
        state = fakes.state("klaviyo")
        assert len(state["events"]) == 100 and state["duplicate_events"] == 0

        # Each row was attempted by exactly one of the two workers, once.
        by_first, by_second = delivery_attempts_in_log(first), delivery_attempts_in_log(second)
        attempted = [i for i in by_first + by_second if i in ids]
        assert sorted(attempted) == sorted(ids), (len(attempted), len(set(attempted)))
        print(f"first worker delivered {len(by_first)}, second {len(by_second)}")
    finally:
        try:
            second.close()
        finally:
            first.close()


# ------------------------------------------------------------------------------------------ disconnect


def test_disconnect_cancels_pending_retries_and_keeps_the_logs(svc, fakes, user_id):
    connect(svc, fakes, user_id, "klaviyo")
    ok = by_type(sync_contact(svc, user_id, {"email": email_for("kept")}).json())["klaviyo"]
    assert ok["status"] == "success"

    fakes.down("klaviyo", status=503, retry_after=60)  # the next attempt would be a minute away
    pending = by_type(sync_contact(svc, user_id, {"email": email_for("pending")}).json())["klaviyo"]
    assert pending["status"] == "retrying", pending
    assert integration_status(svc, user_id, "klaviyo")["stats"]["retrying"] == 1

    r = svc.delete("/crm/klaviyo/disconnect", headers=hdr(user_id))
    assert r.status == 200, r
    fakes.down("klaviyo", down=False)
    calls = len(fakes.requests("klaviyo"))

    log = get_log(svc, user_id, pending["log_id"])
    assert log["status"] == "cancelled", log
    assert log["next_attempt_at"] is None, log
    assert get_log(svc, user_id, ok["log_id"])["status"] == "success"
    listed = {entry["id"]: entry["status"] for entry in svc.get("/crm/sync/logs", headers=hdr(user_id)).json()["logs"]}
    assert listed == {ok["log_id"]: "success", pending["log_id"]: "cancelled"}, listed
    # A cancelled row is never retried (nor manually retryable).
    assert svc.post(f"/crm/sync/logs/{pending['log_id']}/retry", headers=hdr(user_id)).status == 409
    time.sleep(2)
    assert len(fakes.requests("klaviyo")) == calls
    assert get_log(svc, user_id, pending["log_id"])["status"] == "cancelled"
