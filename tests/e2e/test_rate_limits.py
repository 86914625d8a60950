"""A CRM that rate-limits: nothing accepted is lost, and the worker holds back rather than
spending its calls on 429s (README: "Rate limits")."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from crm_harness import Service, uid
from test_integrations import parse_ts
from test_sync import (  # noqa: F401  (fixtures are used by name)
    BASE_ENV, _no_leftover_deliveries, by_type, connect, crm_records, db, email_for, fake_requests, fresh_db, get_log, hdr, svc,
    sync_contact, wait_until,
)

LIMIT = [{"limit": 4, "window_s": 1}]  # Klaviyo's burst window, at a tier this small


def final_logs(service: Service, user: str, count: int, timeout: float) -> list:
    """The user's `count` newest logs once none is queued, retrying or in flight."""
    def done():
        logs = service.get(f"/crm/sync/logs?limit={count}", headers=hdr(user)).json()["logs"]
        return logs if all(log["status"] in ("success", "failed", "cancelled") for log in logs) else None
    return wait_until(done, timeout, f"{count} syncs delivered or failed")


def import_whole(service: Service, fakes, user: str, tag: str, count: int, timeout: float) -> list:
    """Queues `count` contacts (async) for the user's Klaviyo and checks that every one is
    delivered, once. Returns their emails."""
    emails = [email_for(f"{tag}{i}") for i in range(count)]
    for email in emails:
        sync_contact(service, user, {"email": email}, headers={"Prefer": "respond-async"}, expect=202)
    logs = final_logs(service, user, count, timeout=timeout)
    assert [log["status"] for log in logs] == ["success"] * count, [
        (log["status"], log["attempts"], log["error"]) for log in logs if log["status"] != "success"]
    assert all(len(crm_records(fakes, "klaviyo", email)) == 1 for email in emails)
    return emails


def test_a_bulk_import_into_a_rate_limited_crm_is_delivered_whole(fresh_db, fakes):
    """60 contacts queued at once for a Klaviyo account that takes 4 calls a second, with only
    3 attempts per sync: every one is delivered. A 429 is the CRM saying "not now", not a failed
    attempt, and after one the worker paces that integration instead of calling it again at once."""
    database, user = fresh_db(), uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_RETRY_MAX_ATTEMPTS="3")) as service:
        connect(service, fakes, user, "klaviyo")
        fakes.config("klaviyo", {"rate_limits": LIMIT})
        emails = import_whole(service, fakes, user, "bulk", 60, timeout=90)
        throttled = fakes.state("klaviyo")["throttled"]
        imports = len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"))
        # Paced: far fewer 429s than deliveries (unpaced, each slot's call after the window's
        # fourth met one).
        assert throttled <= len(emails) // 3, (throttled, imports)
        assert imports == len(emails) + throttled


def test_a_rate_limited_call_spends_no_attempt_and_the_next_sync_waits_its_turn(fresh_db, fakes):
    """Three 429s against two syncs allowed 2 attempts each: both are delivered, one after more
    calls than its attempts allow. The sync requested while the integration is held back makes
    no call: it answers `queued`, held back, and goes out at its turn."""
    database, user = fresh_db(), uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_RETRY_MAX_ATTEMPTS="2")) as service:
        connect(service, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"status": 429, "headers": {"Retry-After": "1"}}] * 3, match="/api/profile-import")
        first = by_type(sync_contact(service, user, {"email": email_for("first")}).json())["klaviyo"]
        assert first["status"] == "retrying" and "429" in first["detail"], first
        second_email = email_for("second")
        second = by_type(sync_contact(service, user, {"email": second_email}).json())["klaviyo"]
        assert second["status"] == "queued" and second["detail"].startswith("held back: klaviyo is rate-limiting"), second
        assert len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 1  # the second made no call
        logs = final_logs(service, user, 2, timeout=30)
        assert [log["status"] for log in logs] == ["success", "success"], logs
        assert max(log["attempts"] for log in logs) >= 3, logs  # more calls than CRM_RETRY_MAX_ATTEMPTS
        assert sum(log["attempts"] for log in logs) == len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")) == 5
        assert len(crm_records(fakes, "klaviyo", second_email)) == 1
        held = re.search(r'^crm_deliveries_held_back_total\{crm_type="klaviyo"\} (\S+)$', service.get("/metrics").text, re.M)
        assert held and float(held.group(1)) >= 1, held


