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

--
-- Decoding keyed changelogs
--
-- Decode one message of a keyed changelog (envelope 'upsert' or
-- 'debezium') as a Kafka source with this target would, and return the
-- change as jsonb: {"change": "upsert", "row": {...}, "unavailable": [...],
-- "old_key": {...}, "position": n}, {"change": "delete", "key": {...}},
-- {"change": "truncate"} or {"change": "none"}.  The target's primary key is
-- the key.  A null payload is a tombstone.  Nothing is written.
CREATE FUNCTION kappa.decode_change_preview(
    target regclass,
    envelope text,
    payload bytea,
    key bytea DEFAULT NULL,
    format text DEFAULT 'json',
    key_format text DEFAULT 'json',
    order_by text DEFAULT NULL,
    options jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_decode_change_preview'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.decode_change_preview(regclass, text, bytea, bytea,
                                                text, text, text, jsonb) IS
  'decode one message of a keyed changelog (upsert, debezium) for a target as a source would, returning the change as jsonb';
