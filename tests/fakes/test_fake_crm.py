"""Tests of the fake CRM servers themselves (pytest, urllib only).

Run: python3 -m pytest -q tests/fakes
The capture replay tests read /work/shared/crm-captures (override with CRM_CAPTURES_DIR) and are
skipped when that directory is absent.
"""
import base64
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_crm import FakeCRMs  # noqa: E402

# shared/ sits beside the checkout (CI clones elsewhere and lays a copy of shared/ beside it).
_REPO = pathlib.Path(__file__).resolve().parents[2]
CAPTURES = pathlib.Path(os.environ.get("CRM_CAPTURES_DIR")
                        or next((str(p) for p in (_REPO.parent / "shared" / "crm-captures", pathlib.Path("/work/shared/crm-captures"))
                                 if p.is_dir()), "/work/shared/crm-captures"))
KL_KEY, HS_TOKEN = "pk_test_valid_key", "pat-na1-valid-token"
KL_HEADERS = {"Authorization": f"Klaviyo-API-Key {KL_KEY}", "revision": "2026-10-15",
              "Accept": "application/vnd.api+json", "Content-Type": "application/vnd.api+json"}
HS_HEADERS = {"Authorization": f"Bearer {HS_TOKEN}", "Content-Type": "application/json", "Accept": "application/json"}


# ---- HTTP helpers -------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(_NoRedirect)


class Resp:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self):
        return json.loads(self.raw) if self.raw else None

    def __repr__(self):
        return f"<Resp {self.status} {self.raw[:300]!r}>"


def call(base, method, path, headers=None, body=None, json_body=None, form=None, timeout=5):
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())


def control(base, action, body=None, method=None):
    method = method or ("POST" if body is not None or action in ("reset",) else "GET")
    resp = call(base, method, f"/__fake__/{action}", json_body=body if body is not None else None)
    assert resp.status == 200, resp
    return resp.json


@pytest.fixture(scope="module")
def fakes():
    f = FakeCRMs().start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _reset(fakes):
    fakes.reset()
    yield


@pytest.fixture
def u(fakes):
    return fakes.urls


def sf_token(u):
    r = call(u["salesforce"], "POST", "/services/oauth2/token",
             form={"grant_type": "client_credentials", "client_id": "sf_client_id", "client_secret": "sf_client_secret"})
    assert r.status == 200, r
    return r.json["access_token"]


def sf_headers(token):
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def creatio_login(u):
    r = call(u["creatio"], "POST", "/ServiceModel/AuthService.svc/Login", headers={"ForceUseSession": "true"},
             json_body={"UserName": "Supervisor", "UserPassword": "creatio_pass"})
    assert r.status == 200 and r.json["Code"] == 0, r
    jar = dict(c.split(";")[0].split("=", 1) for c in r.headers.get_all("Set-Cookie"))
    return jar


def creatio_headers(jar, csrf=True):
    h = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()), "ForceUseSession": "true",
         "Accept": "application/json"}
    if csrf:
        h["BPMCSRF"] = jar["BPMCSRF"]
    return h


# ---- capture replay -----------------------------------------------------------------------------
ORDER = {
    "klaviyo": ["validate_get_accounts", "profile_import_upsert", "create_event", "create_event_retry_after_429__1",
                "create_event_retry_after_429__2"],
    "salesforce": ["oauth_token_client_credentials", "oauth_token_password_grant", "login_soap_username_password_token",
                   "validate_resources_by_version", "query_contact_by_email", "create_contact", "update_contact",
                   "upsert_contact_by_external_id", "create_task_for_event", "publish_platform_event"],
    "hubspot": ["validate_account_info", "search_contact_by_email", "create_contact", "update_contact",
                "batch_upsert_contacts_by_email", "send_custom_event"],
    "creatio": ["login_forms_auth", "find_contact_by_email", "create_contact", "update_contact",
                "create_activity_for_event"],
}
# Where the fake deliberately differs from the capture's (lenient) fake response.
EXPECTED_DEVIATIONS = {("creatio", "update_contact"): 415}  # creatio-api-py PATCHes form-encoded; OData wants JSON


def replay(base, capture, subs):
    req = capture["request"]
    sub = lambda text: [text := text.replace(a, b) for a, b in subs.items()][-1] if subs else text  # noqa: E731
    skip = {"host", "content-length", "connection", "accept-encoding"}
    headers = {k: sub(v) for k, v in req["headers"] if k.lower() not in skip}
    path = sub(req["path"]) + ("?" + req["raw_query"] if req["raw_query"] else "")
    body = sub(req["body_text"]).encode() if req.get("body_text") else None
    return call(base, req["method"], path, headers=headers, body=body)


def check_against_capture(vendor, name, capture, resp):
    expected = EXPECTED_DEVIATIONS.get((vendor, name), capture["fake_response"]["status"])
    assert resp.status == expected, f"{vendor}/{name}: {resp}"
    cap_body = capture["fake_response"]["body"]
    if expected == capture["fake_response"]["status"] and isinstance(cap_body, dict):
        assert set(cap_body) <= set(resp.json), f"{vendor}/{name}: {sorted(set(cap_body) - set(resp.json))}"
    if cap_body is None and expected < 300:
        assert resp.raw == b""


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="crm-captures directory not available")
@pytest.mark.parametrize("vendor", sorted(ORDER))
def test_replay_captures(fakes, u, vendor):
    files = {p.stem: json.loads(p.read_text()) for p in (CAPTURES / vendor).glob("*.json")}
    assert sorted(files) == sorted(ORDER[vendor]), "a capture file is not replayed"
    base = u[vendor]
    subs = {}
    if vendor == "klaviyo":
        subs = {"pk_FAKE0000000000000000000000000000": KL_KEY}
    elif vendor == "hubspot":
        subs = {"pat-na1-FAKE0000-0000-0000-0000-000000000000": HS_TOKEN}
        control(base, "config", {"custom_properties": ["app_plan"], "events": ["placed_order"]})
    elif vendor == "salesforce":
        basic = base64.b64encode(b"sf_client_id:sf_client_secret").decode()
        subs = {"M01WRzlGQUtFQ09OU1VNRVJLRVk6RkFLRUNPTlNVTUVSU0VDUkVU": basic,
                "3MVG9FAKECONSUMERKEY": "sf_client_id", "FAKECONSUMERSECRET": "sf_client_secret",
                "integration%40example.com": "sf_user%40example.com", "integration@example.com": "sf_user@example.com",
                "FakePass1FAKETOKEN": "sf_passwordSECTOKEN"}
        control(base, "config", {"custom_fields": {"Contact": ["Plan__c", "App_User_Id__c"]}})
    elif vendor == "creatio":
        subs = {"FakePass1": "creatio_pass"}
    for name in ORDER[vendor]:
        capture = files[name]
        if (vendor, name) == ("klaviyo", "create_event_retry_after_429__1"):
            fault = capture["fake_response"]
            control(base, "faults", {"match": "/api/events", "responses": [
                {"status": 429, "body": fault["body"], "headers": fault["headers"]}]})
        resp = replay(base, capture, subs)
        check_against_capture(vendor, name, capture, resp)
        body = resp.json if resp.raw and resp.status < 300 and "json" in resp.headers.get("Content-Type", "") else None
        if (vendor, name) == ("salesforce", "oauth_token_client_credentials"):
            subs["00DFAKE!ACCESSTOKEN"] = body["access_token"]
            assert body["instance_url"] == base
        elif (vendor, name) == ("salesforce", "create_contact"):
            subs["003FAKE000000000AAA"] = body["id"]
        elif (vendor, name) == ("hubspot", "create_contact"):
            subs["/contacts/151"] = f"/contacts/{body['id']}"
        elif (vendor, name) == ("creatio", "login_forms_auth"):
            jar = dict(c.split(";")[0].split("=", 1) for c in resp.headers.get_all("Set-Cookie"))
            assert set(jar) == {".ASPXAUTH", "BPMCSRF", "BPMLOADER", "UserName"}
            subs.update({"FAKEAUTH": jar[".ASPXAUTH"], "FAKECSRF": jar["BPMCSRF"], "FAKELOADER": jar["BPMLOADER"]})
        elif (vendor, name) == ("creatio", "create_contact"):
            subs["9d3b5e0a-0000-4000-8000-000000000001"] = body["Id"]
        elif (vendor, name) == ("klaviyo", "create_event_retry_after_429__1"):
            assert resp.headers["Retry-After"] == "1"
    state = control(base, "state")
    if vendor == "klaviyo":  # the three sends of one unique_id make one event
        assert len(state["profiles"]) == 1 and len(state["events"]) == 1
    if vendor == "creatio":  # the JSON form of the rejected PATCH works
        cid = subs["9d3b5e0a-0000-4000-8000-000000000001"]
        jar = {".ASPXAUTH": subs["FAKEAUTH"], "BPMCSRF": subs["FAKECSRF"]}
        r = call(base, "PATCH", f"/0/odata/Contact({cid})", headers=creatio_headers(jar), json_body={"JobTitle": "CEO"})
        assert r.status == 204, r
        assert control(base, "state")["contacts"][0]["JobTitle"] == "CEO"
    if vendor == "hubspot":
        assert len(state["contacts"]) == 1 and len(state["events"]) == 1


