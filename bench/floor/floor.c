/*
 * The "floor" of `make bench`: the least a FastCGI responder over libfcgi + libpq + libcurl
 * can do for two of crm-service's routes, on this machine, behind the same nginx config.
 * The worker's requests/s are reported as a ratio to this program's.
 *
 *   GET  /crm/list         the SELECT of IntegrationStore.list for X-User-Id, the same JSON out
 *   POST /crm/sync/event   the statements of Delivery.sync for one event, in the same order:
 *                          INSERT the log rows (SELECT from the targets); SELECT
 *                          pgp_sym_decrypt(credentials, $key); POST {base}/api/events through
 *                          libcurl; UPDATE the log row and the integration (one statement);
 *                          the same result JSON out
 *
 * What it leaves out on purpose (the point of a floor): routing tables, validation beyond what
 * the two routes need, logging, metrics, a connection pool (each thread owns one PGconn with
 * prepared statements and one CURL handle), JSON trees (minimal parsing of the few fields used).
 * Not a service: no API key, no CORS, no retries, no graceful drain.
 *
 * Environment (the worker's names): DB_DSN, FCGI_SOCKET, FCGI_THREADS (default 16),
 * CRM_ENCRYPTION_KEY, CRM_KLAVIYO_BASE_URL, CRM_KLAVIYO_REVISION (default 2026-10-15),
 * CRM_HTTP_TIMEOUT_S (default 10); FLOOR_UNPREPARED=1 sends each statement's text with PQexecParams
 * (parsed and planned every time, as the worker's Connection.execute does) instead of the prepared one:
 * the difference between the two is what prepared statements are worth here.
 *
 * Build: gcc -O2 -pthread floor.c $(pkg-config --cflags --libs fcgi libpq libcurl) -o floor
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcgiapp.h>
#include <libpq-fe.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration ---------------------------------------------------------------------- */

static const char *cfg_dsn;
static const char *cfg_socket;
static const char *cfg_key;
static const char *cfg_klaviyo_base;
static const char *cfg_klaviyo_revision;
static long cfg_timeout_ms;
static char cfg_claim_seconds[32];   /* CRM_HTTP_TIMEOUT_S * 8 + 30, as the worker formats it */
static char cfg_worker[256];         /* claimed_by */
static int listen_fd = -1;
static int cfg_unprepared;           /* FLOOR_UNPREPARED=1: PQexecParams with the SQL text, never prepared */

/* ---- the statements (text as in Sources/CRMStore, parameters in the same order) -------- */

enum { S_LIST, S_CREATE_LOGS, S_RECORD, S_COUNT };

/* The single-request forms of IntegrationStore.listStatement, DeliveryStore.createLogStatement and
 * DeliveryStore.recordStatement: Tests/CRMStoreTests/FloorStatementTests.swift fails when these
 * texts (whitespace aside) or their parameter counts differ from the worker's. */
