"""The integration endpoints through nginx: status, disconnect, list, field mappings, sync logs,
health, readiness, OpenAPI, docs and metrics — exact status codes and body shapes — plus user
isolation, the API key and CORS.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time

import pytest

from crm_harness import TEST_ENCRYPTION_KEY, uid

CRM_TYPES = ["creatio", "hubspot", "klaviyo", "salesforce"]
UNSUPPORTED = "Unsupported CRM type '{}'. Supported: creatio, hubspot, klaviyo, salesforce"
STATUS_KEYS = {"crm_type", "connected", "is_active", "status", "settings", "created_at", "updated_at",
               "last_sync_at", "last_sync_status", "rate_limited_until", "stats"}
LIST_ITEM_KEYS = {"crm_type", "is_active", "status", "settings", "created_at", "updated_at", "last_sync_at",
                  "last_sync_status"}
LOG_KEYS = {"id", "crm_type", "operation", "status", "attempts", "http_status", "error", "duration_ms",
            "crm_record_id", "created_at", "updated_at", "next_attempt_at"}


def hdr(user: str, **extra) -> dict:
    return dict({"X-User-Id": user}, **extra)


def is_json(r) -> bool:
    return r.headers.get("content-type", "").startswith("application/json")


def detail_of(r) -> str:
    assert is_json(r), r
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


def parse_ts(value: str) -> dt.datetime:
    assert isinstance(value, str) and value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def connect_klaviyo(service, user, settings=None):
    body = {"crm_type": "klaviyo", "credentials": {"api_key": "pk_test_valid_key"}}
    if settings is not None:
        body["settings"] = settings
    r = service.post("/crm/connect", headers=hdr(user), json=body)
    assert r.status == 200, r
    return r.json()


def connect_hubspot(service, user):
    r = service.post("/crm/connect", headers=hdr(user),
                     json={"crm_type": "hubspot", "credentials": {"access_token": "pat-na1-valid-token"}})
    assert r.status == 200, r
    return r.json()


def insert_log(pg, user, crm_type="klaviyo", operation="contact", status="success", **kw) -> int:
    cols = {"user_id": user, "crm_type": crm_type, "operation": operation, "status": status,
            "request": {"email": "ada@example.com"}, "response": {"id": "R1"}, "error": None,
            "http_status": 200, "duration_ms": 12, "attempts": 1, "crm_record_id": "R1"}
    cols.update(kw)
    names = list(cols)
    casts = {"request": "::jsonb", "response": "::jsonb", "http_status": "::int", "duration_ms": "::int",
             "attempts": "::int"}
    values = ", ".join(f"${i + 1}{casts.get(n, '')}" for i, n in enumerate(names))
    rows = pg.sql(f"INSERT INTO crm.crm_sync_logs ({', '.join(names)}) VALUES ({values}) RETURNING id",
                  *[cols[n] for n in names])
    return int(rows[0][0])


# ------------------------------------------------------------------------------------------ status


@pytest.mark.parametrize("crm_type", CRM_TYPES)
def test_status_not_connected(service, user_id, crm_type):
    r = service.get(f"/crm/{crm_type}/status", headers=hdr(user_id))
    assert r.status == 200, r
    assert is_json(r)
    assert r.json() == {"crm_type": crm_type, "connected": False}


def test_status_connected_full_shape_and_stats(service, fakes, pg, user_id):
    created = connect_klaviyo(service, user_id, settings={"list_id": "Lst1"})
    other = uid()
    for status, n in (("success", 3), ("failed", 2), ("retrying", 1), ("pending", 1), ("cancelled", 1)):
        for _ in range(n):
            insert_log(pg, user_id, "klaviyo", status=status)
    insert_log(pg, user_id, "hubspot", status="success")  # another CRM: not counted
    insert_log(pg, other, "klaviyo", status="failed")     # another user: not counted
    r = service.get("/crm/klaviyo/status", headers=hdr(user_id))
    assert r.status == 200, r
    body = r.json()
    assert set(body) == STATUS_KEYS, body
    assert body["crm_type"] == "klaviyo" and body["connected"] is True and body["is_active"] is True
    assert body["status"] == "connected"
    assert body["settings"] == {"sync_contacts": True, "sync_events": True, "list_id": "Lst1"}
    assert parse_ts(body["created_at"]) == parse_ts(created["created_at"])
    assert parse_ts(body["updated_at"]) == parse_ts(created["updated_at"])
    assert body["last_sync_at"] is None and body["last_sync_status"] is None
    assert body["rate_limited_until"] is None
    assert body["stats"] == {"success": 3, "failed": 2, "retrying": 1, "pending": 1}, body["stats"]


def test_status_shows_auth_error_and_reconnect_clears_it(service, fakes, pg, user_id):
    connect_klaviyo(service, user_id)
    pg.sql("UPDATE crm.crm_integrations SET status = 'auth_error' WHERE user_id = $1", user_id)
    assert service.get("/crm/klaviyo/status", headers=hdr(user_id)).json()["status"] == "auth_error"
    assert service.get("/crm/list", headers=hdr(user_id)).json()["integrations"][0]["status"] == "auth_error"
    connect_klaviyo(service, user_id)
    assert service.get("/crm/klaviyo/status", headers=hdr(user_id)).json()["status"] == "connected"


@pytest.mark.parametrize("path", ["/crm/pipedrive/status", "/crm/KLAVIYO/status", "/crm/pipedrive/disconnect"])
def test_unknown_crm_type_in_path_is_404(service, user_id, path):
    method = "DELETE" if path.endswith("disconnect") else "GET"
    r = service.request(method, path, headers=hdr(user_id))
    assert r.status == 404, r
    assert detail_of(r) == UNSUPPORTED.format(path.split("/")[2])


# ------------------------------------------------------------------------------------------ disconnect


def test_disconnect_connected_then_404(service, fakes, pg, user_id):
    connect_klaviyo(service, user_id)
    connect_hubspot(service, user_id)
    log_id = insert_log(pg, user_id, "klaviyo", status="success")
    retry_id = insert_log(pg, user_id, "klaviyo", status="retrying", next_attempt_at=None)
    r = service.delete("/crm/klaviyo/disconnect", headers=hdr(user_id))
    assert r.status == 200, r
    assert r.json() == {"crm_type": "klaviyo", "status": "disconnected"}
    assert service.get("/crm/klaviyo/status", headers=hdr(user_id)).json() == {"crm_type": "klaviyo", "connected": False}
    # the other integration stays
    lst = service.get("/crm/list", headers=hdr(user_id)).json()
    assert [i["crm_type"] for i in lst["integrations"]] == ["hubspot"] and lst["count"] == 1
    # logs are kept; pending retries are cancelled
    assert service.get(f"/crm/sync/logs/{log_id}", headers=hdr(user_id)).json()["status"] == "success"
    assert service.get(f"/crm/sync/logs/{retry_id}", headers=hdr(user_id)).json()["status"] == "cancelled"
    again = service.delete("/crm/klaviyo/disconnect", headers=hdr(user_id))
    assert again.status == 404, again
    detail_of(again)


@pytest.mark.parametrize("crm_type", CRM_TYPES)
def test_disconnect_never_connected_is_404(service, user_id, crm_type):
    r = service.delete(f"/crm/{crm_type}/disconnect", headers=hdr(user_id))
    assert r.status == 404, r
    detail_of(r)


# ------------------------------------------------------------------------------------------ list


def test_list_shape_and_order(service, fakes, user_id):
    assert service.get("/crm/list", headers=hdr(user_id)).json() == {"integrations": [], "count": 0}
    connect_klaviyo(service, user_id, settings={"sync_events": False})
    connect_hubspot(service, user_id)
    r = service.get("/crm/list", headers=hdr(user_id))
    assert r.status == 200 and is_json(r), r
    body = r.json()
    assert set(body) == {"integrations", "count"} and body["count"] == 2
    types = [i["crm_type"] for i in body["integrations"]]
    assert sorted(types) == ["hubspot", "klaviyo"]
    for item in body["integrations"]:
        assert set(item) == LIST_ITEM_KEYS, item
        assert item["is_active"] is True and item["status"] == "connected"
        assert item["last_sync_at"] is None and item["last_sync_status"] is None
        parse_ts(item["created_at"])
        parse_ts(item["updated_at"])
        assert "credentials" not in json.dumps(item)
    by_type = {i["crm_type"]: i for i in body["integrations"]}
    assert by_type["klaviyo"]["settings"] == {"sync_contacts": True, "sync_events": False}
    assert by_type["hubspot"]["settings"] == {"sync_contacts": True, "sync_events": True}


# ------------------------------------------------------------------------------------------ field mappings


STANDARD_CONTACT_FIELDS = {"email", "first_name", "last_name", "phone", "company", "title"}


@pytest.mark.parametrize("crm_type", CRM_TYPES)
def test_field_mapping_per_type(service, user_id, crm_type):
    r = service.get(f"/crm/field-mappings/{crm_type}", headers=hdr(user_id))
    assert r.status == 200 and is_json(r), r
    body = r.json()
    assert set(body) == {"crm_type", "contact", "event", "custom_properties"}, body
    assert body["crm_type"] == crm_type
    assert isinstance(body["contact"], dict) and STANDARD_CONTACT_FIELDS <= set(body["contact"]), body["contact"]
    assert isinstance(body["event"], dict) and {"event", "email"} <= set(body["event"]), body["event"]
    assert isinstance(body["custom_properties"], str) and body["custom_properties"]
    assert body["contact"]["email"] in ("email", "Email")


def test_field_mappings_all_types(service, user_id):
    r = service.get("/crm/field-mappings", headers=hdr(user_id))
    assert r.status == 200, r
    body = r.json()
    assert set(body) == {"field_mappings"} and sorted(body["field_mappings"]) == CRM_TYPES
    for crm_type in CRM_TYPES:
        one = service.get(f"/crm/field-mappings/{crm_type}", headers=hdr(user_id)).json()
        assert body["field_mappings"][crm_type] == one


def test_field_mapping_unknown_type_is_404(service, user_id):
    r = service.get("/crm/field-mappings/pipedrive", headers=hdr(user_id))
    assert r.status == 404, r
    assert detail_of(r) == UNSUPPORTED.format("pipedrive")


def test_field_mappings_need_a_user(service):
    assert service.get("/crm/field-mappings").status == 401


# ------------------------------------------------------------------------------------------ sync logs


def test_sync_logs_list_filters_and_pagination(service, pg, user_id):
    assert service.get("/crm/sync/logs", headers=hdr(user_id)).json() == {"logs": [], "next_before_id": None}
    ids = [insert_log(pg, user_id, "klaviyo", "contact", "success"),
           insert_log(pg, user_id, "klaviyo", "event", "failed", error="HTTP 400: bad", http_status=400),
           insert_log(pg, user_id, "hubspot", "contact", "retrying", http_status=503),
           insert_log(pg, user_id, "salesforce", "event", "success"),
           insert_log(pg, user_id, "klaviyo", "contact", "failed", http_status=401)]
    insert_log(pg, uid(), "klaviyo")  # someone else's
    r = service.get("/crm/sync/logs", headers=hdr(user_id))
    assert r.status == 200 and is_json(r), r
    body = r.json()
    assert set(body) == {"logs", "next_before_id"}
    assert [x["id"] for x in body["logs"]] == ids[::-1], "newest first, only this user's"
    assert body["next_before_id"] is None
    for log in body["logs"]:
        assert set(log) == LOG_KEYS, log
        assert isinstance(log["id"], int)
    failed = body["logs"][-2]
    assert failed["status"] == "failed" and failed["http_status"] == 400 and failed["error"] == "HTTP 400: bad"
    assert failed["attempts"] == 1 and failed["duration_ms"] == 12 and failed["crm_record_id"] == "R1"
    parse_ts(failed["created_at"])

    def ids_for(query):
        resp = service.get("/crm/sync/logs?" + query, headers=hdr(user_id))
        assert resp.status == 200, (query, resp)
        return [x["id"] for x in resp.json()["logs"]]

    assert ids_for("crm_type=klaviyo") == [ids[4], ids[1], ids[0]]
    assert ids_for("status=failed") == [ids[4], ids[1]]
    assert ids_for("operation=event") == [ids[3], ids[1]]
    assert ids_for("crm_type=klaviyo&status=failed&operation=contact") == [ids[4]]
    assert ids_for("crm_type=creatio") == []

    page1 = service.get("/crm/sync/logs?limit=2", headers=hdr(user_id)).json()
    assert [x["id"] for x in page1["logs"]] == [ids[4], ids[3]]
    assert page1["next_before_id"] == ids[3]
    page2 = service.get(f"/crm/sync/logs?limit=2&before_id={page1['next_before_id']}", headers=hdr(user_id)).json()
    assert [x["id"] for x in page2["logs"]] == [ids[2], ids[1]]
    page3 = service.get(f"/crm/sync/logs?limit=2&before_id={page2['next_before_id']}", headers=hdr(user_id)).json()
    assert [x["id"] for x in page3["logs"]] == [ids[0]] and page3["next_before_id"] is None


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"), ("limit=-5", "limit"),
    ("before_id=0", "before_id"), ("before_id=x", "before_id"), ("crm_type=pipedrive", "crm_type"),
    ("status=bogus", "status"), ("operation=delete", "operation"),
])
def test_sync_logs_bad_query_is_422(service, user_id, query, field):
    r = service.get("/crm/sync/logs?" + query, headers=hdr(user_id))
    assert r.status == 422, r
    assert ["query", field] in [i["loc"] for i in r.json()["detail"]]


def test_sync_logs_limit_bounds_accepted(service, user_id):
    for limit in (1, 200):
        assert service.get(f"/crm/sync/logs?limit={limit}", headers=hdr(user_id)).status == 200


def test_sync_log_by_id_detail(service, pg, user_id):
    log_id = insert_log(pg, user_id, "hubspot", "event", "failed", request={"event": "signup"},
                        response={"status": "error", "message": "nope"}, http_status=400, error="rejected")
    r = service.get(f"/crm/sync/logs/{log_id}", headers=hdr(user_id))
    assert r.status == 200 and is_json(r), r
    body = r.json()
    assert set(body) == LOG_KEYS | {"request", "response"}, body
    assert body["id"] == log_id and body["crm_type"] == "hubspot" and body["operation"] == "event"
    assert body["request"] == {"event": "signup"} and body["response"] == {"status": "error", "message": "nope"}
    assert body["http_status"] == 400 and body["error"] == "rejected"


def test_sync_log_unknown_id_is_404(service, user_id):
    r = service.get("/crm/sync/logs/999999999", headers=hdr(user_id))
    assert r.status == 404, r
    detail_of(r)


@pytest.mark.parametrize("raw_id", ["0", "-1", "abc", "1.5", "99999999999999999999999", "1e3", "%20", "0x10"])
def test_sync_log_non_positive_integer_id_is_422(service, user_id, raw_id):
    r = service.get(f"/crm/sync/logs/{raw_id}", headers=hdr(user_id))
    assert r.status == 422, r
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == ["path", "id"], detail


# ------------------------------------------------------------------------------------------ isolation


def test_user_b_cannot_see_or_disconnect_user_a_integration(service, fakes, pg):
    a, b = uid(), uid()
    connect_klaviyo(service, a)
    connect_hubspot(service, a)
    for user_b in (b, a.upper(), a + "x", a[:-1]):
        lst = service.get("/crm/list", headers=hdr(user_b))
        assert lst.status == 200 and lst.json() == {"integrations": [], "count": 0}, (user_b, lst)
        for crm_type in ("klaviyo", "hubspot"):
            st = service.get(f"/crm/{crm_type}/status", headers=hdr(user_b))
            assert st.json() == {"crm_type": crm_type, "connected": False}, (user_b, st)
            d = service.delete(f"/crm/{crm_type}/disconnect", headers=hdr(user_b))
            assert d.status == 404, (user_b, d)
    # A is untouched
    assert service.get("/crm/list", headers=hdr(a)).json()["count"] == 2
    assert int(pg.sql("SELECT count(*) FROM crm.crm_integrations WHERE user_id = $1", a)[0][0]) == 2
    # B connecting the same CRM creates B's own row and does not replace A's
    fakes.config("klaviyo", {"api_key": ["pk_test_valid_key", "pk_b_key"]})
    r = service.post("/crm/connect", headers=hdr(b), json={"crm_type": "klaviyo", "credentials": {"api_key": "pk_b_key"}})
    assert r.status == 200, r
    rows = dict(pg.sql("SELECT user_id, pgp_sym_decrypt(credentials, $2) FROM crm.crm_integrations "
                       "WHERE crm_type = 'klaviyo' AND user_id IN ($1, $3)", a, TEST_ENCRYPTION_KEY, b))
    assert json.loads(rows[a]) == {"api_key": "pk_test_valid_key"}
    assert json.loads(rows[b]) == {"api_key": "pk_b_key"}
    # B disconnecting removes only B's
    assert service.delete("/crm/klaviyo/disconnect", headers=hdr(b)).status == 200
    assert service.get("/crm/klaviyo/status", headers=hdr(a)).json()["connected"] is True


def test_user_b_cannot_read_user_a_sync_logs(service, pg):
    a, b = uid(), uid()
    log_id = insert_log(pg, a, "klaviyo", "contact", "failed")
    ra = service.get(f"/crm/sync/logs/{log_id}", headers=hdr(a))
    assert ra.status == 200 and ra.json()["id"] == log_id, ra
    rb = service.get(f"/crm/sync/logs/{log_id}", headers=hdr(b))
    assert rb.status == 404, rb
    detail_of(rb)  # {"detail": "..."} only: nothing of the log itself
    assert "klaviyo" not in rb.text
    assert service.get("/crm/sync/logs", headers=hdr(b)).json()["logs"] == []
    assert [x["id"] for x in service.get("/crm/sync/logs", headers=hdr(a)).json()["logs"]] == [log_id]
    # nor retry it (404 before any state check)
    rr = service.post(f"/crm/sync/logs/{log_id}/retry", headers=hdr(b))
    assert rr.status == 404, rr
    # nor count it in their stats
    assert service.get("/crm/klaviyo/status", headers=hdr(b)).json() == {"crm_type": "klaviyo", "connected": False}


# ------------------------------------------------------------------------------------------ X-User-Id


@pytest.mark.parametrize("value,status", [
    (None, 401), ("", 401), ("a b", 400), ("../etc/passwd", 400), ("user;drop", 400), ("a" * 129, 400),
    ("p9uOHM8ABHgwBYGT0dRpZmfyUWn1", 200), ("3f0e5d3c-8b1a-4c2e-9f00-0123456789ab", 200), ("a" * 128, 200),
    ("x", 200),
])
def test_x_user_id_rules(service, value, status):
    headers = {} if value is None else {"X-User-Id": value}
    r = service.get("/crm/list", headers=headers)
    assert r.status == status, r
    assert is_json(r)
    if status != 200:
        detail_of(r)


# ------------------------------------------------------------------------------------------ service endpoints


def test_health(service):
    r = service.get("/health")
    assert r.status == 200 and is_json(r), r
    body = r.json()
    assert body["status"] == "ok" and isinstance(body["version"], str) and body["version"]


def test_health_ready(service):
    r = service.get("/health/ready")
    assert r.status == 200 and is_json(r), r


def test_openapi_describes_every_endpoint(service):
    r = service.get("/openapi.json")
    assert r.status == 200 and is_json(r), r
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    paths = doc["paths"]
    expected = {
        "/crm/validate": "post", "/crm/connect": "post", "/crm/{crm_type}/status": "get",
        "/crm/{crm_type}/disconnect": "delete", "/crm/list": "get", "/crm/field-mappings": "get",
        "/crm/field-mappings/{crm_type}": "get", "/crm/sync/logs": "get", "/crm/sync/logs/{id}": "get",
        "/health": "get", "/health/ready": "get", "/crm/sync/contact": "post", "/crm/sync/event": "post",
        "/crm/sync/logs/{id}/retry": "post",
    }
    for path, method in expected.items():
        assert path in paths and method in paths[path], f"{method.upper()} {path} missing from /openapi.json"


def test_docs_is_html(service):
    r = service.get("/docs")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']https?://""", r.text), "docs must not load anything from the internet"