# ---- Klaviyo ------------------------------------------------------------------------------------
def test_klaviyo_accounts_and_trailing_slash(u):
    for path in ("/api/accounts", "/api/accounts/"):
        r = call(u["klaviyo"], "GET", path, headers={k: v for k, v in KL_HEADERS.items() if k != "Content-Type"})
        assert r.status == 200, r
        acct = r.json["data"][0]
        assert acct["type"] == "account" and acct["id"] == "KLAVIYO_ACCT_1"
        assert acct["attributes"]["contact_information"]["organization_name"] == "Fake Store"
        assert acct["attributes"]["timezone"] == "UTC" and acct["attributes"]["public_api_key"] == "PUBKEY"


def test_klaviyo_wrong_key_gives_exact_401(u):
    r = call(u["klaviyo"], "GET", "/api/accounts", headers=dict(KL_HEADERS, Authorization="Klaviyo-API-Key pk_nope"))
    assert r.status == 401
    err = r.json["errors"][0]
    assert err.pop("id")
    assert err == {"status": 401, "code": "authentication_failed", "title": "Incorrect authentication credentials.",
                   "detail": "Incorrect authentication credentials.", "source": {"pointer": "/data/"}, "meta": {}}
    r = call(u["klaviyo"], "GET", "/api/accounts", headers={k: v for k, v in KL_HEADERS.items() if k != "Authorization"})
    assert r.status == 401 and r.json["errors"][0]["code"] == "not_authenticated"


def test_klaviyo_revision_and_accept_rules(u):
    base = u["klaviyo"]
    no_rev = {k: v for k, v in KL_HEADERS.items() if k != "revision"}
    r = call(base, "GET", "/api/accounts", headers=no_rev)
    assert r.status == 400 and r.json["errors"][0]["source"] == {"parameter": "revision"}
    assert call(base, "GET", "/api/accounts", headers=dict(KL_HEADERS, revision="2026/10/15")).status == 400
    assert call(base, "GET", "/api/accounts", headers=dict(KL_HEADERS, revision="2099-01-15")).status == 400
    assert call(base, "GET", "/api/accounts", headers=dict(KL_HEADERS, revision="2024-10-15")).status == 410
    assert call(base, "GET", "/api/accounts", headers=dict(KL_HEADERS, Accept="*/*")).status == 406
    assert call(base, "GET", "/api/accounts", headers=dict(KL_HEADERS, Accept="application/json")).status == 200
    body = {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}
    r = call(base, "POST", "/api/profile-import", headers=dict(KL_HEADERS, **{"Content-Type": "text/plain"}),
             body=json.dumps(body))
    assert r.status == 415 and r.json["errors"][0]["code"] == "unsupported_media_type"
    r = call(base, "POST", "/api/profile-import", headers=dict(KL_HEADERS, **{"Content-Type": "application/json"}),
             json_body=body)
    assert r.status == 201


def test_klaviyo_profile_upsert_semantics(u):
    base = u["klaviyo"]
    first = {"data": {"type": "profile", "attributes": {
        "email": "Jane@Example.com", "first_name": "Jane", "title": "CTO", "location": {"city": "Boston"},
        "properties": {"plan": "pro", "source": "ios"}}}}
    r1 = call(base, "POST", "/api/profile-import", headers=KL_HEADERS, json_body=first)
    assert r1.status == 201, r1
    second = {"data": {"type": "profile", "attributes": {
        "email": "jane@example.com", "first_name": "Janet", "title": None, "properties": {"plan": "enterprise"}}}}
    r2 = call(base, "POST", "/api/profile-import", headers=KL_HEADERS, json_body=second)
    assert r2.status == 200 and r2.json["data"]["id"] == r1.json["data"]["id"]
    profiles = control(base, "state")["profiles"]
    assert len(profiles) == 1
    attrs = next(iter(profiles.values()))["attributes"]
    assert attrs["first_name"] == "Janet" and attrs["title"] is None  # null clears
    assert attrs["location"] == {"city": "Boston"}  # omitted: unchanged
    assert attrs["properties"] == {"plan": "enterprise", "source": "ios"}


def test_klaviyo_rate_limits_are_fixed_windows_per_endpoint(u):
    """Past a window's limit Klaviyo answers 429 with Retry-After (seconds until the window
    resets); other answers carry RateLimit-* headers. Windows count each endpoint apart."""
    base = u["klaviyo"]
    control(base, "config", {"rate_limits": [{"limit": 2, "window_s": 2}]})
    while time.monotonic() % 2 > 0.5:  # start early in a window, so that three calls share it
        time.sleep(0.05)
    body = {"data": {"type": "profile", "attributes": {"email": "rl@example.com"}}}
    answers = [call(base, "POST", "/api/profile-import", headers=KL_HEADERS, json_body=body) for _ in range(3)]
    assert [a.status for a in answers] == [201, 200, 429], answers
    assert answers[0].headers["RateLimit-Limit"] == "2" and answers[0].headers["RateLimit-Remaining"] == "1"
    assert answers[1].headers["RateLimit-Remaining"] == "0" and 1 <= int(answers[1].headers["RateLimit-Reset"]) <= 2
    throttled = answers[2]
    assert throttled.headers["Retry-After"] in ("1", "2"), throttled.headers
    assert throttled.json["errors"][0]["code"] == "throttled" and throttled.json["errors"][0]["status"] == 429
    assert call(base, "GET", "/api/accounts/", headers=KL_HEADERS).status == 200  # another endpoint's window
    time.sleep(int(throttled.headers["Retry-After"]))
    assert call(base, "POST", "/api/profile-import", headers=KL_HEADERS, json_body=body).status == 200
    assert control(base, "state")["throttled"] == 1