static const char *const statement_sql[S_COUNT] = {
    [S_LIST] =
        "SELECT crm_type, is_active, status, settings, created_at, updated_at, last_sync_at, last_sync_status\n"
        "  FROM crm.crm_integrations WHERE user_id = $1 ORDER BY crm_type",
    /* The log row, with the integration's decrypted credentials and their stored time. */
    [S_CREATE_LOGS] =
        "WITH t AS MATERIALIZED (\n"
        "    SELECT nextval(pg_get_serial_sequence('crm.crm_sync_logs', 'id')) AS id, crm_type,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE crm.decrypt_credentials(credentials, $2) END AS plain,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE settings END AS settings,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE updated_at END AS credentials_at,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE EXTRACT(EPOCH FROM rate_limited_until - now()) END AS held_for\n"
        "      FROM crm.crm_integrations\n"
        "     WHERE user_id = $3 AND is_active AND COALESCE((settings ->> $4::text)::boolean, true)\n"
        "       AND ($5::text[] IS NULL OR crm_type = ANY($5::text[]))),\n"
        "inserted AS (\n"
        "    INSERT INTO crm.crm_sync_logs (id, user_id, crm_type, operation, status, request, unique_id, next_attempt_at, claimed_by, claimed_until)\n"
        "    SELECT t.id, $3, t.crm_type, $6::text, CASE WHEN $1::boolean THEN 'queued' ELSE 'in_flight' END, $7::jsonb,\n"
        "           CASE WHEN $6::text = 'event' THEN COALESCE($8::text, 'crm-log-' || t.id) END,\n"
        "           CASE WHEN $1::boolean THEN now() END,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE $9::text END,\n"
        "           CASE WHEN $1::boolean THEN NULL ELSE now() + make_interval(secs => $10::double precision) END\n"
        "      FROM t\n"
        "    RETURNING id, unique_id)\n"
        "SELECT inserted.id, t.crm_type, inserted.unique_id, true AS connected, t.plain, t.settings, t.credentials_at, t.held_for\n"
        "  FROM t JOIN inserted USING (id)",
    [S_RECORD] =
        "WITH logged AS (\n"
        "    UPDATE crm.crm_sync_logs\n"
        "       SET status = $1, http_status = $2::int, error = $3,\n"
        "           duration_ms = $4::int, crm_record_id = COALESCE($5, crm_record_id),\n"
        "           response = $6::jsonb, attempts = attempts + 1, rate_limited_attempts = rate_limited_attempts + ($14::double precision IS NOT NULL)::int,\n"
        "           updated_at = now(),\n"
        "           next_attempt_at = now() + make_interval(secs => $7::double precision),\n"
        "           claimed_by = NULL, claimed_until = NULL\n"
        "     WHERE id = $8::bigint AND status = 'in_flight' AND claimed_by = $9\n"
        "    RETURNING id),\n"
        "touched AS (\n"
        "    UPDATE crm.crm_integrations\n"
        "       SET last_sync_at = now(), last_sync_status = $1,\n"
        "           status = CASE WHEN $10::boolean AND updated_at = $11::timestamptz THEN 'auth_error' ELSE status END,\n"
        "           status_detail = CASE WHEN $10::boolean AND updated_at = $11::timestamptz THEN $3 ELSE status_detail END,\n"
        "           rate_limited_until = CASE WHEN updated_at = $11::timestamptz\n"
        "                                     THEN GREATEST(rate_limited_until, now() + make_interval(secs => $14::double precision))\n"
        "                                     ELSE rate_limited_until END\n"
        "     WHERE user_id = $12 AND crm_type = $13 AND EXISTS (SELECT 1 FROM logged)\n"
        "    RETURNING 1)\n"
        "SELECT (SELECT count(*) FROM logged) AS logged",
};
static const int statement_params[S_COUNT] = {
    [S_LIST] = 1, [S_CREATE_LOGS] = 10, [S_RECORD] = 14,
};
static const char *const statement_name[S_COUNT] = {
    "list", "create_logs", "record",
};

/* ---- a growable byte buffer ------------------------------------------------------------- */

