-- crm-service: the full current schema, applied to a new database by `crm-service migrate`
-- (which then records every numbered migration as applied). Existing databases are
-- upgraded by the files in migrations/ instead; keep both in step.
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
CREATE SCHEMA IF NOT EXISTS crm;

CREATE TABLE IF NOT EXISTS crm.schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per connected CRM of a user. credentials is pgp_sym_encrypt(json, key): the
-- plaintext never reaches this table.
CREATE TABLE crm.crm_integrations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          text NOT NULL,
    crm_type         text NOT NULL,
    credentials      bytea NOT NULL,
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active        boolean NOT NULL DEFAULT true,
    status           text NOT NULL DEFAULT 'connected',
    status_detail    text,
    last_sync_at     timestamptz,
    last_sync_status text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The end of the wait the CRM asked for when it last refused a call for the rate limit
    -- (any worker process): every worker holds the integration back until then.
    rate_limited_until timestamptz,
    CONSTRAINT crm_integrations_user_crm_key UNIQUE (user_id, crm_type),
    CONSTRAINT crm_integrations_status_check CHECK (status IN ('connected', 'auth_error'))
);

-- The audit log: one row per sync of one record to one CRM, written before the CRM is
-- called and updated with every attempt. Rows due for (re)delivery are claimed with
-- FOR UPDATE SKIP LOCKED; claimed_until lets another worker take over a row whose
-- worker died mid-delivery.
CREATE TABLE crm.crm_sync_logs (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    crm_type        text NOT NULL,
    operation       text NOT NULL,
    status          text NOT NULL,
    request         jsonb,
    response        jsonb,
    error           text,
    http_status     integer,
    duration_ms     integer,
    attempts        integer NOT NULL DEFAULT 0,
    crm_record_id   text,
    unique_id       text,
    next_attempt_at timestamptz,
    claimed_by      text,
    claimed_until   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Of `attempts`, those the CRM refused for its rate limit: they spend no retry budget.
    rate_limited_attempts integer NOT NULL DEFAULT 0,
    CONSTRAINT crm_sync_logs_operation_check CHECK (operation IN ('contact', 'event')),
    CONSTRAINT crm_sync_logs_status_check
        CHECK (status IN ('pending', 'in_flight', 'success', 'failed', 'retrying', 'queued', 'cancelled'))
);
CREATE INDEX crm_sync_logs_user_idx ON crm.crm_sync_logs (user_id, id DESC);
-- The sweep's claim: due queued/retrying rows in (next_attempt_at, id) order, and expired
-- in-flight claims, each a top-N scan of a partial index that finished rows stay out of.
CREATE INDEX crm_sync_logs_queue_idx ON crm.crm_sync_logs (next_attempt_at, id)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX crm_sync_logs_claims_idx ON crm.crm_sync_logs (claimed_until)
    WHERE status = 'in_flight';

-- A delivery's credentials are decrypted in the statement that writes or claims its log row
-- (one statement instead of two). pgp_sym_decrypt raises an error for a wrong key or corrupt
-- data, which would fail every row of such a batch: this returns NULL instead, and the
-- worker reports that row's credentials as unreadable. PARALLEL UNSAFE: the EXCEPTION block
-- starts a subtransaction, which a parallel query refuses.
CREATE OR REPLACE FUNCTION crm.decrypt_credentials(data bytea, key text) RETURNS text
    LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE
AS $$
BEGIN
    RETURN pgp_sym_decrypt(data, key);
EXCEPTION WHEN external_routine_invocation_exception OR character_not_in_repertoire THEN
    RETURN NULL;
END
$$;

-- Idempotency-Key: the first response to a (user, key) is replayed for 24 h.
CREATE TABLE crm.crm_idempotency_keys (
    user_id         text NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