def test_metrics_counts_requests_by_route_and_status(service, user_id):
    service.get("/crm/list", headers=hdr(user_id))
    service.get("/crm/pipedrive/status", headers=hdr(user_id))
    r = service.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain")

    def count(route, status):
        m = re.search(r'^crm_http_requests_total\{route="%s",status="%s"\} (\d+)$' % (re.escape(route), status),
                      service.get("/metrics").text, re.M)
        return int(m.group(1)) if m else 0

    before = count("/crm/list", 200)
    assert before >= 1, r.text
    for _ in range(3):
        service.get("/crm/list", headers=hdr(user_id))
    assert count("/crm/list", 200) == before + 3
    # Refused after matching: counted under the route's pattern; matching nothing: "unmatched".
    status_404, unmatched_404 = count("/crm/{crm_type}/status", 404), count("unmatched", 404)
    invalid_422 = count("/crm/sync/contact", 422)
    assert status_404 >= 1, r.text
    assert service.get("/crm/pipedrive/status", headers=hdr(user_id)).status == 404
    assert service.get("/crm/nothing/here/at/all", headers=hdr(user_id)).status == 404
    assert service.post("/crm/sync/contact", headers=hdr(user_id), json={"email": "nope"}).status == 422
    assert count("/crm/{crm_type}/status", 404) == status_404 + 1
    assert count("unmatched", 404) == unmatched_404 + 1
    assert count("/crm/sync/contact", 422) == invalid_422 + 1
    assert "# TYPE crm_http_requests_total counter" in r.text
    # Every series, the gauges read at each scrape among them, says what it is.
    typed = set(re.findall(r"^# TYPE (crm_\w+) ", r.text, re.M))
    helped = set(re.findall(r"^# HELP (crm_\w+) \S", r.text, re.M))
    assert {"crm_http_requests_in_progress", "crm_db_pool_connections", "crm_db_pool_size", "crm_outbound_calls_in_flight"} <= typed, typed
    assert typed == helped, typed ^ helped


