--
-- Lifecycle and safety: dropping streams and views with kappa's functions
-- and with plain DDL keeps the catalog consistent (no dangling rows, no
-- orphaned storage); renames; roles and privileges.
--
CREATE SCHEMA regress_lifecycle;
SET search_path = regress_lifecycle, public;

-- try(sql): the statement's error as SQLSTATE: message, with the view ids
-- in kappa_data names replaced by N.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '_(mat|def|rows)_[0-9]+', '_\1_N', 'g');
END $$;

-- :state shows what kappa holds beyond what it held when this file started
-- (other test files may leave objects), and catalog rows that point to
-- relations that no longer exist.
SELECT (SELECT count(*) FROM kappa.view_catalog) AS base_views,
       (SELECT count(*) FROM kappa.stream_catalog) AS base_streams,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace) AS base_data
\gset
CREATE FUNCTION state(base_views bigint, base_streams bigint, base_data bigint,
                      OUT views bigint, OUT streams bigint, OUT data_relations bigint,
                      OUT dangling bigint)
LANGUAGE sql AS $$
SELECT (SELECT count(*) FROM kappa.view_catalog) - base_views,
       (SELECT count(*) FROM kappa.stream_catalog) - base_streams,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace) - base_data,
       (SELECT count(*) FROM kappa.view_catalog v
         WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = v.view)
            OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = v.mat)
            OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = v.def)
            OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = v.stream))
     + (SELECT count(*) FROM kappa.stream_catalog s
         WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = s.stream)
            OR s.backing IS NOT NULL AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = s.backing))
$$;
\set state 'SELECT * FROM state(:base_views, :base_streams, :base_data);'
:state

--
-- drop_stream: refused while views depend on the stream, unless cascade.
--
SELECT kappa.create_stream('s1', 'k text, v int');
SELECT kappa.create_view('s1_a', 'SELECT k, count(*) FROM s1 GROUP BY k');
SELECT kappa.create_view('s1_b', 'SELECT sum(v) FROM s1');
INSERT INTO s1 VALUES ('x', 1), ('y', 2);
:state
SELECT try($$SELECT kappa.drop_stream('s1')$$);
SELECT try($$SELECT kappa.drop_stream('s1', cascade => false)$$);
-- nothing changed, the views still work
INSERT INTO s1 VALUES ('x', 3);
SELECT * FROM s1_a ORDER BY k;
SELECT * FROM s1_b;
:state
SET client_min_messages = warning;
SELECT kappa.drop_stream('s1', cascade => true);
RESET client_min_messages;
SELECT to_regclass('s1') AS s1, to_regclass('s1_a') AS s1_a, to_regclass('s1_b') AS s1_b;
:state

--
-- drop_view, and its errors.
--
SELECT kappa.create_stream('s2', 'k text, v int', retain => 'infinity');
SELECT kappa.create_view('s2_a', 'SELECT k, count(*) FROM s2 GROUP BY k');
CREATE VIEW plain_view AS SELECT 1 AS one;
SELECT try($$SELECT kappa.drop_view('plain_view')$$);
SELECT try($$SELECT kappa.drop_view('s2')$$);
SELECT try($$SELECT kappa.drop_view('no_such_view')$$);
SELECT kappa.drop_view('s2_a');
SELECT try($$SELECT kappa.drop_view('s2_a')$$);
:state

--
-- DROP VIEW on a continuous view drops its pieces and its catalog row.
--
SELECT kappa.create_view('s2_b', 'SELECT k, sum(v) FROM s2 GROUP BY k');
:state
DROP VIEW s2_b;
:state
-- the stream goes on without it
INSERT INTO s2 VALUES ('z', 1);
SELECT views FROM kappa.streams WHERE stream = 's2'::regclass;

--
-- DROP TABLE on the materialization: refused without CASCADE, and with
-- CASCADE everything of the view goes.
--
SELECT kappa.create_view('s2_c', 'SELECT k, sum(v) FROM s2 GROUP BY k');
SELECT try(format('DROP TABLE %s', materialization)) FROM kappa.views WHERE view = 's2_c'::regclass;
SELECT * FROM s2_c;
:state
SET client_min_messages = warning;
SELECT try(format('DROP TABLE %s CASCADE', materialization)) FROM kappa.views WHERE view = 's2_c'::regclass;
RESET client_min_messages;
SELECT to_regclass('s2_c') AS s2_c;
:state

--
-- DROP VIEW on the definition (kappa_data.*_def_*) drops the whole view.
--
SELECT kappa.create_view('s2_d', 'SELECT k, sum(v) FROM s2 GROUP BY k');
:state
SELECT try(format('DROP VIEW %s', def)) FROM kappa.view_catalog WHERE view = 's2_d'::regclass;
SELECT to_regclass('s2_d') AS s2_d;
:state

--
-- The retained rows of a stream can only go with the stream.
--
SELECT try(format('DROP TABLE %s', backing)) FROM kappa.stream_catalog WHERE stream = 's2'::regclass;
SELECT count(*) FROM s2;
:state

