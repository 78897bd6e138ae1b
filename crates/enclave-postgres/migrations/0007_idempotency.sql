-- Idempotency-Key records (API.md §4): a retry with the same key and body
-- replays the first response; the same key with another body is refused.
-- Control-plane rows of the main database, under forced RLS like the rest.
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    status       integer,
    response     jsonb,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
