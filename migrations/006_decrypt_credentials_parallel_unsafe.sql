-- crm.decrypt_credentials catches pgp_sym_decrypt's errors in an EXCEPTION block, which starts a
-- subtransaction: PostgreSQL refuses that inside a parallel query ("cannot start subtransactions
-- during a parallel operation"), and its docs say such a function must be PARALLEL UNSAFE. 005
-- marked it PARALLEL SAFE, so a statement planned in parallel (a large scan of the integrations)
-- failed.
ALTER FUNCTION crm.decrypt_credentials(bytea, text) PARALLEL UNSAFE;
