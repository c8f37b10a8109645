--
-- The trust boundary of the engine (docs/security.md): internal statements
-- cannot be subverted through the search_path, the code of a view runs as
-- the view's owner, expiry runs as the owner of the rows' table, and only
-- the engine writes a materialization.
--
-- The attacker, regress_mallory, owns a schema that the victims put on
-- their search_path.  Every trojan below records who ran it in
-- regress_evil.hits and tries to make regress_mallory a superuser; each
-- check looks at the outcome.
--
CREATE ROLE regress_mallory LOGIN;
CREATE ROLE regress_reader LOGIN;
CREATE SCHEMA regress_evil AUTHORIZATION regress_mallory;
GRANT USAGE ON SCHEMA regress_evil TO PUBLIC;
CREATE SCHEMA regress_mallory_app AUTHORIZATION regress_mallory;

SET ROLE regress_mallory;
CREATE TABLE regress_evil.hits (who name, what text);
GRANT INSERT, SELECT ON regress_evil.hits TO PUBLIC;

-- records the current user, and escalates if that user can
CREATE FUNCTION regress_evil.pwn(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_evil.hits VALUES (current_user, what);
    BEGIN
        EXECUTE 'ALTER ROLE regress_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $$;

-- a trojan = (regclass, oid): an exact match for internal catalog lookups
CREATE FUNCTION regress_evil.trojan_eq(regclass, oid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('= (regclass, oid)');
    RETURN $1::oid OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = regclass, RIGHTARG = oid,
                                FUNCTION = regress_evil.trojan_eq);
-- and = (text, text), = (integer, integer): exact matches of the built-ins,
-- chosen when pg_catalog comes after regress_evil on the search_path
CREATE FUNCTION regress_evil.trojan_texteq(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('= (text, text)');
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text,
                                FUNCTION = regress_evil.trojan_texteq);
CREATE FUNCTION regress_evil.trojan_int4eq(integer, integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('= (integer, integer)');
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = integer, RIGHTARG = integer,
                                FUNCTION = regress_evil.trojan_int4eq);

-- trojan aggregates with the names of the built-ins internal statistics use
CREATE FUNCTION regress_evil.trojan_count_step(bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('count(*)');
    RETURN $1 + 1;
END $$;
CREATE AGGREGATE regress_evil.count(*) (SFUNC = regress_evil.trojan_count_step,
                                        STYPE = bigint, INITCOND = '0');
CREATE FUNCTION regress_evil.trojan_sum_step(bigint, bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('sum(bigint)');
    RETURN coalesce($1, 0) + $2;
END $$;
CREATE AGGREGATE regress_evil.sum(bigint) (SFUNC = regress_evil.trojan_sum_step,
                                           STYPE = bigint);
CREATE FUNCTION regress_evil.trojan_max_step(timestamptz, timestamptz) RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('max(timestamptz)');
    RETURN greatest($1, $2);
END $$;
CREATE AGGREGATE regress_evil.max(timestamptz) (SFUNC = regress_evil.trojan_max_step,
                                                STYPE = timestamptz);

-- an aggregate of mallory's own, used in her views: its transition,
-- combine and final functions record who runs them
CREATE FUNCTION regress_mallory_app.spy_step(bigint, int) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('transition');
    RETURN coalesce($1, 0) + $2;
END $$;
CREATE FUNCTION regress_mallory_app.spy_combine(bigint, bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('combine');
    RETURN coalesce($1, 0) + coalesce($2, 0);
END $$;
CREATE FUNCTION regress_mallory_app.spy_final(bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('final');
    RETURN $1;
END $$;
CREATE AGGREGATE regress_mallory_app.spy_sum(int) (
    SFUNC = regress_mallory_app.spy_step, STYPE = bigint,
    COMBINEFUNC = regress_mallory_app.spy_combine,
    FINALFUNC = regress_mallory_app.spy_final);
-- and an expression function, declared immutable (nothing checks it)
CREATE FUNCTION regress_mallory_app.spy_key(int) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM regress_evil.pwn('expression');
    RETURN $1 % 3;
END $$;
RESET ROLE;

--
-- 1. A superuser writes into a stream whose views mallory owns, with the
-- trojans on the search_path: her code runs as her, pg_kappa's as nobody
-- she chose.
--
GRANT CREATE ON SCHEMA public TO regress_mallory;
SELECT kappa.create_stream('public.sec_events', 'k int, x int');
ALTER FOREIGN TABLE public.sec_events OWNER TO regress_mallory;
CREATE TABLE public.sec_dim (m int PRIMARY KEY, label text);
INSERT INTO public.sec_dim VALUES (0, 'zero'), (1, 'one'), (2, 'two');
GRANT SELECT ON public.sec_dim TO regress_mallory;
SET ROLE regress_mallory;
-- pushed rows (the stream alone) and a delta query (a join)
SELECT kappa.create_view('public.sec_pushed', $$
  SELECT regress_mallory_app.spy_key(k) AS g, regress_mallory_app.spy_sum(x) AS s,
         count(*) AS n
    FROM public.sec_events GROUP BY 1$$);
SELECT kappa.create_view('public.sec_joined', $$
  SELECT d.label, regress_mallory_app.spy_sum(e.x) AS s, count(*) AS n
    FROM public.sec_events e JOIN public.sec_dim d ON d.m = e.k % 3 GROUP BY d.label$$);
RESET ROLE;
TRUNCATE regress_evil.hits;

SET search_path = regress_evil, pg_catalog, public;
INSERT INTO sec_events SELECT i, i FROM generate_series(1, 3000) i;
INSERT INTO sec_events VALUES (1, 1);
COPY sec_events FROM STDIN;
5	5
6	6
\.
RESET search_path;

-- mallory's code ran, as mallory only; no trojan of pg_kappa's statements ran
SELECT who, what, count(*) > 0 AS ran FROM regress_evil.hits
 GROUP BY who, what ORDER BY who, what;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';
-- the views are exact: the same as their queries over the same rows
SELECT g, s, n FROM public.sec_pushed ORDER BY g;
SELECT k % 3 AS g, sum(x) AS s, count(*) AS n
  FROM (SELECT i AS k, i AS x FROM generate_series(1, 3000) i
        UNION ALL VALUES (1, 1), (5, 5), (6, 6)) r GROUP BY 1 ORDER BY 1;
SELECT label, s, n FROM public.sec_joined ORDER BY label;

--
-- 2. Statistics: a role allowed to read a view calls kappa.view_stats
-- through kappa.views with trojan count, sum and max on its search_path.
--
GRANT SELECT ON public.sec_pushed TO regress_reader;
TRUNCATE regress_evil.hits;
SET ROLE regress_reader;
SET search_path = regress_evil, pg_catalog, public;
SELECT view_name, groups, rows_applied FROM kappa.views
 WHERE view_name ~ '^sec_pushed$';
SELECT groups, rows_applied FROM kappa.view_stats('public.sec_pushed');
RESET search_path;
RESET ROLE;
SELECT count(*) AS trojans_run FROM regress_evil.hits;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';
-- a role that may not read the view learns nothing
SET ROLE regress_reader;
SELECT groups, rows_applied FROM kappa.view_stats('public.sec_joined');
RESET ROLE;

--
-- 3. Creating, checking and dropping views and streams as a superuser with
-- the trojans on the search_path.
--
TRUNCATE regress_evil.hits;
SET search_path = regress_evil, pg_catalog, public;
SELECT kappa.create_stream('sec_retained', 'k int', retain => 'infinity');
INSERT INTO sec_retained SELECT i FROM generate_series(1, 10) i;
SELECT kappa.create_view('sec_backfilled', 'SELECT k % 2 AS odd, pg_catalog.count(*) AS n FROM sec_retained GROUP BY 1');
SELECT * FROM sec_backfilled ORDER BY odd;
SELECT kappa.drop_view('sec_backfilled');
SELECT kappa.drop_stream('sec_retained', cascade => true);
SELECT stream_name FROM kappa.streams ORDER BY 1;
RESET search_path;
SELECT count(*) AS trojans_run FROM regress_evil.hits;

--
-- 4. Expiry of retained rows: the owner of the rows' table may put a
-- trigger on it; expiry runs it as that owner, not as the superuser that
-- calls kappa.expire_retained_rows().
--
SET ROLE regress_mallory;
SELECT kappa.create_stream('public.sec_expiring', 'k int', retain => '1 day');
INSERT INTO public.sec_expiring SELECT i FROM generate_series(1, 5) i;
SELECT backing AS sec_backing FROM kappa.stream_catalog
 WHERE stream = 'public.sec_expiring'::regclass \gset
UPDATE :sec_backing SET kappa_arrived_at = now() - interval '2 days' WHERE k <= 3;
CREATE FUNCTION regress_mallory_app.on_expiry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_evil.pwn('expiry trigger');
    RETURN OLD;
END $$;
CREATE TRIGGER spy BEFORE DELETE ON :sec_backing
  FOR EACH ROW EXECUTE FUNCTION regress_mallory_app.on_expiry();
RESET ROLE;
TRUNCATE regress_evil.hits;
SET search_path = regress_evil, pg_catalog, public;
SELECT kappa.expire_retained_rows() AS expired;
RESET search_path;
SELECT who, what, count(*) AS times FROM regress_evil.hits GROUP BY 1, 2;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';
SELECT count(*) AS left_after_expiry FROM public.sec_expiring;

--
-- 5. Only the engine writes a materialization: not its owner, not a
-- superuser, not through the user-facing view; no ALTER, no trigger, rule
-- or policy of anyone's; reads keep working.
--
SELECT mat AS sec_mat, def AS sec_def FROM kappa.view_catalog
 WHERE view = 'public.sec_pushed'::regclass \gset
\set VERBOSITY default
SET ROLE regress_mallory;
UPDATE :sec_mat SET c_2 = 0;
DELETE FROM :sec_mat;
INSERT INTO :sec_mat SELECT * FROM :sec_mat;
TRUNCATE :sec_mat;
COPY :sec_mat FROM STDIN;
\.
UPDATE public.sec_pushed SET s = 0;
ALTER TABLE :sec_mat ADD COLUMN extra int;
ALTER TABLE :sec_mat DISABLE TRIGGER ALL;
ALTER TABLE :sec_mat DROP COLUMN updated_at;
ALTER TABLE :sec_mat RENAME TO stolen;
CREATE TRIGGER mine BEFORE UPDATE ON :sec_mat FOR EACH ROW
  EXECUTE FUNCTION regress_mallory_app.on_expiry();
CREATE RULE mine AS ON UPDATE TO :sec_mat DO INSTEAD NOTHING;
DROP TRIGGER kappa_engine_only ON :sec_mat;
CREATE OR REPLACE VIEW :sec_def AS SELECT 1 AS g, 2::bigint AS s, 3::bigint AS n;
CREATE OR REPLACE VIEW public.sec_pushed AS SELECT 1 AS g, 2::bigint AS s, 3::bigint AS n;
RESET ROLE;
-- superusers too
UPDATE :sec_mat SET c_2 = 0;
TRUNCATE :sec_mat;
ALTER TABLE :sec_mat ALTER COLUMN c_2 TYPE text;
ALTER TABLE :sec_mat ENABLE ROW LEVEL SECURITY;
\set VERBOSITY terse
-- an index that only speeds up reads is fine
CREATE INDEX sec_mat_by_n ON :sec_mat (c_3);
DROP INDEX kappa_data.sec_mat_by_n;
-- nothing changed: the view still equals its query
CREATE TABLE sec_shadow AS
  SELECT i AS k, i AS x FROM generate_series(1, 3000) i
  UNION ALL VALUES (1, 1), (5, 5), (6, 6);
SELECT count(*) AS diff FROM (
  (SELECT g, s, n FROM public.sec_pushed
   EXCEPT ALL SELECT k % 3, sum(x), count(*) FROM sec_shadow GROUP BY 1)
  UNION ALL
  (SELECT k % 3, sum(x), count(*) FROM sec_shadow GROUP BY 1
   EXCEPT ALL SELECT g, s, n FROM public.sec_pushed)) d;
SET ROLE regress_reader;
SELECT count(*) AS groups_readable FROM public.sec_pushed;
RESET ROLE;
-- and keeps updating
INSERT INTO public.sec_events VALUES (3, 1000);
INSERT INTO sec_shadow VALUES (3, 1000);
SELECT s, n FROM public.sec_pushed WHERE g = 0;
SELECT sum(x) AS s, count(*) AS n FROM sec_shadow WHERE k % 3 = 0;

-- the owner of a view is the owner of its pieces, also after ALTER VIEW;
-- its code then runs as the new owner
CREATE ROLE regress_heir;
ALTER VIEW public.sec_pushed OWNER TO regress_heir;
SELECT c.relname ~ '_mat_' AS is_mat, pg_get_userbyid(c.relowner) AS owner
  FROM pg_class c
 WHERE c.oid IN (:'sec_mat'::regclass, :'sec_def'::regclass) ORDER BY 1;
-- who may not use mallory's functions cannot maintain the view
INSERT INTO public.sec_events VALUES (3, 1);
GRANT USAGE ON SCHEMA regress_mallory_app TO regress_heir;
TRUNCATE regress_evil.hits;
INSERT INTO public.sec_events VALUES (3, 1);
INSERT INTO sec_shadow VALUES (3, 1);
-- (sec_joined, still mallory's, ran its code as her)
SELECT DISTINCT who FROM regress_evil.hits WHERE what = 'transition' ORDER BY 1;
SELECT s, n FROM public.sec_pushed WHERE g = 0;
ALTER VIEW public.sec_pushed OWNER TO regress_mallory;

-- dropping the view still drops every piece
SELECT kappa.drop_view('public.sec_joined');
DROP VIEW public.sec_pushed;
SELECT count(*) AS pieces_left FROM pg_class
 WHERE oid IN (to_regclass(:'sec_mat'), to_regclass(:'sec_def'));

SELECT kappa.drop_stream('public.sec_events', cascade => true);
SELECT kappa.drop_stream('public.sec_expiring');
DROP TABLE public.sec_dim;
DROP TABLE sec_shadow;
DROP SCHEMA regress_evil CASCADE;
DROP SCHEMA regress_mallory_app CASCADE;
REVOKE CREATE ON SCHEMA public FROM regress_mallory;
DROP ROLE regress_mallory;
DROP ROLE regress_reader;
DROP ROLE regress_heir;