--
-- DROP FOREIGN TABLE on a stream: refused while views depend on it, and
-- with CASCADE takes its views, retained rows and catalog rows along.
--
SELECT kappa.create_view('s2_e', 'SELECT count(*) FROM s2');
SELECT try('DROP FOREIGN TABLE s2');
SET client_min_messages = warning;
DROP FOREIGN TABLE s2 CASCADE;
RESET client_min_messages;
SELECT to_regclass('s2_e') AS s2_e;
:state
-- and a stream without views with plain DROP FOREIGN TABLE
SELECT kappa.create_stream('s3', 'a int', retain => '1 day');
DROP FOREIGN TABLE s3;
:state

--
-- Renames: the view keeps working after its stream, its dimension table,
-- itself and their schema are renamed.
--
CREATE SCHEMA regress_lc_ren;
CREATE TABLE regress_lc_ren.dim (k text PRIMARY KEY, label text);
INSERT INTO regress_lc_ren.dim VALUES ('x', 'ex'), ('y', 'why');
SELECT kappa.create_stream('regress_lc_ren.s4', 'k text, v int');
SELECT kappa.create_view('regress_lc_ren.s4_v',
  'SELECT d.label, count(*) AS n, sum(s.v) AS v FROM regress_lc_ren.s4 s JOIN regress_lc_ren.dim d ON d.k = s.k GROUP BY d.label');
INSERT INTO regress_lc_ren.s4 VALUES ('x', 1), ('y', 2);
ALTER FOREIGN TABLE regress_lc_ren.s4 RENAME TO "Stream Four";
ALTER TABLE regress_lc_ren.dim RENAME TO "Dim";
ALTER VIEW regress_lc_ren.s4_v RENAME TO "View Four";
ALTER SCHEMA regress_lc_ren RENAME TO "Renamed Schema";
INSERT INTO "Renamed Schema"."Stream Four" VALUES ('x', 10), ('y', 20), ('z', 30);
SELECT * FROM "Renamed Schema"."View Four" ORDER BY label;
SELECT view, stream FROM kappa.views WHERE schema_name = 'Renamed Schema';
SELECT stream, views FROM kappa.streams WHERE schema_name = 'Renamed Schema';
-- kappa's functions find them by their new names
SELECT kappa.drop_view('"Renamed Schema"."View Four"');
SELECT kappa.drop_stream('"Renamed Schema"."Stream Four"');
:state

--
-- DROP SCHEMA ... CASCADE with streams and views in it.
--
CREATE SCHEMA regress_lc_gone;
SELECT kappa.create_stream('regress_lc_gone.s5', 'a int', retain => 'infinity');
SELECT kappa.create_view('regress_lc_gone.v5', 'SELECT a, count(*) FROM regress_lc_gone.s5 GROUP BY a');
-- a view in another schema over the same stream
SELECT kappa.create_view('v5_elsewhere', 'SELECT count(*) FROM regress_lc_gone.s5');
INSERT INTO regress_lc_gone.s5 VALUES (1), (2);
:state
SET client_min_messages = warning;
DROP SCHEMA regress_lc_gone CASCADE;
DROP SCHEMA "Renamed Schema" CASCADE;
RESET client_min_messages;
SELECT to_regclass('v5_elsewhere') AS v5_elsewhere;
:state

--
-- Roles: a non-superuser with CREATE on a schema creates and feeds streams
-- and views; SELECT on a view is granted like on any view; INSERT into a
-- stream needs the INSERT privilege.
--
CREATE ROLE regress_kappa_owner;
CREATE ROLE regress_kappa_reader;
CREATE ROLE regress_kappa_writer;
CREATE SCHEMA regress_lc_app;
GRANT CREATE, USAGE ON SCHEMA regress_lc_app TO regress_kappa_owner;
GRANT USAGE ON SCHEMA regress_lc_app TO regress_kappa_reader, regress_kappa_writer;
CREATE TABLE regress_lc_app.secret (k text, label text);
CREATE TABLE regress_lc_app.labels (k text, label text);
INSERT INTO regress_lc_app.labels VALUES ('a', 'A');
GRANT SELECT ON regress_lc_app.labels TO regress_kappa_owner;
-- (so that every role can call try())
GRANT USAGE ON SCHEMA regress_lifecycle TO regress_kappa_owner, regress_kappa_reader,
  regress_kappa_writer;

