-- A tenant's search defaults (issue 14): the fusion, alpha and aggregation
-- its searches use when a request names none, set by the platform admin
-- (`PATCH /admin/v1/tenants/{id}` `search`). Part of the directory entry,
-- read with it; an empty object is the built-in defaults.
ALTER TABLE tenants ADD COLUMN search jsonb NOT NULL DEFAULT '{}';
