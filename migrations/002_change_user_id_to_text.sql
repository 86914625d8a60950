-- Firebase UIDs are not UUIDs: user_id becomes text (existing UUIDs keep their text form).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'crm' AND table_name = 'crm_integrations'
                 AND column_name = 'user_id' AND data_type <> 'text') THEN
        ALTER TABLE crm.crm_integrations ALTER COLUMN user_id TYPE text USING user_id::text;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'crm' AND table_name = 'crm_sync_logs'
                 AND column_name = 'user_id' AND data_type <> 'text') THEN
        ALTER TABLE crm.crm_sync_logs ALTER COLUMN user_id TYPE text USING user_id::text;
    END IF;
END $$;