typedef struct { char *p; size_t len, cap; } buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) { perror("realloc"); abort(); }
    b->cap = cap;
}
static void buf_add(buf_t *b, const char *s, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_printf(buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
/* A JSON string (the worker's escaping rules). */
static void buf_json_string(buf_t *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    buf_add(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': buf_add(b, "\\\"", 2); break;
        case '\\': buf_add(b, "\\\\", 2); break;
        case '\n': buf_add(b, "\\n", 2); break;
        case '\r': buf_add(b, "\\r", 2); break;
        case '\t': buf_add(b, "\\t", 2); break;
        default:
            if (*c < 0x20) {
                char u[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
                buf_add(b, u, 6);
            } else {
                buf_add(b, (const char *)c, 1);
            }
        }
    }
    buf_add(b, "\"", 1);
}
/* A timestamptz in ISO session format (`2026-11-28 21:53:07.123456+00`) as the API shows it. */
static void buf_json_timestamp(buf_t *b, const char *ts) {
    size_t n = strlen(ts);
    buf_add(b, "\"", 1);
    size_t body = n >= 3 && strcmp(ts + n - 3, "+00") == 0 ? n - 3 : n;
    for (size_t i = 0; i < body; i++) buf_add(b, ts[i] == ' ' ? "T" : ts + i, 1);
    if (body != n) buf_add(b, "Z", 1);
    buf_add(b, "\"", 1);
}

/* ---- minimal JSON reading: only what the two routes need -------------------------------- */

/* The end of the JSON value starting at p (string, object, array or scalar), or NULL. */
static const char *json_skip(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\') { p++; continue; }
            if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') { p = json_skip(p, end); if (!p) return NULL; p--; continue; }
            if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') { if (--depth == 0) return p + 1; }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !isspace((unsigned char)*p)) p++;
    return p;
}

/* The raw value of a top-level key of the object in [p, end), or NULL. */
static const char *json_find(const char *p, const char *end, const char *key, const char **value_end) {
    size_t klen = strlen(key);
    while (p < end && *p != '{') p++;
    if (p >= end) return NULL;
    p++;
    for (;;) {
        while (p < end && (isspace((unsigned char)*p) || *p == ',')) p++;
        if (p >= end || *p != '"') return NULL;
        const char *kstart = p + 1;
        const char *kend = json_skip(p, end);
        if (!kend) return NULL;
        p = kend;
        while (p < end && (isspace((unsigned char)*p) || *p == ':')) p++;
        const char *vend = json_skip(p, end);
        if (!vend) return NULL;
        if ((size_t)(kend - 1 - kstart) == klen && memcmp(kstart, key, klen) == 0) {
            *value_end = vend;
            return p;
        }
        p = vend;
    }
}

/* A top-level string value, unescaped only for the common cases (\" and \\); malloc'd. */
static char *json_string(const char *body, size_t len, const char *key) {
    const char *vend, *v = json_find(body, body + len, key, &vend);
    if (!v || *v != '"') return NULL;
    char *out = malloc((size_t)(vend - v));
    size_t n = 0;
    for (const char *c = v + 1; c < vend - 1; c++) {
        if (*c == '\\' && c + 1 < vend - 1) c++;
        out[n++] = *c;
    }
    out[n] = 0;
    return out;
}

/* ---- per-thread state ------------------------------------------------------------------- */

typedef struct {
    int index;
    PGconn *db;
    CURL *curl;
    buf_t out, body, crm_body, crm_response, scratch;
} worker_t;

static int db_connect(worker_t *w) {
    if (w->db) PQfinish(w->db);
    w->db = PQconnectdb(cfg_dsn);
    if (PQstatus(w->db) != CONNECTION_OK) {
        fprintf(stderr, "floor[%d]: connect: %s", w->index, PQerrorMessage(w->db));
        return -1;
    }
    /* The worker's session settings. */
    static const char *const session[] = {
        "SET search_path TO crm, public", "SET TIME ZONE 'UTC'", "SET DateStyle TO ISO",
        "SET statement_timeout = '15s'", "SET log_parameter_max_length = 0",
    };
    for (size_t i = 0; i < sizeof session / sizeof *session; i++) PQclear(PQexec(w->db, session[i]));
    for (int s = 0; s < S_COUNT; s++) {
        PGresult *r = PQprepare(w->db, statement_name[s], statement_sql[s], statement_params[s], NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "floor[%d]: prepare %s: %s", w->index, statement_name[s], PQresultErrorMessage(r));
            PQclear(r);
            return -1;
        }
        PQclear(r);
    }
    return 0;
}

static PGresult *db_run(worker_t *w, int s, const char *const *params) {
    PGresult *r = cfg_unprepared
        ? PQexecParams(w->db, statement_sql[s], statement_params[s], NULL, params, NULL, NULL, 0)
        : PQexecPrepared(w->db, statement_name[s], statement_params[s], params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "floor[%d]: %s: %s", w->index, statement_name[s], PQresultErrorMessage(r));
        if (PQstatus(w->db) != CONNECTION_OK) db_connect(w);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- responses -------------------------------------------------------------------------- */

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 422: return "Unprocessable Content";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void respond(FCGX_Request *req, int status, const buf_t *body) {
    unsigned char raw[16];
    char rid[33];
    static const char hex[] = "0123456789abcdef";
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) memset(raw, 0, sizeof raw);
    for (int i = 0; i < 16; i++) { rid[2 * i] = hex[raw[i] >> 4]; rid[2 * i + 1] = hex[raw[i] & 15]; }
    rid[32] = 0;
    char head[256];
    int n = snprintf(head, sizeof head,
                     "Status: %d %s\r\nContent-Type: application/json; charset=utf-8\r\nX-Request-Id: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, reason(status), rid, body->len);
    FCGX_PutStr(head, n, req->out);
    FCGX_PutStr(body->p, (int)body->len, req->out);
}

static void respond_detail(FCGX_Request *req, worker_t *w, int status, const char *detail) {
    w->out.len = 0;
    buf_str(&w->out, "{\"detail\":");
    buf_json_string(&w->out, detail);
    buf_str(&w->out, "}");
    respond(req, status, &w->out);
}

static int valid_user(const char *u) {
    size_t n = u ? strlen(u) : 0;
    if (n < 1 || n > 128) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (!(isalnum(c) || c == '_' || c == '-')) return 0;
    }
    return 1;
}

/* ---- GET /crm/list ---------------------------------------------------------------------- */

static void settings_json(buf_t *b, const char *stored) {
    /* Settings are stored validated; the worker shows sync_contacts/sync_events with defaults. */
    int contacts = !strstr(stored, "\"sync_contacts\": false");
    int events = !strstr(stored, "\"sync_events\": false");
    buf_printf(b, "{\"sync_contacts\":%s,\"sync_events\":%s}", contacts ? "true" : "false", events ? "true" : "false");
}

static void handle_list(FCGX_Request *req, worker_t *w, const char *user) {
    const char *params[1] = {user};
    PGresult *r = db_run(w, S_LIST, params);
    if (!r) { respond_detail(req, w, 503, "Database unavailable, try again shortly"); return; }
    int rows = PQntuples(r);
    buf_t *o = &w->out;
    o->len = 0;
    buf_str(o, "{\"integrations\":[");
    for (int i = 0; i < rows; i++) {
        if (i) buf_str(o, ",");
        buf_str(o, "{\"crm_type\":");
        buf_json_string(o, PQgetvalue(r, i, 0));
        buf_printf(o, ",\"is_active\":%s,\"status\":", PQgetvalue(r, i, 1)[0] == 't' ? "true" : "false");
        buf_json_string(o, PQgetvalue(r, i, 2));
        buf_str(o, ",\"settings\":");
        settings_json(o, PQgetvalue(r, i, 3));
        buf_str(o, ",\"created_at\":");
        buf_json_timestamp(o, PQgetvalue(r, i, 4));
        buf_str(o, ",\"updated_at\":");
        buf_json_timestamp(o, PQgetvalue(r, i, 5));
        buf_str(o, ",\"last_sync_at\":");
        if (PQgetisnull(r, i, 6)) buf_str(o, "null"); else buf_json_timestamp(o, PQgetvalue(r, i, 6));
        buf_str(o, ",\"last_sync_status\":");
        if (PQgetisnull(r, i, 7)) buf_str(o, "null"); else buf_json_string(o, PQgetvalue(r, i, 7));
        buf_str(o, "}");
    }
    buf_printf(o, "],\"count\":%d}", rows);
    PQclear(r);
    respond(req, 200, o);
}

/* ---- POST /crm/sync/event --------------------------------------------------------------- */

static size_t curl_sink(char *data, size_t size, size_t count, void *user) {
    buf_add((buf_t *)user, data, size * count);
    return size * count;
}

static void now_iso(char out[32]) {
    time_t t = time(NULL);
    struct tm parts;
    gmtime_r(&t, &parts);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &parts);
}

