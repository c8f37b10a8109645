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