def test_method_not_allowed_has_allow_header(service, user_id):
    r = service.get("/crm/validate", headers=hdr(user_id))
    assert r.status == 405, r
    assert "POST" in r.headers.get("allow", "")
    detail_of(r)
    r = service.post("/crm/list", headers=hdr(user_id), json={})
    assert r.status == 405 and "GET" in r.headers.get("allow", ""), r


def test_unknown_path_is_json_404(service, user_id):
    r = service.get("/crm/nothing/here/at/all", headers=hdr(user_id))
    assert r.status == 404, r
    detail_of(r)


# ------------------------------------------------------------------------------------------ API key and CORS


@pytest.fixture
def keyed(service_factory):
    key = "k-" + secrets.token_urlsafe(24)
    return service_factory(API_KEY=key), key


def test_api_key_required_when_set(keyed, user_id):
    svc, key = keyed
    r = svc.get("/crm/list", headers=hdr(user_id))
    assert r.status == 401, r
    detail_of(r)
    for wrong in ("wrong", key[:-1], key + "x", key[:-1] + ("A" if key[-1] != "A" else "B"), key.upper(), key + "%20", "Bearer " + key, key + "," + key):
        r = svc.get("/crm/list", headers=hdr(user_id, **{"X-API-Key": wrong}))
        assert r.status == 401, (wrong, r)
        detail_of(r)
    r = svc.get("/crm/list", headers=hdr(user_id, **{"X-API-Key": key}))
    assert r.status == 200 and r.json() == {"integrations": [], "count": 0}, r
    # the key is checked before anything else: no user id and no key is still 401, never a leak of routing
    assert svc.post("/crm/validate", headers={"X-API-Key": "nope"}, json={}).status == 401
    assert svc.get("/metrics").status == 401
    assert svc.get("/metrics", headers={"X-API-Key": key}).status == 200


