-- A call the CRM refused for the account's rate limit (a 429, Salesforce's REQUEST_LIMIT_EXCEEDED)
-- is "not now" rather than a failed attempt: counted apart, so that it spends none of
-- CRM_RETRY_MAX_ATTEMPTS (a bulk import into a rate-limited CRM used to fail most of its syncs).
-- A constant default: no table rewrite. IF NOT EXISTS: safe to run again.
ALTER TABLE crm.crm_sync_logs ADD COLUMN IF NOT EXISTS rate_limited_attempts integer NOT NULL DEFAULT 0;