def test_klaviyo_schema_errors(u):
    base = u["klaviyo"]
    r = call(base, "POST", "/api/profile-import", headers=KL_HEADERS,
             json_body={"data": {"type": "profile", "attributes": {"email": "a@example.com", "favorite": "x"}}})
    assert r.status == 400 and r.json["errors"][0]["source"]["pointer"] == "/data/attributes/favorite"
    r = call(base, "POST", "/api/profile-import", headers=KL_HEADERS,
             json_body={"data": {"type": "profile", "attributes": {"first_name": "NoId"}}})
    assert r.status == 400
    r = call(base, "POST", "/api/profile-import", headers=KL_HEADERS,
             json_body={"data": {"type": "profile", "attributes": {"phone_number": "555-1234"}}})
    assert r.status == 400
    r = call(base, "POST", "/api/events", headers=KL_HEADERS, json_body={"data": {"type": "event", "attributes": {
        "properties": {}, "profile": {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}}}})
    assert r.status == 400 and r.json["errors"][0]["source"]["pointer"] == "/data/attributes/metric"
    r = call(base, "POST", "/api/events", headers=KL_HEADERS, body=b"{not json")
    assert r.status == 400 and r.json["errors"][0]["code"] == "parse_error"


def klaviyo_event(unique_id, email="jane@example.com", value=1.5):
    return {"data": {"type": "event", "attributes": {
        "properties": {"order_id": "1"}, "value": value, "unique_id": unique_id, "time": "2026-11-28T19:59:00Z",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}}}}}


def test_klaviyo_event_dedupe_and_lists(u):
    base = u["klaviyo"]
    for _ in range(2):
        r = call(base, "POST", "/api/events", headers=KL_HEADERS, json_body=klaviyo_event("evt-1"))
        assert r.status == 202 and r.raw == b""
    assert call(base, "POST", "/api/events", headers=KL_HEADERS, json_body=klaviyo_event("evt-2")).status == 202
    state = control(base, "state")
    assert [e["unique_id"] for e in state["events"]] == ["evt-1", "evt-2"] and state["duplicate_events"] == 1
    pid = next(iter(state["profiles"]))
    r = call(base, "POST", "/api/lists/LIST1/relationships/profiles", headers=KL_HEADERS,
             json_body={"data": [{"type": "profile", "id": pid}]})
    assert r.status == 204
    assert control(base, "state")["lists"] == {"LIST1": [pid]}


# ---- Salesforce ---------------------------------------------------------------------------------
def test_salesforce_token_flows(u):
    base = u["salesforce"]
    tok = lambda **form: call(base, "POST", "/services/oauth2/token", form=form)  # noqa: E731
    r = tok(grant_type="client_credentials", client_id="sf_client_id", client_secret="wrong")
    assert r.status == 400 and r.json == {"error": "invalid_client", "error_description": "invalid client credentials"}
    r = tok(grant_type="client_credentials", client_id="nope", client_secret="sf_client_secret")
    assert r.status == 400 and r.json["error"] == "invalid_client_id"
    basic = "Basic " + base64.b64encode(b"sf_client_id:sf_client_secret").decode()
    r = call(base, "POST", "/services/oauth2/token", headers={"Authorization": basic}, form={"grant_type": "client_credentials"})
    assert r.status == 200 and r.json["access_token"].startswith("00DFAKE!") and r.json["instance_url"] == base
    assert "expires_in" not in r.json
    common = {"client_id": "sf_client_id", "client_secret": "sf_client_secret", "username": "sf_user@example.com"}
    assert tok(grant_type="password", password="sf_passwordSECTOKEN", **common).status == 200
    r = tok(grant_type="password", password="sf_password", **common)  # token not appended
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    assert tok(grant_type="refresh_token", refresh_token="sf_refresh_token", client_id="sf_client_id").status == 200
    r = tok(grant_type="refresh_token", refresh_token="other", client_id="sf_client_id")
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    assert tok(grant_type="authorization_code").json["error"] == "unsupported_grant_type"


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, key_path=None, alg="RS256"):
    head = _b64url(json.dumps({"alg": alg}).encode()) + "." + _b64url(json.dumps(claims).encode())
    if key_path is None:
        return head + "." + _b64url(b"not-a-real-signature")
    with tempfile.NamedTemporaryFile() as msg:
        msg.write(head.encode())
        msg.flush()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path, msg.name], capture_output=True,
                             check=True).stdout
    return head + "." + _b64url(sig)


def test_salesforce_jwt_bearer(u):
    base = u["salesforce"]
    claims = {"iss": "sf_client_id", "sub": "sf_user@example.com", "aud": "https://login.salesforce.com",
              "exp": int(time.time()) + 180}
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    jwt = lambda c, **kw: call(base, "POST", "/services/oauth2/token",  # noqa: E731
                               form={"grant_type": grant, "assertion": make_jwt(c, **kw)})
    assert jwt(claims).status == 200  # no key configured: structure + claims only
    assert jwt(dict(claims, aud=base)).status == 200
    assert jwt(dict(claims, exp=int(time.time()) - 10)).json["error"] == "invalid_grant"
    assert jwt(dict(claims, aud="https://evil.example.com")).json["error"] == "invalid_grant"
    assert jwt(dict(claims, iss="other")).json["error"] == "invalid_client_id"
    assert jwt(claims, alg="HS256").json["error"] == "invalid_grant"
    r = call(base, "POST", "/services/oauth2/token", form={"grant_type": grant, "assertion": "a.b"})
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    with tempfile.TemporaryDirectory() as tmp:
        key, pub, other = (os.path.join(tmp, n) for n in ("key.pem", "pub.pem", "other.pem"))
        for path in (key, other):
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path],
                           capture_output=True, check=True)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], capture_output=True, check=True)
        control(base, "config", {"jwt_public_key_path": pub})
        assert jwt(claims, key_path=key).status == 200
        assert jwt(claims, key_path=other).json["error"] == "invalid_grant"
        assert jwt(claims).status == 400


def test_salesforce_session_expiry_and_validate(u):
    base = u["salesforce"]
    token = sf_token(u)
    r = call(base, "GET", "/services/data/v62.0/", headers=sf_headers(token))
    assert r.status == 200 and r.json["sobjects"] == "/services/data/v62.0/sobjects"
    assert call(base, "GET", "/services/data/v59.0", headers=sf_headers(token)).status == 200
    r = call(base, "GET", "/services/data/v62.0/", headers=sf_headers("00DFAKE!bogus"))
    assert r.status == 401 and r.json == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    control(base, "config", {"expire_sessions": True})
    r = call(base, "GET", "/services/data/v62.0/", headers=sf_headers(token))
    assert r.status == 401 and r.json[0]["errorCode"] == "INVALID_SESSION_ID"
    assert call(base, "GET", "/services/data/v62.0/", headers=sf_headers(sf_token(u))).status == 200