def test_api_key_not_needed_for_health(keyed):
    svc, key = keyed
    assert svc.get("/health").status == 200
    assert svc.get("/health/ready").status == 200
    assert svc.get("/health", headers={"X-API-Key": "wrong"}).status == 200


def test_api_key_protects_openapi_and_docs(keyed):
    """API.md: X-API-Key is required on every route except /health* and CORS preflights.
    /openapi.json follows that; the /docs page itself is open (a browser cannot send the
    header), holds no API data, and asks for the key before it fetches /openapi.json."""
    svc, key = keyed
    r = svc.get("/openapi.json")
    assert r.status == 401, f"GET /openapi.json without the API key: {r.status}"
    assert svc.get("/openapi.json", headers={"X-API-Key": key}).status == 200
    docs = svc.get("/docs")
    assert docs.status == 200
    assert "/crm/connect" not in docs.text and "X-API-Key" in docs.text


def test_api_key_is_not_logged(keyed, user_id):
    svc, key = keyed
    svc.get("/crm/list", headers=hdr(user_id, **{"X-API-Key": key}))
    svc.get("/crm/list", headers=hdr(user_id, **{"X-API-Key": key + "zz"}))
    time.sleep(0.2)
    assert key not in svc.log_text()


PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, x-user-id, x-api-key"}


