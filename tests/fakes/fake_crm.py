#!/usr/bin/env python3
"""Strict fake CRM servers for crm-service tests (Klaviyo, Salesforce, Creatio, HubSpot).

Standard library only. One process starts five listeners on 127.0.0.1 (free ports):
klaviyo, salesforce (login host + instance), creatio (instance), creatio_identity, hubspot.

    python3 tests/fakes/fake_crm.py [--host 127.0.0.1] [--ports-file PATH] [--sf-jwt-public-key PEM]

prints one JSON line {"klaviyo": "http://127.0.0.1:PORT", ...} (also written atomically to
--ports-file) and serves until SIGTERM/SIGINT. In-process: FakeCRMs().start() ... .stop().
Wire facts follow /work/shared/crm-protocols.md; the control API is under /__fake__/ (see README.md).
"""
from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

VERBOSE = bool(os.environ.get("FAKE_CRM_VERBOSE"))
MAX_RECORDED = 20000
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DTO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$")
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\d$")


def log(msg: str) -> None:
    if VERBOSE:
        sys.stderr.write(f"[fake_crm] {msg}\n")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value) -> dt.datetime | None:
    """ISO-8601 with a date and time (or date only); naive values are taken as UTC."""
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d\d-\d\d", value):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def basic_auth(headers: dict) -> tuple[str, str] | None:
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        user, _, pwd = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
    except Exception:
        return None
    return unquote(user), unquote(pwd)


def bearer(headers: dict) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


class Reply:
    """A response: body dict/list → JSON, str → text, bytes as is, None → empty."""

    def __init__(self, status: int, body=None, headers=None, ctype: str | None = None):
        self.status, self.body = status, body
        self.headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        self.ctype = ctype

    def encode(self) -> tuple[bytes, str | None]:
        if self.body is None:
            return b"", self.ctype
        if isinstance(self.body, bytes):
            return self.body, self.ctype or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.ctype or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.ctype or "application/json; charset=utf-8"


