-- The end of the wait a CRM asked for when it last refused a call for this integration's rate
-- limit, as any worker process heard it. The statements that read an integration's credentials
-- for a delivery read it too, so that every worker holds the integration back, not only the one
-- that was refused. NULL: never refused. IF NOT EXISTS: safe to run again.
ALTER TABLE crm.crm_integrations ADD COLUMN IF NOT EXISTS rate_limited_until timestamptz;
