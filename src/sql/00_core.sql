-- pg_kappa install script, assembled by the Makefile from src/sql/*.sql.
-- Part 00: streams, continuous views and their catalog.

\echo Use "CREATE EXTENSION pg_kappa" to load this file. \quit

-- The extension's own schema, created here so that it belongs to the
-- extension and DROP EXTENSION removes it (pg_kappa.control names
-- pg_catalog as the extension's schema for that reason).
CREATE SCHEMA kappa;

-- Objects that carry the data of streams and views (materializations,
-- definitions, retained rows).  Users reach them only through the objects
-- pg_kappa creates in their own schemas.
CREATE SCHEMA kappa_data;
GRANT USAGE ON SCHEMA kappa_data TO PUBLIC;

-- Streams are foreign tables of this wrapper.
CREATE FUNCTION kappa.stream_fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'kappa_stream_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION kappa.stream_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_stream_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER kappa_stream
  HANDLER kappa.stream_fdw_handler
  VALIDATOR kappa.stream_fdw_validator;

CREATE SERVER kappa_streams FOREIGN DATA WRAPPER kappa_stream;
GRANT USAGE ON FOREIGN SERVER kappa_streams TO PUBLIC;

-- Catalog.  Rows are written only by pg_kappa's functions; pg_dump dumps them
-- (pg_extension_config_dump) so that a restored database keeps its streams
-- and views.  There are no foreign keys between these tables: pg_restore -j
-- loads each table's data on its own, in any order.  create_view and the
-- event trigger keep them consistent instead.
CREATE TABLE kappa.stream_catalog (
    stream      regclass PRIMARY KEY,
    backing     regclass,               -- heap of retained rows, NULL if none
    retain_all  boolean NOT NULL DEFAULT false,  -- retain => 'infinity'
    retain      interval,               -- retain => an interval; expiry age
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kappa.view_catalog (
    id          serial PRIMARY KEY,
    view        regclass NOT NULL UNIQUE,   -- what users read
    stream      regclass NOT NULL,          -- a stream in kappa.stream_catalog
    mat         regclass NOT NULL UNIQUE,   -- materialization: keys, states, finals
    def         regclass NOT NULL UNIQUE,   -- definition: the query as a plain view
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- messages the view's history lacks: the log no longer held them when
    -- it was last rebuilt from Kafka (docs/reprocessing.md)
    history_gaps bigint NOT NULL DEFAULT 0
);

SELECT pg_catalog.pg_extension_config_dump('kappa.stream_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.view_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.view_catalog_id_seq', '');

REVOKE ALL ON kappa.stream_catalog, kappa.view_catalog FROM PUBLIC;
GRANT SELECT ON kappa.stream_catalog, kappa.view_catalog TO PUBLIC;
-- pg_dump reads the state of dumped sequences: the database owner may dump
GRANT SELECT ON SEQUENCE kappa.view_catalog_id_seq TO pg_database_owner;

-- Streams.
CREATE FUNCTION kappa.create_stream(name text, columns text, retain text DEFAULT NULL)
RETURNS regclass
AS 'MODULE_PATHNAME', 'kappa_create_stream'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.create_stream(text, text, text) IS
  'create a stream: a typed append-only relation that feeds continuous views';

CREATE FUNCTION kappa.drop_stream(name text, cascade boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_stream'
LANGUAGE C STRICT VOLATILE;

-- Expiry of rows kept by streams with an interval retention (also run
-- periodically by the background workers when the library is preloaded).
CREATE FUNCTION kappa.expire_retained_rows()
RETURNS bigint
AS 'MODULE_PATHNAME', 'kappa_expire_retained_rows'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION kappa.expire_retained_rows() FROM PUBLIC;

-- Continuous views.
CREATE FUNCTION kappa.create_view(name text, query text)
RETURNS regclass
AS 'MODULE_PATHNAME', 'kappa_create_view'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.create_view(text, text) IS
  'create a continuous view: an aggregate query over a stream maintained incrementally';

CREATE FUNCTION kappa.drop_view(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_view'
LANGUAGE C STRICT VOLATILE;

-- Statistics kept in shared memory (NULL when the library is not preloaded).
CREATE FUNCTION kappa.stream_stats(stream regclass,
    OUT rows_applied bigint, OUT batches bigint, OUT last_batch_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'kappa_stream_stats'
LANGUAGE C STRICT STABLE;

-- Drops made with plain DDL (DROP VIEW, DROP FOREIGN TABLE ... CASCADE, DROP
-- EXTENSION) keep the catalog consistent through this event trigger: the
-- remaining pieces of an affected view are dropped and its catalog row goes.
CREATE FUNCTION kappa.on_sql_drop()
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

CREATE FUNCTION kappa.stream_changed(stream regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_stream_changed'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION kappa.stream_changed(regclass) FROM PUBLIC;

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

CREATE EVENT TRIGGER kappa_sql_drop ON sql_drop
  EXECUTE FUNCTION kappa.on_sql_drop();

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
-- the user-facing view's query (but by a rebuild's swap, which redefines it
-- over the new version); ALTER VIEW ... OWNER TO carries over to the
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

CREATE EVENT TRIGGER kappa_ddl_command_end ON ddl_command_end
  EXECUTE FUNCTION kappa.on_ddl_command_end();

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

-- Catalog views.
CREATE VIEW kappa.streams AS
SELECT s.stream,
       n.nspname AS schema_name,
       c.relname AS stream_name,
       (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                          ', ' ORDER BY a.attnum)
          FROM pg_attribute a
         WHERE a.attrelid = s.stream AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       CASE WHEN s.retain_all THEN 'infinity' ELSE s.retain::text END AS retention,
       ARRAY(SELECT v.view FROM kappa.view_catalog v
              WHERE v.stream = s.stream ORDER BY v.view::oid) AS views,
       st.rows_applied,
       st.batches,
       st.last_batch_at,
       s.created_at
  FROM kappa.stream_catalog s
  JOIN pg_class c ON c.oid = s.stream
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL kappa.stream_stats(s.stream) st ON true;

CREATE FUNCTION kappa.view_stats(view regclass,
    OUT groups bigint, OUT rows_applied bigint, OUT last_update timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'kappa_view_stats'
LANGUAGE C STRICT STABLE;

CREATE VIEW kappa.views AS
SELECT v.view,
       n.nspname AS schema_name,
       c.relname AS view_name,
       v.stream,
       pg_get_viewdef(v.def) AS query,
       st.groups,
       st.rows_applied,
       st.last_update,
       v.mat AS materialization,
       v.created_at
  FROM kappa.view_catalog v
  JOIN pg_class c ON c.oid = v.view
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL kappa.view_stats(v.view) st ON true;

GRANT USAGE ON SCHEMA kappa TO PUBLIC;
GRANT SELECT ON kappa.streams, kappa.views TO PUBLIC;
