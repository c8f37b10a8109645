-- kappa.rewind_source: what is refused or checked without a broker (the
-- rewinds themselves, against the dev broker, are in
-- test/t/250_kafka_rewind.pl).  The sources point at a port nothing
-- listens on; their offsets are set here by hand, as the superuser.
SET client_min_messages = warning;
CREATE TABLE rw_events (id int, kafka_offset bigint);
CREATE TABLE rw_kv (id int PRIMARY KEY, v text);
SELECT kappa.create_stream('rw_stream', 'id int');
SELECT kappa.create_kafka_source('rw_none', target => 'rw_events', topic => 't',
                                 brokers => '127.0.0.1:1');
SELECT kappa.create_kafka_source('rw_upsert', target => 'rw_kv', topic => 't',
                                 brokers => '127.0.0.1:1', envelope => 'upsert',
                                 order_by => 'seq');
SELECT kappa.create_kafka_source('rw_to_stream', target => 'rw_stream', topic => 't',
                                 brokers => '127.0.0.1:1');
SELECT kappa.pause_source(s) FROM unnest('{rw_none,rw_upsert,rw_to_stream}'::text[]) s;
RESET client_min_messages;
INSERT INTO kappa.source_offsets (source_id, partition, next_offset)
SELECT id, p, 10 FROM kappa.source_catalog, generate_series(0, 1) p
 WHERE name IN ('rw_none', 'rw_upsert');
INSERT INTO kappa.source_key_positions (source_id, key, position)
SELECT id, '["1"]', 5 FROM kappa.source_catalog WHERE name = 'rw_upsert';
INSERT INTO rw_events SELECT i, i FROM generate_series(0, 9) i;
-- dead letters at 3 and 7, a gap 4..6, of partition 0
INSERT INTO kappa.dead_letters (source_id, kind, topic, partition, "offset", last_offset, error)
SELECT id, k, 't', 0, o, l, 'e' FROM kappa.source_catalog,
       (VALUES ('dead_letter', 3, NULL), ('gap', 4, 6), ('dead_letter', 7, NULL)) d(k, o, l)
 WHERE name = 'rw_none';

\set VERBOSITY default
-- refused: an unknown source, a stream target, envelope none without truncate
SELECT kappa.rewind_source('nonesuch', 'earliest');
SELECT kappa.rewind_source('rw_to_stream', 'earliest');
SELECT kappa.rewind_source('rw_none', 'earliest');
SELECT kappa.rewind_source('rw_none', '{"0": 5}');
-- positions that are none of the forms
SELECT kappa.rewind_source('rw_none', 'yesterday-ish');
SELECT kappa.rewind_source('rw_none', NULL::text);
SELECT kappa.rewind_source('rw_none', '{}'::jsonb);
SELECT kappa.rewind_source('rw_none', '[1]'::jsonb);
SELECT kappa.rewind_source('rw_none', '{"zero": 1}');
SELECT kappa.rewind_source('rw_none', '{"0": -1}');
SELECT kappa.rewind_source('rw_none', '{"0": 1.5}');
SELECT kappa.rewind_source('rw_none', '{"0": "1"}');
SELECT kappa.rewind_source('rw_none', 'infinity'::timestamptz);
-- a partition the source has no offset of
SELECT kappa.rewind_source('rw_none', '{"7": 0}');
\set VERBOSITY terse

-- forward without truncating: allowed for envelope none (nothing is read twice)
SELECT kappa.rewind_source('rw_none', '{"1": 12}');
-- back, truncating: the table, the dead letters at or after 5 go, the gap is cut
SELECT kappa.rewind_source('rw_none', "position" => '{"0": 5}', truncate_target => true);
SELECT count(*) AS rows_left FROM rw_events;
SELECT partition, next_offset FROM kappa.source_offsets o JOIN kappa.source_catalog s
    ON s.id = o.source_id WHERE s.name = 'rw_none' ORDER BY partition;
SELECT kind, "offset", last_offset FROM kappa.errors WHERE source = 'rw_none' ORDER BY "offset";

-- upsert: back without truncating, guard positions kept; with it, forgotten
INSERT INTO rw_kv VALUES (1, 'a');
SELECT kappa.rewind_source('rw_upsert', '{"0": 0, "1": 3}'::jsonb);
SELECT count(*) AS kv_rows, (SELECT count(*) FROM kappa.source_key_positions) AS positions FROM rw_kv;
SELECT kappa.rewind_source('rw_upsert', '{"0": 0}', truncate_target => true);
SELECT count(*) AS kv_rows, (SELECT count(*) FROM kappa.source_key_positions) AS positions FROM rw_kv;
SELECT partition, next_offset FROM kappa.source_offsets o JOIN kappa.source_catalog s
    ON s.id = o.source_id WHERE s.name = 'rw_upsert' ORDER BY partition;

-- a position the broker must resolve, and no broker: nothing changes
SELECT kappa.rewind_source('rw_upsert', 'latest');
SELECT kappa.rewind_source('rw_upsert', now() - interval '1 hour');
SELECT count(*) AS kv_rows, (SELECT count(*) FROM kappa.source_key_positions) AS positions FROM rw_kv;

-- who may: the source's owner, and with truncate_target only with TRUNCATE
CREATE ROLE regress_rw_owner LOGIN;
CREATE ROLE regress_rw_other LOGIN;
CREATE SERVER rw_kafka FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '127.0.0.1:1');
GRANT USAGE ON FOREIGN SERVER rw_kafka TO regress_rw_owner;
GRANT USAGE ON SCHEMA public TO regress_rw_owner;
GRANT INSERT ON rw_events TO regress_rw_owner;
SET ROLE regress_rw_owner;
SET client_min_messages = warning;
SELECT kappa.create_kafka_source('rw_owned', target => 'rw_events', topic => 't',
                                 server => 'rw_kafka');
SELECT kappa.pause_source('rw_owned');
RESET client_min_messages;
RESET ROLE;
INSERT INTO kappa.source_offsets (source_id, partition, next_offset)
SELECT id, 0, 10 FROM kappa.source_catalog WHERE name = 'rw_owned';
SET ROLE regress_rw_other;
SELECT kappa.rewind_source('rw_owned', '{"0": 11}');
SET ROLE regress_rw_owner;
SELECT kappa.rewind_source('rw_owned', '{"0": 0}', truncate_target => true);
SELECT kappa.rewind_source('rw_owned', '{"0": 11}');
RESET ROLE;

-- the catalog statements are search_path-proof: a planted = is never used
CREATE FUNCTION public.rw_trojan_eq(int, int) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'trojan ran'; END$$;
CREATE OPERATOR public.= (leftarg = int, rightarg = int, function = public.rw_trojan_eq);
SET search_path = public, pg_catalog;
SELECT kappa.rewind_source('rw_none', '{"0": 6, "1": 13}', truncate_target => true);
RESET search_path;
DROP OPERATOR public.= (int, int);
DROP FUNCTION public.rw_trojan_eq;

SET client_min_messages = warning;
SELECT kappa.drop_source(s) FROM unnest('{rw_none,rw_upsert,rw_to_stream,rw_owned}'::text[]) s;
RESET client_min_messages;
DROP SERVER rw_kafka;
REVOKE ALL ON SCHEMA public FROM regress_rw_owner;
DROP TABLE rw_events, rw_kv;
SELECT kappa.drop_stream('rw_stream');
DROP ROLE regress_rw_owner, regress_rw_other;
