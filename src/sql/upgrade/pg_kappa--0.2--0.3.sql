-- pg_kappa 0.2 -> 0.3: change data capture (envelopes 'upsert' and
-- 'debezium' for Kafka sources into tables) and continuous views over
-- ordinary tables.  See docs/cdc.md.
--
-- Run by ALTER EXTENSION pg_kappa UPDATE, after the 0.3 library is
-- installed.  Until then, the library's Kafka workers wait (they log
-- "waits for ALTER EXTENSION pg_kappa UPDATE"); streams and views keep
-- working.

\echo Use "ALTER EXTENSION pg_kappa UPDATE TO '0.3'" to load this file. \quit

SET LOCAL search_path = pg_catalog, pg_temp;

-- Continuous views over tables
-- The trigger that captures the changes of an ordinary table that continuous
-- views aggregate (src/table_capture.c); pg_kappa creates it on such a table
-- as kappa_capture_before/_insert/_update/_delete/_truncate and drops it with
-- the table's last view.
CREATE FUNCTION kappa.capture_table_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_capture_table_change'
LANGUAGE C;

COMMENT ON COLUMN kappa.view_catalog.stream IS
  'the relation the view aggregates: a stream, or an ordinary table';