def test_salesforce_contact_lifecycle(u):
    base, h = u["salesforce"], sf_headers(sf_token(u))
    api = "/services/data/v62.0"
    r = call(base, "POST", f"{api}/sobjects/Contact/", headers=h, json_body={"FirstName": "Jane"})
    assert r.status == 400 and r.json[0]["errorCode"] == "REQUIRED_FIELD_MISSING" and r.json[0]["fields"] == ["LastName"]
    r = call(base, "POST", f"{api}/sobjects/Contact/", headers=h, json_body={"LastName": "Doe", "Plan__c": "pro"})
    assert r.status == 400 and r.json[0]["errorCode"] == "INVALID_FIELD"
    r = call(base, "POST", f"{api}/sobjects/Lead/", headers=h, json_body={"LastName": "Doe"})
    assert r.status == 400 and r.json[0]["fields"] == ["Company"]
    r = call(base, "POST", f"{api}/sobjects/Contact/", headers=dict(h, **{"Content-Type": "text/plain"}),
             body='{"LastName": "Doe"}')
    assert r.status == 415
    control(base, "config", {"custom_fields": ["Plan__c"]})
    r = call(base, "POST", f"{api}/sobjects/Contact/", headers=h,
             json_body={"LastName": "O'Brien", "Email": "o'brien@example.com", "Plan__c": "pro"})
    assert r.status == 201 and r.json["success"] is True and r.json["errors"] == []
    cid = r.json["id"]
    q = "SELECT Id, Email FROM Contact WHERE Email = 'o\\'brien@example.com' LIMIT 2"
    r = call(base, "GET", f"{api}/query/?q=" + urllib.parse.quote(q), headers=h)
    assert r.status == 200 and r.json["totalSize"] == 1 and r.json["records"][0]["Id"] == cid
    assert r.json["records"][0]["attributes"]["type"] == "Contact"
    bad = "SELECT Id FROM Contact WHERE Email = 'o'brien@example.com' LIMIT 2"
    r = call(base, "GET", f"{api}/query?q=" + urllib.parse.quote(bad), headers=h)
    assert r.status == 400 and r.json[0]["errorCode"] == "MALFORMED_QUERY"
    r = call(base, "GET", f"{api}/query?q=" + urllib.parse.quote("SELECT Id FROM Contact"), headers=h)
    assert r.status == 400 and r.json[0]["errorCode"] == "MALFORMED_QUERY"
    r = call(base, "PATCH", f"{api}/sobjects/Contact/{cid}", headers=h, json_body={"Title": "CEO"})
    assert r.status == 204 and r.raw == b""
    assert call(base, "PATCH", f"{api}/sobjects/Contact/003FAKE00000999AAA", headers=h,
                json_body={"Title": "x"}).status == 404
    r = call(base, "POST", f"{api}/sobjects/Task/", headers=h, json_body={"WhoId": "003XXXXXXXXXXXXXXX", "Subject": "x"})
    assert r.status == 400
    r = call(base, "POST", f"{api}/sobjects/Task/", headers=h,
             json_body={"WhoId": cid, "Subject": "Placed Order", "Status": "Completed", "ActivityDate": "2026-11-28"})
    assert r.status == 201
    state = control(base, "state")
    assert [c["Title"] for c in state["contacts"]] == ["CEO"] and state["tasks"][0]["WhoId"] == cid


def test_salesforce_query_terms_order_and_unfilterable_fields(u):
    base, h = u["salesforce"], sf_headers(sf_token(u))
    api = "/services/data/v62.0"

    def query(q):
        return call(base, "GET", f"{api}/query/?q=" + urllib.parse.quote(q), headers=h)

    ids = [call(base, "POST", f"{api}/sobjects/Contact/", headers=h,
                json_body={"LastName": name, "Email": "twin@example.com"}).json["id"] for name in ("Old", "New")]
    # No ORDER BY: no order is promised, and the fake answers newest first.
    assert [r["Id"] for r in query("SELECT Id FROM Contact WHERE Email = 'twin@example.com'").json["records"]] == ids[::-1]
    r = query("SELECT Id FROM Contact WHERE Email = 'twin@example.com' ORDER BY CreatedDate ASC, Id ASC LIMIT 2")
    assert r.status == 200 and [x["Id"] for x in r.json["records"]] == ids
    r = query("SELECT Id FROM Contact WHERE Email = 'twin@example.com' ORDER BY Id DESC LIMIT 1")
    assert [x["Id"] for x in r.json["records"]] == ids[1:]
    r = query("SELECT Id, LastName FROM Contact WHERE Email = 'twin@example.com' AND LastName = 'old'")
    assert [x["Id"] for x in r.json["records"]] == ids[:1]
    for task in ("Call", "Call", "Email"):
        call(base, "POST", f"{api}/sobjects/Task/", headers=h, json_body={"WhoId": ids[0], "Subject": task})
    r = query(f"SELECT Id, Description FROM Task WHERE WhoId = '{ids[0]}' AND Subject = 'Call'")
    assert r.status == 200 and r.json["totalSize"] == 2
    # Long text areas can be selected, not filtered or sorted.
    r = query(f"SELECT Id FROM Task WHERE WhoId = '{ids[0]}' AND Description = 'x'")
    assert r.status == 400 and r.json == [{"message": "field 'Description' can not be filtered in a query call",
                                           "errorCode": "INVALID_FIELD", "fields": []}]
    assert query(f"SELECT Id FROM Task WHERE WhoId = '{ids[0]}' ORDER BY Description").json[0]["errorCode"] == "INVALID_FIELD"
    assert query("SELECT Id FROM Contact WHERE Email = 'x' ORDER BY Nope").json[0]["errorCode"] == "INVALID_FIELD"
    for bad in ("SELECT Id FROM Contact WHERE Email = 'x' AND", "SELECT Id FROM Contact WHERE Email = 'x' OR Id = 'y'",
                "SELECT Id FROM Contact WHERE Email = 'x' ORDER BY", "SELECT Id FROM Contact WHERE Email = 'x' LIMIT"):
        assert query(bad).json[0]["errorCode"] == "MALFORMED_QUERY", bad


