-- The control plane's API keys, and the purge of a tenant's audit log.
--
-- Authentication finds a key by its public id before the tenant is known, so
-- api_keys is, like the tenant directory, a platform lookup table: its
-- primary and foreign keys lead with tenant_id, and one platform-wide unique
-- index serves the lookup (a reference table under Citus, docs/SCALING.md).
-- Rows are read by the tenant, or by a transaction in platform scope (the
-- authentication lookup); they are written only in the tenant's scope.
CREATE TABLE api_keys (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    key_id       text NOT NULL,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
    salt         bytea NOT NULL,
    secret_hash  bytea NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE UNIQUE INDEX api_keys_by_key_id ON api_keys (key_id);
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));

-- The app role may only append to audit_events. Purging a tenant removes
-- its log too; this function (run as its owner, still under FORCE RLS, so
-- only the transaction's own tenant is visible) is the one way to do it.
CREATE FUNCTION purge_tenant_audit(t text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE n bigint;
BEGIN
    IF t IS DISTINCT FROM current_setting('app.tenant_id', true) THEN
        RAISE EXCEPTION 'purge_tenant_audit: the transaction''s tenant is not %', t;
    END IF;
    DELETE FROM audit_events WHERE tenant_id = t;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION purge_tenant_audit(text) FROM PUBLIC;
