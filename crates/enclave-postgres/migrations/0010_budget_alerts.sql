-- Budget alerts (docs/API-EXTENSIONS.md): one row per tenant, month and
-- threshold — the primary key is what makes an alert happen once across
-- replicas and restarts — kept undelivered until a delivery succeeds.
-- Billing metadata without tenant content: replicas sweep undelivered
-- alerts in platform scope, like the job queue.
CREATE TABLE budget_alerts (
    tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
    month             text NOT NULL,
    threshold_percent integer NOT NULL,
    budget_usd        double precision NOT NULL,
    spent_usd         double precision NOT NULL,
    created_at        timestamptz NOT NULL,
    attempts          integer NOT NULL,
    next_attempt_at   timestamptz NOT NULL,
    delivered_at      timestamptz,
    PRIMARY KEY (tenant_id, month, threshold_percent)
);
ALTER TABLE budget_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_alerts
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform');