SET ROLE regress_kappa_owner;
SET search_path = regress_lc_app, regress_lifecycle;
-- no CREATE on public (PostgreSQL 15), so not there
SELECT try($$SELECT kappa.create_stream('public.nope', 'a int')$$);
SELECT kappa.create_stream('events', 'k text, v int');
SELECT kappa.create_stream('kept', 'k text, v int', retain => 'infinity');
SELECT kappa.create_view('per_k', 'SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k');
SELECT kappa.create_view('labelled', 'SELECT l.label, count(*) AS n FROM events e JOIN labels l ON l.k = e.k GROUP BY l.label');
SELECT kappa.create_view('kept_total', 'SELECT count(*) AS n FROM kept');
-- a view over a table the owner may not read is refused
SELECT try($$SELECT kappa.create_view('peek', 'SELECT s.label, count(*) FROM events e JOIN secret s ON s.k = e.k GROUP BY s.label')$$);
INSERT INTO events VALUES ('a', 1), ('b', 2);
COPY events FROM STDIN;
a	10
\.
INSERT INTO kept VALUES ('a', 1);
SELECT * FROM per_k ORDER BY k;
SELECT * FROM labelled;
SELECT * FROM kept;
SELECT view, stream, groups, rows_applied FROM kappa.views WHERE schema_name = 'regress_lc_app' ORDER BY view::text;
-- the owner owns what stores its views
SELECT count(*) AS not_owned FROM kappa.view_catalog v JOIN pg_class c ON c.oid IN (v.view, v.mat, v.def)
 WHERE v.view = 'regress_lc_app.per_k'::regclass AND c.relowner <> 'regress_kappa_owner'::regrole;
GRANT SELECT ON per_k TO regress_kappa_reader;
RESET ROLE;

-- The reader reads the granted view, and nothing else.
SET ROLE regress_kappa_reader;
SELECT * FROM regress_lc_app.per_k ORDER BY k;
SELECT try('SELECT * FROM regress_lc_app.labelled');
SELECT try('SELECT * FROM regress_lc_app.kept');
SELECT try(format('SELECT * FROM %s', materialization)) FROM kappa.views WHERE view = 'regress_lc_app.per_k'::regclass;
SELECT try(format('SELECT * FROM %s', def)) FROM kappa.view_catalog WHERE view = 'regress_lc_app.per_k'::regclass;
SELECT try(format('SELECT * FROM %s', backing)) FROM kappa.stream_catalog WHERE stream = 'regress_lc_app.kept'::regclass;
SELECT try($$INSERT INTO regress_lc_app.events VALUES ('a', 100)$$);
-- kappa.views shows statistics only of the views the role may read
SELECT view_name, groups, rows_applied FROM kappa.views WHERE schema_name = 'regress_lc_app' ORDER BY 1;
-- and it cannot drop or replace them
SELECT try($$SELECT kappa.drop_view('regress_lc_app.per_k')$$);
SELECT try($$SELECT kappa.drop_stream('regress_lc_app.events', true)$$);
SELECT try('DROP VIEW regress_lc_app.per_k');
RESET ROLE;

-- The writer may not feed the stream until granted INSERT.
SET ROLE regress_kappa_writer;
SELECT try($$INSERT INTO regress_lc_app.events VALUES ('w', 1)$$);
SELECT try($$COPY regress_lc_app.events FROM PROGRAM 'true'$$);
RESET ROLE;
SELECT * FROM regress_lc_app.per_k ORDER BY k;
SET ROLE regress_kappa_owner;
GRANT INSERT ON regress_lc_app.events TO regress_kappa_writer;
RESET ROLE;
SET ROLE regress_kappa_writer;
INSERT INTO regress_lc_app.events VALUES ('w', 1), ('a', 5);
COPY regress_lc_app.events FROM STDIN;
w	2
\.
-- it can feed, but not read
SELECT try('SELECT * FROM regress_lc_app.per_k');
SELECT try('SELECT * FROM regress_lc_app.events');
RESET ROLE;
SET ROLE regress_kappa_reader;
SELECT * FROM regress_lc_app.per_k ORDER BY k;
RESET ROLE;
SELECT * FROM regress_lc_app.labelled;

-- A role without CREATE on the schema cannot create there.
SET ROLE regress_kappa_writer;
SELECT try($$SELECT kappa.create_stream('regress_lc_app.mine', 'a int')$$);
SELECT try($$SELECT kappa.create_view('regress_lc_app.mine', 'SELECT count(*) FROM regress_lc_app.events')$$);
RESET ROLE;

-- The owner drops its objects.
SET ROLE regress_kappa_owner;
SELECT kappa.drop_view('per_k');
SET client_min_messages = warning;
SELECT kappa.drop_stream('events', cascade => true);
SELECT kappa.drop_stream('kept', cascade => true);
RESET client_min_messages;
RESET ROLE;
SET search_path = regress_lifecycle, public;
:state

SET client_min_messages = warning;
DROP SCHEMA regress_lc_app CASCADE;
DROP SCHEMA regress_lifecycle CASCADE;
DROP ROLE regress_kappa_owner;
DROP ROLE regress_kappa_reader;
DROP ROLE regress_kappa_writer;
RESET client_min_messages;
SELECT (SELECT count(*) FROM kappa.view_catalog) - :base_views AS views,
       (SELECT count(*) FROM kappa.stream_catalog) - :base_streams AS streams,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace)
         - :base_data AS data_relations;
