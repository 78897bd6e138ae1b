-- A purge in progress. The purge sets it (and suspends the tenant) while it
-- holds the tenant's placement lock exclusively, so every writer already
-- past that lock has committed and every later one reads the flag: writes
-- that would add data to a tenant being purged are refused on every
-- replica, and after the purge the directory entry is gone (a server never
-- re-creates one from the data path).
ALTER TABLE tenants ADD COLUMN purging boolean NOT NULL DEFAULT false;
