--
-- The extension itself: install, drop, re-install.
--
-- pg_regress has already created the extension (--load-extension=pg_kappa)
-- with the library preloaded (test/regress.conf).
SELECT extname, extversion, extrelocatable
  FROM pg_extension WHERE extname = 'pg_kappa';
SHOW shared_preload_libraries;

-- DROP EXTENSION ... CASCADE leaves nothing behind.
DROP EXTENSION pg_kappa CASCADE;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'pg_kappa';
-- What is left of it (nothing):
SELECT 'schema' AS kind, nspname::text AS name
  FROM pg_namespace WHERE nspname IN ('kappa', 'kappa_data')
UNION ALL
SELECT 'wrapper', fdwname::text FROM pg_foreign_data_wrapper WHERE fdwname LIKE 'kappa%'
UNION ALL
SELECT 'server', srvname::text FROM pg_foreign_server WHERE srvname LIKE 'kappa%'
UNION ALL
SELECT 'event trigger', evtname::text FROM pg_event_trigger WHERE evtname LIKE 'kappa%'
UNION ALL
SELECT 'function', oid::regprocedure::text FROM pg_proc WHERE probin LIKE '%pg_kappa%'
UNION ALL
SELECT 'dependency', pg_describe_object(classid, objid, objsubid)
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND NOT EXISTS (SELECT FROM pg_extension e WHERE e.oid = refobjid)
ORDER BY 1, 2;

-- CREATE EXTENSION works in a database that already has objects in it, and
-- leaves them alone.
CREATE SCHEMA app;
CREATE TABLE app.payments (id int PRIMARY KEY, amount numeric);
INSERT INTO app.payments VALUES (1, 10.50), (2, 20.25);
CREATE FUNCTION app.twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';
CREATE VIEW app.big_payments AS SELECT * FROM app.payments WHERE amount > 15;
CREATE EXTENSION pg_kappa;
SELECT extname, extversion
  FROM pg_extension WHERE extname = 'pg_kappa';
SELECT sum(amount) FROM app.payments;
SELECT app.twice(21);
SELECT * FROM app.big_payments;

-- The names of the SQL contract are there.
SELECT p.proname AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'kappa'::regnamespace
   AND p.proname IN ('create_stream', 'drop_stream', 'create_view', 'drop_view')
 ORDER BY 1;
SELECT c.oid::regclass AS catalog_view
  FROM pg_class c
 WHERE c.relnamespace = 'kappa'::regnamespace AND c.relkind = 'v'
   AND c.relname IN ('streams', 'views')
 ORDER BY c.relname;

DROP SCHEMA app CASCADE;
-- The extension stays installed for the tests that follow.

-- For the tests that follow: the rows in which each continuous view listed
-- in 'checks' (view, query) differs from its query run as plain SQL, both
-- ways -- "view=0 ..." when every view is exact.
CREATE FUNCTION public.view_differences(checks regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c record;
    d bigint;
    result text := '';
BEGIN
    FOR c IN EXECUTE format('SELECT view, query FROM %s ORDER BY view', checks) LOOP
        EXECUTE format('SELECT count(*) FROM ((TABLE %I EXCEPT ALL (%s)) UNION ALL ((%s) EXCEPT ALL TABLE %I)) d',
                       c.view, c.query, c.query, c.view) INTO d;
        result := result || c.view || '=' || d || ' ';
    END LOOP;
    RETURN rtrim(result);
END $$;
