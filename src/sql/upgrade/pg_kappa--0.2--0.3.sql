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
-- Kafka sources: envelopes for keyed changelogs
--
ALTER TABLE kappa.source_catalog
  ADD COLUMN envelope text NOT NULL DEFAULT 'none'
      CHECK (envelope IN ('none', 'upsert', 'debezium')),
  ADD COLUMN key_format text NOT NULL DEFAULT 'json',
  ADD COLUMN order_by text;

DROP FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, text, text, integer, jsonb);
CREATE FUNCTION kappa.create_kafka_source(name text,
                                          target text,
                                          topic text,
                                          server text DEFAULT NULL,
                                          brokers text DEFAULT NULL,
                                          format text DEFAULT 'json',
                                          start text DEFAULT 'earliest',
                                          on_data_loss text DEFAULT 'fail',
                                          parallelism integer DEFAULT 1,
                                          options jsonb DEFAULT '{}',
                                          envelope text DEFAULT 'none',
                                          key_format text DEFAULT 'json',
                                          order_by text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_create_kafka_source_0_3'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, text, text, integer, jsonb, text, text, text) IS
  'create a Kafka source: background workers consume a topic into a stream or table, exactly once';

-- Rewinding a source into a table (src/kafka_rewind.c, docs/kafka.md
-- "Rewinding a source"): its offsets move to 'earliest', 'latest', a time
-- or explicit offsets {"partition": offset}, in the caller's transaction;
-- returns the new offsets.  POSITION is a keyword that PostgreSQL does not
-- take as an unquoted parameter name: call positionally, or "position" =>.
CREATE FUNCTION kappa.rewind_source(name text, "position" text,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION kappa.rewind_source(name text, "position" timestamptz,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION kappa.rewind_source(name text, "position" jsonb,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.rewind_source(text, text, boolean) IS
  'move a Kafka source into a table to earliest, latest, a timestamptz or jsonb {"partition": offset}; truncate_target for envelope none';
COMMENT ON FUNCTION kappa.rewind_source(text, timestamptz, boolean) IS
  'move a Kafka source into a table to the first message at or after a time in each partition';
COMMENT ON FUNCTION kappa.rewind_source(text, jsonb, boolean) IS
  'move a Kafka source into a table to the offsets {"partition": offset} given';

ALTER TABLE kappa.source_status ADD COLUMN out_of_order bigint NOT NULL DEFAULT 0;
ALTER TABLE kappa.source_status ADD COLUMN schema_ids integer[],
                                ADD COLUMN last_schema_id integer,
                                ADD COLUMN drift bigint NOT NULL DEFAULT 0;

-- The ordering guard of sources with order_by: per key (its columns' values
-- as a JSON array of their text), the position of the change applied last
-- -- also after a delete, so that an older change cannot bring the row
-- back.  Written in the same transaction as the changes.
CREATE TABLE kappa.source_key_positions (
    source_id   integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    key         text NOT NULL,
    position    numeric NOT NULL,
    PRIMARY KEY (source_id, key)
);
SELECT pg_catalog.pg_extension_config_dump('kappa.source_key_positions', '');
REVOKE ALL ON kappa.source_key_positions FROM PUBLIC;
GRANT SELECT ON kappa.source_key_positions TO pg_database_owner;

CREATE OR REPLACE VIEW kappa.sources WITH (security_barrier) AS
SELECT s.name AS source,
       CASE
         WHEN s.paused THEN 'paused'
         WHEN st.live = 0 AND st.last_state = 'failed' THEN 'failed'
         WHEN st.live = 0 THEN 'stopped'
         WHEN st.state = 'failed' THEN 'failed'
         -- waiting for the broker or the schema registry: nothing flows
         WHEN st.state = 'retrying' THEN 'retrying'
         WHEN st.assigned < st.in_topic THEN 'degraded'
         WHEN st.dead_letter_share > kappa.dead_letter_alert() THEN 'degraded'
         ELSE st.state
       END AS state,
       s.owner::regrole AS owner,
       s.target,
       s.topic,
       s.server,
       s.brokers,
       s.format,
       s.start,
       s.on_data_loss,
       s.parallelism,
       st.live AS workers,
       st.assigned AS partitions,
       st.in_topic AS partitions_in_topic,
       o.committed_offsets,
       o.high_watermarks,
       o.lag,
       st.messages,
       st.bytes,
       st.messages_per_sec,
       st.bytes_per_sec,
       st.dead_letters,
       st.dead_letters_per_sec,
       st.dead_letter_share,
       st.recorded_gaps,
       st.lost_messages,
       st.last_batch_at,
       CASE
         WHEN NOT s.paused AND st.live > 0 AND st.state NOT IN ('failed', 'retrying')
              AND st.assigned < st.in_topic
           THEN format('%s of %s partitions of topic "%s" are not being read%s',
                       st.in_topic - st.assigned, st.in_topic, s.topic,
                       coalesce(': ' || lp.problem, ''))
         WHEN NOT s.paused AND st.live > 0 AND st.state NOT IN ('failed', 'retrying')
              AND st.dead_letter_share > kappa.dead_letter_alert()
           THEN format('%s%% of the messages of the last minute went to kappa.errors (kappa.dead_letter_alert is %s%%)%s',
                       round((100 * st.dead_letter_share)::numeric, 1),
                       round((100 * kappa.dead_letter_alert())::numeric, 1),
                       coalesce('; the last one: ' ||
                                (SELECT d.error FROM kappa.dead_letters d
                                  WHERE d.source_id = s.id AND d.kind = 'dead_letter'
                                  ORDER BY d.id DESC LIMIT 1), ''))
         WHEN NOT s.paused AND st.live = 0 AND lp.problem IS NOT NULL
           THEN lp.problem
         ELSE st.last_error
       END AS last_error,
       st.last_error_at,
       kappa.mask_options(s.options, s.owner) AS options,
       s.created_at,
       s.envelope,
       s.key_format,
       s.order_by,
       st.out_of_order,
       st.schema_ids,
       st.last_schema_id,
       st.drift
  FROM kappa.source_catalog s
  LEFT JOIN LATERAL (
    SELECT array_agg(next_offset ORDER BY partition) AS committed_offsets,
           array_agg(high_watermark ORDER BY partition) AS high_watermarks,
           sum(greatest(high_watermark - next_offset, 0))::bigint AS lag
      FROM kappa.source_offsets WHERE source_id = s.id) o ON true
  LEFT JOIN LATERAL (
    SELECT string_agg(format('worker %s: %s', l.slot, l.problem), '; ' ORDER BY l.slot) AS problem
      FROM kappa.launcher_problems() l WHERE l.source_id = s.id) lp ON true
  LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE a.pid IS NOT NULL)::integer AS live,
           -- the worst state among live workers
           (array_agg(ss.state ORDER BY
                        CASE ss.state WHEN 'running' THEN 3 WHEN 'idle' THEN 4
                                      WHEN 'starting' THEN 2 WHEN 'failed' THEN 0
                                      ELSE 1 END)
              FILTER (WHERE a.pid IS NOT NULL))[1] AS state,
           (array_agg(ss.state ORDER BY ss.updated_at DESC))[1] AS last_state,
           coalesce(sum(cardinality(ss.partitions)) FILTER (WHERE a.pid IS NOT NULL), 0)::integer
             AS assigned,
           max(ss.partitions_in_topic) FILTER (WHERE a.pid IS NOT NULL) AS in_topic,
           coalesce(sum(ss.messages), 0)::bigint AS messages,
           coalesce(sum(ss.bytes), 0)::bigint AS bytes,
           coalesce(sum(ss.messages_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS messages_per_sec,
           coalesce(sum(ss.bytes_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS bytes_per_sec,
           (SELECT count(*) FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'dead_letter') AS dead_letters,
           coalesce(sum(ss.dead_letters_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0)
             AS dead_letters_per_sec,
           max(ss.dead_letter_share) FILTER (WHERE a.pid IS NOT NULL) AS dead_letter_share,
           (SELECT count(*) FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'gap') AS recorded_gaps,
           (SELECT coalesce(sum(d.last_offset - d."offset" + 1), 0)::bigint FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'gap') AS lost_messages,
           max(ss.last_batch_at) AS last_batch_at,
           coalesce(sum(ss.out_of_order), 0)::bigint AS out_of_order,
           (array_agg(ss.last_error ORDER BY ss.last_error_at DESC NULLS LAST))[1] AS last_error,
           max(ss.last_error_at) AS last_error_at,
           (SELECT array_agg(DISTINCT i ORDER BY i)
              FROM kappa.source_status s2 CROSS JOIN LATERAL unnest(s2.schema_ids) AS i
             WHERE s2.source_id = s.id) AS schema_ids,
           (array_agg(ss.last_schema_id ORDER BY ss.last_batch_at DESC NULLS LAST)
              FILTER (WHERE ss.last_schema_id IS NOT NULL))[1] AS last_schema_id,
           coalesce(sum(ss.drift), 0)::bigint AS drift
      FROM kappa.source_status ss
      -- by pid only: other roles see no backend_type of the owner's workers
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = ss.pid
     WHERE ss.source_id = s.id) st ON true;

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

-- The tables continuous views aggregate keep what the views rely on: their
-- capture triggers present and enabled (DISABLE TRIGGER, DROP TRIGGER or a
-- rename would make the views silently stale), no row-level security and no
-- inheritance or partitions (refused at create_view too).  Checked after
-- each command that could change that; a violation rolls the command back.
-- A table with none of its capture triggers yet is being restored:
-- pg_restore creates triggers after the table's constraints.
CREATE FUNCTION kappa.on_table_capture_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    missing text; present bigint;
BEGIN
    IF to_regclass('kappa.view_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR t IN SELECT c.oid::regclass AS rel, c.relrowsecurity,
                    min(vc.view::text) AS some_view
               FROM kappa.view_catalog vc
               JOIN pg_class c ON c.oid OPERATOR(pg_catalog.=) vc.stream
              WHERE c.relkind OPERATOR(pg_catalog.=) 'r'
              GROUP BY c.oid, c.relrowsecurity
    LOOP
        SELECT string_agg(n, ', ' ORDER BY n) FILTER (WHERE NOT coalesce(tg.tgenabled
                   OPERATOR(pg_catalog.=) ANY ('{O,A}'::"char"[]), false)), count(tg.tgname)
          INTO missing, present
          FROM unnest(ARRAY['kappa_capture_before', 'kappa_capture_insert',
                            'kappa_capture_update', 'kappa_capture_delete',
                            'kappa_capture_truncate']) AS n
          LEFT JOIN pg_trigger tg ON tg.tgrelid OPERATOR(pg_catalog.=) t.rel
                                 AND tg.tgname OPERATOR(pg_catalog.=) n;
        IF missing IS NOT NULL AND present OPERATOR(pg_catalog.>) 0 THEN
            RAISE EXCEPTION 'cannot drop, disable or rename the triggers of table % that continuous views depend on', t.rel
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = format('Continuous views over the table (such as %s) see its changes through them; missing or disabled: %s.',
                                        t.some_view, missing),
                        HINT = 'Drop the continuous views over the table first (kappa.drop_view); the triggers go with the last one.';
        END IF;
        IF t.relrowsecurity THEN
            RAISE EXCEPTION 'cannot enable row-level security on table %', t.rel
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = format('Continuous views over the table (such as %s) aggregate all of its rows.', t.some_view),
                        HINT = 'Drop the continuous views over the table first (kappa.drop_view).';
        END IF;
        IF EXISTS (SELECT FROM pg_inherits i
                    WHERE i.inhrelid OPERATOR(pg_catalog.=) t.rel
                       OR i.inhparent OPERATOR(pg_catalog.=) t.rel) THEN
            RAISE EXCEPTION 'cannot make table % a parent, child or partition', t.rel
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = format('Continuous views over the table (such as %s) see only its own rows'' changes.', t.some_view),
                        HINT = 'Drop the continuous views over the table first (kappa.drop_view).';
        END IF;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER kappa_table_capture_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'DROP TRIGGER', 'ALTER TRIGGER', 'CREATE TABLE',
               'CREATE TABLE AS')
  EXECUTE FUNCTION kappa.on_table_capture_ddl();

-- Part 55: data contracts -- named expectations on streams and tables
-- (src/contracts.c, docs/contracts.md).

-- One row per expectation.  'rule' is the check as given; 'definition' is
-- the same expression deparsed with every name outside pg_catalog
-- qualified, which each backend parses again (as the relation's owner,
-- search_path pinned) when it loads the relation's expectations.  Text, not
-- a node tree: the rows are dumped (pg_extension_config_dump) and a node
-- tree's OIDs would not survive a restore.  'id' keys the counters in
-- shared memory (kappa.expectation_stats).
CREATE TABLE kappa.expectation_catalog (
    id            serial NOT NULL UNIQUE,
    relation      regclass NOT NULL,
    name          text NOT NULL,
    rule          text NOT NULL,
    definition    text NOT NULL,
    on_violation  text NOT NULL
                  CHECK (on_violation IN ('warn', 'dead_letter', 'fail')),
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (relation, name)
);

SELECT pg_catalog.pg_extension_config_dump('kappa.expectation_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.expectation_catalog_id_seq', '');
REVOKE ALL ON kappa.expectation_catalog FROM PUBLIC;
GRANT SELECT ON kappa.expectation_catalog TO PUBLIC;
GRANT SELECT ON SEQUENCE kappa.expectation_catalog_id_seq TO pg_database_owner;

CREATE FUNCTION kappa.add_expectation(relation regclass, name text, "check" text,
                                      on_violation text DEFAULT 'warn')
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_add_expectation'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.add_expectation(regclass, text, text, text) IS
  'add a named expectation (a boolean expression over the row) to a stream or table: warn, dead_letter or fail on violation';

CREATE FUNCTION kappa.drop_expectation(relation regclass, name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_expectation'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.drop_expectation(regclass, text) IS
  'drop a named expectation of a stream or table';

-- Counters in shared memory since server start (NULL when the library is
-- not preloaded).
CREATE FUNCTION kappa.expectation_stats(id integer,
    OUT rows_checked bigint, OUT rows_violating bigint,
    OUT last_violation_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'kappa_expectation_stats'
LANGUAGE C STRICT STABLE;

-- The triggers add_expectation creates on an ordinary table (and
-- drop_expectation drops with its last expectation): the row check, BEFORE
-- INSERT OR UPDATE FOR EACH ROW, named to fire after the table's other
-- BEFORE row triggers; and the statement's summary of skipped rows.
CREATE FUNCTION kappa.check_expectations()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_check_expectations'
LANGUAGE C;

CREATE FUNCTION kappa.expectations_summary()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_expectations_summary'
LANGUAGE C;

-- The quality monitor.
CREATE VIEW kappa.expectations AS
SELECT e.relation,
       e.name,
       e.rule,
       e.on_violation AS action,
       s.rows_checked,
       s.rows_violating,
       s.last_violation_at,
       e.created_at
  FROM kappa.expectation_catalog e,
       LATERAL kappa.expectation_stats(e.id) s;

GRANT SELECT ON kappa.expectations TO PUBLIC;

-- A relation's expectations go with it; the triggers that check them go
-- only with the relation or its last expectation.
CREATE FUNCTION kappa.on_sql_drop_expectations()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    t record;
    rel regclass;
BEGIN
    IF to_regclass('kappa.expectation_catalog') IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(o.objid), '{}') INTO dropped
      FROM pg_event_trigger_dropped_objects() o
     WHERE o.classid OPERATOR(pg_catalog.=) 'pg_class'::regclass
       AND o.objsubid OPERATOR(pg_catalog.=) 0;
    FOR t IN SELECT o.address_names
               FROM pg_event_trigger_dropped_objects() o
              WHERE o.object_type OPERATOR(pg_catalog.=) 'trigger'
                AND o.address_names[3] OPERATOR(pg_catalog.=)
                    ANY ('{zzz_kappa_expectations,zzz_kappa_expectations_summary}'::text[])
    LOOP
        rel := to_regclass(quote_ident(t.address_names[1]) || '.' ||
                           quote_ident(t.address_names[2]));
        IF rel IS NOT NULL AND NOT rel::oid OPERATOR(pg_catalog.=) ANY (dropped)
           AND EXISTS (SELECT FROM kappa.expectation_catalog e
                        WHERE e.relation OPERATOR(pg_catalog.=) rel::oid) THEN
            RAISE EXCEPTION 'cannot drop trigger % of table %', t.address_names[3], rel
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = 'The trigger checks the expectations of the table.',
                        HINT = 'Drop the expectations with kappa.drop_expectation(); the triggers go with the last one.';
        END IF;
    END LOOP;
    IF dropped OPERATOR(pg_catalog.<>) '{}' THEN
        DELETE FROM kappa.expectation_catalog e
         WHERE e.relation::oid OPERATOR(pg_catalog.=) ANY (dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER kappa_sql_drop_expectations ON sql_drop
  EXECUTE FUNCTION kappa.on_sql_drop_expectations();

-- Kappa reprocessing (src/sql/57_rebuild.sql): where each source began
-- reading a partition, so that a rebuild knows the stream's whole history;
-- the messages a view's history lacks since its last rebuild.
ALTER TABLE kappa.source_offsets ADD COLUMN first_offset bigint;
ALTER TABLE kappa.view_catalog ADD COLUMN history_gaps bigint NOT NULL DEFAULT 0;

-- Kappa reprocessing (docs/reprocessing.md, src/view_rebuild.c): a new
-- version of a continuous view is built beside the live one -- from its
-- table, from the stream's retained rows, or by replaying the Kafka sources
-- that feed the stream -- and swapped in atomically when it is complete.

-- One row per view being rebuilt: the building version's materialization
-- and definition, where its history comes from and how far it is.
CREATE TABLE kappa.view_rebuilds (
    id          serial PRIMARY KEY,
    view        regclass NOT NULL UNIQUE,   -- the live view (kappa.view_catalog)
    stream      regclass NOT NULL,          -- the stream or table it aggregates
    mat         regclass NOT NULL UNIQUE,   -- the new version's materialization
    def         regclass NOT NULL UNIQUE,   -- and its definition
    history     text NOT NULL CHECK (history IN ('table', 'retained', 'kafka')),
    -- failed: the new version cannot be completed (last_error says why);
    -- kappa.cancel_rebuild() drops it
    state       text NOT NULL DEFAULT 'building'
                CHECK (state IN ('building', 'swapping', 'failed')),
    pid         integer,                    -- of the rebuild worker
    -- live batches feed the new version too: from registration for Kafka
    -- and retained rows, from the end of the build for a table
    fed         boolean NOT NULL DEFAULT false,
    built       boolean NOT NULL DEFAULT false, -- table or retained rows: done
    -- retained rows: the snapshot at registration whose committed rows the
    -- build reads (later ones are fed live)
    cut_xmin    xid,
    cut_xmax    xid,
    cut_xip     xid[],
    cut_own     xid[],                      -- the registering transaction's
    -- table: while it builds, the table's writers append their changes to
    -- this log (sign, row); dropped once live writers feed the new version
    log         regclass UNIQUE,
    to_replay   bigint NOT NULL DEFAULT 0,  -- rows (estimated) or messages
    replayed    bigint NOT NULL DEFAULT 0,
    dead_letters bigint NOT NULL DEFAULT 0, -- messages the replay could not apply
    gaps        bigint NOT NULL DEFAULT 0,  -- messages no longer in the log
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    last_error  text
);

-- The Kafka history of a rebuild: per source and partition, the replay
-- reads [next_offset, end_offset); end_offset is what the live source had
-- committed when the rebuild was registered (live batches feed both
-- versions from then on).
CREATE TABLE kappa.rebuild_offsets (
    rebuild_id  integer NOT NULL REFERENCES kappa.view_rebuilds (id) ON DELETE CASCADE,
    source_id   integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    partition   integer NOT NULL,
    start_offset bigint NOT NULL,
    next_offset bigint NOT NULL,
    end_offset  bigint NOT NULL,
    PRIMARY KEY (rebuild_id, source_id, partition),
    CHECK (start_offset <= next_offset AND next_offset <= end_offset)
);

SELECT pg_catalog.pg_extension_config_dump('kappa.view_rebuilds', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.view_rebuilds_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.rebuild_offsets', '');
REVOKE ALL ON kappa.view_rebuilds, kappa.rebuild_offsets FROM PUBLIC;
GRANT SELECT ON kappa.view_rebuilds, kappa.rebuild_offsets TO PUBLIC;
GRANT SELECT ON SEQUENCE kappa.view_rebuilds_id_seq TO pg_database_owner;

CREATE FUNCTION kappa.replace_view(name text, query text, "from" timestamptz DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_replace_view'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.replace_view(text, text, timestamptz) IS
  'build a new definition of a continuous view from its history and swap it in when complete';

CREATE FUNCTION kappa.rebuild_view(name text, "from" timestamptz DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_rebuild_view'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.rebuild_view(text, timestamptz) IS
  'rebuild a continuous view from its history and swap it in when complete';

CREATE FUNCTION kappa.cancel_rebuild(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kappa_cancel_rebuild'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.cancel_rebuild(text) IS
  'drop the version of a continuous view being built; the live one stays';

-- Whether this session is swapping in the new version of a view: the one
-- CREATE OR REPLACE VIEW of a continuous view that kappa.on_ddl_command_end
-- lets through.
CREATE FUNCTION kappa.rebuild_swapping(view regclass)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kappa_rebuild_swapping'
LANGUAGE C STRICT VOLATILE;

-- Plain DROP of a view, of its stream or of a building version's pieces
-- takes the building version with it.
CREATE FUNCTION kappa.on_sql_drop_rebuilds()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    r record;
BEGIN
    IF to_regclass('kappa.view_rebuilds') IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(o.objid), '{}') INTO dropped
      FROM pg_event_trigger_dropped_objects() o
     WHERE o.classid OPERATOR(pg_catalog.=) 'pg_class'::regclass
       AND o.objsubid OPERATOR(pg_catalog.=) 0;
    IF dropped OPERATOR(pg_catalog.=) '{}' THEN
        RETURN;
    END IF;
    FOR r IN DELETE FROM kappa.view_rebuilds b
              WHERE b.view::oid OPERATOR(pg_catalog.=) ANY (dropped)
                 OR b.mat::oid OPERATOR(pg_catalog.=) ANY (dropped)
                 OR b.def::oid OPERATOR(pg_catalog.=) ANY (dropped)
                 OR b.stream::oid OPERATOR(pg_catalog.=) ANY (dropped)
                 OR b.log::oid OPERATOR(pg_catalog.=) ANY (dropped)
          RETURNING b.mat, b.def
    LOOP
        IF NOT r.mat::oid OPERATOR(pg_catalog.=) ANY (dropped) THEN
            EXECUTE format('DROP TABLE IF EXISTS %s CASCADE', r.mat);
        END IF;
        IF NOT r.def::oid OPERATOR(pg_catalog.=) ANY (dropped) THEN
            EXECUTE format('DROP VIEW IF EXISTS %s CASCADE', r.def);
        END IF;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER kappa_sql_drop_rebuilds ON sql_drop
  EXECUTE FUNCTION kappa.on_sql_drop_rebuilds();

-- The query of a continuous view's live version (read as committed now:
-- a swap may have just dropped the definition a reader's snapshot names).
CREATE FUNCTION kappa.view_query(view regclass)
RETURNS text
AS 'MODULE_PATHNAME', 'kappa_view_query'
LANGUAGE C STRICT STABLE;

-- kappa.views with the state of each view: live, or building / swapping a
-- new version, with its progress.
CREATE OR REPLACE VIEW kappa.views AS
SELECT v.view,
       n.nspname AS schema_name,
       c.relname AS view_name,
       v.stream,
       kappa.view_query(v.view) AS query,
       st.groups,
       st.rows_applied,
       st.last_update,
       v.mat AS materialization,
       v.created_at,
       coalesce(b.state, 'live') AS state,
       b.history,
       b.replayed,
       b.to_replay,
       CASE WHEN b.replayed OPERATOR(pg_catalog.>) 0
                 AND b.to_replay OPERATOR(pg_catalog.>) b.replayed
            THEN (b.updated_at OPERATOR(pg_catalog.-) b.started_at)
                 OPERATOR(pg_catalog.*) ((b.to_replay OPERATOR(pg_catalog.-) b.replayed)::float8
                                         OPERATOR(pg_catalog./) b.replayed::float8)
            WHEN b.id IS NOT NULL AND b.to_replay OPERATOR(pg_catalog.<=) b.replayed
            THEN interval '0'
       END AS eta,
       b.dead_letters AS rebuild_dead_letters,
       b.gaps AS rebuild_gaps,
       b.started_at AS rebuild_started_at,
       b.last_error AS rebuild_error,
       v.history_gaps
  FROM kappa.view_catalog v
  JOIN pg_class c ON c.oid = v.view
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL kappa.view_stats(v.view) st ON true
  LEFT JOIN kappa.view_rebuilds b ON b.view OPERATOR(pg_catalog.=) v.view;

-- The DDL event trigger lets a rebuild's swap redefine the user-facing view.
CREATE OR REPLACE FUNCTION kappa.on_ddl_command_end()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    rel oid;
    v record;
BEGIN
    IF to_regclass('kappa.view_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR c IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN c.command_tag IN ('GRANT', 'REVOKE', 'COMMENT', 'SECURITY LABEL',
                                        'CREATE INDEX', 'ALTER INDEX');
        rel := CASE c.classid
                 WHEN 'pg_class'::regclass THEN c.objid
                 WHEN 'pg_trigger'::regclass THEN
                   (SELECT tg.tgrelid FROM pg_trigger tg WHERE tg.oid = c.objid)
                 WHEN 'pg_rewrite'::regclass THEN
                   (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = c.objid)
                 WHEN 'pg_policy'::regclass THEN
                   (SELECT p.polrelid FROM pg_policy p WHERE p.oid = c.objid)
               END;
        CONTINUE WHEN rel IS NULL;
        FOR v IN SELECT * FROM kappa.view_catalog vc
                  WHERE vc.view = rel OR vc.mat = rel OR vc.def = rel
        LOOP
            IF rel = v.view::oid THEN
                IF c.command_tag = 'CREATE VIEW' AND NOT kappa.rebuild_swapping(v.view) THEN
                    RAISE EXCEPTION 'cannot replace the query of continuous view %', v.view
                          USING ERRCODE = 'wrong_object_type',
                                DETAIL = 'The view reads the materialization pg_kappa maintains for its query.',
                                HINT = 'Drop it with kappa.drop_view() and create it again with kappa.create_view().';
                END IF;
                PERFORM kappa.sync_view_owner(v.view);
            ELSIF c.command_tag = 'CREATE TRIGGER' AND c.classid = 'pg_trigger'::regclass
                  AND (SELECT tg.tgfoid FROM pg_trigger tg WHERE tg.oid = c.objid)
                      = 'kappa.refuse_materialization_change()'::regprocedure THEN
                -- pg_restore recreating the engine's own trigger
                NULL;
            ELSE
                RAISE EXCEPTION 'cannot alter the % of continuous view %',
                      CASE WHEN rel = v.mat::oid THEN 'materialization' ELSE 'definition' END,
                      v.view
                      USING ERRCODE = 'wrong_object_type',
                            DETAIL = format('Only pg_kappa changes it: %s would make the view disagree with its query.',
                                            c.command_tag),
                            HINT = 'Alter the continuous view itself (its name, owner, privileges), or drop it with kappa.drop_view() and create it again.';
            END IF;
        END LOOP;
    END LOOP;
END;
$$;

-- Time windows (src/sql/60_windows.sql)

-- Time windows for continuous views (src/windows.c).

-- Hopping windows: one row for every window of length size, starting every
-- slide from the epoch (1970-01-01 00:00, UTC for timestamptz), that
-- contains ts -- the half-open ranges [k * slide, k * slide + size).  slide
-- must divide size.  A continuous view groups by window_start:
--   FROM s, LATERAL kappa.hop(s.ts, slide => '1 minute', size => '10 minutes') AS w
CREATE FUNCTION kappa.hop(ts timestamptz, slide interval, size interval,
                          OUT window_start timestamptz, OUT window_end timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_hop'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION kappa.hop(timestamptz, interval, interval) IS
  'the hopping windows (size, starting every slide from the epoch) that contain a time';

CREATE FUNCTION kappa.hop(ts timestamp, slide interval, size interval,
                          OUT window_start timestamp, OUT window_end timestamp)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_hop'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 10;

COMMENT ON FUNCTION kappa.hop(timestamp, interval, interval) IS
  'the hopping windows (size, starting every slide from the epoch) that contain a time';
