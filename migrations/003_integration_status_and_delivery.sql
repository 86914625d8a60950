-- Integration status (auth_error) and last sync; sync logs become the delivery queue
-- (attempts, next_attempt_at, claims); idempotency keys. Brings a database upgraded by
-- 001 and 002 to the layout of schema.sql.
ALTER TABLE crm.crm_integrations
    ALTER COLUMN crm_type TYPE text,
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'connected',
    ADD COLUMN IF NOT EXISTS status_detail text,
    ADD COLUMN IF NOT EXISTS last_sync_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_sync_status text;
UPDATE crm.crm_integrations SET settings = '{}'::jsonb WHERE settings IS NULL;
UPDATE crm.crm_integrations SET is_active = true WHERE is_active IS NULL;
UPDATE crm.crm_integrations SET created_at = now() WHERE created_at IS NULL;
UPDATE crm.crm_integrations SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE crm.crm_integrations
    ALTER COLUMN settings SET DEFAULT '{}'::jsonb, ALTER COLUMN settings SET NOT NULL,
    ALTER COLUMN is_active SET DEFAULT true, ALTER COLUMN is_active SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now(), ALTER COLUMN updated_at SET NOT NULL;
DO $$
DECLARE legacy_name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'crm_integrations_status_check') THEN
        ALTER TABLE crm.crm_integrations ADD CONSTRAINT crm_integrations_status_check
            CHECK (status IN ('connected', 'auth_error'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'crm_integrations_user_crm_key') THEN
        SELECT conname INTO legacy_name FROM pg_constraint
         WHERE conrelid = 'crm.crm_integrations'::regclass AND contype = 'u' LIMIT 1;
        IF legacy_name IS NOT NULL THEN
            EXECUTE format('ALTER TABLE crm.crm_integrations RENAME CONSTRAINT %I TO crm_integrations_user_crm_key', legacy_name);
        ELSE
            ALTER TABLE crm.crm_integrations ADD CONSTRAINT crm_integrations_user_crm_key UNIQUE (user_id, crm_type);
        END IF;
    END IF;

    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'crm'
               AND table_name = 'crm_sync_logs' AND column_name = 'request_payload') THEN
        ALTER TABLE crm.crm_sync_logs RENAME COLUMN request_payload TO request;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'crm'
               AND table_name = 'crm_sync_logs' AND column_name = 'response_payload') THEN
        ALTER TABLE crm.crm_sync_logs RENAME COLUMN response_payload TO response;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'crm'
               AND table_name = 'crm_sync_logs' AND column_name = 'error_message') THEN
        ALTER TABLE crm.crm_sync_logs RENAME COLUMN error_message TO error;
    END IF;
END $$;

ALTER TABLE crm.crm_sync_logs
    ALTER COLUMN crm_type TYPE text,
    ALTER COLUMN operation TYPE text,
    ALTER COLUMN status TYPE text,
    ADD COLUMN IF NOT EXISTS request jsonb,
    ADD COLUMN IF NOT EXISTS response jsonb,
    ADD COLUMN IF NOT EXISTS error text,
    ADD COLUMN IF NOT EXISTS http_status integer,
    ADD COLUMN IF NOT EXISTS duration_ms integer,
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS crm_record_id text,
    ADD COLUMN IF NOT EXISTS unique_id text,
    ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS claimed_by text,
    ADD COLUMN IF NOT EXISTS claimed_until timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz;
-- Legacy rows: operations and statuses outside today's vocabulary are mapped, not dropped.
UPDATE crm.crm_sync_logs SET operation = CASE
        WHEN operation ILIKE '%event%' THEN 'event' ELSE 'contact' END
 WHERE operation NOT IN ('contact', 'event');
UPDATE crm.crm_sync_logs SET status = CASE
        WHEN status IN ('ok', 'succeeded', 'completed', 'done') THEN 'success'
        WHEN status IN ('error', 'failure') THEN 'failed'
        ELSE 'failed' END
 WHERE status NOT IN ('pending', 'in_flight', 'success', 'failed', 'retrying', 'queued', 'cancelled');
UPDATE crm.crm_sync_logs SET created_at = now() WHERE created_at IS NULL;
UPDATE crm.crm_sync_logs SET updated_at = created_at WHERE updated_at IS NULL;
UPDATE crm.crm_sync_logs SET attempts = 1 WHERE attempts = 0 AND status IN ('success', 'failed');
ALTER TABLE crm.crm_sync_logs
    ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now(), ALTER COLUMN updated_at SET NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'crm_sync_logs_operation_check') THEN
        ALTER TABLE crm.crm_sync_logs ADD CONSTRAINT crm_sync_logs_operation_check
            CHECK (operation IN ('contact', 'event'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'crm_sync_logs_status_check') THEN
        ALTER TABLE crm.crm_sync_logs ADD CONSTRAINT crm_sync_logs_status_check
            CHECK (status IN ('pending', 'in_flight', 'success', 'failed', 'retrying', 'queued', 'cancelled'));
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS crm_sync_logs_user_idx ON crm.crm_sync_logs (user_id, id DESC);
CREATE INDEX IF NOT EXISTS crm_sync_logs_due_idx ON crm.crm_sync_logs (next_attempt_at)
    WHERE status IN ('pending', 'queued', 'retrying', 'in_flight');

CREATE TABLE IF NOT EXISTS crm.crm_idempotency_keys (
    user_id         text NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
