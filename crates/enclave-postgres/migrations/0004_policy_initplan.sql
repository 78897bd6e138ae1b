-- The same policies, with the setting read once per statement (an InitPlan)
-- instead of once per row: `(SELECT current_setting(...))`.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'messages', 'usage_daily', 'audit_events'] LOOP
        EXECUTE format('DROP POLICY tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = (SELECT current_setting(''app.tenant_id'', true))) '
            'WITH CHECK (tenant_id = (SELECT current_setting(''app.tenant_id'', true)))', t);
    END LOOP;
END
$$;
DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform');