static long elapsed_ms(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* One delivery of the event to Klaviyo with the credentials read with its log row (`plain`,
 * stored at `credentials_at`); fills the result object into w->out. */
static int deliver_klaviyo(worker_t *w, const char *user, long long log_id, const char *unique_id,
                           const char *plain, const char *credentials_at,
                           const char *event, const char *email, const char *properties) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    char key[512] = "";
    if (plain) {
        /* {"api_key": "pk_..."}: the only credential key Klaviyo has. */
        char *k = json_string(plain, strlen(plain), "api_key");
        if (k) { snprintf(key, sizeof key, "%s", k); free(k); }
    }

    long http_status = 0;
    const char *status = "failed";
    const char *error = NULL;
    if (!key[0]) {
        error = "the klaviyo integration is no longer connected";
    } else {
        char when[32];
        now_iso(when);
        buf_t *b = &w->crm_body;
        b->len = 0;
        buf_str(b, "{\"data\":{\"type\":\"event\",\"attributes\":{\"properties\":");
        buf_str(b, properties);
        buf_printf(b, ",\"time\":\"%s\",\"unique_id\":", when);
        buf_json_string(b, unique_id);
        buf_str(b, ",\"metric\":{\"data\":{\"type\":\"metric\",\"attributes\":{\"name\":");
        buf_json_string(b, event);
        buf_str(b, "}}},\"profile\":{\"data\":{\"type\":\"profile\",\"attributes\":{\"email\":");
        buf_json_string(b, email);
        buf_str(b, "}}}}}}");

        char url[1024], auth[600], rev[128];
        snprintf(url, sizeof url, "%s/api/events", cfg_klaviyo_base);
        snprintf(auth, sizeof auth, "Authorization: Klaviyo-API-Key %s", key);
        snprintf(rev, sizeof rev, "revision: %s", cfg_klaviyo_revision);
        struct curl_slist *headers = NULL;
        headers = curl_slist_append(headers, auth);
        headers = curl_slist_append(headers, "Accept: application/vnd.api+json");
        headers = curl_slist_append(headers, rev);
        headers = curl_slist_append(headers, "Content-Type: application/vnd.api+json");
        headers = curl_slist_append(headers, "Expect:");
        CURL *h = w->curl;
        w->crm_response.len = 0;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b->p);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sink);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &w->crm_response);
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(headers);
        if (rc != CURLE_OK) {
            error = curl_easy_strerror(rc);
        } else {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http_status);
            if (http_status == 202 || http_status == 200 || http_status == 201) status = "success";
            else error = "Klaviyo refused the event";
        }
    }

    char http[16], ms[32], id[32];
    snprintf(http, sizeof http, "%ld", http_status);
    snprintf(ms, sizeof ms, "%ld", elapsed_ms(&started));
    snprintf(id, sizeof id, "%lld", log_id);
    int ok = strcmp(status, "success") == 0;
    const char *rparams[14] = {status, http_status ? http : NULL, error, ms, ok ? unique_id : NULL, NULL, NULL, id, cfg_worker,
                               "false", credentials_at, user, "klaviyo", NULL};
    PGresult *r = db_run(w, S_RECORD, rparams);
    if (r) PQclear(r);

    buf_t *o = &w->out;
    buf_printf(o, "{\"crm_type\":\"klaviyo\",\"status\":\"%s\"", status);
    if (ok) {
        buf_str(o, ",\"action\":\"sent\",\"crm_record_id\":");
        buf_json_string(o, unique_id);
    } else if (error) {
        buf_str(o, ",\"detail\":");
        buf_json_string(o, error);
    }
    buf_printf(o, ",\"log_id\":%lld}", log_id);
    return ok;
}

