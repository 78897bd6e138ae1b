-- Placement (isolation modes), platform scope on the tenant directory, and
-- vector storage for exact scans.
--
-- The `tenants` row of a tenant in the main database is its directory entry:
-- `isolation` says where its data lives and `location` names the schema
-- (schema mode) or the tenant database's URL (database mode). In a tenant's
-- own schema or database the same table holds the tenant's row for foreign
-- keys only.
ALTER TABLE tenants ADD COLUMN location text;
ALTER TABLE tenants ADD COLUMN vector_index boolean NOT NULL DEFAULT false;

-- The directory may be listed by the platform (admin plane, maintenance,
-- moves) — a transaction that says so with app.scope = 'platform'. Tenant
-- data tables have no such escape: only app.tenant_id opens them.
DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = current_setting('app.tenant_id', true)
           OR current_setting('app.scope', true) = 'platform')
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true)
           OR current_setting('app.scope', true) = 'platform');

-- Keep vectors inline (uncompressed, never TOASTed): exact scans read them
-- straight from the heap page. Long content and tsvectors are TOASTed first.
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE PLAIN;