def test_salesforce_request_limit_exceeded_is_a_rate_limit(svc, fakes, user_id):
    """Salesforce throttles with 403 REQUEST_LIMIT_EXCEEDED, not 429: the same "not now", so the
    next sync waits its turn without a call (test_delivery: it is retried, not an auth error)."""
    connect(svc, fakes, user_id, "salesforce")
    fakes.faults("salesforce", [{"status": 403, "headers": {"Retry-After": "1"}, "body": [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]}], match="/services/data/")
    first = by_type(sync_contact(svc, user_id, {"email": email_for("sflimit"), "last_name": "Limit"}).json())["salesforce"]
    assert first["status"] == "retrying" and "REQUEST_LIMIT_EXCEEDED" in first["detail"], first
    calls = len(fake_requests(fakes, "salesforce", None, "/services/data/"))
    second = by_type(sync_contact(svc, user_id, {"email": email_for("sflimit2"), "last_name": "Limit"}).json())["salesforce"]
    assert second["status"] == "queued" and second["detail"].startswith("held back: salesforce"), second
    assert len(fake_requests(fakes, "salesforce", None, "/services/data/")) == calls
    logs = final_logs(svc, user_id, 2, timeout=20)
    assert [log["status"] for log in logs] == ["success", "success"], logs


def test_connecting_again_releases_an_integration_its_crm_held_back(svc, fakes, user_id):
    """The wait a CRM asked for belongs to the credentials it refused: once the user connects
    again (new credentials, perhaps another account), syncs go out at once, not after it."""
    connect(svc, fakes, user_id, "klaviyo")
    fakes.faults("klaviyo", [{"status": 429, "headers": {"Retry-After": "60"}}], match="/api/profile-import")
    refused = by_type(sync_contact(svc, user_id, {"email": email_for("refused")}).json())["klaviyo"]
    assert refused["status"] == "retrying" and "429" in refused["detail"], refused
    held = by_type(sync_contact(svc, user_id, {"email": email_for("held")}).json())["klaviyo"]
    assert held["status"] == "queued" and held["detail"].startswith("held back: klaviyo"), held
    assert svc.get("/crm/klaviyo/status", headers=hdr(user_id)).json()["rate_limited_until"] is not None
    connect(svc, fakes, user_id, "klaviyo")
    assert svc.get("/crm/klaviyo/status", headers=hdr(user_id)).json()["rate_limited_until"] is None
    email = email_for("after")
    after = by_type(sync_contact(svc, user_id, {"email": email}).json())["klaviyo"]
    assert after["status"] == "success", after
    assert len(crm_records(fakes, "klaviyo", email)) == 1


def test_hubspot_ten_secondly_limit_holds_the_integration_for_its_window(svc, fakes, user_id):
    """HubSpot's rolling ten-second limit (the fake's own, 4 calls): its 429 (policyName
    TEN_SECONDLY_ROLLING) names no Retry-After, so the integration is held for HubSpot's ten
    seconds. The refused sync is retrying, every later one is held back without a call, and all
    are delivered, each 429 counted as an attempt."""
    connect(svc, fakes, user_id, "hubspot")
    fakes.config("hubspot", {"rate_limits": {"ten_secondly": 4}})
    emails = [email_for(f"hslimit{i}") for i in range(8)]
    answers = [by_type(sync_contact(svc, user_id, {"email": email}).json())["hubspot"] for email in emails]
    statuses = [answer["status"] for answer in answers]
    refused = statuses.index("retrying")  # the first call past the window's four
    assert 1 <= refused <= 4 and statuses[:refused] == ["success"] * refused, answers
    assert "429" in answers[refused]["detail"], answers[refused]
    for held in answers[refused + 1:]:
        assert held["status"] == "queued" and held["detail"].startswith("held back: hubspot is rate-limiting"), held
        # "... due in N s": the rest of HubSpot's ten seconds, then the pace's turns
        assert 5 <= int(held["detail"].rsplit(" ", 2)[-2]) <= 13, held
    def writes():
        return [q for q in fake_requests(fakes, "hubspot", "POST", "/crm/") if q["path"].endswith("/batch/upsert")]
    assert len(writes()) == refused + 1  # the held-back syncs made no call
    logs = final_logs(svc, user_id, len(emails), timeout=60)
    assert [log["status"] for log in logs] == ["success"] * len(emails), logs
    assert all(len(crm_records(fakes, "hubspot", email)) == 1 for email in emails)
    # After each 429, no call for HubSpot's ten seconds (but those already on their way).
    calls = writes()
    timeline = " ".join(f"{q['at'] - calls[0]['at']:.2f}:{q['status']}" for q in calls)
    for refused_at in (q["at"] for q in calls if q["status"] == 429):
        assert all(q["at"] - refused_at >= 9.9 for q in calls if q["at"] > refused_at + 0.5), timeline
    throttled = fakes.state("hubspot")["throttled"]["TEN_SECONDLY_ROLLING"]
    assert throttled == sum(1 for q in calls if q["status"] == 429) <= 4, calls
    assert sum(log["attempts"] for log in logs) == len(calls)