def test_salesforce_query_batches_and_unordered_order(u):
    """A query answer holds up to `query_batch_size` records (Salesforce: 2,000); the rest are
    read from `nextRecordsUrl`. Without ORDER BY the order is the config's."""
    base, h = u["salesforce"], sf_headers(sf_token(u))
    api = "/services/data/v62.0"
    ids = [call(base, "POST", f"{api}/sobjects/Contact/", headers=h,
                json_body={"LastName": f"N{i}", "Email": "many@example.com"}).json["id"] for i in range(5)]
    assert control(base, "config", {"query_batch_size": 2, "unordered": "oldest_first"})["query_batch_size"] == 2
    r = call(base, "GET", f"{api}/query/?q=" + urllib.parse.quote("SELECT Id FROM Contact WHERE Email = 'many@example.com'"), headers=h)
    seen, pages = [], 0
    while True:
        assert r.status == 200 and r.json["totalSize"] == 5, r.json
        seen += [x["Id"] for x in r.json["records"]]
        pages += 1
        if r.json["done"]:
            assert "nextRecordsUrl" not in r.json
            break
        assert len(r.json["records"]) == 2
        r = call(base, "GET", r.json["nextRecordsUrl"], headers=h)
    assert seen == ids and pages == 3
    assert call(base, "GET", f"{api}/query/01gNOPE-2", headers=h).json[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    assert call(base, "GET", f"{api}/query/01gNOPE-2").status == 401  # the cursor needs the session too
    control(base, "config", {"unordered": "newest_first"})
    r = call(base, "GET", f"{api}/query/?q=" + urllib.parse.quote("SELECT Id FROM Contact WHERE Email = 'many@example.com' LIMIT 2"), headers=h)
    assert r.json["done"] and [x["Id"] for x in r.json["records"]] == [ids[4], ids[3]]
    assert call(base, "POST", "/__fake__/config", json_body={"unordered": "random"}).status == 400


def test_salesforce_upsert_by_external_id_and_platform_event(u):
    base, h = u["salesforce"], sf_headers(sf_token(u))
    api = "/services/data/v59.0/sobjects"
    path = f"{api}/Contact/App_User_Id__c/user-42"
    assert call(base, "PATCH", path, headers=h, json_body={"LastName": "Doe"}).status == 404  # field not registered
    control(base, "config", {"custom_fields": {"Contact": ["App_User_Id__c"]}})
    r1 = call(base, "PATCH", path, headers=h, json_body={"LastName": "Doe", "Email": "jane@example.com"})
    assert r1.status == 201 and r1.json["created"] is True
    r2 = call(base, "PATCH", path, headers=h, json_body={"FirstName": "Jane"})
    assert r2.status == 200 and r2.json == {"id": r1.json["id"], "success": True, "errors": [], "created": False}
    contacts = control(base, "state")["contacts"]
    assert len(contacts) == 1 and contacts[0]["FirstName"] == "Jane" and contacts[0]["App_User_Id__c"] == "user-42"
    r = call(base, "POST", f"{api}/App_Event__e/", headers=h, json_body={"Event_Name__c": "Signup"})
    assert r.status == 201 and r.json["success"] and r.json["errors"][0]["statusCode"] == "OPERATION_ENQUEUED"
    assert call(base, "POST", f"{api}/Unknown__e/", headers=h, json_body={"X__c": "1"}).status == 404


# ---- Creatio ------------------------------------------------------------------------------------
def test_creatio_login_failure_is_http_200(u):
    r = call(u["creatio"], "POST", "/ServiceModel/AuthService.svc/Login", headers={"ForceUseSession": "true"},
             json_body={"UserName": "Supervisor", "UserPassword": "wrong"})
    assert r.status == 200 and r.json["Code"] != 0 and r.headers.get_all("Set-Cookie") is None
    assert r.json == {"Code": 1, "Message": "Invalid username or password specified", "Exception": None,
                      "PasswordChangeUrl": None, "RedirectUrl": None}


def test_creatio_auth_rules(u):
    base = u["creatio"]
    jar = creatio_login(u)
    path = "/0/odata/Contact?$select=Id&$top=1"
    assert call(base, "GET", path, headers=creatio_headers(jar)).status == 200
    assert call(base, "GET", path, headers=creatio_headers(jar, csrf=False)).status == 403
    no_force = {k: v for k, v in creatio_headers(jar).items() if k != "ForceUseSession"}
    assert call(base, "GET", path, headers=no_force).status == 401
    r = call(base, "GET", path, headers={"Accept": "application/json"})
    assert r.status == 401 and "message" in r.json["error"]
    control(base, "config", {"expire_sessions": True})
    assert call(base, "GET", path, headers=creatio_headers(jar)).status == 401
    control(base, "config", {"unauth_style": "redirect"})
    r = call(base, "GET", path, headers=creatio_headers(jar))
    assert r.status == 302 and "NuiLogin" in r.headers["Location"]


def test_creatio_oauth_identity(u):
    ident = u["creatio_identity"]
    r = call(ident, "POST", "/connect/token", form={"grant_type": "client_credentials", "client_id": "creatio_client",
                                                   "client_secret": "bad"})
    assert r.status == 400 and r.json == {"error": "invalid_client"}
    r = call(ident, "POST", "/connect/token", form={"grant_type": "client_credentials", "client_id": "creatio_client",
                                                   "client_secret": "creatio_secret"})
    assert r.status == 200 and r.json["expires_in"] == 3600 and r.json["token_type"] == "Bearer"
    h = {"Authorization": f"Bearer {r.json['access_token']}", "Accept": "application/json"}
    assert call(u["creatio"], "GET", "/0/odata/Contact?$select=Id&$top=1", headers=h).status == 200
    assert call(u["creatio"], "GET", "/0/odata/Contact", headers={"Authorization": "Bearer nope"}).status == 401
    control(ident, "config", {"expire_sessions": True})
    assert call(u["creatio"], "GET", "/0/odata/Contact", headers=h).status == 401


def test_creatio_contact_crud_and_filter(u):
    base = u["creatio"]
    h = creatio_headers(creatio_login(u))
    h_json = dict(h, **{"Content-Type": "application/json; charset=utf-8; IEEE754Compatible=true"})
    assert call(base, "POST", "/0/odata/Contact", headers=h_json, json_body={"Email": "x@example.com"}).status == 400
    assert call(base, "POST", "/0/odata/Contact", headers=h_json, json_body={"Name": "X", "Plan": "p"}).status == 400
    r = call(base, "POST", "/0/odata/Contact", headers=h_json,
             json_body={"Name": "Jane O'Brien", "Email": "o'brien@example.com", "UsrPlan": "pro"})
    assert r.status == 201, r
    cid = r.json["Id"]
    flt = urllib.parse.quote("Email eq 'o''brien@example.com'")
    r = call(base, "GET", f"/0/odata/Contact?$filter={flt}&$select=Id,Email&$top=2", headers=h)
    assert r.status == 200 and r.json["value"] == [{"Id": cid, "Email": "o'brien@example.com"}]
    assert r.json["@odata.context"].endswith("$metadata#Contact(Id,Email)")
    bad = urllib.parse.quote("Email eq 'o'brien@example.com'")
    assert call(base, "GET", f"/0/odata/Contact?$filter={bad}", headers=h).status == 400
    r = call(base, "PATCH", f"/0/odata/Contact({cid})", headers=dict(h, **{"Content-Type": "application/x-www-form-urlencoded"}),
             body="JobTitle=CEO")
    assert r.status == 415 and "message" in r.json["error"]
    assert call(base, "PATCH", f"/0/odata/Contact('{cid}')", headers=h_json, json_body={"JobTitle": "CEO"}).status == 400
    assert call(base, "PATCH", f"/0/odata/Contact({cid})", headers=h_json, json_body={"JobTitle": "CEO"}).status == 204
    r = call(base, "POST", "/0/odata/Activity", headers=h_json, json_body={
        "Title": "Placed Order", "StartDate": "2026-11-28T19:59:00Z", "DueDate": "2026-11-28T19:59:00Z", "ContactId": cid})
    assert r.status == 201
    state = control(base, "state")
    assert len(state["contacts"]) == 1 and state["contacts"][0]["JobTitle"] == "CEO"
    assert state["activities"][0]["ContactId"] == cid


# ---- HubSpot ------------------------------------------------------------------------------------
def test_creatio_order_is_newest_first_unless_asked(u):
    base = u["creatio"]
    h = creatio_headers(creatio_login(u))
    h_json = dict(h, **{"Content-Type": "application/json; charset=utf-8; IEEE754Compatible=true"})
    ids = []
    for name in ("Old", "New"):
        time.sleep(0.01)  # CreatedOn has millisecond resolution; the Id (random) breaks a tie
        ids.append(call(base, "POST", "/0/odata/Contact", headers=h_json,
                        json_body={"Name": name, "Email": "twin@example.com"}).json["Id"])
    flt = urllib.parse.quote("Email eq 'twin@example.com'")
    r = call(base, "GET", f"/0/odata/Contact?$filter={flt}&$select=Id", headers=h)
    assert [x["Id"] for x in r.json["value"]] == ids[::-1]
    order = urllib.parse.quote("CreatedOn asc,Id asc")
    r = call(base, "GET", f"/0/odata/Contact?$filter={flt}&$select=Id&$orderby={order}&$top=2", headers=h)
    assert r.status == 200 and [x["Id"] for x in r.json["value"]] == ids
    r = call(base, "GET", f"/0/odata/Contact?$select=Id&$orderby=" + urllib.parse.quote("Name desc"), headers=h)
    assert [x["Id"] for x in r.json["value"]] == ids  # descending by Name: "Old" before "New"
    bad = urllib.parse.quote("CreatedOn asc,Nope")
    assert call(base, "GET", f"/0/odata/Contact?$orderby={bad}", headers=h).status == 400


def test_hubspot_auth(u):
    for headers in ({"Authorization": "Bearer pat-na1-wrong"}, {}):
        r = call(u["hubspot"], "GET", "/account-info/v3/details", headers=headers)
        assert r.status == 401
        assert r.json["status"] == "error" and r.json["category"] == "INVALID_AUTHENTICATION"
        assert r.json["message"].startswith("Authentication credentials not found") and r.json["correlationId"]
    for path in ("/account-info/v3/details", "/account-info/2026-03/details/"):
        r = call(u["hubspot"], "GET", path, headers=HS_HEADERS)
        assert r.status == 200 and r.json["portalId"] == 12345678


def test_hubspot_scopes(u):
    base = u["hubspot"]
    control(base, "config", {"scopes": ["crm.objects.contacts.write"]})
    assert call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS).status == 200  # needs none
    r = call(base, "GET", "/crm/objects/2026-03/contacts?limit=1", headers=HS_HEADERS)
    assert r.status == 403 and r.json["category"] == "MISSING_SCOPES"
    assert r.json["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.contacts.read"]
    assert upsert(u, [{"idProperty": "email", "id": "jane@example.com", "properties": {}}]).status == 200
    r = call(base, "POST", "/crm/v3/objects/notes/batch/read", headers=HS_HEADERS, json_body={"inputs": [{"id": "1"}]})
    assert r.status == 403 and r.json["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.contacts.read"]
    assert call(base, "GET", "/crm/v3/properties/contacts", headers=HS_HEADERS).status == 403
    control(base, "config", {"scopes": None})
    assert call(base, "GET", "/crm/objects/2026-03/contacts?limit=1", headers=HS_HEADERS).status == 200


