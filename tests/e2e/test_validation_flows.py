"""Credential flows end to end: POST /crm/validate and POST /crm/connect through nginx, for every
CRM type and every credential shape of API.md, against the strict fake CRMs.

For each flow the fake is configured with fresh random credentials (so a value the worker sends
can only have come from the request, and a leaked value is unique enough to grep for), then:

  right credentials  -> validate 200 valid:true (+ account), connect 200
  wrong credentials  -> validate 200 valid:false,             connect 400, nothing stored
  CRM down (5xx)     -> validate 502 {"detail": str},         connect 502, nothing stored

and what the fake received is checked (auth headers, grant types, API paths, revision header...).
Also here: 422 for missing credential keys and for private/non-https URLs
(CRM_ALLOW_PRIVATE_URLS=false), reconnect semantics, the field_mapping deprecation, and the
secrets checks (encrypted column, no secret in any response or log line, disconnect destroys).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from crm_harness import TEST_ENCRYPTION_KEY, Service

SF_API_VERSION = "v62.0"  # the contract's default (CRM_SALESFORCE_API_VERSION is not set by the harness)
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def rnd(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def hdr(user: str) -> dict:
    return {"X-User-Id": user}


# ------------------------------------------------------------------------------------------ RSA keys


def _openssl(*args, input_bytes: bytes | None = None) -> bytes:
    result = subprocess.run(["openssl", *args], input=input_bytes, capture_output=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
    return result.stdout


@dataclass
class RSAKey:
    private_pem: str
    public_pem: str
    path: str

    def verify(self, data: bytes, signature: bytes) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            pub, sig, msg = (os.path.join(tmp, n) for n in ("pub.pem", "sig.bin", "msg.bin"))
            for name, content in ((pub, self.public_pem.encode()), (sig, signature), (msg, data)):
                with open(name, "wb") as fh:
                    fh.write(content)
            return subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, msg],
                                  capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def rsa_keys():
    """Two fresh RSA key pairs made with `openssl genrsa`: [registered with the fake, a stranger]."""
    tmp = tempfile.mkdtemp(prefix="crm-e2e-rsa-")
    keys = []
    try:
        for i in range(2):
            path = os.path.join(tmp, f"key{i}.pem")
            _openssl("genrsa", "-out", path, "2048")
            private_pem = open(path).read()
            public_pem = _openssl("rsa", "-in", path, "-pubout").decode()
            keys.append(RSAKey(private_pem, public_pem, path))
        yield keys
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def b64url_json(part: str):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64url_bytes(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ------------------------------------------------------------------------------------------ flows


@dataclass
class Flow:
    """One credential flow, configured on the fakes with fresh random credentials."""
    name: str
    crm_type: str
    good: dict
    bad: dict
    secrets: list                      # plaintext secret values (never to be seen again)
    down_vendors: list                 # vendors whose outage must give 502
    check_good: Callable               # (fakes, response_json) -> None: what the fake received on success
    check_bad: Callable | None = None  # (fakes) -> None
    account: dict | None = None        # expected `account` of a valid answer (subset)
    extra: dict = field(default_factory=dict)


def _requests(fakes, vendor):
    return list(fakes.requests(vendor))


def _path(r) -> str:
    return r["path"].rstrip("/") or "/"


def _sf_resource_calls(fakes):
    return [r for r in fakes.requests("salesforce")
            if r["method"] == "GET" and _path(r) == f"/services/data/{SF_API_VERSION}"]


def _sf_token_calls(fakes):
    return [r for r in fakes.requests("salesforce") if _path(r) == "/services/oauth2/token"]


def _assert_bearer(request, token=None) -> str:
    auth = request["headers"].get("authorization", "")
    assert auth.startswith("Bearer "), f"expected a Bearer token, got {auth!r} in {request}"
    value = auth[len("Bearer "):]
    assert value, request
    if token is not None:
        assert value == token, f"expected Bearer {token!r}, got {value!r}"
    return value


def flow_klaviyo(fakes, keys) -> Flow:
    key = rnd("pk_")
    account_id, org = rnd("ACCT_"), "Org " + secrets.token_hex(4)
    fakes.config("klaviyo", {"api_key": key, "account_id": account_id, "organization_name": org})

    def check(fakes, body):
        reqs = _requests(fakes, "klaviyo")
        assert reqs, "the worker never called Klaviyo"
        for r in reqs:
            h = r["headers"]
            assert h.get("authorization") == f"Klaviyo-API-Key {key}", h
            rev = h.get("revision", "")
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", rev), f"revision header {rev!r}"
            assert "2025-01-01" <= rev <= dt.date.today().isoformat(), f"retired or future revision {rev}"
            assert "application/vnd.api+json" in h.get("accept", "") or "application/json" in h.get("accept", ""), h
        assert any(r["method"] == "GET" and _path(r) == "/api/accounts" for r in reqs), reqs

    return Flow("klaviyo", "klaviyo", {"api_key": key}, {"api_key": rnd("pk_wrong_")}, [key], ["klaviyo"],
                check, account={"id": account_id, "name": org})


def flow_sf_client_credentials(fakes, keys) -> Flow:
    client_id, client_secret = rnd("cid_"), rnd("csec_")
    org_id = "00D" + secrets.token_hex(6).upper()
    fakes.config("salesforce", {"client_id": client_id, "client_secret": client_secret, "org_id": org_id})
    instance = fakes.urls["salesforce"]

    def check(fakes, body):
        tokens = _sf_token_calls(fakes)
        assert len(tokens) == 1, tokens
        t = tokens[0]
        assert t["method"] == "POST"
        expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        assert t["headers"].get("authorization") == expected, t["headers"]
        assert t["headers"].get("content-type", "").startswith("application/x-www-form-urlencoded")
        assert t["body"].get("grant_type") == "client_credentials", t["body"]
        calls = _sf_resource_calls(fakes)
        assert len(calls) == 1, fakes.requests("salesforce")
        token = _assert_bearer(calls[0])
        assert token.startswith("00DFAKE!"), token
        assert body["account"]["organization_id"] == org_id
        assert body["account"]["instance_url"].rstrip("/") == instance

    return Flow("salesforce-client-credentials", "salesforce",
                {"client_id": client_id, "client_secret": client_secret, "instance_url": instance},
                {"client_id": client_id, "client_secret": rnd("wrong_"), "instance_url": instance},
                [client_secret], ["salesforce"], check)


def flow_sf_jwt(fakes, keys) -> Flow:
    registered, stranger = keys
    client_id, username = rnd("cid_"), f"{rnd('jwt_')}@example.com"
    fakes.config("salesforce", {"client_id": client_id, "username": username,
                                "jwt_public_key": registered.public_pem})
    login = fakes.urls["salesforce"]

    def check(fakes, body):
        tokens = _sf_token_calls(fakes)
        assert len(tokens) == 1, tokens
        form = tokens[0]["body"]
        assert form.get("grant_type") == JWT_GRANT, form
        assertion = form.get("assertion", "")
        parts = assertion.split(".")
        assert len(parts) == 3, assertion
        header, claims = b64url_json(parts[0]), b64url_json(parts[1])
        assert header.get("alg") == "RS256", header
        assert claims.get("iss") == client_id and claims.get("sub") == username, claims
        assert claims.get("aud", "").rstrip("/") == login, claims
        now = time.time()
        assert now < claims["exp"] <= now + 600, f"exp {claims['exp']} should be a few minutes ahead of {now}"
        assert registered.verify(f"{parts[0]}.{parts[1]}".encode(), b64url_bytes(parts[2])), \
            "the assertion is not signed with the credentials' private key"
        calls = _sf_resource_calls(fakes)
        assert len(calls) == 1
        _assert_bearer(calls[0])

    def check_bad(fakes):
        tokens = _sf_token_calls(fakes)
        assert len(tokens) == 1 and tokens[0]["body"].get("grant_type") == JWT_GRANT, tokens
        assert not _sf_resource_calls(fakes), "no API call may follow a refused JWT grant"

    return Flow("salesforce-jwt", "salesforce",
                {"client_id": client_id, "username": username, "private_key": registered.private_pem},
                {"client_id": client_id, "username": username, "private_key": stranger.private_pem},
                [registered.private_pem], ["salesforce"], check, check_bad)


def flow_sf_token(fakes, keys) -> Flow:
    token = "00DFAKE!" + secrets.token_urlsafe(24)
    fakes.config("salesforce", {"access_tokens": [token]})
    instance = fakes.urls["salesforce"]

    def check(fakes, body):
        assert not _sf_token_calls(fakes), "a valid access token needs no token request"
        calls = _sf_resource_calls(fakes)
        assert len(calls) == 1
        _assert_bearer(calls[0], token)

    return Flow("salesforce-token", "salesforce",
                {"access_token": token, "instance_url": instance},
                {"access_token": "00DFAKE!" + secrets.token_urlsafe(24), "instance_url": instance},
                [token], ["salesforce"], check)


def flow_sf_refresh(fakes, keys) -> Flow:
    client_id, client_secret, refresh = rnd("cid_"), rnd("csec_"), "5Aep" + secrets.token_urlsafe(20)
    stale = "00DFAKE!" + secrets.token_urlsafe(24)  # never issued: the API answers 401
    fakes.config("salesforce", {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh})
    instance = fakes.urls["salesforce"]

    def check(fakes, body):
        calls = _sf_resource_calls(fakes)
        assert len(calls) == 2, f"expected a 401 call and a retry, got {fakes.requests('salesforce')}"
        _assert_bearer(calls[0], stale)
        tokens = _sf_token_calls(fakes)
        assert len(tokens) == 1, tokens
        form = tokens[0]["body"]
        assert form.get("grant_type") == "refresh_token" and form.get("refresh_token") == refresh, form
        assert form.get("client_id") == client_id, form
        fresh = _assert_bearer(calls[1])
        assert fresh != stale and fresh.startswith("00DFAKE!")

    return Flow("salesforce-refresh", "salesforce",
                {"access_token": stale, "instance_url": instance, "refresh_token": refresh,
                 "client_id": client_id, "client_secret": client_secret},
                {"access_token": stale, "instance_url": instance, "refresh_token": "5Aep" + secrets.token_urlsafe(20),
                 "client_id": client_id, "client_secret": client_secret},
                [stale, refresh, client_secret], ["salesforce"], check)


def flow_sf_password(fakes, keys) -> Flow:
    client_id, client_secret = rnd("cid_"), rnd("csec_")
    username, password, sec_token = f"{rnd('u')}@example.com", rnd("pw_"), rnd("st")
    fakes.config("salesforce", {"client_id": client_id, "client_secret": client_secret, "username": username,
                                "password": password, "security_token": sec_token})

    def check(fakes, body):
        tokens = _sf_token_calls(fakes)
        assert len(tokens) == 1, tokens
        form = tokens[0]["body"]
        assert form.get("grant_type") == "password", form
        assert form.get("username") == username and form.get("password") == password + sec_token, form
        basic = tokens[0]["headers"].get("authorization", "")
        sent = (form.get("client_id"), form.get("client_secret"))
        if basic.startswith("Basic "):
            sent = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))
        assert sent == (client_id, client_secret), sent
        calls = _sf_resource_calls(fakes)
        assert len(calls) == 1
        _assert_bearer(calls[0])

    good = {"client_id": client_id, "client_secret": client_secret, "username": username,
            "password": password, "security_token": sec_token}
    return Flow("salesforce-password", "salesforce", good, dict(good, password=rnd("wrongpw_")),
                [client_secret, password, sec_token], ["salesforce"], check)


def flow_creatio_forms(fakes, keys) -> Flow:
    password = rnd("cr_pw_")
    fakes.config("creatio", {"password": password})
    base = fakes.urls["creatio"]

    def check(fakes, body):
        reqs = _requests(fakes, "creatio")
        logins = [r for r in reqs if _path(r) == "/ServiceModel/AuthService.svc/Login"]
        assert len(logins) == 1 and logins[0]["method"] == "POST", reqs
        assert logins[0]["body"] == {"UserName": "Supervisor", "UserPassword": password}, logins[0]["body"]
        odata = [r for r in reqs if _path(r).startswith("/0/odata/")]
        assert odata, f"no OData call after the login: {reqs}"
        h = odata[0]["headers"]
        jar = dict(p.strip().split("=", 1) for p in h.get("cookie", "").split(";") if "=" in p)
        assert jar.get(".ASPXAUTH"), f"no .ASPXAUTH session cookie sent: {h}"
        assert jar.get("BPMCSRF") and h.get("bpmcsrf") == jar["BPMCSRF"], f"BPMCSRF header must equal the cookie: {h}"
        assert h.get("forceusesession", "").lower() == "true", h
        assert body["account"]["base_url"].rstrip("/") == base

    def check_bad(fakes):
        reqs = _requests(fakes, "creatio")
        assert [_path(r) for r in reqs] == ["/ServiceModel/AuthService.svc/Login"], \
            f"a failed login (HTTP 200, Code 1) must not be followed by OData calls: {reqs}"

    return Flow("creatio-forms", "creatio",
                {"base_url": base, "username": "Supervisor", "password": password},
                {"base_url": base, "username": "Supervisor", "password": rnd("wrong_")},
                [password], ["creatio"], check, check_bad)


def flow_creatio_oauth(fakes, keys) -> Flow:
    client_id, client_secret = rnd("crc_"), rnd("crs_")
    fakes.config("creatio_identity", {"client_id": client_id, "client_secret": client_secret})
    base, identity = fakes.urls["creatio"], fakes.urls["creatio_identity"]

    def check(fakes, body):
        ids = _requests(fakes, "creatio_identity")
        assert len(ids) == 1 and ids[0]["method"] == "POST" and _path(ids[0]) == "/connect/token", ids
        form = ids[0]["body"]
        assert form.get("grant_type") == "client_credentials", form
        basic = ids[0]["headers"].get("authorization", "")
        sent = (form.get("client_id"), form.get("client_secret"))
        if basic.startswith("Basic "):
            sent = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))
        assert sent == (client_id, client_secret), sent
        odata = [r for r in _requests(fakes, "creatio") if _path(r).startswith("/0/odata/")]
        assert odata, fakes.requests("creatio")
        _assert_bearer(odata[0])
        assert "cookie" not in odata[0]["headers"], "OAuth sessions need no cookies"

    def check_bad(fakes):
        assert not _requests(fakes, "creatio"), "no OData call after a refused token request"

    return Flow("creatio-oauth", "creatio",
                {"base_url": base, "identity_url": identity, "client_id": client_id, "client_secret": client_secret},
                {"base_url": base, "identity_url": identity, "client_id": client_id, "client_secret": rnd("wrong_")},
                [client_secret], ["creatio_identity", "creatio"], check, check_bad)


def flow_hubspot(fakes, keys) -> Flow:
    token = rnd("pat-na1-")
    portal = int(secrets.randbelow(10**8)) + 10**7
    fakes.config("hubspot", {"token": token, "portal_id": portal})

    def check(fakes, body):
        reqs = _requests(fakes, "hubspot")
        calls = [r for r in reqs if re.fullmatch(r"/account-info/[^/]+/details", _path(r))]
        assert len(calls) == 1 and calls[0]["method"] == "GET", reqs
        _assert_bearer(calls[0], token)

    return Flow("hubspot", "hubspot", {"access_token": token}, {"access_token": rnd("pat-na1-wrong")},
                [token], ["hubspot"], check, account={"portal_id": portal})


FLOWS = {
    "klaviyo": flow_klaviyo,
    "salesforce-client-credentials": flow_sf_client_credentials,
    "salesforce-jwt": flow_sf_jwt,
    "salesforce-token": flow_sf_token,
    "salesforce-refresh": flow_sf_refresh,
    "salesforce-password": flow_sf_password,
    "creatio-forms": flow_creatio_forms,
    "creatio-oauth": flow_creatio_oauth,
    "hubspot": flow_hubspot,
}

DOWN_CASES = [(name, vendor) for name, make in FLOWS.items()
              for vendor in {"creatio-oauth": ["creatio_identity", "creatio"]}.get(name, [None])]


@pytest.fixture
def flow_maker(fakes, rsa_keys):
    return lambda name: FLOWS[name](fakes, rsa_keys)


def validate(service, user, crm_type, credentials):
    return service.post("/crm/validate", headers=hdr(user), json={"crm_type": crm_type, "credentials": credentials})


def connect(service, user, crm_type, credentials, settings=None):
    body = {"crm_type": crm_type, "credentials": credentials}
    if settings is not None:
        body["settings"] = settings
    return service.post("/crm/connect", headers=hdr(user), json=body)


def stored_rows(pg, user, crm_type=None) -> int:
    if crm_type is None:
        return int(pg.sql("SELECT count(*) FROM crm.crm_integrations WHERE user_id = $1", user)[0][0])
    return int(pg.sql("SELECT count(*) FROM crm.crm_integrations WHERE user_id = $1 AND crm_type = $2",
                      user, crm_type)[0][0])


def is_json_response(r) -> bool:
    return r.headers.get("content-type", "").startswith("application/json")


def parse_ts(value: str) -> dt.datetime:
    assert isinstance(value, str) and value, value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize("name", list(FLOWS))
def test_validate_right_credentials_are_valid(service, fakes, flow_maker, user_id, pg, name):
    flow = flow_maker(name)
    r = validate(service, user_id, flow.crm_type, flow.good)
    assert r.status == 200, r
    assert is_json_response(r)
    body = r.json()
    assert body["crm_type"] == flow.crm_type and body["valid"] is True, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"crm_type", "valid", "detail", "account"}, body
    assert isinstance(body.get("account"), dict), body
    for k, v in (flow.account or {}).items():
        assert body["account"].get(k) == v, body
    flow.check_good(fakes, body)
    # validate saves nothing
    assert stored_rows(pg, user_id) == 0


@pytest.mark.parametrize("name", list(FLOWS))
def test_validate_wrong_credentials_are_invalid(service, fakes, flow_maker, user_id, pg, name):
    flow = flow_maker(name)
    r = validate(service, user_id, flow.crm_type, flow.bad)
    assert r.status == 200, r
    body = r.json()
    assert body["crm_type"] == flow.crm_type and body["valid"] is False, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert "account" not in body or body["account"] is None, body
    if flow.check_bad:
        flow.check_bad(fakes)
    assert stored_rows(pg, user_id) == 0


@pytest.mark.parametrize("name,vendor", DOWN_CASES)
def test_validate_crm_down_is_502(service, fakes, flow_maker, user_id, name, vendor):
    flow = flow_maker(name)
    for v in ([vendor] if vendor else flow.down_vendors):
        fakes.down(v)
    r = validate(service, user_id, flow.crm_type, flow.good)
    assert r.status == 502, r
    assert is_json_response(r)
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    assert any(fakes.requests(v) for v in ([vendor] if vendor else flow.down_vendors)), \
        "the worker never tried the CRM"


def test_validate_salesforce_token_is_refreshed_after_the_fake_expires_it(service, fakes, user_id):
    """A stored token works; the fake then expires every session; the worker refreshes with the
    refresh_token and the credentials are still valid."""
    client_id, refresh = rnd("cid_"), "5Aep" + secrets.token_urlsafe(20)
    token = "00DFAKE!" + secrets.token_urlsafe(24)
    fakes.config("salesforce", {"client_id": client_id, "refresh_token": refresh, "access_tokens": [token]})
    creds = {"access_token": token, "instance_url": fakes.urls["salesforce"], "refresh_token": refresh,
             "client_id": client_id}
    r = validate(service, user_id, "salesforce", creds)
    assert r.status == 200 and r.json()["valid"] is True, r
    assert not _sf_token_calls(fakes)

    fakes.config("salesforce", {"expire_sessions": True})
    before = len(fakes.requests("salesforce"))
    r = validate(service, user_id, "salesforce", creds)
    assert r.status == 200, r
    assert r.json()["valid"] is True, r.json()
    after = fakes.requests("salesforce")[before:]
    paths = [(x["method"], _path(x)) for x in after]
    assert paths == [("GET", f"/services/data/{SF_API_VERSION}"), ("POST", "/services/oauth2/token"),
                     ("GET", f"/services/data/{SF_API_VERSION}")], paths
    assert after[1]["body"].get("grant_type") == "refresh_token"
    assert after[1]["body"].get("refresh_token") == refresh and after[1]["body"].get("client_id") == client_id
    _assert_bearer(after[0], token)
    assert _assert_bearer(after[2]) != token


def test_validate_salesforce_expired_token_without_refresh_token_is_invalid(service, fakes, user_id):
    token = "00DFAKE!" + secrets.token_urlsafe(24)
    fakes.config("salesforce", {"access_tokens": [token]})
    fakes.config("salesforce", {"expire_sessions": True})
    r = validate(service, user_id, "salesforce", {"access_token": token, "instance_url": fakes.urls["salesforce"]})
    assert r.status == 200, r
    assert r.json()["valid"] is False
    assert not _sf_token_calls(fakes), "nothing to refresh with: no token request"


def test_validate_salesforce_jwt_wrong_username_is_invalid(service, fakes, flow_maker, user_id):
    flow = flow_maker("salesforce-jwt")
    r = validate(service, user_id, "salesforce", dict(flow.good, username="someone-else@example.com"))
    assert r.status == 200 and r.json()["valid"] is False, r


def test_validate_salesforce_jwt_with_explicit_login_url(service, fakes, flow_maker, user_id):
    flow = flow_maker("salesforce-jwt")
    r = validate(service, user_id, "salesforce", dict(flow.good, login_url=fakes.urls["salesforce"] + "/"))
    assert r.status == 200 and r.json()["valid"] is True, r
    flow.check_good(fakes, r.json())


def test_validate_salesforce_jwt_unusable_pem_is_not_valid_and_not_a_5xx(service, fakes, flow_maker, user_id):
    flow = flow_maker("salesforce-jwt")
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    r = validate(service, user_id, "salesforce", dict(flow.good, private_key=garbage))
    assert r.status in (200, 422), r
    if r.status == 200:
        assert r.json()["valid"] is False


def test_validate_creatio_failed_login_is_http_200_code_1_and_invalid(service, fakes, flow_maker, user_id):
    """Creatio answers a failed forms login with HTTP 200 and Code 1: that must read as valid:false."""
    flow = flow_maker("creatio-forms")
    r = validate(service, user_id, "creatio", flow.bad)
    assert r.status == 200 and r.json()["valid"] is False, r
    login = fakes.requests("creatio")[0]
    assert login["body"]["UserPassword"] == flow.bad["password"]


def test_validate_hubspot_token_without_the_contacts_scope_is_invalid_and_not_connected(service, fakes, pg, user_id):
    """HubSpot's account details need no scope: a token that cannot read contacts passed, was
    stored, and then failed every sync. Validation now reads one contact and names the scope."""
    fakes.config("hubspot", {"scopes": ["crm.objects.contacts.write"]})
    r = validate(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"})
    assert r.status == 200, r
    body = r.json()
    assert body["valid"] is False and "missing scope crm.objects.contacts.read" in body["detail"], body
    r = connect(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"})
    assert r.status == 400 and "crm.objects.contacts.read" in r.json()["detail"], r
    assert stored_rows(pg, user_id) == 0
    fakes.config("hubspot", {"scopes": ["crm.objects.contacts.read", "crm.objects.contacts.write"]})
    r = validate(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"})
    assert r.status == 200 and r.json()["valid"] is True, r


def test_validate_klaviyo_revision_comes_from_config(service_factory, fakes, user_id):
    svc = service_factory(CRM_KLAVIYO_REVISION="2025-07-15")
    r = validate(svc, user_id, "klaviyo", {"api_key": "pk_test_valid_key"})
    assert r.status == 200 and r.json()["valid"] is True, r
    assert [x["headers"].get("revision") for x in fakes.requests("klaviyo")] == ["2025-07-15"]


def test_validate_salesforce_api_version_comes_from_config(service_factory, fakes, flow_maker, user_id):
    flow = flow_maker("salesforce-token")
    svc = service_factory(CRM_SALESFORCE_API_VERSION="v60.0")
    r = validate(svc, user_id, "salesforce", flow.good)
    assert r.status == 200 and r.json()["valid"] is True, r
    assert [_path(x) for x in fakes.requests("salesforce")] == ["/services/data/v60.0"]


# ------------------------------------------------------------------------------------------ 422s


MISSING_KEYS = [
    ("klaviyo", {}, ["api_key"]),
    ("hubspot", {}, ["access_token"]),
    ("klaviyo", {"api_key": ""}, None),
    ("salesforce", {}, None),
    ("salesforce", {"client_id": "x", "client_secret": "y"}, ["instance_url"]),
    ("salesforce", {"client_id": "x", "username": "u@example.com", "private_key": None}, None),
    ("salesforce", {"access_token": "tok"}, ["instance_url"]),
    ("salesforce", {"client_id": "x", "client_secret": "y", "username": "u@example.com"}, ["password"]),
    ("creatio", {"base_url": "https://example.creatio.com"}, None),
    ("creatio", {"username": "Supervisor", "password": "p"}, ["base_url"]),
    ("creatio", {"base_url": "https://example.creatio.com", "client_id": "c", "client_secret": "s"}, ["identity_url"]),
]


@pytest.mark.parametrize("crm_type,credentials,missing", MISSING_KEYS,
                         ids=[f"{t}-{'-'.join(c) or 'empty'}" for t, c, _ in MISSING_KEYS])
@pytest.mark.parametrize("endpoint", ["/crm/validate", "/crm/connect"])
def test_missing_credential_keys_are_422(service, fakes, pg, user_id, endpoint, crm_type, credentials, missing):
    r = service.post(endpoint, headers=hdr(user_id), json={"crm_type": crm_type, "credentials": credentials})
    assert r.status == 422, r
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for issue in detail:
        assert set(issue) >= {"loc", "msg", "type"}, issue
        assert issue["loc"][:2] == ["body", "credentials"], issue
    if missing:
        locs = [tuple(i["loc"]) for i in detail]
        for key in missing:
            assert ("body", "credentials", key) in locs, locs
    for vendor in fakes.urls:
        assert not fakes.requests(vendor), f"{vendor} was called for invalid credentials"
    assert stored_rows(pg, user_id) == 0


@pytest.mark.parametrize("body,loc", [
    ({"crm_type": "pipedrive", "credentials": {"api_key": "x"}}, ["body", "crm_type"]),
    ({"credentials": {"api_key": "x"}}, ["body", "crm_type"]),
    ({"crm_type": "klaviyo"}, ["body", "credentials"]),
    ({"crm_type": "klaviyo", "credentials": "pk_test_valid_key"}, ["body", "credentials"]),
    ({"crm_type": "klaviyo", "credentials": {"api_key": 123}}, ["body", "credentials", "api_key"]),
])
@pytest.mark.parametrize("endpoint", ["/crm/validate", "/crm/connect"])
def test_bad_body_is_422_with_loc(service, fakes, user_id, endpoint, body, loc):
    r = service.post(endpoint, headers=hdr(user_id), json=body)
    assert r.status == 422, r
    locs = [i["loc"] for i in r.json()["detail"]]
    assert loc in locs, locs
    assert not fakes.requests("klaviyo")


def test_connect_with_invalid_settings_is_422_and_the_crm_is_not_called(service, fakes, pg, user_id):
    r = connect(service, user_id, "salesforce",
                {"client_id": "sf_client_id", "client_secret": "sf_client_secret",
                 "instance_url": fakes.urls["salesforce"]}, settings={"object": "Account"})
    assert r.status == 422, r
    assert ["body", "settings", "object"] in [i["loc"] for i in r.json()["detail"]]
    assert not fakes.requests("salesforce")
    assert stored_rows(pg, user_id) == 0


# ------------------------------------------------------------------------------------------ URL guard


def _loopback_hostnames() -> list:
    names = []
    try:
        for line in open("/etc/hosts"):
            parts = line.split("#")[0].split()
            if len(parts) >= 2 and parts[0].startswith("127."):
                names += [n for n in parts[1:] if n != "localhost" and "." not in n]
    except OSError:
        pass
    return names[:1]


@pytest.fixture
def strict_service(service_factory):
    """An instance with CRM_ALLOW_PRIVATE_URLS=false (and the vendors' public defaults, which it
    must accept at start-up)."""
    return service_factory(CRM_ALLOW_PRIVATE_URLS="false", CRM_KLAVIYO_BASE_URL=None,
                           CRM_HUBSPOT_BASE_URL=None, CRM_SALESFORCE_LOGIN_URL=None)


def test_private_and_non_https_credential_urls_are_422(strict_service, fakes, pg, user_id):
    cr, ident, sf = fakes.urls["creatio"], fakes.urls["creatio_identity"], fakes.urls["salesforce"]
    port = sf.rsplit(":", 1)[1]
    hosts = ["https://127.0.0.1:" + port, "https://localhost:" + port, "https://127.1:" + port,
             "https://2130706433:" + port, "https://[::1]:" + port, "https://[::ffff:127.0.0.1]:" + port,
             "https://0.0.0.0:" + port, "https://10.1.2.3", "https://172.16.5.4", "https://192.168.1.1",
             "https://169.254.169.254", "https://100.64.0.1"]
    hosts += [f"https://{name}:{port}" for name in _loopback_hostnames()]
    cases = []
    for url in [cr, "http://crm.example.com"] + hosts:  # the fake itself (http://127.0.0.1), plain http
        cases.append(("creatio", {"base_url": url, "username": "Supervisor", "password": "creatio_pass"}, "base_url"))
    for url in [sf, "http://login.example.com"] + hosts:
        cases.append(("salesforce", {"client_id": "sf_client_id", "client_secret": "sf_client_secret",
                                     "instance_url": url}, "instance_url"))
    cases.append(("salesforce", {"access_token": "00DFAKE!x", "instance_url": sf}, "instance_url"))
    cases.append(("salesforce", {"client_id": "sf_client_id", "username": "sf_user@example.com",
                                 "private_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
                                 "login_url": sf}, "login_url"))
    cases.append(("creatio", {"base_url": "https://crm.example.com", "identity_url": ident,
                              "client_id": "creatio_client", "client_secret": "creatio_secret"}, "identity_url"))
    failures = []
    for endpoint in ("/crm/validate", "/crm/connect"):
        for crm_type, creds, key in cases:
            r = strict_service.post(endpoint, headers=hdr(user_id), json={"crm_type": crm_type, "credentials": creds})
            url = creds[key]
            if r.status != 422:
                failures.append(f"{endpoint} {crm_type} {key}={url}: {r.status} {r.text[:200]}")
                continue
            locs = [i["loc"] for i in r.json()["detail"]]
            if ["body", "credentials", key] not in locs:
                failures.append(f"{endpoint} {crm_type} {key}={url}: 422 but loc {locs}")
    assert not failures, "URLs that must be refused with 422:\n" + "\n".join(failures)
    for vendor in fakes.urls:
        assert not fakes.requests(vendor), f"the guard let a request reach {vendor}"
    assert stored_rows(pg, user_id) == 0


def test_private_crm_url_in_config_stops_the_worker_at_startup(pg, fakes):
    svc = Service(pg.dsn, fakes.urls, {"CRM_ALLOW_PRIVATE_URLS": "false"}, start=False)
    try:
        result = svc.run_cli("serve", timeout=20)
        assert result.returncode != 0, "serve started with CRM_KLAVIYO_BASE_URL=http://127.0.0.1:…"
        assert "CRM_KLAVIYO_BASE_URL" in result.stderr + result.stdout
    finally:
        shutil.rmtree(svc.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ connect


@pytest.mark.parametrize("name", list(FLOWS))
def test_connect_right_credentials(service, fakes, flow_maker, pg, user_id, name):
    flow = flow_maker(name)
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    r = connect(service, user_id, flow.crm_type, flow.good)
    assert r.status == 200, r
    assert is_json_response(r)
    body = r.json()
    assert set(body) == {"crm_type", "status", "is_active", "settings", "created_at", "updated_at", "warnings"}, body
    assert body["crm_type"] == flow.crm_type and body["status"] == "connected" and body["is_active"] is True
    assert body["settings"] == {"sync_contacts": True, "sync_events": True}, body["settings"]
    assert body["warnings"] == []
    assert "deprecation" not in r.headers
    assert parse_ts(body["created_at"]) >= started and parse_ts(body["updated_at"]) >= started
    flow.check_good(fakes, _account_stub(flow, fakes))
    assert stored_rows(pg, user_id, flow.crm_type) == 1

    st = service.get(f"/crm/{flow.crm_type}/status", headers=hdr(user_id))
    assert st.status == 200, st
    assert st.json()["connected"] is True and st.json()["status"] == "connected"


def _account_stub(flow, fakes):
    """check_good helpers look at the validate answer's account; connect has none, so give the
    expected values (the fake's own config) to keep the request checks meaningful."""
    stub = {"account": {}}
    if flow.crm_type == "salesforce":
        cfg = fakes.config("salesforce", {})
        stub["account"] = {"organization_id": cfg["org_id"], "instance_url": fakes.urls["salesforce"]}
    if flow.crm_type == "creatio":
        stub["account"] = {"base_url": fakes.urls["creatio"]}
    return stub


@pytest.mark.parametrize("name", list(FLOWS))
def test_connect_wrong_credentials_is_400_and_nothing_is_stored(service, fakes, flow_maker, pg, user_id, name):
    flow = flow_maker(name)
    r = connect(service, user_id, flow.crm_type, flow.bad)
    assert r.status == 400, r
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    assert stored_rows(pg, user_id) == 0
    st = service.get(f"/crm/{flow.crm_type}/status", headers=hdr(user_id)).json()
    assert st == {"crm_type": flow.crm_type, "connected": False}


@pytest.mark.parametrize("name,vendor", DOWN_CASES)
def test_connect_crm_down_is_502_and_nothing_is_stored(service, fakes, flow_maker, pg, user_id, name, vendor):
    flow = flow_maker(name)
    for v in ([vendor] if vendor else flow.down_vendors):
        fakes.down(v, status=503, retry_after=5)
    r = connect(service, user_id, flow.crm_type, flow.good)
    assert r.status == 502, r
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    assert stored_rows(pg, user_id) == 0


def test_connect_failure_keeps_the_previous_connection(service, fakes, pg, user_id):
    """A rejected or failed reconnect must not destroy working stored credentials."""
    assert connect(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"}).status == 200
    before = pg.sql("SELECT encode(credentials, 'hex'), updated_at FROM crm.crm_integrations "
                    "WHERE user_id = $1 AND crm_type = 'hubspot'", user_id)
    assert connect(service, user_id, "hubspot", {"access_token": "pat-na1-wrong"}).status == 400
    fakes.down("hubspot")
    assert connect(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"}).status == 502
    after = pg.sql("SELECT encode(credentials, 'hex'), updated_at FROM crm.crm_integrations "
                   "WHERE user_id = $1 AND crm_type = 'hubspot'", user_id)
    assert after == before


def test_connect_again_replaces_credentials_and_settings(service, fakes, pg, user_id):
    key1, key2 = rnd("pk_one_"), rnd("pk_two_")
    fakes.config("klaviyo", {"api_key": key1})
    r1 = connect(service, user_id, "klaviyo", {"api_key": key1}, settings={"list_id": "ListOne"})
    assert r1.status == 200, r1
    assert r1.json()["settings"] == {"sync_contacts": True, "sync_events": True, "list_id": "ListOne"}
    time.sleep(0.05)
    fakes.config("klaviyo", {"api_key": key2})
    r2 = connect(service, user_id, "klaviyo", {"api_key": key2}, settings={"list_id": "ListTwo", "sync_events": False})
    assert r2.status == 200, r2
    b1, b2 = r1.json(), r2.json()
    assert b2["settings"] == {"sync_contacts": True, "sync_events": False, "list_id": "ListTwo"}, b2
    assert parse_ts(b2["created_at"]) == parse_ts(b1["created_at"]), "reconnecting is the same integration"
    assert parse_ts(b2["updated_at"]) > parse_ts(b1["updated_at"])
    rows = pg.sql("SELECT pgp_sym_decrypt(credentials, $2), settings::text FROM crm.crm_integrations "
                  "WHERE user_id = $1", user_id, TEST_ENCRYPTION_KEY)
    assert len(rows) == 1, rows
    assert json.loads(rows[0][0]) == {"api_key": key2}
    assert json.loads(rows[0][1])["list_id"] == "ListTwo"
    lst = service.get("/crm/list", headers=hdr(user_id)).json()
    assert lst["count"] == 1 and lst["integrations"][0]["settings"]["list_id"] == "ListTwo"


def test_connect_field_mapping_is_deprecated_but_kept(service, fakes, user_id):
    r = connect(service, user_id, "hubspot", {"access_token": "pat-na1-valid-token"},
                settings={"field_mapping": {"company": "company_name"}, "events": "note"})
    assert r.status == 200, r
    assert r.headers.get("deprecation") == "true", r.headers
    body = r.json()
    assert len(body["warnings"]) == 1 and "field_mapping" in body["warnings"][0], body["warnings"]
    assert body["settings"]["field_mapping"] == {"company": "company_name"}
    assert body["settings"]["events"] == "note"
    st = service.get("/crm/hubspot/status", headers=hdr(user_id)).json()
    assert st["settings"]["field_mapping"] == {"company": "company_name"}


# ------------------------------------------------------------------------------------------ secrets


SECRET_KEYS = {"api_key", "access_token", "client_secret", "password", "refresh_token", "private_key",
               "security_token"}


def _secret_variants(value: str) -> list:
    """The value, and for a PEM its base64 body lines (a key logged without its armour still leaks)."""
    out = [value]
    if "-----BEGIN" in value:
        out += [line for line in value.splitlines() if len(line) >= 40 and not line.startswith("-----")]
    return out


def _tokens_the_fakes_handed_out(fakes) -> list:
    """Session secrets the worker obtained from the CRMs (Bearer tokens, session cookies)."""
    found = []
    for vendor in fakes.urls:
        for r in fakes.requests(vendor):
            auth = r["headers"].get("authorization", "")
            if auth.startswith("Bearer "):
                found.append(auth[7:])
            for part in r["headers"].get("cookie", "").split(";"):
                if part.strip().startswith(".ASPXAUTH="):
                    found.append(part.strip()[len(".ASPXAUTH="):])
    return [t for t in found if len(t) >= 12]


@pytest.mark.parametrize("name", list(FLOWS))
def test_secrets_are_encrypted_never_returned_never_logged_and_destroyed_on_disconnect(
        service, fakes, flow_maker, pg, user_id, name):
    flow = flow_maker(name)
    mark = service.log_mark()
    bodies = []
    v = validate(service, user_id, flow.crm_type, flow.good)
    assert v.status == 200 and v.json()["valid"] is True, v
    c = connect(service, user_id, flow.crm_type, flow.good)
    assert c.status == 200, c
    # a rejected attempt and a failing CRM, whose error paths must not leak either
    bodies += [v, c, validate(service, user_id, flow.crm_type, flow.bad), connect(service, user_id, flow.crm_type, flow.bad)]
    bodies += [service.get(f"/crm/{flow.crm_type}/status", headers=hdr(user_id)),
               service.get("/crm/list", headers=hdr(user_id))]
    for vendor in flow.down_vendors:
        fakes.down(vendor)
    bodies.append(validate(service, user_id, flow.crm_type, flow.good))
    for vendor in flow.down_vendors:
        fakes.down(vendor, False)

    secret_values = [s for value in flow.secrets for s in _secret_variants(value)]
    secret_values += [s for key, value in flow.bad.items()
                      if key in SECRET_KEYS and value != flow.good.get(key) for s in _secret_variants(value)]
    session_tokens = _tokens_the_fakes_handed_out(fakes)

    # 1. the column holds ciphertext only, decryptable with CRM_ENCRYPTION_KEY
    rows = pg.sql("SELECT encode(credentials, 'hex'), pgp_sym_decrypt(credentials, $3) FROM crm.crm_integrations "
                  "WHERE user_id = $1 AND crm_type = $2", user_id, flow.crm_type, TEST_ENCRYPTION_KEY)
    assert len(rows) == 1
    column_hex, plaintext = rows[0]
    for s in secret_values:
        assert s.encode().hex() not in column_hex, f"plaintext secret {s[:6]}… is in the credentials column"
    stored = json.loads(plaintext)
    for key, value in flow.good.items():
        assert stored.get(key) == value, f"stored credentials lost {key}"
    # nothing else in the row holds them either
    row_text = pg.sql("SELECT (t.*)::text FROM (SELECT user_id, crm_type, settings, status, status_detail "
                      "FROM crm.crm_integrations WHERE user_id = $1) t", user_id)[0][0]
    for s in secret_values:
        assert s not in row_text

    # 2. no response body or header
    for r in bodies:
        raw = r.text + json.dumps(r.headers.items_raw())
        for s in secret_values + session_tokens:
            assert s not in raw, f"a response ({r.status}) contains secret {s[:6]}…: {r.text[:300]}"

    # 3. no worker log line
    time.sleep(0.2)
    log = service.log_text(mark)
    assert log.strip(), "the worker logged nothing for these requests"
    for s in secret_values + session_tokens:
        assert s not in log, f"the worker log contains secret {s[:6]}…: " + next(
            line for line in log.splitlines() if s in line)[:400]

    # 4. disconnect destroys the stored credentials
    d = service.delete(f"/crm/{flow.crm_type}/disconnect", headers=hdr(user_id))
    assert d.status == 200, d
    assert d.json() == {"crm_type": flow.crm_type, "status": "disconnected"}
    assert stored_rows(pg, user_id) == 0
    assert service.get(f"/crm/{flow.crm_type}/status", headers=hdr(user_id)).json() == \
        {"crm_type": flow.crm_type, "connected": False}
