-- The parent application's users are identified by user id (a Firebase UID), not merchant id.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'crm' AND table_name = 'crm_integrations' AND column_name = 'merchant_id') THEN
        ALTER TABLE crm.crm_integrations RENAME COLUMN merchant_id TO user_id;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'crm' AND table_name = 'crm_sync_logs' AND column_name = 'merchant_id') THEN
        ALTER TABLE crm.crm_sync_logs RENAME COLUMN merchant_id TO user_id;
    END IF;
END $$;
