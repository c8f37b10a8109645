-- pg_kappa 0.1 -> 0.2: a trust boundary that holds, views exact under
-- concurrent DDL, monitoring that never hides a loss.  See docs/security.md
-- and docs/kafka.md ("Upgrading from 0.1").
--
-- Run by ALTER EXTENSION pg_kappa UPDATE, after the 0.2 library is
-- installed.  Until then, the library's Kafka workers wait (they log
-- "waits for ALTER EXTENSION pg_kappa UPDATE"); streams and views keep
-- working.

\echo Use "ALTER EXTENSION pg_kappa UPDATE TO '0.2'" to load this file. \quit

SET LOCAL search_path = pg_catalog, pg_temp;

--
-- Streams and continuous views
--
GRANT SELECT ON SEQUENCE kappa.view_catalog_id_seq TO pg_database_owner;

CREATE OR REPLACE FUNCTION kappa.on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    v record;
    s record;
    t record;
BEGIN
    IF to_regclass('kappa.view_catalog') IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(objid), '{}') INTO dropped
      FROM pg_event_trigger_dropped_objects()
     WHERE classid = 'pg_class'::regclass AND objsubid = 0;

    -- the trigger that keeps a materialization in the engine's hands goes
    -- only with the materialization
    FOR t IN SELECT o.address_names
               FROM pg_event_trigger_dropped_objects() o
              WHERE o.object_type = 'trigger'
                AND o.address_names[3] = 'kappa_engine_only'
    LOOP
        IF EXISTS (SELECT 1 FROM kappa.view_catalog vc
                    WHERE vc.mat = to_regclass(quote_ident(t.address_names[1]) || '.' ||
                                               quote_ident(t.address_names[2]))
                      AND NOT vc.mat::oid = ANY (dropped)) THEN
            RAISE EXCEPTION 'cannot drop trigger kappa_engine_only of continuous view %',
                  (SELECT vc.view FROM kappa.view_catalog vc
                    WHERE vc.mat = to_regclass(quote_ident(t.address_names[1]) || '.' ||
                                               quote_ident(t.address_names[2])))
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = 'The trigger keeps the view''s materialization in pg_kappa''s hands.',
                        HINT = 'Drop the continuous view with kappa.drop_view() instead.';
        END IF;
    END LOOP;
    IF dropped = '{}' THEN
        RETURN;
    END IF;

    FOR v IN DELETE FROM kappa.view_catalog
              WHERE view::oid = ANY (dropped) OR mat::oid = ANY (dropped)
                 OR def::oid = ANY (dropped) OR stream::oid = ANY (dropped)
          RETURNING *
    LOOP
        IF NOT v.view::oid = ANY (dropped) THEN
            EXECUTE format('DROP VIEW IF EXISTS %s CASCADE', v.view);
        END IF;
        IF NOT v.mat::oid = ANY (dropped) THEN
            EXECUTE format('DROP TABLE IF EXISTS %s CASCADE', v.mat);
        END IF;
        IF NOT v.def::oid = ANY (dropped) THEN
            EXECUTE format('DROP VIEW IF EXISTS %s CASCADE', v.def);
        END IF;
        IF NOT v.stream::oid = ANY (dropped) THEN
            PERFORM kappa.stream_changed(v.stream);
        END IF;
    END LOOP;

    FOR s IN SELECT * FROM kappa.stream_catalog
              WHERE backing::oid = ANY (dropped) AND NOT stream::oid = ANY (dropped)
    LOOP
        RAISE EXCEPTION 'cannot drop the retained rows of stream %', s.stream
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'Use kappa.drop_stream() to drop the stream with its rows.';
    END LOOP;

    FOR s IN DELETE FROM kappa.stream_catalog
              WHERE stream::oid = ANY (dropped)
          RETURNING *
    LOOP
        IF s.backing IS NOT NULL AND NOT s.backing::oid = ANY (dropped) THEN
            EXECUTE format('DROP TABLE IF EXISTS %s', s.backing);
        END IF;
    END LOOP;
