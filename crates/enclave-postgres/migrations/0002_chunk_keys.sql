-- An integer handle per chunk, used between the store and the library for
-- candidate lists (the storage seam's ChunkKey). Unique within a tenant.
ALTER TABLE chunks ADD COLUMN chunk_no bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX chunks_by_no ON chunks (tenant_id, chunk_no);