def test_cors_preflight_allowed_origin(service):
    r = service.request("OPTIONS", "/crm/connect", headers=PREFLIGHT)
    assert r.status == 204, r
    assert r.headers.get("access-control-allow-origin") == "https://app.example.com"
    methods = r.headers.get("access-control-allow-methods", "").upper()
    assert "POST" in methods and "GET" in methods and "DELETE" in methods
    allowed = r.headers.get("access-control-allow-headers", "").lower()
    for h in ("content-type", "x-user-id", "x-api-key"):
        assert h in allowed, allowed


def test_cors_preflight_other_origin_is_400(service):
    r = service.request("OPTIONS", "/crm/connect", headers=dict(PREFLIGHT, Origin="https://evil.example.com"))
    assert r.status == 400, r
    detail_of(r)
    assert "access-control-allow-origin" not in r.headers


def test_cors_preflight_with_api_key_set_needs_no_key(keyed):
    svc, key = keyed
    r = svc.request("OPTIONS", "/crm/list", headers=dict(PREFLIGHT, **{"Access-Control-Request-Method": "GET"}))
    assert r.status == 204, r
    assert r.headers.get("access-control-allow-origin") == "https://app.example.com"
    r = svc.request("OPTIONS", "/crm/list", headers=dict(PREFLIGHT, Origin="https://other.example.org"))
    assert r.status == 400, r


def test_cors_headers_on_actual_requests(service, user_id):
    r = service.get("/crm/list", headers=hdr(user_id, Origin="https://app.example.com"))
    assert r.status == 200
    assert r.headers.get("access-control-allow-origin") == "https://app.example.com"
    assert "origin" in r.headers.get("vary", "").lower()
    r = service.get("/crm/list", headers=hdr(user_id, Origin="https://evil.example.com"))
    assert r.status == 200
    assert "access-control-allow-origin" not in r.headers
    # errors carry CORS headers too, so a browser can read them
    r = service.get("/crm/list", headers={"Origin": "https://app.example.com"})
    assert r.status == 401 and r.headers.get("access-control-allow-origin") == "https://app.example.com"
