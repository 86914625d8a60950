-- A delivery's credentials are decrypted in the statement that writes or claims its log row
-- (one statement instead of two). pgp_sym_decrypt raises an error for a wrong key or corrupt
-- data, which would fail every row of such a batch: this returns NULL instead, and the
-- worker reports that row's credentials as unreadable.
CREATE OR REPLACE FUNCTION crm.decrypt_credentials(data bytea, key text) RETURNS text
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN pgp_sym_decrypt(data, key);
EXCEPTION WHEN external_routine_invocation_exception OR character_not_in_repertoire THEN
    RETURN NULL;
END
$$;
