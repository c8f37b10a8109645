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