static void handle_event(FCGX_Request *req, worker_t *w, const char *user, const char *body, size_t len) {
    char *event = json_string(body, len, "event");
    char *email = json_string(body, len, "email");
    const char *pend = NULL, *props = json_find(body, body + len, "properties", &pend);
    const char *tend = NULL, *types = json_find(body, body + len, "crm_types", &tend);
    if (!event || !email || !*event || !strchr(email, '@')) {
        respond_detail(req, w, 422, "event and email are required");
        free(event); free(email);
        return;
    }
    buf_t *s = &w->scratch;
    s->len = 0;
    if (props && *props == '{') buf_add(s, props, (size_t)(pend - props)); else buf_str(s, "{}");
    char *properties = strdup(s->p);

    /* The log's request column: the event as the worker stores it (Event.json). */
    s->len = 0;
    buf_str(s, "{\"event\":");
    buf_json_string(s, event);
    buf_str(s, ",\"email\":");
    buf_json_string(s, email);
    buf_str(s, ",\"properties\":");
    buf_str(s, properties);
    buf_str(s, "}");

    /* This floor delivers to Klaviyo only: the bench's events carry crm_types ["klaviyo"]. */
    int wanted = !types || memmem(types, (size_t)(tend - types), "\"klaviyo\"", 9) != NULL;
    w->out.len = 0;
    if (!wanted) {
        buf_str(&w->out, "{\"results\":[],\"success_count\":0,\"failure_count\":0}");
        respond(req, 200, &w->out);
        goto done;
    }
    const char *cparams[10] = {"false", cfg_key, user, "sync_events", "{klaviyo}", "event", s->p, NULL, cfg_worker,
                               cfg_claim_seconds};
    PGresult *c = db_run(w, S_CREATE_LOGS, cparams);
    if (!c) { respond_detail(req, w, 503, "Database unavailable, try again shortly"); goto done; }
    if (PQntuples(c) != 1) {
        PQclear(c);
        buf_str(&w->out, "{\"results\":[],\"success_count\":0,\"failure_count\":0}");
        respond(req, 200, &w->out);
        goto done;
    }
    long long log_id = atoll(PQgetvalue(c, 0, 0));
    char unique_id[64];
    snprintf(unique_id, sizeof unique_id, "%s", PQgetvalue(c, 0, 2));
    const char *plain = PQgetisnull(c, 0, 4) ? NULL : PQgetvalue(c, 0, 4);
    const char *credentials_at = PQgetisnull(c, 0, 6) ? NULL : PQgetvalue(c, 0, 6);

    w->out.len = 0;
    buf_str(&w->out, "{\"results\":[");
    int ok = deliver_klaviyo(w, user, log_id, unique_id, plain, credentials_at, event, email, properties);
    PQclear(c);
    buf_printf(&w->out, "],\"success_count\":%d,\"failure_count\":%d}", ok, !ok);
    respond(req, 200, &w->out);
done:
    free(event);
    free(email);
    free(properties);
}

