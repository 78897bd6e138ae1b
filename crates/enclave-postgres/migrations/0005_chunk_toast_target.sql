-- A chunk row is ~2.1 kB (a 1.5 kB vector kept PLAIN, the content and its
-- tsvector), just over the 2 kB TOAST threshold: without this the toaster
-- pglz-compresses content and tsvector of nearly every row on insert (3 % of
-- ingest CPU in a profile) to save a few hundred bytes. Rows stay inline and
-- uncompressed unless they would not fit a page.
ALTER TABLE chunks SET (toast_tuple_target = 8160);
