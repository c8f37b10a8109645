-- Part 40: message decoding, tried from SQL.

-- Decode one message as a Kafka source with this target, format and options
-- would, and return the row as a jsonb object of column name to value.  The
-- kafka_* arguments stand for the message's metadata (they fill the target's
-- metadata columns).  Nothing is inserted; column defaults are evaluated.
CREATE FUNCTION kappa.decode_preview(
    target regclass,
    format text,
    payload bytea,
    options jsonb DEFAULT '{}',
    kafka_key bytea DEFAULT NULL,
    kafka_partition integer DEFAULT 0,
    kafka_offset bigint DEFAULT 0,
    kafka_timestamp timestamptz DEFAULT NULL,
    kafka_headers jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_decode_preview'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.decode_preview(regclass, text, bytea, jsonb, bytea,
                                         integer, bigint, timestamptz, jsonb) IS
  'decode one Kafka message for a target as a source would, returning the row as jsonb';

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