/* ---- the accept loop -------------------------------------------------------------------- */

static void *serve(void *arg) {
    worker_t *w = arg;
    if (db_connect(w) != 0) exit(1);
    w->curl = curl_easy_init();
    curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, cfg_timeout_ms);
    curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, cfg_timeout_ms < 5000 ? cfg_timeout_ms : 5000L);
    curl_easy_setopt(w->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(w->curl, CURLOPT_USERAGENT, "crm-floor/1");

    FCGX_Request req;
    if (FCGX_InitRequest(&req, listen_fd, 0) != 0) return NULL;
    while (FCGX_Accept_r(&req) >= 0) {
        const char *method = FCGX_GetParam("REQUEST_METHOD", req.envp);
        const char *uri = FCGX_GetParam("REQUEST_URI", req.envp);
        const char *user = FCGX_GetParam("HTTP_X_USER_ID", req.envp);
        const char *clen = FCGX_GetParam("CONTENT_LENGTH", req.envp);
        size_t path_len = uri ? strcspn(uri, "?") : 0;
        long declared = clen ? atol(clen) : 0;

        w->body.len = 0;
        if (declared > 0 && declared <= (1 << 20)) {
            buf_reserve(&w->body, (size_t)declared);
            while (w->body.len < (size_t)declared) {
                int n = FCGX_GetStr(w->body.p + w->body.len, (int)(declared - (long)w->body.len), req.in);
                if (n <= 0) break;
                w->body.len += (size_t)n;
            }
            w->body.p[w->body.len] = 0;
        }

        if (!method || !uri) {
            respond_detail(&req, w, 400, "Bad request");
        } else if (!user || !*user) {
            respond_detail(&req, w, 401, "Missing X-User-Id header");
        } else if (!valid_user(user)) {
            respond_detail(&req, w, 400, "Invalid X-User-Id header");
        } else if (strcmp(method, "GET") == 0 && path_len == 9 && memcmp(uri, "/crm/list", 9) == 0) {
            handle_list(&req, w, user);
        } else if (strcmp(method, "POST") == 0 && path_len == 15 && memcmp(uri, "/crm/sync/event", 15) == 0) {
            handle_event(&req, w, user, w->body.p ? w->body.p : "", w->body.len);
        } else {
            respond_detail(&req, w, 404, "Not Found");
        }
        FCGX_Finish_r(&req);
    }
    return NULL;
}