class Req:
    """A parsed incoming request."""

    def __init__(self, method: str, target: str, headers: dict, raw: bytes):
        parts = urlsplit(target)
        self.method, self.raw_path, self.raw_query = method, parts.path, parts.query
        self.route = parts.path.rstrip("/") or "/"  # trailing slash is never significant
        self.query = parse_qs(parts.query, keep_blank_values=True)
        self.headers, self.raw = headers, raw
        self.ctype = media_type(headers.get("content-type"))
        self._json, self._json_err = None, None
        if raw and "json" in self.ctype:
            try:
                self._json = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                self._json_err = str(exc)

    def q(self, name: str, default=None):
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def json_ok(self) -> bool:
        return bool(self.raw) and self._json_err is None and "json" in self.ctype

    @property
    def json(self):
        return self._json

    @property
    def json_error(self) -> str:
        return self._json_err or ("empty body" if not self.raw else "not JSON")

    @property
    def form(self) -> dict:
        if self.ctype != "application/x-www-form-urlencoded":
            return {}
        return {k: v[0] for k, v in parse_qs(self.raw.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def recorded_body(self):
        if not self.raw:
            return None
        if "json" in self.ctype and self._json_err is None:
            return self._json
        if self.ctype == "application/x-www-form-urlencoded":
            return self.form
        return self.raw.decode("utf-8", "replace")

    def cookies(self) -> dict:
        jar = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                jar[name] = value
        return jar


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name, handler_cls, host, lock, fakes, overrides):
        super().__init__((host, 0), handler_cls)
        self.name, self.lock, self.fakes, self.overrides = name, lock, fakes, overrides
        self.base_url = f"http://{host}:{self.server_address[1]}"
        self.stopping = threading.Event()
        self.reset()

    def reset(self) -> None:
        cfg = self.RequestHandlerClass.default_config()
        cfg.update(copy.deepcopy(self.overrides))
        self.config, self.requests, self.faults = cfg, [], []
        self.down, self.down_status, self.down_retry_after = False, 503, None
        self.state = self.RequestHandlerClass.new_state(cfg)

    def peer(self, name: str) -> "FakeServer":
        return self.fakes.servers[name]


class BaseHandler(BaseHTTPRequestHandler):
    """Recording, faults, down mode and the /__fake__/ control API; vendors implement route()."""

    protocol_version = "HTTP/1.1"
    timeout = 120
    server: FakeServer

    # ---- vendor hooks -------------------------------------------------------------------------
    @staticmethod
    def default_config() -> dict:
        return {}

    @staticmethod
    def new_state(cfg: dict) -> dict:
        return {}

    def route(self, req: Req) -> Reply:
        raise NotImplementedError

    def error(self, status: int, message: str, code: str | None = None) -> Reply:
        return Reply(status, {"error": code or "error", "message": message})

    def configure(self, body: dict) -> None:
        """Apply a /__fake__/config body; the default merges keys into the config."""
        self.cfg.update(body)

    def dump_state(self) -> dict:
        return self.st

    # ---- plumbing -------------------------------------------------------------------------------
    @property
    def cfg(self) -> dict:
        return self.server.config

    @property
    def st(self) -> dict:
        return self.server.state

    @property
    def base(self) -> str:
        return self.server.base_url

    def log_message(self, fmt, *args):  # never write access logs to stdout
        log(f"{self.server.name}: " + fmt % args)

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = Req("GET" if self.command == "HEAD" else self.command, self.path, headers, raw)
        if req.raw_path.startswith("/__fake__/"):
            self._send(self._control(req), req)
            return
        srv = self.server
        with srv.lock:
            recorded = {"method": self.command, "path": req.raw_path, "query": req.query,
                        "raw_query": req.raw_query, "headers": headers,
                        "body": req.recorded_body(), "at": time.time(), "status": None}
            srv.requests.append(recorded)
            del srv.requests[:-MAX_RECORDED]
            fault = next((f for f in srv.faults if f.get("method") in (None, self.command) and (
                req.raw_path == f["match"] if f.get("exact") else req.raw_path.startswith(f["match"] or ""))), None)
            if fault:
                srv.faults.remove(fault)
                recorded["status"] = fault["response"].get("status")
            down, latency = srv.down, float(self.cfg.get("latency_s") or 0)
        lost = bool(fault and fault["response"].get("lost"))
        if fault and not lost:
            self._apply_fault(fault["response"], req)
            return
        if down:
            reply = self.error(srv.down_status, "Service unavailable (fake down mode)", "down")
            if srv.down_retry_after is not None:
                reply.headers.append(("Retry-After", str(srv.down_retry_after)))
            recorded["status"] = reply.status
            self._send(reply, req)
            return
        if latency:
            srv.stopping.wait(latency)
        try:
            with srv.lock:
                reply = self.route(req)
        except Exception:  # a bug in the fake: answer like the vendor's 500, log to stderr
            sys.stderr.write(traceback.format_exc())
            reply = self.error(500, "Internal server error in fake", "internal")
        recorded["status"] = reply.status
        if lost:  # the request took effect; its answer never arrives
            self._apply_fault({"close": True}, req)
            return
        self._send(reply, req)

    def _apply_fault(self, spec: dict, req: Req) -> None:
        if spec.get("delay_s"):
            self.server.stopping.wait(float(spec["delay_s"]))
        if "hang_s" in spec or spec.get("close"):
            if "hang_s" in spec:
                self.server.stopping.wait(float(spec["hang_s"]))
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        status = int(spec.get("status", 500))
        if "body" in spec:
            reply = Reply(status, spec["body"], spec.get("headers"))
        else:  # no body given: the vendor's own error format for that status
            reply = self.error(status, f"Injected fault {status}", "fault")
            reply.headers.extend((spec.get("headers") or {}).items())
        self._send(reply, req)

    def _send(self, reply: Reply, req: Req) -> None:
        data, ctype = reply.encode()
        try:
            self.send_response(reply.status)
            names = {k.lower() for k, _ in reply.headers}
            if ctype and "content-type" not in names:
                self.send_header("Content-Type", ctype)
            for name, value in reply.headers:
                self.send_header(name, str(value))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD" and data:
                self.wfile.write(data)
        except OSError:
            self.close_connection = True

    # ---- control API ---------------------------------------------------------------------------
    def _control(self, req: Req) -> Reply:
        srv, action = self.server, req.route[len("/__fake__/"):]
        body = {}
        if req.raw:
            try:
                body = json.loads(req.raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                return Reply(400, {"error": f"control body is not JSON: {exc}"})
            if not isinstance(body, dict):
                return Reply(400, {"error": "control body must be a JSON object"})
        with srv.lock:
            if (req.method, action) == ("GET", "requests"):
                return Reply(200, srv.requests)
            if (req.method, action) == ("GET", "state"):
                return Reply(200, self.dump_state())
            if (req.method, action) == ("GET", "config"):
                return Reply(200, srv.config)
            if (req.method, action) == ("GET", "faults"):
                return Reply(200, srv.faults)
            if (req.method, action) == ("GET", "urls"):
                return Reply(200, srv.fakes.urls)
            if (req.method, action) == ("POST", "reset"):
                for s in (srv.fakes.servers.values() if body.get("all") else [srv]):
                    s.reset()
                return Reply(200, {"reset": "all" if body.get("all") else srv.name})
            if (req.method, action) == ("POST", "faults"):
                if body.get("clear"):
                    srv.faults.clear()
                responses = body.get("responses", [])
                if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
                    return Reply(400, {"error": "responses must be a list of objects"})
                srv.faults.extend({"match": body.get("match"), "exact": bool(body.get("exact")),
                                   "method": body.get("method"), "response": r} for r in responses)
                return Reply(200, {"pending": len(srv.faults)})
            if (req.method, action) == ("POST", "down"):
                srv.down = bool(body.get("down", True))
                srv.down_status = int(body.get("status", 503))
                srv.down_retry_after = body.get("retry_after")
                return Reply(200, {"down": srv.down})
            if (req.method, action) == ("POST", "config"):
                try:
                    self.configure(body)
                except (ValueError, TypeError, KeyError) as exc:
                    return Reply(400, {"error": f"bad config: {exc}"})
                return Reply(200, srv.config)
        return Reply(404, {"error": f"unknown control endpoint {req.method} {req.raw_path}"})


def expire_or_merge(handler: BaseHandler, body: dict, token_key: str) -> None:
    """Shared config helper: `expire_sessions` clears issued tokens; the rest merges into config."""
    body = dict(body)
    if body.pop("expire_sessions", False):
        handler.st[token_key].clear()
    handler.cfg.update(body)


# =================================================================================================
# Klaviyo
# =================================================================================================
KL_PROFILE_ATTRS = {"email", "phone_number", "external_id", "anonymous_id", "first_name", "last_name",
                    "organization", "locale", "title", "image", "location", "properties"}
KL_LOCATION = {"address1", "address2", "city", "country", "latitude", "longitude", "region", "zip",
               "timezone", "ip"}
KL_EVENT_ATTRS = {"properties", "time", "value", "value_currency", "unique_id", "backfill", "metric",
                  "profile"}
KL_SCOPES = {("GET", "accounts"): "accounts:read", ("POST", "profile-import"): "profiles:write",
             ("POST", "events"): "events:write", ("POST", "lists"): "lists:write",
             ("GET", "profiles"): "profiles:read"}


class KlaviyoHandler(BaseHandler):
    @staticmethod
    def default_config():
        return {"api_key": "pk_test_valid_key", "oauth_tokens": [], "account_id": "KLAVIYO_ACCT_1",
                "organization_name": "Fake Store", "public_api_key": "PUBKEY", "scopes": None,
                "lists": None, "strict_accept": True, "retired_before": "2025-01-01", "latency_s": 0,
                "rate_limits": None}

    @staticmethod
    def new_state(cfg):
        return {"profiles": {}, "events": [], "event_keys": [], "duplicate_events": 0, "lists": {},
                "rate_windows": {}, "throttled": 0}

    def error(self, status, message, code=None, pointer="/data/", title=None, parameter=None):
        titles = {400: "Invalid input.", 401: "Incorrect authentication credentials.",
                  403: "You do not have permission to perform this action.", 404: "Not found.",
                  405: "Method not allowed.", 406: "Could not satisfy the request Accept header.",
                  409: "Conflict.", 410: "Gone.", 415: "Unsupported media type.",
                  429: "Request was throttled.", 500: "A server error occurred.",
                  503: "Service unavailable."}
        codes = {400: "invalid", 401: "authentication_failed", 403: "permission_denied", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 410: "gone",
                 415: "unsupported_media_type", 429: "throttled", 500: "error", 503: "service_unavailable"}
        code = code if code not in (None, "fault", "down", "internal") else codes.get(status, "error")
        source = {"parameter": parameter} if parameter else {"pointer": pointer}
        return Reply(status, {"errors": [{"id": str(uuid.uuid4()), "status": status, "code": code,
                                          "title": title or titles.get(status, "Error."), "detail": message,
                                          "source": source, "meta": {}}]},
                     ctype="application/vnd.api+json")

    def _keys(self):
        key = self.cfg["api_key"]
        return set(key if isinstance(key, list) else [key])

    def _check_headers(self, req: Req) -> Reply | None:
        auth = req.headers.get("authorization", "").strip()
        scheme, _, cred = auth.partition(" ")
        if scheme not in ("Klaviyo-API-Key", "Bearer") or not cred.strip():
            return self.error(401, "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                              "not_authenticated", title="Authentication credentials were not provided.")
        valid = self._keys() if scheme == "Klaviyo-API-Key" else set(self.cfg["oauth_tokens"])
        if cred.strip() not in valid:
            return self.error(401, "Incorrect authentication credentials.", "authentication_failed")
        revision = req.headers.get("revision")
        if revision is None:
            return self.error(400, "Missing required header 'revision'. Set it to an API revision date "
                              "in the form YYYY-MM-DD.", "invalid", parameter="revision")
        m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(\.pre)?", revision.strip())
        try:
            rev_date = dt.date.fromisoformat(m.group(1)) if m else None
        except ValueError:
            rev_date = None
        if rev_date is None or rev_date > dt.date.today():
            return self.error(400, f"Invalid revision '{revision}'. The revision header must be a valid "
                              "API revision date in the form YYYY-MM-DD.", "invalid", parameter="revision")
        if self.cfg.get("retired_before") and m.group(1) < self.cfg["retired_before"]:
            return self.error(410, f"Revision {revision} has been retired. Please upgrade to a newer "
                              "revision.", "gone", parameter="revision")
        accept = req.headers.get("accept", "")
        acceptable = ("application/vnd.api+json", "application/json")
        if self.cfg.get("strict_accept", True) or accept:
            kinds = {media_type(a) for a in accept.split(",")}
            if not kinds & set(acceptable) and (self.cfg.get("strict_accept", True) or not kinds & {"*/*"}):
                return self.error(406, "Could not satisfy the request Accept header. Use "
                                  "'Accept: application/vnd.api+json'.", "not_acceptable")
        if req.method in ("POST", "PATCH", "PUT"):
            if req.ctype not in acceptable:
                return self.error(415, f'Unsupported media type "{req.ctype}" in request.',
                                  "unsupported_media_type")
            if not req.json_ok:
                return self.error(400, f"JSON parse error - {req.json_error}", "parse_error",
                                  title="Malformed request.")
        return None

    def route(self, req: Req) -> Reply:
        parts = req.route.strip("/").split("/")
        if parts[0] != "api" or len(parts) < 2:
            return self.error(404, "Not found.")
        routes = {("accounts",): ["GET"], ("profile-import",): ["POST"], ("events",): ["POST"]}
        key = tuple(parts[1:])
        if len(parts) == 3 and parts[1] in ("accounts", "profiles"):
            allowed = ["GET"]
        elif len(parts) == 5 and parts[1] == "lists" and parts[3:] == ["relationships", "profiles"]:
            allowed = ["POST"]
        else:
            allowed = routes.get(key)
        if allowed is None:
            return self.error(404, f"The path {req.raw_path} was not found.")
        problem = self._check_headers(req)
        if problem:
            return problem
        if req.method not in allowed:
            return Reply(405, self.error(405, f'Method "{req.method}" not allowed.').body,
                         {"Allow": ", ".join(allowed)})
        scopes = self.cfg.get("scopes")
        needed = KL_SCOPES.get((req.method, parts[1]))
        if scopes is not None and needed and needed not in scopes:
            return self.error(403, f"Your API key is missing required scopes: {needed}.", "permission_denied")
        throttled, headers = self._rate_limit(parts[1])
        if throttled:
            return throttled
        reply = self._endpoint(req, parts)
        reply.headers += headers
        return reply

    def _rate_limit(self, endpoint):
        """Klaviyo's fixed windows (config `rate_limits`: `[{"limit": N, "window_s": S}, ...]`, per
        endpoint, as Klaviyo's 1 s burst and 1 min steady windows are): a request past a window's
        limit gets 429 with `Retry-After`, the seconds until that window resets; the others carry
        `RateLimit-Limit`, `-Remaining` and `-Reset` for the longest window. (reply or None, headers)."""
        limits = self.cfg.get("rate_limits")
        if not limits:
            return None, []
        now, counts = time.monotonic(), []
        for lim in limits:
            window = float(lim["window_s"])
            start = now - now % window
            key = f"{endpoint}/{window}"
            seen_start, count = self.st["rate_windows"].get(key, (start, 0))
            if seen_start != start:
                count = 0
            counts.append((lim, window, start, key, count))
        for lim, window, start, _, count in counts:
            if count >= int(lim["limit"]):
                self.st["throttled"] += 1
                wait = max(1, math.ceil(start + window - now))
                return Reply(429, self.error(429, f"Request was throttled. Expected available in {wait} second"
                                             f"{'' if wait == 1 else 's'}.", "throttled",
                                             title="Request was throttled.").body,
                             {"Retry-After": str(wait)}, ctype="application/vnd.api+json"), []
        for lim, window, start, key, count in counts:
            self.st["rate_windows"][key] = (start, count + 1)
        lim, window, start, _, count = max(counts, key=lambda c: c[1])
        return None, [("RateLimit-Limit", str(lim["limit"])), ("RateLimit-Remaining", str(int(lim["limit"]) - count - 1)),
                      ("RateLimit-Reset", str(max(1, math.ceil(start + window - now))))]

    def _endpoint(self, req, parts):
        if parts[1] == "accounts":
            return self._accounts(parts[2] if len(parts) == 3 else None)
        if parts[1] == "profiles":
            prof = self.st["profiles"].get(parts[2])
            return Reply(200, {"data": self._resource(prof)}) if prof else self.error(
                404, f"A profile with id {parts[2]} does not exist.")
        if parts[1] == "profile-import":
            return self._profile_import(req.json)
        if parts[1] == "events":
            return self._event(req.json)
        return self._list_add(parts[2], req.json)

    # -- endpoints
    def _accounts(self, account_id):
        acct_id = self.cfg["account_id"]
        account = {"type": "account", "id": acct_id, "attributes": {
            "contact_information": {"default_sender_name": self.cfg["organization_name"],
                                    "default_sender_email": "ops@example.com", "website_url": "https://example.com",
                                    "organization_name": self.cfg["organization_name"],
                                    "street_address": {"address1": "1 Main St", "address2": "", "city": "Boston",
                                                       "region": "MA", "country": "US", "zip": "02110"}},
            "industry": "Software", "timezone": "UTC", "preferred_currency": "USD",
            "public_api_key": self.cfg["public_api_key"], "locale": "en-US"},
            "links": {"self": f"{self.base}/api/accounts/{acct_id}/"}}
        if account_id is not None:
            if account_id != acct_id:
                return self.error(404, f"An account with id {account_id} does not exist.")
            return Reply(200, {"data": account, "links": {"self": f"{self.base}/api/accounts/{acct_id}/"}},
                         ctype="application/vnd.api+json")
        return Reply(200, {"data": [account], "links": {"self": f"{self.base}/api/accounts/", "next": None,
                                                        "prev": None}}, ctype="application/vnd.api+json")

    def _validate_profile_attrs(self, attrs, ptr, require_id=True, data_id=None) -> Reply | None:
        if not isinstance(attrs, dict):
            return self.error(400, "'attributes' must be an object.", pointer=ptr)
        for key, value in attrs.items():
            if key not in KL_PROFILE_ATTRS:
                return self.error(400, f"'{key}' is not a valid field for the resource 'profile'.",
                                  pointer=f"{ptr}/{key}")
            if key == "location":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    return self.error(400, "'location' must be an object.", pointer=f"{ptr}/location")
                for lk, lv in value.items():
                    if lk not in KL_LOCATION:
                        return self.error(400, f"'{lk}' is not a valid field for 'location'.",
                                          pointer=f"{ptr}/location/{lk}")
                    if not is_scalar(lv) or isinstance(lv, bool):
                        return self.error(400, f"Invalid value for location '{lk}'.", pointer=f"{ptr}/location/{lk}")
            elif key == "properties":
                if value is not None and not isinstance(value, dict):
                    return self.error(400, "'properties' must be an object.", pointer=f"{ptr}/properties")
            elif value is not None and not isinstance(value, str):
                return self.error(400, f"'{key}' must be a string or null.", pointer=f"{ptr}/{key}")
        if attrs.get("email") is not None and not EMAIL_RE.match(attrs["email"]):
            return self.error(400, "Invalid email address", pointer=f"{ptr}/email")
        if attrs.get("phone_number") is not None and not re.fullmatch(r"\+[1-9]\d{6,14}", attrs["phone_number"]):
            return self.error(400, "Invalid phone number format (Example of a valid format: +12345678901)",
                              pointer=f"{ptr}/phone_number")
        ids = ("email", "phone_number", "external_id", "anonymous_id")
        if require_id and not data_id and not any(attrs.get(k) for k in ids):
            return self.error(400, "One of the following profile identifiers is required: id, email, "
                              "phone_number, external_id, anonymous_id.", pointer=ptr)
        return None

    def _find_profile(self, attrs, data_id=None):
        profiles = self.st["profiles"]
        if data_id:
            return profiles.get(data_id)
        for key in ("email", "external_id", "phone_number", "anonymous_id"):
            want = attrs.get(key)
            if want:
                for prof in profiles.values():
                    have = prof["attributes"].get(key)
                    if have and (have.lower() == want.lower() if key == "email" else have == want):
                        return prof
        return None

    def _upsert_profile(self, attrs, data_id=None, patch=None):
        """Returns (profile, created) or a Reply on conflict/not found."""
        prof = self._find_profile(attrs, data_id)
        if data_id and prof is None:
            return self.error(404, f"A profile with id {data_id} does not exist.", pointer="/data/id")
        for key in ("email", "external_id", "phone_number"):
            if attrs.get(key):
                other = self._find_profile({key: attrs[key]})
                if other is not None and other is not prof and prof is not None:
                    reply = self.error(409, "A profile already exists with one of these identifiers.",
                                       "duplicate_profile", pointer=f"/data/attributes/{key}")
                    reply.body["errors"][0]["meta"] = {"duplicate_profile_id": other["id"]}
                    return reply
        created = prof is None
        if created:
            pid = "01K" + "".join(secrets.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(23))
            prof = {"type": "profile", "id": pid, "created": now_iso(), "attributes": {
                k: None for k in KL_PROFILE_ATTRS - {"location", "properties"}}}
            prof["attributes"].update(location={}, properties={})
            self.st["profiles"][pid] = prof
        pa = prof["attributes"]
        for key, value in attrs.items():
            if key in ("location", "properties"):
                if value is None:
                    pa[key] = {}
                    continue
                for sub, subval in value.items():
                    if subval is None:
                        pa[key].pop(sub, None)
                    else:
                        pa[key][sub] = subval
            else:
                pa[key] = value
        for key, value in ((patch or {}).get("append") or {}).items():
            cur = pa["properties"].get(key)
            cur = cur if isinstance(cur, list) else ([] if cur is None else [cur])
            pa["properties"][key] = cur + (value if isinstance(value, list) else [value])
        for key, value in ((patch or {}).get("unappend") or {}).items():
            cur = pa["properties"].get(key)
            if isinstance(cur, list):
                drop = value if isinstance(value, list) else [value]
                pa["properties"][key] = [v for v in cur if v not in drop]
        unset = (patch or {}).get("unset") or []
        for key in [unset] if isinstance(unset, str) else unset:
            pa["properties"].pop(key, None)
        prof["updated"] = now_iso()
        return prof, created

    def _resource(self, prof):
        return {"type": "profile", "id": prof["id"],
                "attributes": dict(prof["attributes"], created=prof["created"], updated=prof["updated"]),
                "links": {"self": f"{self.base}/api/profiles/{prof['id']}/"}}

    def _profile_import(self, body):
        data = body.get("data") if isinstance(body, dict) else None
        if set(body or {}) - {"data"} or not isinstance(data, dict):
            return self.error(400, "The request body must be an object with a 'data' member.", pointer="/data")
        extra = set(data) - {"type", "id", "attributes", "meta"}
        if extra:
            return self.error(400, f"'{sorted(extra)[0]}' is not a valid member of 'data'.",
                              pointer=f"/data/{sorted(extra)[0]}")
        if data.get("type") != "profile":
            return self.error(400, "'type' must be 'profile'.", pointer="/data/type")
        attrs = data.get("attributes")
        if attrs is None:
            return self.error(400, "'attributes' is required.", pointer="/data/attributes")
        bad = self._validate_profile_attrs(attrs, "/data/attributes", data_id=data.get("id"))
        if bad:
            return bad
        meta = data.get("meta") or {}
        if not isinstance(meta, dict) or set(meta) - {"patch_properties"} or (
                set(meta.get("patch_properties") or {}) - {"append", "unappend", "unset"}):
            return self.error(400, "Invalid 'meta'; only patch_properties.append/unappend/unset are allowed.",
                              pointer="/data/meta")
        result = self._upsert_profile(attrs, data.get("id"), meta.get("patch_properties"))
        if isinstance(result, Reply):
            return result
        prof, created = result
        return Reply(201 if created else 200, {"data": self._resource(prof)}, ctype="application/vnd.api+json")

    def _event(self, body):
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "event":
            return self.error(400, "The request body must be {'data': {'type': 'event', ...}}.", pointer="/data")
        attrs = data.get("attributes")
        if set(data) - {"type", "attributes"} or not isinstance(attrs, dict):
            return self.error(400, "'data' must contain only 'type' and 'attributes'.", pointer="/data")
        ptr = "/data/attributes"
        for key in attrs:
            if key not in KL_EVENT_ATTRS:
                return self.error(400, f"'{key}' is not a valid field for the resource 'event'.",
                                  pointer=f"{ptr}/{key}")
        for key in ("properties", "metric", "profile"):
            if key not in attrs:
                return self.error(400, f"'{key}' is a required field for the resource 'event'.",
                                  pointer=f"{ptr}/{key}")
        props = attrs["properties"]
        if not isinstance(props, dict) or len(props) > 400:
            return self.error(400, "'properties' must be an object with at most 400 keys.", pointer=f"{ptr}/properties")
        metric = (attrs["metric"] or {}).get("data") if isinstance(attrs["metric"], dict) else None
        mattrs = metric.get("attributes") if isinstance(metric, dict) else None
        if not isinstance(mattrs, dict) or metric.get("type") != "metric":
            return self.error(400, "'metric' must be {'data': {'type': 'metric', 'attributes': {...}}}.",
                              pointer=f"{ptr}/metric/data")
        name = mattrs.get("name")
        if set(mattrs) - {"name", "service"} or not isinstance(name, str) or not 0 < len(name) < 128:
            return self.error(400, "Metric 'name' is required and must be 1-127 characters.",
                              pointer=f"{ptr}/metric/data/attributes/name")
        pdata = (attrs["profile"] or {}).get("data") if isinstance(attrs["profile"], dict) else None
        if not isinstance(pdata, dict) or pdata.get("type") != "profile" or \
                set(pdata) - {"type", "id", "attributes", "meta"}:
            return self.error(400, "'profile' must be {'data': {'type': 'profile', 'attributes': {...}}}.",
                              pointer=f"{ptr}/profile/data")
        pattrs = pdata.get("attributes") or {}
        bad = self._validate_profile_attrs(pattrs, f"{ptr}/profile/data/attributes", data_id=pdata.get("id"))
        if bad:
            return bad
        when = None
        if attrs.get("time") is not None:
            when = parse_iso(attrs["time"])
            limit = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)
            if when is None or when.year <= 1990 or when > limit:
                return self.error(400, "'time' must be an ISO 8601 datetime after 1990 and at most one year "
                                  "in the future.", pointer=f"{ptr}/time")
        value = attrs.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return self.error(400, "'value' must be a number.", pointer=f"{ptr}/value")
        for key in ("value_currency", "unique_id"):
            if attrs.get(key) is not None and not isinstance(attrs[key], str):
                return self.error(400, f"'{key}' must be a string.", pointer=f"{ptr}/{key}")
        if attrs.get("backfill") is not None and not isinstance(attrs["backfill"], bool):
            return self.error(400, "'backfill' must be a boolean.", pointer=f"{ptr}/backfill")
        result = self._upsert_profile(pattrs, pdata.get("id"))
        if isinstance(result, Reply):
            return result
        prof, _ = result
        when = when or dt.datetime.now(dt.timezone.utc)
        dedupe = attrs.get("unique_id") or when.strftime("%Y-%m-%dT%H:%M:%S")
        key = [prof["id"], name, dedupe]
        if key in self.st["event_keys"]:
            self.st["duplicate_events"] += 1  # first event wins; still 202
        else:
            self.st["event_keys"].append(key)
            self.st["events"].append({"id": uuid.uuid4().hex, "metric": name, "profile_id": prof["id"],
                                      "properties": props, "time": when.isoformat(), "value": value,
                                      "value_currency": attrs.get("value_currency"),
                                      "unique_id": attrs.get("unique_id"), "backfill": attrs.get("backfill", False),
                                      "received_at": now_iso()})
        return Reply(202, None)

    def _list_add(self, list_id, body):
        lists = self.cfg.get("lists")
        if lists is not None and list_id not in lists:
            return self.error(404, f"A list with id {list_id} does not exist.")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data or len(data) > 1000:
            return self.error(400, "'data' must be a list of 1-1000 profile identifiers.", pointer="/data")
        for i, item in enumerate(data):
            if not isinstance(item, dict) or item.get("type") != "profile" or not isinstance(item.get("id"), str):
                return self.error(400, "Each entry must be {'type': 'profile', 'id': ...}.", pointer=f"/data/{i}")
            if item["id"] not in self.st["profiles"]:
                return self.error(404, f"A profile with id {item['id']} does not exist.", pointer=f"/data/{i}/id")
        members = self.st["lists"].setdefault(list_id, [])
        members.extend(i["id"] for i in data if i["id"] not in members)
        return Reply(204, None)


# =================================================================================================
# Salesforce
# =================================================================================================
SF_FIELDS = {
    "Contact": ["Id", "Name", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "HomePhone", "Title",
                "Department", "Birthdate", "Description", "LeadSource", "AccountId", "MailingStreet",
                "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "CreatedDate",
                "LastModifiedDate"],
    "Lead": ["Id", "Name", "FirstName", "LastName", "Company", "Email", "Phone", "MobilePhone", "Title", "Website",
             "Street", "City", "State", "PostalCode", "Country", "Status", "LeadSource", "Description",
             "CreatedDate", "LastModifiedDate"],
    "Task": ["Id", "WhoId", "WhatId", "Subject", "Status", "Priority", "ActivityDate", "Description",
             "TaskSubtype", "Type", "OwnerId", "CreatedDate", "LastModifiedDate"],
}
SF_READONLY = {"Id", "Name", "CreatedDate", "LastModifiedDate"}
SF_REQUIRED = {"Contact": ["LastName"], "Lead": ["LastName", "Company"], "Task": []}
SF_PREFIX = {"Contact": "003", "Lead": "00Q", "Task": "00T"}
SF_MAXLEN = {"FirstName": 40, "LastName": 80, "Email": 80, "Title": 128, "Company": 255, "Subject": 255,
             "Phone": 40, "MobilePhone": 40, "HomePhone": 40, "Department": 80, "MailingCity": 40,
             "MailingState": 80, "MailingPostalCode": 20, "MailingCountry": 80, "City": 40, "State": 80,
             "PostalCode": 20, "Country": 80, "LeadSource": 255, "Website": 255, "Description": 32000}
SF_DATES = {"Birthdate", "ActivityDate"}
SF_DEFAULTS = {"Lead": {"Status": "Open - Not Contacted"}, "Task": {"Status": "Not Started", "Priority": "Normal"}}
SF_RESOURCES = ["tooling", "metadata", "eclair", "folders", "prechatForms", "jsonxform", "chatter", "tabs",
                "appMenu", "quickActions", "queryAll", "commerce", "wave", "iot", "analytics", "search",
                "composite", "parameterizedSearch", "fingerprint", "theme", "nouns", "event",
                "serviceTemplates", "recent", "connect", "licensing", "limits", "process", "async-queries",
                "query", "match", "emailConnect", "compactLayouts", "knowledgeManagement", "sobjects",
                "actions", "support"]
# SOQL as the fake understands it: SELECT f1, f2 FROM Object WHERE F = 'v' [AND G = 'w' ...]
# [ORDER BY f [ASC|DESC], ...] [LIMIT n].
SOQL_RE = re.compile(r"^\s*SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+(?P<obj>\w+)\s+WHERE\s+", re.I | re.S)
SOQL_TERM = re.compile(r"(?P<field>\w+)\s*=\s*'(?P<val>(?:[^'\\]|\\.)*)'\s*", re.S)
SOQL_AND = re.compile(r"AND\s+", re.I)
SOQL_TAIL = re.compile(r"(?:ORDER\s+BY\s+(?P<order>\w+(?:\s+(?:ASC|DESC))?(?:\s*,\s*\w+(?:\s+(?:ASC|DESC))?)*)\s*)?"
                       r"(?:LIMIT\s+(?P<limit>\d+))?\s*$", re.I)
# Top-level domains that Salesforce's REST paths take for a file format (404), as its upsert docs
# say of ".inc".
SF_EXTENSION_TLDS = (".inc",)
# Long text areas: Salesforce can neither filter nor sort on them.
SF_LONG_TEXT = {"Description"}
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class SalesforceHandler(BaseHandler):
    @staticmethod
    def default_config():
        return {"client_id": "sf_client_id", "client_secret": "sf_client_secret", "username": "sf_user@example.com",
                "password": "sf_password", "security_token": "SECTOKEN", "refresh_token": "sf_refresh_token",
                "rotate_refresh_token": False, "jwt_public_key": None, "jwt_audiences": [],
                "disabled_grants": [], "access_tokens": [], "custom_fields": {"Contact": [], "Lead": [], "Task": []},
                "platform_events": {"App_Event__e": None}, "duplicate_rule": None,
                "org_id": "00DFAKE000000000AAA", "user_id": "005FAKE000000000AAA", "latency_s": 0,
                "query_batch_size": 2000, "unordered": "newest_first"}

    @staticmethod
    def new_state(cfg):
        return {"tokens": list(cfg.get("access_tokens") or []), "refresh_tokens": [cfg["refresh_token"]],
                "records": {"Contact": {}, "Lead": {}, "Task": {}}, "platform_events": [], "seq": 0,
                "api_usage": 0, "query_cursors": {}}

    def configure(self, body):
        body = dict(body)
        if body.pop("expire_sessions", False):
            self.st["tokens"].clear()
        if "custom_fields" in body:
            cf = body.pop("custom_fields")
            per_obj = cf if isinstance(cf, dict) else {obj: cf for obj in SF_FIELDS}
            for obj, names in per_obj.items():
                if obj not in SF_FIELDS or not all(isinstance(n, str) and n.endswith("__c") for n in names):
                    raise ValueError("custom_fields: names must end in __c, objects Contact/Lead/Task")
                merged = self.cfg["custom_fields"].setdefault(obj, [])
                merged.extend(n for n in names if n not in merged)
        if "platform_events" in body:
            pe = body.pop("platform_events")
            pe = pe if isinstance(pe, dict) else {name: None for name in pe}
            if not all(name.endswith("__e") for name in pe):
                raise ValueError("platform_events: names must end in __e")
            self.cfg["platform_events"].update(pe)
        if "access_tokens" in body:
            self.st["tokens"].extend(body["access_tokens"])
        if "refresh_token" in body:
            self.st["refresh_tokens"] = [body["refresh_token"]]
        if "jwt_public_key_path" in body:
            with open(body.pop("jwt_public_key_path"), encoding="utf-8") as fh:
                body["jwt_public_key"] = fh.read()
        if body.get("unordered", "newest_first") not in ("newest_first", "oldest_first"):
            raise ValueError("unordered: newest_first or oldest_first")
        if int(body.get("query_batch_size", 1)) < 1:
            raise ValueError("query_batch_size: at least 1")
        self.cfg.update(body)

    def error(self, status, message, code=None, fields=None):
        codes = {400: "BAD_REQUEST", 401: "INVALID_SESSION_ID", 403: "REQUEST_LIMIT_EXCEEDED", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE", 500: "UNKNOWN_EXCEPTION",
                 503: "SERVER_UNAVAILABLE"}
        if code in (None, "fault", "down", "internal"):
            code = codes.get(status, "UNKNOWN_EXCEPTION")
        return Reply(status, [{"message": message, "errorCode": code, "fields": fields or []}])

    def oauth_error(self, error, description):
        return Reply(400, {"error": error, "error_description": description})

    # -- routing
    def route(self, req):
        r = req.route
        if r == "/services/oauth2/token":
            return self._token(req) if req.method == "POST" else self.error(405, "Method not allowed")
        m = re.fullmatch(r"/services/Soap/u/(\d+\.\d)", r)
        if m:
            return self._soap_login(req, m.group(1))
        m = re.fullmatch(r"/id/(\w+)/(\w+)", r)
        if m:
            if bearer(req.headers) not in self.st["tokens"]:
                return Reply(403, "Bad_OAuth_Token", ctype="text/plain")
            return Reply(200, {"id": f"{self.base}{r}", "organization_id": m.group(1), "user_id": m.group(2),
                               "username": self.cfg["username"], "display_name": "Fake Integration User",
                               "urls": {"rest": f"{self.base}/services/data/v{{version}}/"}})
        if r == "/services/data":
            return Reply(200, [{"label": f"Release {v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                               for v in range(31, 69)])
        m = re.fullmatch(r"/services/data/(v\d+\.\d|latest)(?:/(.*))?", r)
        if not m:
            return self.error(404, "The requested resource does not exist")
        if req.method == "POST" and req.q("_HttpMethod") == "PATCH":
            req.method = "PATCH"
        ver = "v68.0" if m.group(1) == "latest" else m.group(1)
        token = bearer(req.headers)
        if not token or token not in self.st["tokens"]:
            reply = Reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
            reply.headers.append(("WWW-Authenticate", "Token"))
            return reply
        self.st["api_usage"] += 1
        reply = self._api(req, ver, [unquote(p) for p in (m.group(2) or "").split("/") if p])
        reply.headers.append(("Sforce-Limit-Info", f"api-usage={self.st['api_usage']}/15000"))
        return reply

    def _api(self, req, ver, parts):
        if req.method in ("POST", "PATCH", "PUT"):
            if req.ctype != "application/json":  # the real API also takes XML; the fake does not
                return self.error(415, f"Content-Type header specified in HTTP request is not supported: "
                                  f"{req.ctype or '(none)'}", "UNSUPPORTED_MEDIA_TYPE")
            if not req.json_ok or not isinstance(req.json, dict):
                problem = req.json_error if not req.json_ok else "expected a JSON object"
                return self.error(400, f"Unexpected character or empty body: {problem}", "JSON_PARSER_ERROR")
        if not parts:
            if req.method != "GET":
                return self.error(405, f"HTTP Method '{req.method}' not allowed. Allowed are GET,HEAD")
            res = {name: f"/services/data/{ver}/{name}" for name in SF_RESOURCES}
            res["identity"] = f"{self.base}/id/{self.cfg['org_id']}/{self.cfg['user_id']}"
            return Reply(200, res)
        if parts == ["query"]:
            return self._query(req, ver) if req.method == "GET" else self.error(405, "Method not allowed")
        if len(parts) == 2 and parts[0] == "query":
            return self._query_more(parts[1], ver) if req.method == "GET" else self.error(405, "Method not allowed")
        if parts == ["limits"]:
            return Reply(200, {"DailyApiRequests": {"Max": 15000, "Remaining": 15000 - self.st["api_usage"]}})
        if parts[0] != "sobjects" or len(parts) < 2:
            return self.error(404, "The requested resource does not exist")
        if parts[-1].lower().endswith(SF_EXTENSION_TLDS):
            # Salesforce reads the end of the path as a file format: "example@email.inc" is 404.
            return self.error(404, "The requested resource does not exist")
        obj = parts[1]
        if obj.endswith("__e"):
            if obj not in self.cfg["platform_events"]:
                return self.error(404, "The requested resource does not exist")
            if len(parts) != 2 or req.method != "POST":
                return self.error(405, "Method not allowed")
            return self._publish(obj, req.json)
        obj = next((o for o in SF_FIELDS if o.lower() == obj.lower()), None)
        if obj is None:
            return self.error(404, "The requested resource does not exist")
        if len(parts) == 2:
            if req.method == "POST":
                return self._create(obj, req.json, ver, req.headers)
            if req.method == "GET":
                return Reply(200, {"objectDescribe": {"name": obj, "createable": True, "updateable": True},
                                   "recentItems": []})
            return self.error(405, f"HTTP Method '{req.method}' not allowed. Allowed are GET,HEAD,POST")
        if len(parts) == 3 and parts[2] == "describe":
            return Reply(200, {"name": obj, "fields": [{"name": f, "updateable": f not in SF_READONLY,
                                                        "idLookup": f in ("Id", "Email")} for f in self._fields(obj)]})
        if len(parts) == 3:
            rec = self.st["records"][obj].get(parts[2])
            if rec is None:
                return self.error(404, "The requested resource does not exist")
            if req.method == "GET":
                fields = [f.strip() for f in (req.q("fields") or "").split(",") if f.strip()] or list(rec)
                return Reply(200, self._record_out(obj, rec, fields, ver))
            if req.method == "DELETE":
                del self.st["records"][obj][parts[2]]
                return Reply(204, None)
            if req.method == "PATCH":
                problem = self._check_fields(obj, req.json, rec, creating=False)
                if problem:
                    return problem
                self._write(rec, req.json)
                return Reply(204, None)
            return self.error(405, f"HTTP Method '{req.method}' not allowed. Allowed are GET,HEAD,PATCH,DELETE")
        if len(parts) == 4:
            return self._by_external_id(req, obj, parts[2], parts[3], ver)
        return self.error(404, "The requested resource does not exist")

    # -- OAuth / SOAP
    def _token(self, req):
        form = req.form
        grant = form.get("grant_type")
        creds = basic_auth(req.headers) or (form.get("client_id"), form.get("client_secret"))
        client_id, client_secret = creds
        if grant not in ("client_credentials", "password", "refresh_token", JWT_GRANT):
            return self.oauth_error("unsupported_grant_type", "grant type not supported")
        if grant in self.cfg.get("disabled_grants", []):
            return self.oauth_error("invalid_grant", "authentication failure" if grant == "password"
                                    else "no client credentials user enabled" if grant == "client_credentials"
                                    else "invalid assertion")
        if grant == JWT_GRANT:
            return self._jwt_grant(form.get("assertion"))
        if client_id != self.cfg["client_id"]:
            return self.oauth_error("invalid_client_id", "client identifier invalid")
        refresh = None
        if grant == "refresh_token":
            if client_secret is not None and client_secret != self.cfg["client_secret"]:
                return self.oauth_error("invalid_client", "invalid client credentials")
            if form.get("refresh_token") not in self.st["refresh_tokens"]:
                return self.oauth_error("invalid_grant", "expired access/refresh token")
            if self.cfg.get("rotate_refresh_token"):
                refresh = "5Aep" + secrets.token_urlsafe(24)
                self.st["refresh_tokens"] = [refresh]
        else:
            if client_secret != self.cfg["client_secret"]:
                return self.oauth_error("invalid_client", "invalid client credentials")
            if grant == "password" and (form.get("username") != self.cfg["username"] or form.get("password") !=
                                        self.cfg["password"] + (self.cfg.get("security_token") or "")):
                return self.oauth_error("invalid_grant", "authentication failure")
        return Reply(200, self._issue(refresh))

    def _issue(self, refresh=None):
        token = "00DFAKE!" + secrets.token_urlsafe(32)
        self.st["tokens"].append(token)
        issued = str(int(time.time() * 1000))
        ident = f"{self.base}/id/{self.cfg['org_id']}/{self.cfg['user_id']}"
        sig = base64.b64encode(hmac.new(self.cfg["client_secret"].encode(), (ident + issued).encode(),
                                        hashlib.sha256).digest()).decode()
        out = {"access_token": token, "instance_url": self.base, "id": ident, "token_type": "Bearer",
               "issued_at": issued, "signature": sig, "scope": "api"}
        if refresh:
            out["refresh_token"] = refresh
        return out

    def _jwt_grant(self, assertion):
        parts = (assertion or "").split(".")
        try:
            header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, IndexError, UnicodeDecodeError):
            header = claims = signature = None
        if len(parts) != 3 or not isinstance(header, dict) or not isinstance(claims, dict) or not signature:
            return self.oauth_error("invalid_grant", "invalid assertion")
        if header.get("alg") != "RS256":
            return self.oauth_error("invalid_grant", "invalid assertion: alg must be RS256")
        if claims.get("iss") != self.cfg["client_id"]:
            return self.oauth_error("invalid_client_id", "client identifier invalid")
        audiences = {"https://login.salesforce.com", "https://test.salesforce.com", self.base,
                     *self.cfg.get("jwt_audiences", [])}
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud.rstrip("/") not in audiences:
            return self.oauth_error("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= time.time():
            return self.oauth_error("invalid_grant", "expired authorization code")
        if claims.get("sub") != self.cfg["username"]:
            return self.oauth_error("invalid_grant", "user hasn't approved this consumer")
        pem = self.cfg.get("jwt_public_key")
        if pem and not verify_rs256(pem, f"{parts[0]}.{parts[1]}".encode(), signature):
            return self.oauth_error("invalid_grant", "invalid assertion: signature verification failed")
        return Reply(200, self._issue())

    def _soap_login(self, req, ver):
        text = req.raw.decode("utf-8", "replace")
        user = re.search(r"<(?:\w+:)?username>(.*?)</(?:\w+:)?username>", text, re.S)
        pwd = re.search(r"<(?:\w+:)?password>(.*?)</(?:\w+:)?password>", text, re.S)
        if req.method != "POST" or req.ctype != "text/xml" or not user or not pwd:
            return self._soap_fault("INVALID_REQUEST", "Expected a SOAP login() request (text/xml)")
        unesc = lambda s: s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        if unesc(user.group(1)) != self.cfg["username"] or unesc(pwd.group(1)) != (
                self.cfg["password"] + (self.cfg.get("security_token") or "")):
            return self._soap_fault("INVALID_LOGIN", "INVALID_LOGIN: Invalid username, password, security token; "
                                    "or user locked out.")
        token = self._issue()["access_token"]
        org, uid = self.cfg["org_id"], self.cfg["user_id"]
        return Reply(200, '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
                     '"http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com">'
                     "<soapenv:Body><loginResponse><result>"
                     f"<metadataServerUrl>{self.base}/services/Soap/m/{ver}/{org}</metadataServerUrl>"
                     "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
                     f"<serverUrl>{self.base}/services/Soap/u/{ver}/{org}</serverUrl>"
                     f"<sessionId>{token}</sessionId><userId>{uid}</userId>"
                     f"<userInfo><organizationId>{org}</organizationId><userName>{self.cfg['username']}"
                     "</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>",
                     ctype="text/xml; charset=utf-8")

    def _soap_fault(self, code, message):
        return Reply(500, '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
                     '"http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com">'
                     f"<soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{message}"
                     f"</faultstring><detail><sf:LoginFault><sf:exceptionCode>{code}</sf:exceptionCode>"
                     f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>"
                     "</soapenv:Fault></soapenv:Body></soapenv:Envelope>", ctype="text/xml; charset=utf-8")

    # -- records
    def _fields(self, obj):
        return SF_FIELDS[obj] + list(self.cfg["custom_fields"].get(obj, []))

    def _canon(self, obj, name):
        return next((f for f in self._fields(obj) if f.lower() == name.lower()), None)

    def _check_fields(self, obj, body, existing=None, creating=True, extra_readonly=()):
        for name, value in body.items():
            canon = self._canon(obj, name)
            if canon is None:
                return self.error(400, f"No such column '{name}' on sobject of type {obj}", "INVALID_FIELD")
            if canon in SF_READONLY or canon in extra_readonly:
                return self.error(400, f"Unable to create/update fields: {canon}. Please check the security "
                                  "settings of this field and verify that it is read/write for your profile or "
                                  "permission set.", "INVALID_FIELD_FOR_INSERT_UPDATE", [canon])
            if not is_scalar(value):
                return self.error(400, f"Cannot deserialize instance of string from START_OBJECT value for "
                                  f"field {canon}", "JSON_PARSER_ERROR")
            if canon in SF_DATES and value is not None and (not isinstance(value, str) or not DATE_RE.match(value)):
                return self.error(400, f"Cannot deserialize instance of date from VALUE_STRING value {value} or "
                                  "request may be missing a required field", "JSON_PARSER_ERROR")
            if canon == "Email" and value not in (None, "") and (not isinstance(value, str) or not EMAIL_RE.match(value)):
                return self.error(400, f"Email: invalid email address: {value}", "INVALID_EMAIL_ADDRESS", ["Email"])
            limit = SF_MAXLEN.get(canon, 255 if canon.endswith("__c") else None)
            if isinstance(value, str) and limit and len(value) > limit:
                return self.error(400, f"{canon}: data value too large: {value[:20]}... (max length={limit})",
                                  "STRING_TOO_LONG", [canon])
            if canon == "WhoId" and value is not None:
                if not isinstance(value, str) or value[:3] not in ("003", "00Q"):
                    return self.error(400, f"Name ID: id value of incorrect type: {value}",
                                      "FIELD_INTEGRITY_EXCEPTION", ["WhoId"])
                if value not in self.st["records"]["Contact"] and value not in self.st["records"]["Lead"]:
                    return self.error(400, "invalid cross reference id", "INVALID_CROSS_REFERENCE_KEY", ["WhoId"])
        merged = dict(existing or {}, **{self._canon(obj, k): v for k, v in body.items()})
        missing = [f for f in SF_REQUIRED[obj] if merged.get(f) in (None, "")]
        if missing and (creating or any(self._canon(obj, k) in missing for k in body)):
            return self.error(400, f"Required fields are missing: [{', '.join(missing)}]",
                              "REQUIRED_FIELD_MISSING", missing)
        return None

    def _duplicate(self, obj, body, headers):
        rule = self.cfg.get("duplicate_rule")
        email = next((v for k, v in body.items() if k.lower() == "email"), None)
        if obj not in ("Contact", "Lead") or not rule or not email:
            return None
        if rule == "alert" and "allowsave=true" in headers.get("sforce-duplicate-rule-header", "").replace(" ", "").lower():
            return None
        if any((r.get("Email") or "").lower() == email.lower() for r in self.st["records"][obj].values()):
            return self.error(400, "Use one of these records?", "DUPLICATES_DETECTED")
        return None

    def _new_id(self, prefix):
        self.st["seq"] += 1
        return f"{prefix}FAKE{self.st['seq']:08d}AAA"

    def _write(self, rec, body):
        obj = rec["attributes"]["type"]
        for name, value in body.items():
            rec[self._canon(obj, name)] = value
        if obj in ("Contact", "Lead"):
            rec["Name"] = " ".join(x for x in (rec.get("FirstName"), rec.get("LastName")) if x)
        rec["LastModifiedDate"] = now_iso().replace("Z", "+0000")

    def _insert(self, obj, body):
        rid = self._new_id(SF_PREFIX[obj])
        rec = {"attributes": {"type": obj}, "Id": rid, "CreatedDate": now_iso().replace("Z", "+0000")}
        rec.update(SF_DEFAULTS.get(obj, {}))
        self._write(rec, body)
        self.st["records"][obj][rid] = rec
        return rid

    def _create(self, obj, body, ver, headers):
        problem = self._check_fields(obj, body) or self._duplicate(obj, body, headers)
        if problem:
            return problem
        rid = self._insert(obj, body)
        return Reply(201, {"id": rid, "success": True, "errors": []},
                     {"Location": f"/services/data/{ver}/sobjects/{obj}/{rid}"})

    def _by_external_id(self, req, obj, field, value, ver):
        canon = self._canon(obj, field)
        if canon is None or not (canon in ("Id", "Email") or canon.endswith("__c")):
            return self.error(404, f"Provided external ID field does not exist or is not accessible: {field}",
                              "NOT_FOUND")
        matches = [r for r in self.st["records"][obj].values()
                   if str(r.get(canon) or "").lower() == value.lower()]
        if req.method == "GET":
            if len(matches) == 1:
                return Reply(200, self._record_out(obj, matches[0], list(matches[0]), ver))
            return self.error(404, "The requested resource does not exist")
        if req.method != "PATCH":
            return self.error(405, f"HTTP Method '{req.method}' not allowed. Allowed are GET,HEAD,PATCH")
        body = req.json
        sent = next((v for k, v in body.items() if k.lower() == canon.lower()), None)
        if sent is not None and str(sent).lower() != value.lower():
            return self.error(400, f"The value of the external ID field {canon} in the request body does not "
                              "match the value in the URL", "INVALID_FIELD", [canon])
        if len(matches) > 1:
            return Reply(300, [f"/services/data/{ver}/sobjects/{obj}/{r['Id']}" for r in matches])
        if matches:
            problem = self._check_fields(obj, body, matches[0], creating=False)
            if problem:
                return problem
            self._write(matches[0], body)
            return Reply(200, {"id": matches[0]["Id"], "success": True, "errors": [], "created": False})
        if req.q("updateOnly") == "true":
            return self.error(404, "The requested resource does not exist")
        body = dict(body, **{canon: value})
        problem = self._check_fields(obj, body) or self._duplicate(obj, body, req.headers)
        if problem:
            return problem
        rid = self._insert(obj, body)
        return Reply(201, {"id": rid, "success": True, "errors": [], "created": True},
                     {"Location": f"/services/data/{ver}/sobjects/{obj}/{rid}"})

    def _record_out(self, obj, rec, fields, ver):
        out = {"attributes": {"type": obj, "url": f"/services/data/{ver}/sobjects/{obj}/{rec['Id']}"}}
        for f in fields:
            if f != "attributes":
                out[self._canon(obj, f) or f] = rec.get(self._canon(obj, f) or f)
        return out

    def _query(self, req, ver):
        q = req.q("q")
        if not q:
            return self.error(400, "A query string has to be specified", "MALFORMED_QUERY")
        parsed = self._parse_soql(q)
        if isinstance(parsed, Reply):
            return parsed
        obj, fields, terms, order, limit = parsed
        rows = list(self.st["records"][obj].values())
        for field, value in terms:
            rows = [r for r in rows if str(r.get(field) or "").lower() == value.lower()]
        if order:
            for field, descending in reversed(order):  # a stable sort per key, the last key first
                rows.sort(key=lambda r: str(r.get(field) or ""), reverse=descending)
        elif self.cfg["unordered"] == "newest_first":
            # Salesforce promises no order without ORDER BY: newest first by default, so a client
            # that takes "the first match" as the oldest is caught ("oldest_first" catches the
            # opposite).
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        return self._query_page(obj, fields, rows, 0, ver)

    def _query_page(self, obj, fields, rows, start, ver):
        """Records in batches of `query_batch_size` (Salesforce's default is 2,000): a later batch
        is read from `nextRecordsUrl` while `done` is false."""
        batch = int(self.cfg["query_batch_size"])
        page = rows[start:start + batch]
        out = {"totalSize": len(rows), "done": start + batch >= len(rows),
               "records": [self._record_out(obj, r, fields, ver) for r in page]}
        if not out["done"]:
            cursor = f"01gFAKE{len(self.st['query_cursors']) + 1:08d}"
            self.st["query_cursors"][cursor] = (obj, fields, rows)
            out["nextRecordsUrl"] = f"/services/data/{ver}/query/{cursor}-{start + batch}"
        return Reply(200, out)

    def _query_more(self, locator, ver):
        cursor, _, start = locator.rpartition("-")
        if cursor not in self.st["query_cursors"] or not start.isdigit():
            return self.error(400, "invalid query locator", "INVALID_QUERY_LOCATOR")
        obj, fields, rows = self.st["query_cursors"][cursor]
        return self._query_page(obj, fields, rows, int(start), ver)

    def _parse_soql(self, q):
        """(object, fields, [(field, value)], [(field, descending)], limit), or an error Reply."""
        def malformed():
            return self.error(400, f"\n{q}\n^\nERROR at Row:1:Column:1\nunexpected token (only \"SELECT f1, f2 FROM "
                              "Object WHERE Field = 'value' [AND Field = 'value' ...] [ORDER BY f [ASC|DESC], ...] "
                              "[LIMIT n]\" is supported by the fake)", "MALFORMED_QUERY")
        m = SOQL_RE.match(q)
        if not m:
            return malformed()
        obj = next((o for o in SF_FIELDS if o.lower() == m["obj"].lower()), None)
        if obj is None:
            return self.error(400, f"sObject type '{m['obj']}' is not supported.", "INVALID_TYPE")
        fields = [f.strip() for f in m["fields"].split(",")]
        terms, pos = [], m.end()
        while True:
            t = SOQL_TERM.match(q, pos)
            if not t:
                return malformed()
            value = self._soql_literal(t["val"])
            if isinstance(value, Reply):
                return value
            terms.append((t["field"], value))
            pos = t.end()
            a = SOQL_AND.match(q, pos)
            if not a:
                break
            pos = a.end()
        tail = SOQL_TAIL.match(q, pos)
        if not tail:
            return malformed()
        order = []
        for part in (tail["order"] or "").split(","):
            if part.strip():
                name, _, direction = part.strip().partition(" ")
                order.append((name, direction.strip().upper() == "DESC"))
        for name in fields + [f for f, _ in terms] + [f for f, _ in order]:
            if self._canon(obj, name) is None:
                return self.error(400, f"No such column '{name}' on entity '{obj}'.", "INVALID_FIELD")
        for name, verb in [(f, "filtered") for f, _ in terms] + [(f, "sorted") for f, _ in order]:
            if self._canon(obj, name) in SF_LONG_TEXT:
                return self.error(400, f"field '{self._canon(obj, name)}' can not be {verb} in a query call",
                                  "INVALID_FIELD")
        return (obj, fields, [(self._canon(obj, f), v) for f, v in terms],
                [(self._canon(obj, f), d) for f, d in order], None if tail["limit"] is None else int(tail["limit"]))

    def _soql_literal(self, raw):
        value, i = "", 0
        while i < len(raw):
            if raw[i] == "\\":
                nxt = raw[i + 1]
                if nxt not in "'\"\\nrtbf_%":
                    return self.error(400, f"Invalid string literal '{raw}'. Illegal character sequence "
                                      f"'\\{nxt}' in string literal.", "MALFORMED_QUERY")
                value += {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}.get(nxt, nxt)
                i += 2
            else:
                value += raw[i]
                i += 1
        return value

    def _publish(self, obj, body):
        allowed = self.cfg["platform_events"][obj]
        for name, value in body.items():
            if not name.endswith("__c") or (allowed is not None and name not in allowed):
                return self.error(400, f"No such column '{name}' on sobject of type {obj}", "INVALID_FIELD")
            if not is_scalar(value):
                return self.error(400, f"Cannot deserialize value for field {name}", "JSON_PARSER_ERROR")
        eid = self._new_id("e00")
        self.st["platform_events"].append({"Id": eid, "type": obj, "fields": body, "published_at": now_iso()})
        return Reply(201, {"id": eid, "success": True, "errors": [
            {"statusCode": "OPERATION_ENQUEUED", "message": str(uuid.uuid4()), "fields": []}]})

    def dump_state(self):
        return {"contacts": list(self.st["records"]["Contact"].values()),
                "leads": list(self.st["records"]["Lead"].values()),
                "tasks": list(self.st["records"]["Task"].values()),
                "platform_events": self.st["platform_events"], "active_tokens": len(self.st["tokens"]),
                "api_usage": self.st["api_usage"]}


def verify_rs256(pem: str, data: bytes, signature: bytes) -> bool:
    """Verify an RS256 signature with `openssl dgst` (accepts a public key or a certificate PEM)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, sig, msg = (os.path.join(tmp, n) for n in ("key.pem", "sig.bin", "msg.bin"))
        with open(key, "w", encoding="utf-8") as fh:
            fh.write(pem)
        if "BEGIN CERTIFICATE" in pem:
            out = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", key], capture_output=True)
            if out.returncode != 0:
                return False
            with open(key, "wb") as fh:
                fh.write(out.stdout)
        with open(sig, "wb") as fh:
            fh.write(signature)
        with open(msg, "wb") as fh:
            fh.write(data)
        result = subprocess.run(["openssl", "dgst", "-sha256", "-verify", key, "-signature", sig, msg],
                                capture_output=True)
        return result.returncode == 0


# =================================================================================================
# Creatio (instance) and its identity server
# =================================================================================================
CR_COLUMNS = {
    "Contact": ["Id", "Name", "GivenName", "Surname", "MiddleName", "Email", "MobilePhone", "Phone", "HomePhone",
                "JobTitle", "Address", "Zip", "BirthDate", "AccountId", "CityId", "RegionId", "CountryId",
                "GenderId", "TypeId", "OwnerId", "CreatedOn", "ModifiedOn"],
    "Activity": ["Id", "Title", "StartDate", "DueDate", "ContactId", "AccountId", "OwnerId", "TypeId",
                 "ActivityCategoryId", "StatusId", "PriorityId", "ResultId", "DetailedResult", "Notes",
                 "CreatedOn", "ModifiedOn"],
}
CR_REQUIRED = {"Contact": ["Name"], "Activity": ["Title", "StartDate", "DueDate"]}
CR_READONLY = {"CreatedOn", "ModifiedOn"}
CR_DATES = {"BirthDate", "StartDate", "DueDate", "CreatedOn", "ModifiedOn"}
CR_TERM = re.compile(r"\s*(\w+)\s+eq\s+('(?:[^']|'')*'|[0-9a-fA-F-]{36}|null|true|false|-?\d+(?:\.\d+)?)\s*(?:(and)\s+|$)",
                     re.I)


class CreatioHandler(BaseHandler):
    @staticmethod
    def default_config():
        return {"username": "Supervisor", "password": "creatio_pass", "custom_columns": None,
                "odata_prefix": "/0/odata", "unauth_style": "json", "latency_s": 0}

    @staticmethod
    def new_state(cfg):
        return {"sessions": {}, "entities": {name: {} for name in CR_COLUMNS}}

    def configure(self, body):
        body = dict(body)
        if body.pop("expire_sessions", False):
            self.st["sessions"].clear()
            self.server.peer("creatio_identity").state["tokens"].clear()
        self.cfg.update(body)

    def error(self, status, message, code=None):
        return Reply(status, {"error": {"code": "", "message": message}}, {"OData-Version": "4.0"})

    def route(self, req):
        if req.route == "/ServiceModel/AuthService.svc/Login":
            return self._login(req)
        prefix = self.cfg["odata_prefix"].rstrip("/")
        if req.route == prefix or req.route.startswith(prefix + "/"):
            return self._odata(req, req.route[len(prefix):].lstrip("/"))
        return Reply(404, "<html><body><h2>404 - File or directory not found.</h2></body></html>",
                     ctype="text/html")

    def _login(self, req):
        if req.method != "POST":
            return Reply(405, "Method not allowed.", ctype="text/html")
        if req.ctype != "application/json":
            return Reply(415, f"Cannot process the message because the content type '{req.ctype}' was not the "
                         "expected type 'application/json; charset=utf-8'.", ctype="text/html")
        body = req.json if req.json_ok else None
        if not isinstance(body, dict):
            return Reply(400, "The server encountered an error processing the request.", ctype="text/html")
        if body.get("UserName") != self.cfg["username"] or body.get("UserPassword") != self.cfg["password"]:
            return Reply(200, {"Code": 1, "Message": "Invalid username or password specified", "Exception": None,
                               "PasswordChangeUrl": None, "RedirectUrl": None})
        auth, csrf = secrets.token_hex(32).upper(), secrets.token_urlsafe(16)
        self.st["sessions"][auth] = {"csrf": csrf, "user": body["UserName"], "created": now_iso()}
        name = "|".join(str(ord(c)) for c in body["UserName"])
        cookies = [f".ASPXAUTH={auth}; path=/; HttpOnly", f"BPMCSRF={csrf}; path=/",
                   f"BPMLOADER={secrets.token_hex(12)}; path=/; HttpOnly", f"UserName={name}; path=/; HttpOnly"]
        return Reply(200, {"Code": 0, "Message": "", "Exception": None, "PasswordChangeUrl": None,
                           "RedirectUrl": None}, [("Set-Cookie", c) for c in cookies])

    def _unauthorized(self, req):
        style = self.cfg.get("unauth_style", "json")
        if style == "redirect":
            return Reply(302, None, {"Location": "/Login/NuiLogin.aspx?ReturnUrl=" + quote(req.raw_path, safe="")})
        if style == "html":
            return Reply(401, "<html><head><title>Login</title></head><body>Authentication required</body></html>",
                         ctype="text/html; charset=utf-8")
        return self.error(401, "Authorization has been denied for this request.")

    def _authenticate(self, req) -> Reply | None:
        token = bearer(req.headers)
        if token is not None:
            expiry = self.server.peer("creatio_identity").state["tokens"].get(token)
            return None if expiry and expiry > time.time() else self._unauthorized(req)
        jar = req.cookies()
        sess = self.st["sessions"].get(jar.get(".ASPXAUTH", ""))
        if sess is None or req.headers.get("forceusesession", "").lower() != "true":
            return self._unauthorized(req)
        if req.headers.get("bpmcsrf") != sess["csrf"] or jar.get("BPMCSRF") != sess["csrf"]:
            return self.error(403, "Forbidden: the BPMCSRF header is missing or does not match the session.")
        return None

    def _odata(self, req, rest):
        problem = self._authenticate(req)
        if problem:
            return problem
        if rest == "$metadata":
            return Reply(200, self._metadata(), {"OData-Version": "4.0"}, ctype="application/xml")
        m = re.fullmatch(r"(\w+)(?:\((.*)\))?", rest)
        if not m or m.group(1) not in CR_COLUMNS:
            return self.error(404, f"No HTTP resource was found that matches the request URI '{self.base}{req.raw_path}'.")
        entity, key = m.group(1), m.group(2)
        accept = req.headers.get("accept", "")
        if accept and not any(t in accept for t in ("json", "*/*")):
            return self.error(406, "The requested media type is not supported.")
        if req.method in ("POST", "PATCH", "PUT"):
            if req.ctype != "application/json":
                return self.error(415, f"The request entity's media type '{req.ctype or '(none)'}' is not "
                                  "supported for this resource.")
            if not req.json_ok or not isinstance(req.json, dict):
                return self.error(400, "The request body is not a valid JSON object.")
        if key is None:
            if req.method == "GET":
                return self._collection(req, entity)
            if req.method == "POST":
                return self._insert(entity, req.json)
            return self.error(405, f"The requested resource does not support http method '{req.method}'.")
        if not GUID_RE.match(key):
            return self.error(400, f"The key value ({key}) from request is not valid. The key value should be "
                              "format of type 'Edm.Guid'.")
        rec = self.st["entities"][entity].get(key.lower())
        if rec is None:
            return self.error(404, f"{entity} with Id {key} was not found.")
        if req.method == "GET":
            return Reply(200, dict({"@odata.context": f"{self._ctx()}#{entity}/$entity"}, **rec),
                         {"OData-Version": "4.0"})
        if req.method == "PATCH":
            problem = self._check(entity, req.json, rec)
            if problem:
                return problem
            rec.update(req.json, ModifiedOn=now_iso())
            return Reply(204, None, {"OData-Version": "4.0"})
        if req.method == "DELETE":
            del self.st["entities"][entity][key.lower()]
            return Reply(204, None, {"OData-Version": "4.0"})
        return self.error(405, f"The requested resource does not support http method '{req.method}'.")

    def _ctx(self):
        return f"{self.base}{self.cfg['odata_prefix'].rstrip('/')}/$metadata"

    def _known(self, entity, col):
        if col in CR_COLUMNS[entity]:
            return True
        custom = self.cfg.get("custom_columns")
        return col in custom if custom is not None else bool(re.fullmatch(r"Usr\w+", col))

    def _check(self, entity, body, existing=None):
        for col, value in body.items():
            if not self._known(entity, col):
                return self.error(400, f"The property '{col}' does not exist on type 'Terrasoft.Configuration."
                                  f"{entity}'. Make sure to only use property names that are defined by the type "
                                  "or mark the type as open type.")
            if col in CR_READONLY or (col == "Id" and existing is not None):
                return self.error(400, f"The property '{col}' cannot be changed.")
            if not is_scalar(value):
                return self.error(400, f"Cannot convert a complex value to a primitive value for '{col}'.")
            if col.endswith("Id") and not col.startswith("Usr") and value is not None and (
                    not isinstance(value, str) or not GUID_RE.match(value)):
                return self.error(400, f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.")
            if col in CR_DATES and value is not None and (not isinstance(value, str) or not DTO_RE.match(value)):
                return self.error(400, f"Cannot convert the literal '{value}' to the expected type "
                                  "'Edm.DateTimeOffset'.")
            if not col.startswith("Usr") and not col.endswith("Id") and col not in CR_DATES and \
                    value is not None and not isinstance(value, str):
                return self.error(400, f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
        merged = dict(existing or {}, **body)
        missing = [c for c in CR_REQUIRED[entity] if merged.get(c) in (None, "")]
        if missing:
            return self.error(400, f"Field(s) {', '.join(missing)} must be filled in.")
        if entity == "Activity" and body.get("ContactId") and \
                body["ContactId"].lower() not in self.st["entities"]["Contact"]:
            return self.error(500, 'The INSERT statement conflicted with the FOREIGN KEY constraint '
                              '"FKActivityContact". The conflict occurred in table "dbo.Contact", column \'Id\'.')
        return None

    def _insert(self, entity, body):
        problem = self._check(entity, body)
        if problem:
            return problem
        rid = (body.get("Id") or str(uuid.uuid4())).lower()
        if rid in self.st["entities"][entity]:
            return self.error(500, "Cannot insert duplicate key in object 'dbo.%s'." % entity)
        rec = {c: None for c in CR_COLUMNS[entity]}
        rec.update(body, Id=rid, CreatedOn=now_iso(), ModifiedOn=now_iso())
        self.st["entities"][entity][rid] = rec
        return Reply(201, dict({"@odata.context": f"{self._ctx()}#{entity}/$entity"}, **rec),
                     {"OData-Version": "4.0", "Location": f"{self.base}{self.cfg['odata_prefix']}/{entity}({rid})"})

    def _collection(self, req, entity):
        for name in req.query:
            if name.startswith("$") and name not in ("$select", "$filter", "$top", "$skip", "$orderby"):
                return self.error(400, f"The query parameter '{name}' is not supported.")
        rows = list(self.st["entities"][entity].values())
        flt = req.q("$filter")
        if flt is not None:
            pos, terms = 0, []
            while pos < len(flt):
                m = CR_TERM.match(flt, pos)
                if not m or (m.group(3) is None and m.end() != len(flt)):
                    return self.error(400, f"Syntax error at position {pos} in '{flt}'. (the fake supports "
                                      "\"Col eq 'text'\" terms joined by 'and')")
                terms.append((m.group(1), m.group(2)))
                pos = m.end()
                if m.group(3) and pos >= len(flt):
                    return self.error(400, f"Syntax error: expression expected at position {pos} in '{flt}'.")
            for col, lit in terms:
                if not self._known(entity, col):
                    return self.error(400, f"Could not find a property named '{col}' on type "
                                      f"'Terrasoft.Configuration.{entity}'.")
                if lit.startswith("'"):
                    want = lit[1:-1].replace("''", "'").lower()
                    rows = [r for r in rows if isinstance(r.get(col), str) and r[col].lower() == want]
                elif lit.lower() == "null":
                    rows = [r for r in rows if r.get(col) is None]
                else:
                    rows = [r for r in rows if str(r.get(col)).lower() == lit.lower()]
        order = req.q("$orderby")
        if order:
            keys = []
            for part in order.split(","):
                col, _, direction = part.strip().partition(" ")
                if not self._known(entity, col) or direction.strip().lower() not in ("", "asc", "desc"):
                    return self.error(400, f"Invalid $orderby '{order}'.")
                keys.append((col, direction.strip().lower() == "desc"))
            for col, descending in reversed(keys):  # a stable sort per key, the last key first
                rows.sort(key=lambda r: str(r.get(col) or ""), reverse=descending)
        else:
            # No order is promised without $orderby: newest first here, so a client that takes
            # "the first match" as the oldest is caught.
            rows.reverse()
        try:
            skip, top = int(req.q("$skip", 0)), req.q("$top")
            top = None if top is None else int(top)
            if skip < 0 or (top is not None and top < 0):
                raise ValueError
        except ValueError:
            return self.error(400, "Invalid value for $top or $skip.")
        rows = rows[skip:] if top is None else rows[skip:skip + top]
        select = [c.strip() for c in (req.q("$select") or "").split(",") if c.strip()]
        for col in select:
            if not self._known(entity, col):
                return self.error(400, f"Could not find a property named '{col}' on type "
                                  f"'Terrasoft.Configuration.{entity}'.")
        values = [{c: r.get(c) for c in select} if select else dict(r) for r in rows]
        ctx = f"{self._ctx()}#{entity}" + (f"({','.join(select)})" if select else "")
        return Reply(200, {"@odata.context": ctx, "value": values}, {"OData-Version": "4.0"})

    def _metadata(self):
        edm = lambda c: "Edm.Guid" if c.endswith("Id") else "Edm.DateTimeOffset" if c in CR_DATES else "Edm.String"
        types = "".join(
            f'<EntityType Name="{e}"><Key><PropertyRef Name="Id"/></Key>'
            + "".join(f'<Property Name="{c}" Type="{edm(c)}"/>' for c in cols) + "</EntityType>"
            for e, cols in CR_COLUMNS.items())
        return ('<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="4.0" xmlns:edmx='
                '"http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices><Schema Namespace='
                f'"Terrasoft.Configuration" xmlns="http://docs.oasis-open.org/odata/ns/edm">{types}</Schema>'
                "</edmx:DataServices></edmx:Edmx>")

    def dump_state(self):
        return {"contacts": list(self.st["entities"]["Contact"].values()),
                "activities": list(self.st["entities"]["Activity"].values()),
                "sessions": len(self.st["sessions"])}


class CreatioIdentityHandler(BaseHandler):
    @staticmethod
    def default_config():
        return {"client_id": "creatio_client", "client_secret": "creatio_secret", "expires_in": 3600,
                "latency_s": 0}

    @staticmethod
    def new_state(cfg):
        return {"tokens": {}}

    def configure(self, body):
        expire_or_merge(self, body, "tokens")

    def error(self, status, message, code=None):
        return Reply(status, {"error": code if code not in (None, "fault", "down", "internal") else
                              ("temporarily_unavailable" if status >= 500 else "invalid_request")})

    def route(self, req):
        if req.route != "/connect/token":
            return Reply(404, None)
        if req.method != "POST":
            return Reply(405, None, {"Allow": "POST"})
        if req.ctype != "application/x-www-form-urlencoded":
            return self.error(400, "form body required", "invalid_request")
        form = req.form
        client_id, client_secret = basic_auth(req.headers) or (form.get("client_id"), form.get("client_secret"))
        if client_id != self.cfg["client_id"] or client_secret != self.cfg["client_secret"]:
            return self.error(400, "bad client", "invalid_client")
        if form.get("grant_type") != "client_credentials":
            return self.error(400, "bad grant", "unsupported_grant_type")
        token = secrets.token_urlsafe(48)
        expires = int(self.cfg["expires_in"])
        self.st["tokens"][token] = time.time() + expires
        return Reply(200, {"access_token": token, "expires_in": expires, "token_type": "Bearer",
                           "scope": "ApplicationAccess"}, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def dump_state(self):
        return {"active_tokens": sum(1 for exp in self.st["tokens"].values() if exp > time.time())}


# =================================================================================================
# HubSpot
# =================================================================================================
HS_STANDARD = ["email", "firstname", "lastname", "phone", "mobilephone", "company", "jobtitle", "website",
               "address", "city", "state", "zip", "country", "lifecyclestage", "hs_lead_status"]
HS_READONLY = ["hs_object_id", "createdate", "lastmodifieddate"]
HS_OPTIONS = {"lifecyclestage": ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                                 "opportunity", "customer", "evangelist", "other"],
              "hs_lead_status": ["NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT",
                                 "CONNECTED", "BAD_TIMING"]}
HS_NOTE_PROPS = ["hs_note_body", "hs_timestamp", "hubspot_owner_id", "hs_attachment_ids"]
HS_VERSION = r"(?:v3|\d{4}-\d{2})"


def hs_property(name, ptype="string", field_type=None, label=None, options=None, read_only=False, group="contactinformation"):
    field_type = field_type or {"string": "text", "number": "number", "enumeration": "select",
                                "bool": "booleancheckbox", "date": "date", "datetime": "date"}.get(ptype, "text")
    return {"name": name, "label": label or name.replace("_", " ").title(), "type": ptype, "fieldType": field_type,
            "groupName": group, "description": "", "displayOrder": -1, "hidden": False, "formField": not read_only,
            "hasUniqueValue": name == "email", "calculated": False, "externalOptions": False,
            "options": [{"label": o, "value": o, "displayOrder": i, "hidden": False}
                        for i, o in enumerate(options or [])],
            "modificationMetadata": {"archivable": True, "readOnlyDefinition": True, "readOnlyValue": read_only},
            "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z", "archived": False}


class HubSpotHandler(BaseHandler):
    @staticmethod
    def default_config():
        return {"token": "pat-na1-valid-token", "portal_id": 12345678, "custom_properties": [],
                "events": [], "note_properties": [], "time_zone": "US/Eastern", "scopes": None, "latency_s": 0,
                "association_page_size": None, "rate_limits": None}

    @staticmethod
    def new_state(cfg):
        props = {n: hs_property(n, "enumeration" if n in HS_OPTIONS else "string", options=HS_OPTIONS.get(n))
                 for n in HS_STANDARD}
        props.update(hs_object_id=hs_property("hs_object_id", "number", read_only=True),
                     createdate=hs_property("createdate", "datetime", read_only=True),
                     lastmodifieddate=hs_property("lastmodifieddate", "datetime", read_only=True))
        note_props = {n: hs_property(n, "datetime" if n == "hs_timestamp" else "string", group="engagement")
                      for n in HS_NOTE_PROPS}
        st = {"properties": props, "note_properties": note_props, "contacts": {}, "notes": {}, "events": [],
              "event_defs": {}, "seq": 150, "expired": False,
              "rate_calls": [], "search_calls": [], "daily_used": 0, "throttled": {}}
        HubSpotHandler._add_custom(st, cfg)
        return st

    @staticmethod
    def _specs(value):
        """Normalise a list of names / {"name": ...} dicts, or a {name: properties} dict, to a list of dicts."""
        if isinstance(value, dict):
            return [{"name": name, "properties": props} for name, props in value.items()]
        return [{"name": v} if isinstance(v, str) else dict(v) for v in value]

    @staticmethod
    def _add_custom(st, cfg):
        for spec in HubSpotHandler._specs(cfg.get("custom_properties", [])):
            st["properties"][spec["name"]] = hs_property(spec["name"], spec.get("type", "string"),
                                                         spec.get("fieldType"), spec.get("label"), spec.get("options"))
        for spec in HubSpotHandler._specs(cfg.get("note_properties", [])):
            st["note_properties"][spec["name"]] = hs_property(spec["name"], spec.get("type", "string"),
                                                              group="engagement")
        for spec in HubSpotHandler._specs(cfg.get("events", [])):
            short = re.sub(r"^pe\d+_", "", spec["name"])
            fq = f"pe{cfg['portal_id']}_{short}"
            st["event_defs"][fq] = {"name": short, "label": spec.get("label", short), "fullyQualifiedName": fq,
                                    "primaryObject": "CONTACT", "properties": spec.get("properties")}

    def configure(self, body):
        body = dict(body)
        if body.pop("expire_sessions", False):
            self.st["expired"] = True
        if "token" in body:
            self.st["expired"] = False
        for key in ("custom_properties", "note_properties", "events"):
            if key in body:
                specs = self._specs(body.pop(key))
                self._add_custom(self.st, {"portal_id": self.cfg["portal_id"], key: specs})
                self.cfg[key] = self._specs(self.cfg[key]) + specs
        self.cfg.update(body)

    def error(self, status, message, code=None, errors=None, **extra):
        categories = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 403: "MISSING_SCOPES",
                      404: "OBJECT_NOT_FOUND", 405: "VALIDATION_ERROR", 409: "CONFLICT", 415: "VALIDATION_ERROR",
                      429: "RATE_LIMITS"}
        category = code if code not in (None, "fault", "down", "internal") else categories.get(status)
        body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
        if category:
            body["category"] = category
        if status == 429:
            body.update(policyName="TEN_SECONDLY_ROLLING", errorType="RATE_LIMIT")
        if errors:
            body["errors"] = errors
        body.update(extra)
        return Reply(status, body)

    def route(self, req):
        token = bearer(req.headers)
        tokens = self.cfg["token"] if isinstance(self.cfg["token"], list) else [self.cfg["token"]]
        if token is None or token not in tokens:
            return self.error(401, "Authentication credentials not found. This API supports OAuth 2.0 "
                              "authentication and you can find more details at "
                              "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                              "INVALID_AUTHENTICATION")
        if self.st["expired"]:
            return self.error(401, "The OAuth token used to make this call expired 0 day(s) ago.",
                              "EXPIRED_AUTHENTICATION")
        throttled, headers = self._rate_limit(req.route.endswith("/search"))
        if throttled:
            return throttled
        reply = self._route(req)
        reply.headers += headers
        return reply

    def _rate_limit(self, search):
        """HubSpot's limits (config `rate_limits`: `{"ten_secondly": N, "daily": N, "search_secondly": N}`,
        each optional): calls in any rolling 10 s (search apart, per second) and calls since the
        fake started, as the day's. Past one: 429 `RATE_LIMITS` with its `policyName` and no
        `Retry-After`. Answers other than search carry the `X-HubSpot-RateLimit-*` headers.
        A refused call counts in none. (reply or None, headers)."""
        limits = self.cfg.get("rate_limits")
        if not limits:
            return None, []
        now = time.monotonic()
        window, calls = (1.0, self.st["search_calls"]) if search else (10.0, self.st["rate_calls"])
        calls[:] = [t for t in calls if t > now - window]
        policy = None
        if limits.get("daily") is not None and self.st["daily_used"] >= limits["daily"]:
            policy = "DAILY"
        elif search and limits.get("search_secondly") is not None and len(calls) >= limits["search_secondly"]:
            policy = "SECONDLY"
        elif not search and limits.get("ten_secondly") is not None and len(calls) >= limits["ten_secondly"]:
            policy = "TEN_SECONDLY_ROLLING"
        if policy:
            self.st["throttled"][policy] = self.st["throttled"].get(policy, 0) + 1
            group = {"DAILY": "publicapi:private-app:daily", "SECONDLY": "publicapi:private-app:search:secondly",
                     "TEN_SECONDLY_ROLLING": "publicapi:private-app:ten-secondly"}[policy]
            reply = self.error(429, f"You have reached your {policy.lower()} limit.", policyName=policy, groupName=group)
            return reply, []
        calls.append(now)
        self.st["daily_used"] += 1
        if search:
            return None, []
        headers = [("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")]
        if limits.get("ten_secondly") is not None:
            headers += [("X-HubSpot-RateLimit-Max", str(limits["ten_secondly"])),
                        ("X-HubSpot-RateLimit-Remaining", str(limits["ten_secondly"] - len(calls)))]
        if limits.get("daily") is not None:
            headers += [("X-HubSpot-RateLimit-Daily", str(limits["daily"])),
                        ("X-HubSpot-RateLimit-Daily-Remaining", str(limits["daily"] - self.st["daily_used"]))]
        return None, headers

    def _route(self, req):
        if req.method in ("POST", "PATCH", "PUT"):
            if req.ctype != "application/json":
                return self.error(415, f"HTTP 415 Unsupported Media Type: '{req.ctype or '(none)'}'")
            if not req.json_ok:
                return self.error(400, f"Invalid input JSON: {req.json_error}")
            if not isinstance(req.json, dict):
                return self.error(400, "Invalid input JSON: expected an object")
        r = req.route
        missing = self._missing_scope(req.method, r)
        if missing:
            return self.error(403, "This app hasn't been granted all required scopes to make this call. Read more "
                              "about required scopes here: https://developers.hubspot.com/scopes.", "MISSING_SCOPES",
                              [{"message": "One or more of the following scopes are required.",
                                "context": {"requiredGranularScopes": [missing]}}])
        if re.fullmatch(rf"/account-info/{HS_VERSION}/details", r):
            return self._account() if req.method == "GET" else self._method(req)
        m = re.fullmatch(rf"/crm/(?:v3/objects|objects/{HS_VERSION})/(contacts|notes|0-1|0-46)(?:/(.*))?", r)
        if m:
            kind = {"0-1": "contacts", "0-46": "notes"}.get(m.group(1), m.group(1))
            sub = [unquote(p) for p in (m.group(2) or "").split("/") if p]
            return self._contacts(req, sub) if kind == "contacts" else self._notes(req, sub)
        m = re.fullmatch(rf"/crm/(?:v3/properties|properties/{HS_VERSION})/(contacts|notes)(?:/(\w+))?", r)
        if m:
            return self._properties(req, m.group(1), m.group(2))
        m = re.fullmatch(rf"/events/{HS_VERSION}/(send|send/batch|event-definitions)(?:/(\w+))?", r)
        if m:
            if m.group(1) == "event-definitions":
                return self._event_defs(req, m.group(2))
            if req.method != "POST" or m.group(2):
                return self._method(req)
            return self._send_event(req.json) if m.group(1) == "send" else self._send_batch(req.json)
        return self.error(404, f"Unable to find a resource for {req.method} {req.raw_path}", "OBJECT_NOT_FOUND")

    def _method(self, req):
        return self.error(405, f"HTTP 405 Method Not Allowed: {req.method} {req.raw_path}")

    def _missing_scope(self, method, route):
        """The scope this call needs that the token lacks (config `scopes`: None grants all)."""
        granted = self.cfg.get("scopes")
        if granted is None:
            return None
        if re.match(rf"/crm/(?:v3/objects|objects/{HS_VERSION})/", route):
            reads = method == "GET" or route.endswith(("/search", "/batch/read"))
            need = "crm.objects.contacts.read" if reads else "crm.objects.contacts.write"
        elif re.match(rf"/crm/(?:v3/properties|properties/{HS_VERSION})/", route):
            need = "crm.schemas.contacts.read" if method == "GET" else "crm.schemas.contacts.write"
        elif re.match(rf"/events/{HS_VERSION}/send", route):
            need = "analytics.behavioral_events.send"
        else:
            return None  # account details need only a valid token
        return None if need in granted else need

    def _account(self):
        return Reply(200, {"portalId": self.cfg["portal_id"], "accountType": "STANDARD",
                           "timeZone": self.cfg["time_zone"], "companyCurrency": "USD", "additionalCurrencies": [],
                           "utcOffset": "-05:00", "utcOffsetMilliseconds": -18000000,
                           "uiDomain": "app.hubspot.com", "dataHostingLocation": "na1"})

    # -- property validation
    def _bad_props(self, props, catalog) -> Reply | None:
        if not isinstance(props, dict):
            return self.error(400, "Invalid input JSON: 'properties' must be an object")
        problems = []
        for name, value in props.items():
            spec = catalog.get(name)
            if spec is None:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif spec["modificationMetadata"]["readOnlyValue"]:
                problems.append((name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'))
            elif not isinstance(value, str):
                problems.append((name, "INVALID_TYPE", f'Property "{name}" must be a string, got {json.dumps(value)}'))
            elif value != "" and not self._valid_value(spec, value):
                code = "INVALID_EMAIL" if name == "email" else "INVALID_OPTION" if spec["type"] == "enumeration" \
                    else f"INVALID_{spec['type'].upper()}"
                problems.append((name, code, f'{value} was not a valid {spec["type"]} for property "{name}"'))
        if not problems:
            return None
        details = [{"isValid": False, "message": msg, "error": code, "name": name,
                    "localizedErrorMessage": msg, "portalId": self.cfg["portal_id"]} for name, code, msg in problems]
        errors = [{"message": msg, "code": code, "context": {"propertyName": [name]}} for name, code, msg in problems]
        return self.error(400, "Property values were not valid: " + json.dumps(details), "VALIDATION_ERROR", errors)

    def _valid_value(self, spec, value):
        ptype = spec["type"]
        if spec["name"] == "email":
            return bool(EMAIL_RE.match(value))
        if ptype == "enumeration":
            allowed = {o["value"] for o in spec["options"]}
            return all(v in allowed for v in value.split(";")) if spec["fieldType"] == "checkbox" else value in allowed
        if ptype == "number":
            return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))
        if ptype == "bool":
            return value in ("true", "false")
        if ptype == "date":
            return (value.isdigit() and int(value) % 86400000 == 0) or bool(DATE_RE.match(value))
        if ptype == "datetime":
            return value.isdigit() or parse_iso(value) is not None
        return True

    # -- contacts
    def _contact_out(self, rec, props=None, new=None):
        out = {"id": rec["id"], "properties": {k: v for k, v in rec["properties"].items()
                                               if props is None or k in props},
               "createdAt": rec["createdAt"], "updatedAt": rec["updatedAt"], "archived": False}
        if new is not None:
            out["new"] = new
        return out

    def _association_page(self, req, contact_id, after, size):
        """One page of a contact's notes, ids ascending: up to `size` (HubSpot: 100 inside a record
        read, `limit` up to 500 from the association list; config `association_page_size` caps
        both), with `paging.next` while more follow."""
        size = min(size, self.cfg["association_page_size"] or size)
        ids = sorted((n["id"] for n in self.st["notes"].values() if contact_id in n["associations"]), key=int)
        start = int(after) if after else 0
        page = {"results": [{"id": i, "type": "contact_to_note"} for i in ids[start:start + size]]}
        if start + size < len(ids):
            nxt = str(start + size)
            objects = re.match(r"/crm/(?:v3/objects|objects/[^/]+)", req.route).group(0)
            page["paging"] = {"next": {"after": nxt,
                                       "link": f"{self.base}{objects}/contacts/{contact_id}/associations/notes?after={nxt}"}}
        return page

    def _associations(self, req, contact_id, kind):
        """GET …/contacts/{id}/associations/notes?after=&limit= (v3's list of associated ids)."""
        if req.method != "GET":
            return self._method(req)
        if kind not in ("notes", "0-46"):
            return self.error(400, f"Unable to infer object type from: {kind}")
        if contact_id not in self.st["contacts"]:
            return self.error(404, "resource not found", "OBJECT_NOT_FOUND")
        limit, after = req.q("limit", "500"), req.q("after")
        if not str(limit).isdigit() or not 1 <= int(limit) <= 500:
            return self.error(400, f"limit must be between 1 and 500, got {limit}", "VALIDATION_ERROR")
        if after is not None and not after.isdigit():
            return self.error(400, f"Invalid paging cursor: {after}", "VALIDATION_ERROR")
        return Reply(200, self._association_page(req, contact_id, after, int(limit)))

    def _by_email(self, email):
        return next((c for c in self.st["contacts"].values()
                     if (c["properties"].get("email") or "").lower() == (email or "").lower()), None)

    def _new_contact(self, props):
        self.st["seq"] += 1
        cid, ts = str(self.st["seq"]), now_iso()
        rec = {"id": cid, "createdAt": ts, "updatedAt": ts,
               "properties": {"hs_object_id": cid, "createdate": ts, "lastmodifieddate": ts}}
        self.st["contacts"][cid] = rec
        self._apply(rec, props)
        return rec

    def _apply(self, rec, props):
        ts = now_iso()
        for name, value in props.items():
            rec["properties"][name] = value.lower() if name == "email" else value
        rec["updatedAt"] = rec["properties"]["lastmodifieddate"] = ts

    def _contacts(self, req, sub):
        if sub == ["batch", "upsert"] and req.method == "POST":
            return self._batch_upsert(req.json)
        if sub == ["search"] and req.method == "POST":
            return self._search(req.json)
        if not sub:
            if req.method == "POST":
                body = req.json
                extra = set(body) - {"properties", "associations", "objectWriteTraceId"}
                if extra:
                    return self.error(400, f'Invalid input JSON: Unrecognized field "{sorted(extra)[0]}"')
                props = body.get("properties", {})
                bad = self._bad_props(props, self.st["properties"])
                if bad:
                    return bad
                existing = self._by_email(props.get("email")) if props.get("email") else None
                if existing:
                    return self.error(409, f"Contact already exists. Existing ID: {existing['id']}", "CONFLICT")
                return Reply(201, self._contact_out(self._new_contact(props)))
            if req.method == "GET":
                limit = int(req.q("limit", "10")) if str(req.q("limit", "10")).isdigit() else 10
                items = list(self.st["contacts"].values())[:limit]
                return Reply(200, {"results": [self._contact_out(c) for c in items]})
            return self._method(req)
        if len(sub) == 3 and sub[1] == "associations":
            return self._associations(req, sub[0], sub[2])
        if len(sub) != 1:
            return self.error(404, f"Unable to find a resource for {req.method} {req.raw_path}", "OBJECT_NOT_FOUND")
        id_prop = req.q("idProperty")
        if id_prop not in (None, "hs_object_id", "email"):
            return self.error(400, f"Invalid idProperty '{id_prop}': it must be a unique-value property")
        rec = self._by_email(sub[0]) if id_prop == "email" else self.st["contacts"].get(sub[0])
        if rec is None:
            return self.error(404, "resource not found", "OBJECT_NOT_FOUND")
        if req.method == "GET":
            wanted = [p for p in (req.q("properties") or "").split(",") if p]
            out = self._contact_out(rec, set(wanted) | {"hs_object_id", "createdate", "lastmodifieddate",
                                                         "email", "firstname", "lastname"} if wanted else None)
            for kind in [k for k in (req.q("associations") or "").split(",") if k]:
                if kind not in ("notes", "0-46"):
                    return self.error(400, f"Unable to infer object type from: {kind}")
                page = self._association_page(req, rec["id"], None, 100)
                if page["results"]:  # HubSpot leaves out an association type with no records
                    out.setdefault("associations", {})["notes"] = page
            return Reply(200, out)
        if req.method == "PATCH":
            body = req.json
            if set(body) - {"properties", "objectWriteTraceId"} or "properties" not in body:
                return self.error(400, "Invalid input JSON: expected {\"properties\": {...}}")
            bad = self._bad_props(body["properties"], self.st["properties"])
            if bad:
                return bad
            email = body["properties"].get("email")
            other = self._by_email(email) if email else None
            if other is not None and other is not rec:
                return self.error(409, f"Contact already exists. Existing ID: {other['id']}", "CONFLICT")
            self._apply(rec, body["properties"])
            return Reply(200, self._contact_out(rec))
        if req.method == "DELETE":
            del self.st["contacts"][rec["id"]]
            return Reply(204, None)
        return self._method(req)

    def _batch_upsert(self, body):
        inputs = body.get("inputs")
        if set(body) - {"inputs"} or not isinstance(inputs, list):
            return self.error(400, "Invalid input JSON: expected {\"inputs\": [...]}")
        if len(inputs) > 100:
            return self.error(400, f"Batch input cannot exceed 100 inputs, got {len(inputs)}")
        seen = set()
        for i, item in enumerate(inputs):
            if not isinstance(item, dict) or set(item) - {"idProperty", "id", "properties", "objectWriteTraceId"}:
                return self.error(400, f"Invalid input JSON at inputs[{i}]: only idProperty, id, properties and "
                                  "objectWriteTraceId are allowed")
            if item.get("idProperty") != "email":
                return self.error(400, f"inputs[{i}].idProperty must be a unique-value property ('email'), got "
                                  f"{json.dumps(item.get('idProperty'))}")
            if not isinstance(item.get("id"), str) or not EMAIL_RE.match(item["id"]):
                return self.error(400, f"Email address {item.get('id')} is invalid", "VALIDATION_ERROR",
                                  [{"message": "invalid email", "code": "INVALID_EMAIL"}])
            if not isinstance(item.get("properties"), dict):
                return self.error(400, f"inputs[{i}].properties is required")
            bad = self._bad_props(item["properties"], self.st["properties"])
            if bad:
                return bad
            email = item["properties"].get("email")
            if email is not None and email.lower() != item["id"].lower():
                return self.error(400, f"inputs[{i}]: properties.email '{email}' does not match id '{item['id']}'")
            if item["id"].lower() in seen:
                return self.error(400, f"Duplicate IDs found in batch input: [{item['id']}]")
            seen.add(item["id"].lower())
        started, results = now_iso(), []
        for item in inputs:
            rec = self._by_email(item["id"])
            new = rec is None
            if new:
                rec = self._new_contact(dict(item["properties"], email=item["id"]))
            else:
                self._apply(rec, item["properties"])
            results.append(self._contact_out(rec, new=new))
        return Reply(200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_iso()})

    def _search(self, body):
        groups = body.get("filterGroups", [])
        wanted = body.get("properties") or ["email", "firstname", "lastname"]
        matches = []
        for rec in self.st["contacts"].values():
            for group in groups or [{"filters": []}]:
                ok = True
                for flt in group.get("filters", []):
                    if flt.get("operator") != "EQ" or flt.get("propertyName") not in self.st["properties"]:
                        return self.error(400, "The fake supports EQ filters on existing properties only")
                    have = rec["properties"].get(flt["propertyName"])
                    ok = ok and have is not None and str(have).lower() == str(flt.get("value")).lower()
                if ok:
                    matches.append(rec)
                    break
        limit = body.get("limit", 10) if isinstance(body.get("limit", 10), int) else 10
        keep = set(wanted) | {"hs_object_id", "createdate", "lastmodifieddate"}
        return Reply(200, {"total": len(matches), "results": [self._contact_out(r, keep) for r in matches[:limit]]})

    def _properties(self, req, kind, name):
        catalog = self.st["properties"] if kind == "contacts" else self.st["note_properties"]
        if name:
            if req.method != "GET":
                return self._method(req)
            return Reply(200, catalog[name]) if name in catalog else self.error(
                404, f"Unable to find property {name}", "OBJECT_NOT_FOUND")
        if req.method == "GET":
            return Reply(200, {"results": list(catalog.values())})
        if req.method != "POST":
            return self._method(req)
        spec = req.json
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not spec.get(k)]
        if missing:
            return self.error(400, f"Property definition is missing required fields: {missing}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", spec["name"]):
            return self.error(400, f"Property name '{spec['name']}' must be lower case letters, digits and _")
        if spec["name"] in catalog:
            return self.error(409, f"Property named '{spec['name']}' already exists.", "OBJECT_ALREADY_EXISTS")
        catalog[spec["name"]] = hs_property(spec["name"], spec["type"], spec["fieldType"], spec["label"],
                                            [o.get("value") for o in spec.get("options", [])], group=spec["groupName"])
        return Reply(201, catalog[spec["name"]])

    # -- events
    def _event_defs(self, req, name):
        defs = self.st["event_defs"]
        if req.method == "GET":
            if name:
                found = next((d for d in defs.values() if name in (d["name"], d["fullyQualifiedName"])), None)
                return Reply(200, found) if found else self.error(404, "Event definition not found", "OBJECT_NOT_FOUND")
            return Reply(200, {"total": len(defs), "results": list(defs.values())})
        if req.method != "POST" or name:
            return self._method(req)
        body = req.json
        if not body.get("label"):
            return self.error(400, "Event definition 'label' is required")
        short = body.get("name") or re.sub(r"[^a-z0-9_]+", "_", body["label"].lower()).strip("_")
        if not re.fullmatch(r"[a-z0-9_]+", short):
            return self.error(400, f"Event name '{short}' must contain only a-z, 0-9 and _")
        fq = f"pe{self.cfg['portal_id']}_{short}"
        if fq in defs:
            return self.error(409, f"An event definition named {short} already exists.", "CONFLICT")
        props = [p.get("name") for p in body.get("propertyDefinitions", [])]
        defs[fq] = {"name": short, "label": body["label"], "fullyQualifiedName": fq,
                    "primaryObject": body.get("primaryObject", "CONTACT"), "description": body.get("description", ""),
                    "properties": props or None, "createdAt": now_iso(), "archived": False}
        return Reply(201, defs[fq])

    def _check_event(self, body, where="") -> Reply | None:
        if not isinstance(body, dict):
            return self.error(400, f"Invalid input JSON{where}: expected an object")
        extra = set(body) - {"eventName", "email", "objectId", "utk", "occurredAt", "uuid", "properties", "objectType"}
        if extra:
            return self.error(400, f'Invalid input JSON{where}: Unrecognized field "{sorted(extra)[0]}"')
        name = body.get("eventName")
        if not isinstance(name, str) or not re.fullmatch(rf"pe{self.cfg['portal_id']}_[a-z0-9_]+", name):
            return self.error(400, f"eventName{where} must be the fully qualified name "
                              f"pe{self.cfg['portal_id']}_<name>, got {json.dumps(name)}")
        definition = self.st["event_defs"].get(name)
        if definition is None:
            return self.error(400, f"Event definition {name} does not exist in portal {self.cfg['portal_id']}")
        if not any(body.get(k) for k in ("email", "objectId", "utk")):
            return self.error(400, f"At least one of email, objectId or utk is required{where}")
        if body.get("email") is not None and (not isinstance(body["email"], str) or not EMAIL_RE.match(body["email"])):
            return self.error(400, f"Email address {body['email']} is invalid{where}")
        if body.get("objectId") is not None and str(body["objectId"]) not in self.st["contacts"]:
            return self.error(400, f"objectId {body['objectId']} is not an existing contact{where}")
        if body.get("occurredAt") is not None and parse_iso(str(body["occurredAt"])) is None:
            return self.error(400, f"occurredAt{where} must be an ISO-8601 timestamp")
        props = body.get("properties", {})
        if not isinstance(props, dict) or len(props) > 50 or not all(is_scalar(v) for v in props.values()):
            return self.error(400, f"properties{where} must be an object of at most 50 scalar values")
        if definition["properties"] is not None:
            unknown = sorted(set(props) - set(definition["properties"]))
            if unknown:
                return self.error(400, f"Properties {unknown} are not defined on event {name}", "VALIDATION_ERROR")
        return None

    def _store_event(self, body):
        self.st["events"].append(dict(body, received_at=now_iso()))

    def _send_event(self, body):
        problem = self._check_event(body)
        if problem:
            return problem
        self._store_event(body)
        return Reply(204, None)

    def _send_batch(self, body):
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not 0 < len(inputs) <= 500:
            return self.error(400, "inputs must be a list of 1-500 events")
        for i, item in enumerate(inputs):
            problem = self._check_event(item, f" at inputs[{i}]")
            if problem:
                return problem
        for item in inputs:
            self._store_event(item)
        return Reply(204, None)

    # -- notes
    def _notes(self, req, sub):
        if sub == ["batch", "read"]:
            return self._read_notes(req.json) if req.method == "POST" else self._method(req)
        if sub:
            note = self.st["notes"].get(sub[0]) if len(sub) == 1 else None
            if req.method != "GET":
                return self._method(req)
            return Reply(200, note) if note else self.error(404, "resource not found", "OBJECT_NOT_FOUND")
        if req.method != "POST":
            return self._method(req)
        body = req.json
        extra = set(body) - {"properties", "associations"}
        if extra:
            return self.error(400, f'Invalid input JSON: Unrecognized field "{sorted(extra)[0]}"')
        props = body.get("properties") or {}
        bad = self._bad_props(props, self.st["note_properties"])
        if bad:
            return bad
        for required in ("hs_timestamp", "hs_note_body"):
            if not props.get(required):
                return self.error(400, f"Property {required} is required", "VALIDATION_ERROR",
                                  [{"message": f"{required} is required", "code": "REQUIRED_PROPERTY",
                                    "context": {"propertyName": [required]}}])
        assocs = body.get("associations")
        if not isinstance(assocs, list) or not assocs:
            return self.error(400, "A note must be associated with a contact (associations is empty)")
        for assoc in assocs:
            to = (assoc or {}).get("to", {}).get("id") if isinstance(assoc, dict) else None
            types = (assoc or {}).get("types") if isinstance(assoc, dict) else None
            if str(to) not in self.st["contacts"]:
                return self.error(400, f"Association target {to} is not an existing contact")
            if not isinstance(types, list) or not any(
                    t.get("associationCategory") == "HUBSPOT_DEFINED" and t.get("associationTypeId") == 202
                    for t in types if isinstance(t, dict)):
                return self.error(400, "Note-to-contact associations need {associationCategory: HUBSPOT_DEFINED, "
                                  "associationTypeId: 202}")
        self.st["seq"] += 1
        nid, ts = str(self.st["seq"]), now_iso()
        note = {"id": nid, "properties": dict(props, hs_object_id=nid, hs_createdate=ts), "createdAt": ts,
                "updatedAt": ts, "archived": False,
                "associations": [str(a["to"]["id"]) for a in assocs]}
        self.st["notes"][nid] = note
        return Reply(201, {k: v for k, v in note.items() if k != "associations"})

    def _read_notes(self, body):
        extra = set(body) - {"properties", "propertiesWithHistory", "idProperty", "inputs"}
        if extra:
            return self.error(400, f'Invalid input JSON: Unrecognized field "{sorted(extra)[0]}"')
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > 100 or not all(
                isinstance(i, dict) and set(i) == {"id"} and isinstance(i["id"], str) for i in inputs):
            return self.error(400, "inputs must hold 1 to 100 objects of the form {\"id\": \"<string>\"}")
        props = body.get("properties") or []
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            return self.error(400, "properties must be a list of property names")
        found, missing, started = [], [], now_iso()
        for i in inputs:
            note = self.st["notes"].get(i["id"])
            if note is None:
                missing.append(i["id"])
                continue
            base = {"hs_object_id", "hs_createdate", "hs_lastmodifieddate"}
            found.append({"id": note["id"], "properties": {k: v for k, v in note["properties"].items()
                                                            if k in base or k in props},
                          "createdAt": note["createdAt"], "updatedAt": note["updatedAt"], "archived": False})
        out = {"status": "COMPLETE", "results": found, "startedAt": started, "completedAt": now_iso()}
        if not missing:
            return Reply(200, out)
        out.update(numErrors=1, errors=[{"status": "error", "category": "OBJECT_NOT_FOUND",
                                         "message": "Could not get some NOTE objects, they may be deleted or not "
                                                    "exist. Check that ids are valid.", "context": {"ids": missing}}])
        return Reply(207, out)

    def dump_state(self):
        return {"contacts": list(self.st["contacts"].values()), "notes": list(self.st["notes"].values()),
                "events": self.st["events"], "event_definitions": list(self.st["event_defs"].values()),
                "custom_properties": [n for n in self.st["properties"] if n not in HS_STANDARD + HS_READONLY],
                "throttled": self.st["throttled"], "daily_used": self.st["daily_used"]}


# =================================================================================================
# Process / in-process runner
# =================================================================================================
HANDLERS = {"klaviyo": KlaviyoHandler, "salesforce": SalesforceHandler, "creatio": CreatioHandler,
            "creatio_identity": CreatioIdentityHandler, "hubspot": HubSpotHandler}


class FakeCRMs:
    """Five fake CRM listeners in this process. `urls` maps vendor name → base URL."""

    def __init__(self, host: str = "127.0.0.1", sf_jwt_public_key: str | None = None):
        self.host, self.lock = host, threading.RLock()
        self.servers: dict[str, FakeServer] = {}
        self.threads: list[threading.Thread] = []
        self.overrides = {name: {} for name in HANDLERS}
        if sf_jwt_public_key:
            with open(sf_jwt_public_key, encoding="utf-8") as fh:
                self.overrides["salesforce"]["jwt_public_key"] = fh.read()

    @property
    def urls(self) -> dict:
        return {name: srv.base_url for name, srv in self.servers.items()}

    def start(self) -> "FakeCRMs":
        for name, handler in HANDLERS.items():
            self.servers[name] = FakeServer(name, handler, self.host, self.lock, self, self.overrides[name])
        for srv in self.servers.values():
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"fake-{srv.name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stopping.set()
            srv.shutdown()
            srv.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.threads.clear()

    def reset(self) -> None:
        with self.lock:
            for srv in self.servers.values():
                srv.reset()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Strict fake CRM servers for crm-service tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports-file", help="write the vendor → base URL JSON here (atomically)")
    parser.add_argument("--sf-jwt-public-key", help="PEM public key/certificate to verify Salesforce JWT assertions")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fakes = FakeCRMs(args.host, args.sf_jwt_public_key).start()
    line = json.dumps(fakes.urls)
    if args.ports_file:
        tmp = f"{args.ports_file}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
        os.replace(tmp, args.ports_file)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    fakes.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
