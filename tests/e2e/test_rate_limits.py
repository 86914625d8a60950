"""A CRM that rate-limits: nothing accepted is lost, and the worker holds back rather than
spending its calls on 429s (README: "Rate limits")."""
from __future__ import annotations

import time

from crm_harness import Service, uid
from test_sync import (  # noqa: F401  (fixtures are used by name)
    BASE_ENV, by_type, connect, crm_records, email_for, fake_requests, fresh_db, get_log, hdr, sync_contact,
    wait_until,
)

LIMIT = [{"limit": 4, "window_s": 1}]  # Klaviyo's burst window, at a tier this small


def final_logs(service: Service, user: str, count: int, timeout: float) -> list:
    """The user's `count` newest logs once none is queued, retrying or in flight."""
    def done():
        logs = service.get(f"/crm/sync/logs?limit={count}", headers=hdr(user)).json()["logs"]
        return logs if all(log["status"] in ("success", "failed", "cancelled") for log in logs) else None
    return wait_until(done, timeout, f"{count} syncs delivered or failed")


def test_a_bulk_import_into_a_rate_limited_crm_is_delivered_whole(fresh_db, fakes):
    """60 contacts queued at once for a Klaviyo account that takes 4 calls a second, with only
    3 attempts per sync: every one is delivered. A 429 is the CRM saying "not now", not a failed
    attempt, and after one the worker paces that integration instead of calling it again at once."""
    database, user = fresh_db(), uid()
    with Service(database.dsn, fakes.urls, dict(BASE_ENV, CRM_RETRY_MAX_ATTEMPTS="3")) as service:
        connect(service, fakes, user, "klaviyo")
        fakes.config("klaviyo", {"rate_limits": LIMIT})
        emails = [email_for(f"bulk{i}") for i in range(60)]
        for email in emails:
            sync_contact(service, user, {"email": email}, headers={"Prefer": "respond-async"}, expect=202)
        logs = final_logs(service, user, len(emails), timeout=90)
        assert [log["status"] for log in logs] == ["success"] * len(emails), [
            (log["status"], log["attempts"], log["error"]) for log in logs if log["status"] != "success"]
        assert all(len(crm_records(fakes, "klaviyo", email)) == 1 for email in emails)
        throttled = fakes.state("klaviyo")["throttled"]
        imports = len(fake_requests(fakes, "klaviyo", "POST", "/api/profile-import"))
        # Paced: far fewer 429s than deliveries (unpaced, each slot's call after the window's
        # fourth met one).
        assert throttled <= len(emails) // 3, (throttled, imports)
        assert imports == len(emails) + throttled