static const char *env(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

int main(void) {
    cfg_dsn = env("DB_DSN", NULL);
    cfg_socket = env("FCGI_SOCKET", NULL);
    cfg_key = env("CRM_ENCRYPTION_KEY", NULL);
    cfg_klaviyo_base = env("CRM_KLAVIYO_BASE_URL", "https://a.klaviyo.com");
    cfg_klaviyo_revision = env("CRM_KLAVIYO_REVISION", "2026-10-15");
    int threads = atoi(env("FCGI_THREADS", "16"));
    cfg_unprepared = strcmp(env("FLOOR_UNPREPARED", "0"), "1") == 0;
    double timeout_s = atof(env("CRM_HTTP_TIMEOUT_S", "10"));
    if (!cfg_dsn || !cfg_socket || !cfg_key || threads < 1) {
        fprintf(stderr, "floor: DB_DSN, FCGI_SOCKET and CRM_ENCRYPTION_KEY are required\n");
        return 2;
    }
    cfg_timeout_ms = (long)(timeout_s * 1000);
    /* Swift's String(Double) of the claim: 110.0 for the default 10 s. */
    snprintf(cfg_claim_seconds, sizeof cfg_claim_seconds, "%.1f", timeout_s * 8 + 30);
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(cfg_worker, sizeof cfg_worker, "floor:%s:%d", host, (int)getpid());
    /* strip a trailing slash as CRMURL.base does */
    static char base[1024];
    snprintf(base, sizeof base, "%s", cfg_klaviyo_base);
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') base[--bl] = 0;
    cfg_klaviyo_base = base;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
    if (FCGX_Init() != 0) return 1;
    if (cfg_socket[0] == '/') unlink(cfg_socket);
    listen_fd = FCGX_OpenSocket(cfg_socket, 1024);
    if (listen_fd < 0) { fprintf(stderr, "floor: cannot listen on %s: %s\n", cfg_socket, strerror(errno)); return 1; }
    if (cfg_socket[0] == '/') chmod(cfg_socket, 0666);

    /* Signals go to the main thread only; it exits at SIGTERM/SIGINT (a benchmark tool: no drain). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    worker_t *workers = calloc((size_t)threads, sizeof *workers);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);   /* the worker's thread stack size */
    for (int i = 0; i < threads; i++) {
        pthread_t tid;
        workers[i].index = i;
        if (pthread_create(&tid, &attr, serve, &workers[i]) != 0) { perror("pthread_create"); return 1; }
        pthread_detach(tid);
    }
    int sig = 0;
    sigwait(&set, &sig);
    if (cfg_socket[0] == '/') unlink(cfg_socket);
    _exit(0);
}