END;
$$;

-- Only the engine writes a materialization (src/protect.c): this statement
-- trigger on each of them refuses INSERT, UPDATE, DELETE, TRUNCATE, COPY and
-- MERGE by anyone; the engine's own writes fire no triggers.
CREATE FUNCTION kappa.refuse_materialization_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_refuse_materialization_change'
LANGUAGE C;

-- The owner of a continuous view owns its materialization and definition.
CREATE FUNCTION kappa.sync_view_owner(view regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_sync_view_owner'
LANGUAGE C STRICT VOLATILE;

-- DDL on the pieces of a continuous view: ALTER, new triggers, rules and
-- policies on a materialization or definition are refused, as is replacing
-- the user-facing view's query; ALTER VIEW ... OWNER TO carries over to the
-- pieces.  (Indexes on a materialization are allowed: they only speed up
-- reads, and pg_restore creates the engine's own.)
CREATE FUNCTION kappa.on_ddl_command_end()
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
                IF c.command_tag = 'CREATE VIEW' THEN
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

-- the engine's own trigger on every existing materialization (before the
-- event trigger that refuses other triggers exists)
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT mat FROM kappa.view_catalog ORDER BY id LOOP
        EXECUTE format('CREATE TRIGGER kappa_engine_only '
                       'BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION kappa.refuse_materialization_change()',
                       v.mat);
    END LOOP;
END
$$;

CREATE EVENT TRIGGER kappa_ddl_command_end ON ddl_command_end
  EXECUTE FUNCTION kappa.on_ddl_command_end();

--
-- Kafka: servers and user mappings, data loss, monitoring
--
CREATE FUNCTION kappa.kafka_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_kafka_fdw_validator'
LANGUAGE C STRICT;

CREATE FUNCTION kappa.kafka_properties(
    OUT property text, OUT class text, OUT secret boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_kafka_properties'
LANGUAGE C STRICT STABLE;

CREATE FUNCTION kappa.option_is_secret(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kappa_option_is_secret'
LANGUAGE C STRICT IMMUTABLE;

-- No handler: a kappa_kafka server has no foreign tables.
CREATE FOREIGN DATA WRAPPER kappa_kafka VALIDATOR kappa.kafka_fdw_validator;

COMMENT ON FUNCTION kappa.kafka_properties() IS
  'librdkafka properties by class: safe, secret (user mappings only), network (servers only), file, program, superuser, reserved';

ALTER TABLE kappa.source_catalog
    ADD COLUMN server text,
    ALTER COLUMN brokers DROP NOT NULL,
    ADD COLUMN on_data_loss text NOT NULL DEFAULT 'fail'
        CHECK (on_data_loss IN ('fail', 'record'));

ALTER TABLE kappa.source_status
    ADD COLUMN partitions_in_topic integer,
    ADD COLUMN dead_letters_per_sec double precision NOT NULL DEFAULT 0,
    ADD COLUMN dead_letter_share double precision;

ALTER TABLE kappa.dead_letters
    ADD COLUMN kind text NOT NULL DEFAULT 'dead_letter' CHECK (kind IN ('dead_letter', 'gap')),
    ADD COLUMN last_offset bigint,
    ADD CHECK ((kind = 'gap') = (last_offset IS NOT NULL));

GRANT SELECT ON kappa.source_catalog, kappa.source_offsets, kappa.dead_letters
  TO pg_database_owner;
GRANT SELECT ON SEQUENCE kappa.source_catalog_id_seq, kappa.dead_letters_id_seq
  TO pg_database_owner;

-- Every 0.1 source gave its brokers directly, and may hold secrets among its
-- options.  Each becomes a source on a server of its own, named after it
-- (kappa_source_<name>), owned by the extension's owner, with USAGE for the
-- source's owner; its secret options move into that owner's user mapping
-- there.  The servers and mappings are the database's, not the extension's
-- (dumped by pg_dump, kept by DROP EXTENSION).  Options that 0.2 allows only to privileged roles stay on the
-- source: a worker whose owner lacks the privilege then stops with the
-- reason in kappa.sources (docs/kafka.md, "Upgrading from 0.1").
DO $$
DECLARE
    s record;
    srv text;
    secrets text;
BEGIN
    FOR s IN SELECT * FROM kappa.source_catalog ORDER BY id LOOP
        srv := left('kappa_source_' || s.name, 63);
        IF EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = srv) THEN
            srv := left('kappa_source_' || s.name, 50) || '_' || s.id;
        END IF;
        EXECUTE format('CREATE SERVER %I FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers %L)',
                       srv, s.brokers);
        -- the user's object, not the extension's: dumped, kept by DROP EXTENSION
        EXECUTE format('ALTER EXTENSION pg_kappa DROP SERVER %I', srv);
        EXECUTE format('GRANT USAGE ON FOREIGN SERVER %I TO %s', srv, s.owner::regrole);
        SELECT string_agg(format('%I %L', e.key, e.value), ', ' ORDER BY e.key) INTO secrets
          FROM jsonb_each_text(s.options) e
         WHERE kappa.option_is_secret(e.key);
        IF secrets IS NOT NULL THEN
            EXECUTE format('CREATE USER MAPPING FOR %s SERVER %I OPTIONS (%s)',
                           s.owner::regrole, srv, secrets);
        END IF;
        UPDATE kappa.source_catalog
           SET server = srv, brokers = NULL,
               options = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
                            FROM jsonb_each(s.options) e
                           WHERE NOT kappa.option_is_secret(e.key))
         WHERE id = s.id;
    END LOOP;
END
$$;

ALTER TABLE kappa.source_catalog
    ADD CHECK ((server IS NULL) <> (brokers IS NULL));

-- A source restored from a dump (a row not inserted by create_kafka_source)
-- arrives paused: a restore loads the catalog, offsets, views and rows in
-- separate transactions, and a copy of a database should not start reading
-- its original's topics by itself.  kappa.resume_source() starts it.
CREATE FUNCTION kappa.source_arrives_paused()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_source_arrives_paused'
LANGUAGE C;
CREATE TRIGGER restored_sources_arrive_paused
  BEFORE INSERT ON kappa.source_catalog
  FOR EACH ROW EXECUTE FUNCTION kappa.source_arrives_paused();



DROP FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, integer, jsonb);
CREATE FUNCTION kappa.create_kafka_source(name text,
                                          target text,
                                          topic text,
                                          server text DEFAULT NULL,
                                          brokers text DEFAULT NULL,
                                          format text DEFAULT 'json',
                                          start text DEFAULT 'earliest',
                                          on_data_loss text DEFAULT 'fail',
                                          parallelism integer DEFAULT 1,
                                          options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_create_kafka_source_0_2'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, text, text, integer, jsonb) IS
  'create a Kafka source: background workers consume a topic into a stream or table, exactly once';

DROP FUNCTION kappa.resume_source(text);
CREATE FUNCTION kappa.resume_source(name text, on_data_loss text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_resume_source_0_2'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE OR REPLACE FUNCTION kappa.mask_options(options jsonb, owner oid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE
         WHEN pg_has_role(owner, 'USAGE') THEN options
         ELSE coalesce((SELECT jsonb_object_agg(k,
                                 CASE WHEN kappa.option_is_secret(k)
                                      THEN '"********"'::jsonb ELSE v END)
                          FROM jsonb_each(options) AS e(k, v)), '{}'::jsonb)
       END
$$;

CREATE FUNCTION kappa.launcher_problems(
    OUT source_id integer, OUT slot integer, OUT problem text, OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_launcher_problems'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION kappa.dead_letter_alert()
RETURNS double precision
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(nullif(current_setting('kappa.dead_letter_alert', true), '')::float8, 0.5) $$;

DROP VIEW kappa.sources;
DROP VIEW kappa.errors;

CREATE VIEW kappa.sources WITH (security_barrier) AS
SELECT s.name AS source,
       CASE
         WHEN s.paused THEN 'paused'
         WHEN st.live = 0 AND st.last_state = 'failed' THEN 'failed'
         WHEN st.live = 0 THEN 'stopped'
         WHEN st.state = 'failed' THEN 'failed'
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
         WHEN NOT s.paused AND st.live > 0 AND st.state <> 'failed'
              AND st.assigned < st.in_topic
           THEN format('%s of %s partitions of topic "%s" are not being read%s',
                       st.in_topic - st.assigned, st.in_topic, s.topic,
                       coalesce(': ' || lp.problem, ''))
         WHEN NOT s.paused AND st.live > 0 AND st.state <> 'failed'
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
       s.created_at
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
           (array_agg(ss.last_error ORDER BY ss.last_error_at DESC NULLS LAST))[1] AS last_error,
           max(ss.last_error_at) AS last_error_at
      FROM kappa.source_status ss
      -- by pid only: other roles see no backend_type of the owner's workers
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = ss.pid
     WHERE ss.source_id = s.id) st ON true;

-- Dead letters and recorded gaps, visible to the owner of their source (and
-- superusers).
CREATE VIEW kappa.errors WITH (security_barrier) AS
SELECT s.name AS source,
       d.kind,
       d.topic,
       d.partition,
       d."offset",
       d.last_offset,
       CASE WHEN d.kind = 'gap' THEN d.last_offset - d."offset" + 1 ELSE 1 END AS messages,
       d.key,
       d.payload,
       d.error,
       d."when",
       d.sqlstate,
       d.id
  FROM kappa.dead_letters d
  JOIN kappa.source_catalog s ON s.id = d.source_id
 WHERE pg_catalog.pg_has_role(s.owner, 'USAGE');

-- Kafka servers, and whether the current role may use them.
CREATE VIEW kappa.kafka_servers AS
SELECT srv.srvname AS server,
       pg_catalog.pg_get_userbyid(srv.srvowner) AS owner,
       (SELECT o.option_value FROM pg_catalog.pg_options_to_table(srv.srvoptions) o
         WHERE o.option_name = 'brokers') AS brokers,
       pg_catalog.has_server_privilege(srv.oid, 'USAGE') AS usable
  FROM pg_catalog.pg_foreign_server srv
  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = srv.srvfdw
 WHERE w.fdwname = 'kappa_kafka';

GRANT SELECT ON kappa.sources, kappa.source_partitions, kappa.errors, kappa.kafka_servers
  TO PUBLIC;

CREATE OR REPLACE FUNCTION kappa.on_sql_drop_sources()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF to_regclass('kappa.source_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT sc.name, o.object_name
               FROM pg_event_trigger_dropped_objects() o
               JOIN kappa.source_catalog sc ON sc.server = o.object_name
              WHERE o.object_type = 'server'
    LOOP
        RAISE EXCEPTION 'cannot drop server % because kafka source % uses it', s.object_name, s.name
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'Drop the source first with kappa.drop_source().';
    END LOOP;
    FOR s IN DELETE FROM kappa.source_catalog
              WHERE target::oid IN (SELECT objid FROM pg_event_trigger_dropped_objects()
                                     WHERE classid = 'pg_class'::regclass AND objsubid = 0)
          RETURNING name
    LOOP
        RAISE NOTICE 'drop cascades to kafka source %', s.name;
    END LOOP;
END;
$$;

CREATE FUNCTION kappa.on_alter_server()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF to_regclass('kappa.source_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT sc.name, sc.server FROM kappa.source_catalog sc
              WHERE sc.server IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM pg_foreign_server f WHERE f.srvname = sc.server)
    LOOP
        RAISE EXCEPTION 'cannot rename server % because kafka source % uses it', s.server, s.name
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'Drop the source first with kappa.drop_source().';
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER kappa_alter_server ON ddl_command_end
  WHEN TAG IN ('ALTER SERVER')
  EXECUTE FUNCTION kappa.on_alter_server();
