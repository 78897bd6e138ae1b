-- Ingestion jobs (POST /v1/jobs/documents → 202): the whole input is stored
-- before the answer, so every accepted job is finished after any restart.
-- Control-plane rows of the main database, under forced RLS like the rest.
CREATE TABLE jobs (
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id),
    job_id      text NOT NULL,
    kind        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded')),
    payload     jsonb,
    total       integer NOT NULL CHECK (total >= 0),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, job_id)
);
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));

-- One row per processed item; a redo after a crash replaces the row.
CREATE TABLE job_results (
    tenant_id   text NOT NULL,
    job_id      text NOT NULL,
    idx         integer NOT NULL,
    document_id text,
    error       jsonb,
    PRIMARY KEY (tenant_id, job_id, idx),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, job_id) ON DELETE CASCADE
);
ALTER TABLE job_results ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_results FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_results
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));

-- The queue: which jobs are unfinished and which replica holds each (a
-- lease that expires when its holder dies). It carries no content, so
-- replicas claim across tenants in platform scope, like the key lookup.
CREATE TABLE job_queue (
    tenant_id   text NOT NULL,
    job_id      text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    PRIMARY KEY (tenant_id, job_id),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, job_id) ON DELETE CASCADE
);
ALTER TABLE job_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_queue FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_queue
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform')
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true))
           OR (SELECT current_setting('app.scope', true)) = 'platform');
