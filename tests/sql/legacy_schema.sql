-- The layout crm-service's predecessor left behind (before migrations 001-003), with rows,
-- for the legacy-upgrade test. Credentials were already pgp_sym_encrypt'ed.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS crm;
CREATE TABLE crm.crm_integrations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id uuid NOT NULL,
    crm_type    varchar(50) NOT NULL,
    credentials bytea NOT NULL,
    settings    jsonb DEFAULT '{}',
    is_active   boolean DEFAULT true,
    created_at  timestamptz DEFAULT now(),
    updated_at  timestamptz DEFAULT now(),
    UNIQUE (merchant_id, crm_type)
);
CREATE TABLE crm.crm_sync_logs (
    id               bigserial PRIMARY KEY,
    merchant_id      uuid NOT NULL,
    crm_type         varchar(50) NOT NULL,
    operation        varchar(50) NOT NULL,
    status           varchar(20) NOT NULL,
    request_payload  jsonb,
    response_payload jsonb,
    error_message    text,
    created_at       timestamptz DEFAULT now()
);
CREATE INDEX idx_crm_sync_logs_merchant ON crm.crm_sync_logs (merchant_id);