def test_hubspot_rate_limits(u):
    """HubSpot's limits: calls in a rolling ten seconds (headers on every answer but search's),
    search calls per second, and the day's calls. Past one: 429 RATE_LIMITS naming the policy,
    without Retry-After. Refused calls and unauthenticated ones count in none."""
    base = u["hubspot"]
    control(base, "config", {"rate_limits": {"ten_secondly": 2, "search_secondly": 1, "daily": 5}})
    assert call(base, "GET", "/account-info/v3/details", headers={"Authorization": "Bearer pat-na1-wrong"}).status == 401
    answers = [call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429], answers
    assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "2" and answers[0].headers["X-HubSpot-RateLimit-Remaining"] == "1"
    assert answers[1].headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert answers[1].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert answers[1].headers["X-HubSpot-RateLimit-Daily-Remaining"] == "3"
    refused = answers[2]
    assert refused.json["category"] == "RATE_LIMITS" and refused.json["policyName"] == "TEN_SECONDLY_ROLLING", refused
    assert refused.json["message"] == "You have reached your ten_secondly_rolling limit." and "Retry-After" not in refused.headers
    search = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "x@example.com"}]}]}
    searches = [call(base, "POST", "/crm/v3/objects/contacts/search", headers=HS_HEADERS, json_body=search) for _ in range(2)]
    assert [a.status for a in searches] == [200, 429], searches
    assert "X-HubSpot-RateLimit-Max" not in searches[0].headers and searches[1].json["policyName"] == "SECONDLY"
    time.sleep(1.05)
    assert call(base, "POST", "/crm/v3/objects/contacts/search", headers=HS_HEADERS, json_body=search).status == 200
    # Four calls so far today (2 + 2 searches), of 5: one more, then the day is used up, search too.
    control(base, "config", {"rate_limits": {"daily": 5}})
    assert call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS).headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    for method, path, body in (("GET", "/account-info/v3/details", None), ("POST", "/crm/v3/objects/contacts/search", search)):
        r = call(base, method, path, headers=HS_HEADERS, json_body=body)
        assert r.status == 429 and r.json["policyName"] == "DAILY", r
    assert control(base, "state")["throttled"] == {"TEN_SECONDLY_ROLLING": 1, "SECONDLY": 1, "DAILY": 2}


def upsert(u, inputs, path="/crm/v3/objects/contacts/batch/upsert"):
    return call(u["hubspot"], "POST", path, headers=HS_HEADERS, json_body={"inputs": inputs})


