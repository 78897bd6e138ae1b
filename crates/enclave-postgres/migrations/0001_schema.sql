-- Enclave schema, shared isolation mode.
--
-- Rules (DESIGN.md §3): every tenant table has `tenant_id text not null`
-- leading its primary key, foreign keys, unique constraints and indexes;
-- ENABLE + FORCE ROW LEVEL SECURITY with USING and WITH CHECK on
-- current_setting('app.tenant_id', true). The server's role owns nothing and
-- lacks BYPASSRLS; it sets the tenant per transaction with
-- set_config('app.tenant_id', $1, true). Unset, the setting is NULL or '' and
-- no row matches (tenant ids are never empty).

CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$'),
    slug        text NOT NULL,
    name        text NOT NULL,
    plan        text NOT NULL DEFAULT 'free',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    isolation   text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared', 'schema', 'database')),
    limits      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Slugs are unique platform-wide; the index leads with tenant_id's twin for
-- Citus (tenants is a reference table there).
CREATE UNIQUE INDEX tenants_slug ON tenants (slug);

CREATE TABLE documents (
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    document_id   uuid NOT NULL,
    dedupe_key    text NOT NULL,
    name          text NOT NULL,
    doc_type      text NOT NULL,
    origin        text,
    external_id   text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    content_hash  text NOT NULL,
    size_bytes    bigint NOT NULL,
    chunk_count   integer NOT NULL,
    token_count   bigint NOT NULL,
    document_date timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, document_id),
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX documents_by_origin ON documents (tenant_id, origin, document_id);
CREATE INDEX documents_by_created ON documents (tenant_id, created_at);
CREATE INDEX documents_by_metadata ON documents USING gin (tenant_id, metadata jsonb_path_ops);

-- kind 0 = searchable chunk, 1 = parent section kept for context.
CREATE TABLE chunks (
    tenant_id   text NOT NULL,
    chunk_id    uuid NOT NULL,
    document_id uuid NOT NULL,
    kind        smallint NOT NULL DEFAULT 0,
    idx         integer NOT NULL,
    content     text NOT NULL,
    token_count integer NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    parent_idx  integer,
    ts_config   regconfig NOT NULL DEFAULT 'english',
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector(ts_config, content)) STORED,
    embedding   vector(384),
    PRIMARY KEY (tenant_id, chunk_id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, document_id) ON DELETE CASCADE
);
CREATE INDEX chunks_by_document ON chunks (tenant_id, document_id, kind, idx);
CREATE INDEX chunks_text ON chunks USING gin (tenant_id, tsv);

CREATE TABLE messages (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id),
    session_id text NOT NULL,
    seq        bigint NOT NULL,
    message_id uuid NOT NULL,
    role       text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content    text NOT NULL,
    origin     text,
    metadata   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id, seq),
    UNIQUE (tenant_id, message_id)
);

CREATE TABLE usage_daily (
    tenant_id        text NOT NULL REFERENCES tenants (tenant_id),
    day              date NOT NULL,
    requests         bigint NOT NULL DEFAULT 0,
    searches         bigint NOT NULL DEFAULT 0,
    documents_added  bigint NOT NULL DEFAULT 0,
    tokens_embedded  bigint NOT NULL DEFAULT 0,
    provider_tokens  bigint NOT NULL DEFAULT 0,
    cost_usd         numeric(14, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE audit_events (
    tenant_id  text NOT NULL,
    seq        bigint NOT NULL,
    event_id   uuid NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text,
    detail     jsonb NOT NULL DEFAULT '{}',
    prev_hash  bytea,
    hash       bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, event_id)
);

-- Row-level security on every tenant table.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'documents', 'chunks', 'messages', 'usage_daily', 'audit_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_setting(''app.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END
$$;