def test_a_refusal_one_worker_heard_holds_the_integration_back_in_another(fresh_db, fakes):
    """Two worker processes share one database. Klaviyo refuses a call made through the first
    (429, Retry-After 5 s). A sync through the second, which was refused nothing, makes no
    call: it is held back for the rest of that wait (read from the integration with its
    credentials), and delivered after it."""
    database, user = fresh_db(), uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV)) as first, Service(database.dsn, fakes.urls, dict(BASE_ENV)) as second:
        connect(first, fakes, user, "klaviyo")
        fakes.faults("klaviyo", [{"status": 429, "headers": {"Retry-After": "5"}}], match="/api/profile-import")
        refused = by_type(sync_contact(first, user, {"email": email_for("first")}).json())["klaviyo"]
        assert refused["status"] == "retrying" and "429" in refused["detail"], refused
        email = email_for("second")
        held = by_type(sync_contact(second, user, {"email": email}).json())["klaviyo"]
        assert held["status"] == "queued" and held["detail"].startswith("held back: klaviyo is rate-limiting"), held
        assert 2 <= int(held["detail"].rsplit(" ", 2)[-2]) <= 6, held  # the rest of the 5 s, then a turn
        def imports():
            return fake_requests(fakes, "klaviyo", "POST", "/api/profile-import")
        assert len(imports()) == 1  # the second worker made no call
        # The integration's status shows the wait while it lasts.
        until = second.get("/crm/klaviyo/status", headers=hdr(user)).json()["rate_limited_until"]
        assert until and 3 <= (parse_ts(until) - datetime.now(timezone.utc)).total_seconds() <= 5.5, until
        logs = final_logs(first, user, 2, timeout=30)
        assert [log["status"] for log in logs] == ["success", "success"], logs
        assert second.get("/crm/klaviyo/status", headers=hdr(user)).json()["rate_limited_until"] is None
        assert len(crm_records(fakes, "klaviyo", email)) == 1
        calls = imports()
        assert len(calls) == 3 and all(later["at"] - calls[0]["at"] >= 4.9 for later in calls[1:]), [q["at"] for q in calls]


def test_a_backlog_put_off_at_a_slow_pace_speeds_up_with_it(fresh_db, fakes):
    """100 contacts queued at once for a Klaviyo account that takes 4 calls a second and 20
    in ten seconds (2 a second, sustained). The first refusals slow the pace, and the backlog
    is put off at that slow pace; once no refusal has come for a while the pace speeds up,
    and the turns still ahead are pulled forward with it. So the second half of the import
    runs close to what the account allows (before, it kept the slow pace: 1.2-1.3 calls a
    second in three runs)."""
    database, user = fresh_db(), uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_RETRY_MAX_ATTEMPTS="3")) as service:
        connect(service, fakes, user, "klaviyo")
        fakes.config("klaviyo", {"rate_limits": [{"limit": 4, "window_s": 1}, {"limit": 20, "window_s": 10}]})
        import_whole(service, fakes, user, "backlog", 100, timeout=240)
        assert fakes.state("klaviyo")["throttled"] <= 20
        assert "held-back deliveries pulled forward" in service.log_text()
        imported = [q["at"] for q in fake_requests(fakes, "klaviyo", "POST", "/api/profile-import") if q["status"] != 429]
        middle = (imported[0] + imported[-1]) / 2
        second_half = [at for at in imported if at >= middle]
        rate = (len(second_half) - 1) / (second_half[-1] - second_half[0])
        assert rate >= 1.6, f"{rate:.2f} calls/s in the second half (the account allows 2)"
