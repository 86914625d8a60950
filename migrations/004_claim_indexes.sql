-- The sweep's claim (DeliveryStore.claimDue) reads two partial indexes in index order, a
-- top-N scan each, instead of sorting the whole backlog: queued/retrying rows by
-- (next_attempt_at, id), and in-flight rows by claimed_until (expired claims). Finished rows
-- are in neither, so the claim does not slow down as the log grows. They replace
-- crm_sync_logs_due_idx, which served neither order.
-- The migrator runs each migration in one transaction, where CREATE INDEX CONCURRENTLY is not
-- allowed: these builds block writes to crm_sync_logs while they scan it. On a large table,
-- create both CONCURRENTLY by hand first (same names and definitions, and check they are
-- valid); IF NOT EXISTS then leaves them be.
CREATE INDEX IF NOT EXISTS crm_sync_logs_queue_idx ON crm.crm_sync_logs (next_attempt_at, id)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX IF NOT EXISTS crm_sync_logs_claims_idx ON crm.crm_sync_logs (claimed_until)
    WHERE status = 'in_flight';
DROP INDEX IF EXISTS crm.crm_sync_logs_due_idx;