def test_hubspot_batch_upsert(u):
    item = {"idProperty": "email", "id": "jane@example.com", "properties": {"firstname": "Jane", "app_plan": "pro"}}
    r = upsert(u, [item])
    assert r.status == 400 and r.json["category"] == "VALIDATION_ERROR" and "app_plan" in r.json["message"]
    assert r.json["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    control(u["hubspot"], "config", {"custom_properties": ["app_plan"]})
    r1 = upsert(u, [item])
    assert r1.status == 200 and r1.json["status"] == "COMPLETE" and r1.json["results"][0]["new"] is True
    item2 = dict(item, id="JANE@example.com", properties={"firstname": "Janet"})
    r2 = upsert(u, [item2], "/crm/objects/2026-03/contacts/batch/upsert")
    assert r2.status == 200 and r2.json["results"][0]["new"] is False
    assert r2.json["results"][0]["id"] == r1.json["results"][0]["id"]
    contacts = control(u["hubspot"], "state")["contacts"]
    assert len(contacts) == 1
    assert contacts[0]["properties"]["firstname"] == "Janet" and contacts[0]["properties"]["app_plan"] == "pro"
    assert upsert(u, [dict(item, properties={"firstname": 5})]).status == 400
    assert upsert(u, [dict(item, idProperty="hs_object_id")]).status == 400
    assert upsert(u, [dict(item, id=f"u{i}@example.com") for i in range(101)]).status == 400
    assert upsert(u, [item, item]).status == 400
    assert upsert(u, [dict(item, properties={"lifecyclestage": "bogus"})]).status == 400
    assert upsert(u, [dict(item, properties={"lifecyclestage": "customer"})]).status == 200


def test_hubspot_properties_create_update(u):
    base = u["hubspot"]
    names = [p["name"] for p in call(base, "GET", "/crm/v3/properties/contacts", headers=HS_HEADERS).json["results"]]
    assert {"email", "firstname", "lastname", "hs_lead_status"} <= set(names) and "app_plan" not in names
    r = call(base, "POST", "/crm/v3/properties/contacts", headers=HS_HEADERS, json_body={
        "name": "app_plan", "label": "Plan", "type": "string", "fieldType": "text", "groupName": "contactinformation"})
    assert r.status == 201
    props = {"email": "jane@example.com", "app_plan": "pro"}
    r = call(base, "POST", "/crm/v3/objects/contacts", headers=HS_HEADERS, json_body={"properties": props})
    assert r.status == 201
    cid = r.json["id"]
    r = call(base, "POST", "/crm/v3/objects/contacts", headers=HS_HEADERS, json_body={"properties": props})
    assert r.status == 409 and f"Existing ID: {cid}" in r.json["message"] and r.json["category"] == "CONFLICT"
    r = call(base, "PATCH", "/crm/v3/objects/contacts/jane%40example.com?idProperty=email", headers=HS_HEADERS,
             json_body={"properties": {"firstname": "Janet"}})
    assert r.status == 200 and r.json["properties"]["firstname"] == "Janet"
    assert call(base, "PATCH", f"/crm/v3/objects/contacts/{cid}", headers=HS_HEADERS,
                json_body={"properties": {"jobtitle": "CEO"}}).status == 200
    assert call(base, "PATCH", "/crm/v3/objects/contacts/999999", headers=HS_HEADERS,
                json_body={"properties": {"jobtitle": "CEO"}}).status == 404
    r = call(base, "PATCH", f"/crm/v3/objects/contacts/{cid}", headers=dict(HS_HEADERS, **{"Content-Type": "text/plain"}),
             body='{"properties": {}}')
    assert r.status == 415


def test_hubspot_events_and_notes(u):
    base = u["hubspot"]
    ev = {"eventName": "pe12345678_placed_order", "email": "jane@example.com", "occurredAt": "2026-11-28T19:59:00Z",
          "uuid": "7f3c2a10-0000-4000-8000-000000000001", "properties": {"order_id": "ORD-1"}}
    assert call(base, "POST", "/events/v3/send", headers=HS_HEADERS, json_body=ev).status == 400  # not defined
    r = call(base, "POST", "/events/v3/event-definitions", headers=HS_HEADERS,
             json_body={"label": "Placed order", "name": "placed_order", "primaryObject": "CONTACT"})
    assert r.status == 201 and r.json["fullyQualifiedName"] == "pe12345678_placed_order"
    r = call(base, "POST", "/events/2026-03/send", headers=HS_HEADERS, json_body=ev)
    assert r.status == 204 and r.raw == b""
    assert call(base, "POST", "/events/v3/send", headers=HS_HEADERS,
                json_body=dict(ev, eventName="placed_order")).status == 400
    assert call(base, "POST", "/events/v3/send", headers=HS_HEADERS,
                json_body={k: v for k, v in ev.items() if k != "email"}).status == 400
    control(base, "config", {"events": ["signed_up"]})
    assert call(base, "POST", "/events/v3/send", headers=HS_HEADERS,
                json_body=dict(ev, eventName="pe12345678_signed_up")).status == 204
    cid = upsert(u, [{"idProperty": "email", "id": "jane@example.com", "properties": {}}]).json["results"][0]["id"]
    assoc = [{"to": {"id": cid}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]
    note = {"properties": {"hs_note_body": "Placed order", "hs_timestamp": "2026-11-28T19:59:00Z"}, "associations": assoc}
    r = call(base, "POST", "/crm/v3/objects/notes", headers=HS_HEADERS, json_body=note)
    assert r.status == 201 and r.json["properties"]["hs_note_body"] == "Placed order"
    r = call(base, "POST", "/crm/v3/objects/notes", headers=HS_HEADERS,
             json_body=dict(note, properties={"hs_note_body": "x"}))
    assert r.status == 400
    assert call(base, "POST", "/crm/v3/objects/notes", headers=HS_HEADERS,
                json_body=dict(note, associations=[])).status == 400
    state = control(base, "state")
    assert len(state["events"]) == 2 and len(state["notes"]) == 1 and state["notes"][0]["associations"] == [cid]


def test_hubspot_a_contacts_notes_are_listed_and_read_back(u):
    base = u["hubspot"]
    cid = upsert(u, [{"idProperty": "email", "id": "jane@example.com", "properties": {}}]).json["results"][0]["id"]
    r = call(base, "GET", f"/crm/objects/2026-03/contacts/{cid}?associations=notes", headers=HS_HEADERS)
    assert r.status == 200 and "associations" not in r.json  # no notes yet: no key at all
    assoc = [{"to": {"id": cid}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]
    ids = [call(base, "POST", "/crm/v3/objects/notes", headers=HS_HEADERS, json_body={
        "properties": {"hs_note_body": f"<p>note {n}</p>", "hs_timestamp": "2026-11-28T19:59:00Z"},
        "associations": assoc}).json["id"] for n in (1, 2)]
    r = call(base, "GET", f"/crm/v3/objects/contacts/{cid}?associations=notes&properties=email", headers=HS_HEADERS)
    assert r.json["associations"] == {"notes": {"results": [{"id": i, "type": "contact_to_note"} for i in ids]}}
    assert call(base, "GET", f"/crm/v3/objects/contacts/{cid}?associations=widgets", headers=HS_HEADERS).status == 400
    read = {"properties": ["hs_note_body"], "propertiesWithHistory": [], "inputs": [{"id": ids[1]}, {"id": ids[0]}]}
    r = call(base, "POST", "/crm/objects/2026-03/notes/batch/read", headers=HS_HEADERS, json_body=read)
    assert r.status == 200 and r.json["status"] == "COMPLETE"
    assert [(x["id"], x["properties"]["hs_note_body"]) for x in r.json["results"]] == [(ids[1], "<p>note 2</p>"),
                                                                                      (ids[0], "<p>note 1</p>")]
    r = call(base, "POST", "/crm/v3/objects/notes/batch/read", headers=HS_HEADERS,
             json_body=dict(read, inputs=[{"id": ids[0]}, {"id": "999999"}]))
    assert r.status == 207 and [x["id"] for x in r.json["results"]] == [ids[0]]
    assert r.json["errors"][0]["category"] == "OBJECT_NOT_FOUND" and r.json["errors"][0]["context"] == {"ids": ["999999"]}
    for bad in ({"inputs": []}, {"inputs": [{"id": 1}]}, {"inputs": [{"id": "1"}] * 101}, dict(read, limit=1)):
        assert call(base, "POST", "/crm/v3/objects/notes/batch/read", headers=HS_HEADERS, json_body=bad).status == 400, bad


def test_hubspot_note_associations_come_in_pages(u):
    """HubSpot lists at most 100 associations inside a record read and up to `limit` (≤ 500) from
    the association list, ids ascending, with `paging.next` while more follow."""
    base = u["hubspot"]
    cid = upsert(u, [{"idProperty": "email", "id": "many@example.com", "properties": {}}]).json["results"][0]["id"]
    assoc = [{"to": {"id": cid}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]
    ids = [call(base, "POST", "/crm/v3/objects/notes", headers=HS_HEADERS, json_body={
        "properties": {"hs_note_body": f"note {n}", "hs_timestamp": "2026-11-28T19:59:00Z"},
        "associations": assoc}).json["id"] for n in range(5)]
    r = call(base, "GET", f"/crm/objects/2026-03/contacts/{cid}/associations/notes?limit=500", headers=HS_HEADERS)
    assert r.status == 200 and r.json == {"results": [{"id": i, "type": "contact_to_note"} for i in ids]}
    control(base, "config", {"association_page_size": 2})
    r = call(base, "GET", f"/crm/v3/objects/contacts/{cid}?associations=notes", headers=HS_HEADERS)
    assert [x["id"] for x in r.json["associations"]["notes"]["results"]] == ids[:2]
    seen, link = [], f"{base}/crm/v3/objects/contacts/{cid}/associations/notes?limit=500"
    while link:
        r = call(base, "GET", link[len(base):], headers=HS_HEADERS)
        assert r.status == 200 and len(r.json["results"]) <= 2
        seen += [x["id"] for x in r.json["results"]]
        link = r.json.get("paging", {}).get("next", {}).get("link")
    assert seen == ids
    for bad in ("limit=0", "limit=501", "after=x"):
        assert call(base, "GET", f"/crm/v3/objects/contacts/{cid}/associations/notes?{bad}", headers=HS_HEADERS).status == 400
    assert call(base, "GET", "/crm/v3/objects/contacts/999999/associations/notes", headers=HS_HEADERS).status == 404
    assert call(base, "GET", f"/crm/v3/objects/contacts/{cid}/associations/notes").status == 401


# ---- control API --------------------------------------------------------------------------------
def test_requests_are_recorded_including_rejected(u):
    base = u["hubspot"]
    call(base, "GET", "/account-info/v3/details?x=1", headers={"Authorization": "Bearer wrong"})
    upsert(u, [{"idProperty": "email", "id": "a@example.com", "properties": {"firstname": "A"}}])
    reqs = control(base, "requests")
    assert [r["method"] for r in reqs] == ["GET", "POST"]
    assert reqs[0]["path"] == "/account-info/v3/details" and reqs[0]["query"] == {"x": ["1"]}
    assert reqs[0]["headers"]["authorization"] == "Bearer wrong" and reqs[0]["at"] > 0
    assert reqs[1]["body"]["inputs"][0]["id"] == "a@example.com"
    r = call(u["salesforce"], "POST", "/services/oauth2/token", form={"grant_type": "client_credentials"})
    assert r.status == 400
    assert control(u["salesforce"], "requests")[0]["body"] == {"grant_type": "client_credentials"}


def test_faults_in_order_then_normal(u):
    base = u["klaviyo"]
    control(base, "faults", {"match": "/api/events", "responses": [
        {"status": 503, "body": None, "headers": {"Retry-After": "2"}},
        {"status": 500}]})
    r = call(base, "GET", "/api/accounts", headers=KL_HEADERS)  # not matching: normal
    assert r.status == 200
    r = call(base, "POST", "/api/events", headers=KL_HEADERS, json_body=klaviyo_event("e1"))
    assert r.status == 503 and r.headers["Retry-After"] == "2" and r.raw == b""
    r = call(base, "POST", "/api/events", headers=KL_HEADERS, json_body=klaviyo_event("e1"))
    assert r.status == 500 and r.json["errors"][0]["status"] == 500  # vendor format when no body given
    assert call(base, "POST", "/api/events", headers=KL_HEADERS, json_body=klaviyo_event("e1")).status == 202
    assert len(control(base, "requests")) == 4 and len(control(base, "state")["events"]) == 1


def test_fault_close_and_hang(u):
    base = u["hubspot"]
    control(base, "faults", {"responses": [{"close": True}, {"hang_s": 2}, {"status": 200, "body": {"ok": 1},
                                                                           "delay_s": 0.2}]})
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS)
    with pytest.raises((urllib.error.URLError, socket.timeout, TimeoutError, OSError)):
        call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS, timeout=0.5)
    started = time.time()
    r = call(base, "GET", "/account-info/v3/details", headers=HS_HEADERS)
    assert r.status == 200 and r.json == {"ok": 1} and time.time() - started >= 0.2


def test_fault_lost_answer_keeps_the_effect(u):
    base, h = u["salesforce"], sf_headers(sf_token(u))
    api = "/services/data/v62.0"
    control(base, "faults", {"responses": [{"lost": True}], "match": f"{api}/sobjects/Contact", "method": "POST"})
    assert call(base, "GET", f"{api}/sobjects/Contact/003FAKE00000999AAA", headers=h).status == 404  # not a POST
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(base, "POST", f"{api}/sobjects/Contact/", headers=h, json_body={"LastName": "Lost"})
    assert [c["LastName"] for c in control(base, "state")["contacts"]] == ["Lost"]
    assert call(base, "POST", f"{api}/sobjects/Contact/", headers=h, json_body={"LastName": "Kept"}).status == 201


def test_down_mode(u):
    expectations = {
        "klaviyo": lambda b: b["errors"][0]["status"] == 503,
        "salesforce": lambda b: b[0]["errorCode"] == "SERVER_UNAVAILABLE",
        "hubspot": lambda b: b["status"] == "error",
        "creatio": lambda b: "message" in b["error"],
        "creatio_identity": lambda b: b["error"] == "temporarily_unavailable",
    }
    for name, check in expectations.items():
        control(u[name], "down", {"down": True, "retry_after": 3})
        r = call(u[name], "GET", "/anything")
        assert r.status == 503 and check(r.json) and r.headers["Retry-After"] == "3", (name, r)
        control(u[name], "down", {"down": False})
    assert call(u["hubspot"], "GET", "/account-info/v3/details", headers=HS_HEADERS).status == 200


def test_config_and_reset(u):
    base = u["klaviyo"]
    control(base, "config", {"api_key": "pk_rotated"})
    assert call(base, "GET", "/api/accounts", headers=KL_HEADERS).status == 401
    h = dict(KL_HEADERS, Authorization="Klaviyo-API-Key pk_rotated")
    assert call(base, "GET", "/api/accounts", headers=h).status == 200
    control(base, "reset")
    assert call(base, "GET", "/api/accounts", headers=KL_HEADERS).status == 200
    assert len(control(base, "requests")) == 1  # reset cleared the earlier ones
    control(u["hubspot"], "config", {"token": "pat-other"})
    control(base, "reset", {"all": True})
    assert call(u["hubspot"], "GET", "/account-info/v3/details", headers=HS_HEADERS).status == 200
    assert control(u["hubspot"], "requests")[-1]["path"] == "/account-info/v3/details"
    assert len(control(u["hubspot"], "requests")) == 1


# ---- as a process -------------------------------------------------------------------------------
def test_runs_as_process_and_stops_on_sigterm():
    with tempfile.TemporaryDirectory() as tmp:
        ports = os.path.join(tmp, "ports.json")
        proc = subprocess.Popen([sys.executable, str(HERE / "fake_crm.py"), "--ports-file", ports],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            urls = json.loads(line)
            assert set(urls) == {"klaviyo", "salesforce", "creatio", "creatio_identity", "hubspot"}
            with open(ports) as fh:
                assert json.load(fh) == urls
            assert call(urls["hubspot"], "GET", "/account-info/v3/details", headers=HS_HEADERS).status == 200
            assert call(urls["klaviyo"], "GET", "/__fake__/requests").json == []
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and out == ""
