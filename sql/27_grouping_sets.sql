--
-- GROUPING SETS, ROLLUP and CUBE, and grouping(), in continuous views over
-- a stream and over a table.  Every grouping level is stored in the one
-- materialization, keyed by its set's id, and each view must equal its
-- query as plain SQL over the same rows after every step:
-- (TABLE v EXCEPT ALL q) UNION ALL (q EXCEPT ALL TABLE v) is empty.  The
-- stream retains its rows, which gives them; floats are multiples of 0.25,
-- so their sums are exact in any order.
--
CREATE SCHEMA regress_gs;
SET search_path = regress_gs, public;

CREATE TABLE checks (view text PRIMARY KEY, query text);
CREATE FUNCTION differences() RETURNS text LANGUAGE sql
  AS $$SELECT public.view_differences('checks')$$;
-- create a continuous view and remember its query
CREATE FUNCTION make_view(name text, query text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kappa.create_view(name, query);
    INSERT INTO checks VALUES (name, query);
END $$;

--
-- 1. Over a stream.  The views exist before any row: the empty grouping
-- set () has its one row from the start, as in plain SQL.
--
SELECT kappa.create_stream('gs_events', 'region text, shop text, qty int, amount numeric, weight float8',
                           retain => 'infinity');
SELECT make_view('gs_rollup', $$SELECT region, shop, grouping(region, shop) AS g, grouping(shop) AS gs,
       count(*) AS n, sum(amount) AS total, min(amount) AS lo, max(qty) AS hi,
       sum(weight) AS w, avg(weight) AS mean_w
  FROM gs_events GROUP BY ROLLUP (region, shop)$$);
SELECT make_view('gs_cube', $$SELECT region, shop, grouping(region) AS gr, count(*) AS n, sum(qty) AS q
  FROM gs_events GROUP BY CUBE (region, shop) HAVING count(*) > 1$$);
-- a set listed twice gives its groups twice, as plain SQL does
SELECT make_view('gs_sets', $$SELECT region, shop, count(*) AS n, max(weight) AS top
  FROM gs_events WHERE qty > 0 GROUP BY GROUPING SETS ((region), (shop), (region), ())$$);
-- plain keys with a ROLLUP, DISTINCT, expressions over keys and grouping()
SELECT make_view('gs_mixed', $$SELECT region, shop,
       CASE WHEN grouping(shop) = 1 THEN 'all shops' ELSE coalesce(shop, '(none)') END AS label,
       count(*) AS n, sum(amount) / nullif(count(*), 0) AS per_row
  FROM gs_events GROUP BY DISTINCT region, ROLLUP (region, shop)$$);
-- grouping() without grouping sets is 0
SELECT make_view('gs_plain', $$SELECT region, grouping(region) AS g, count(*) AS n
  FROM gs_events GROUP BY region HAVING grouping(region) = 0$$);
-- GROUP BY () is a global aggregate
SELECT make_view('gs_empty', $$SELECT count(*) AS n, sum(qty) AS q FROM gs_events GROUP BY ()$$);
SELECT * FROM gs_rollup;
SELECT differences();

-- NULL keys: a real NULL shop is its own group, apart from the rolled-up one
INSERT INTO gs_events VALUES
  ('eu', 'a', 1, 10.5, 0.25), ('eu', 'b', 2, 20, 0.5), ('eu', NULL, 3, 1, 1.25),
  ('us', 'a', 4, NULL, 2), (NULL, 'a', 5, 7, 0.75), (NULL, NULL, 0, 3, NULL);
SELECT * FROM gs_rollup ORDER BY g, region, shop;
SELECT * FROM gs_sets ORDER BY region, shop, n;
SELECT differences();
-- several statements, a rolled-back one, and one long enough to be applied
-- in chunks that accumulate
INSERT INTO gs_events SELECT 'r' || (i % 3), 's' || (i % 4), i % 5, i * 0.5, (i % 8) * 0.25
  FROM generate_series(1, 200) i;
BEGIN;
INSERT INTO gs_events VALUES ('eu', 'a', 100, 100, 100);
SELECT n FROM gs_rollup WHERE g = 3;
ROLLBACK;
SET kappa.stream_batch_memory = '64kB';
INSERT INTO gs_events SELECT 'r' || (i % 5), 's' || (i % 7), i % 9, i * 0.25, (i % 4) * 0.25
  FROM generate_series(1, 5000) i;
RESET kappa.stream_batch_memory;
SELECT differences();
-- rows applied, counted once per row (each set's groups hold every row)
SELECT groups, rows_applied FROM kappa.view_stats('gs_rollup');

--
-- 2. Over a table: INSERT, UPDATE, DELETE, TRUNCATE, rollbacks; min and max
-- recompute a touched group of each set, invertible aggregates too.
--
CREATE TABLE gs_orders (id int PRIMARY KEY, cust text, region text, qty int,
                        amount numeric, weight float8);
CREATE INDEX ON gs_orders (cust, region);
INSERT INTO gs_orders SELECT i, 'c' || (i % 4), 'r' || (i % 3), i % 7, i * 1.25, (i % 9) * 0.25
  FROM generate_series(1, 40) i;
INSERT INTO gs_orders VALUES (41, NULL, 'r1', 2, 5, 1), (42, 'c1', NULL, 3, NULL, 0.5);
SELECT make_view('gs_t_rollup', $$SELECT cust, region, grouping(cust, region) AS g, count(*) AS n,
       sum(amount) AS total, min(qty) AS lo, max(amount) AS hi, sum(weight) AS w
  FROM gs_orders GROUP BY ROLLUP (cust, region)$$);
SELECT make_view('gs_t_cube', $$SELECT cust, region, count(*) AS n, sum(qty::bigint) AS q, avg(amount) AS mean
  FROM gs_orders WHERE qty > 0 GROUP BY CUBE (cust, region) HAVING sum(qty) > 3$$);
SELECT make_view('gs_t_sets', $$SELECT cust, region, count(*) AS n, min(weight) AS lo
  FROM gs_orders GROUP BY GROUPING SETS ((cust), (region), (cust))$$);
CREATE TABLE gs_dim (region text PRIMARY KEY, zone text);
INSERT INTO gs_dim VALUES ('r0', 'north'), ('r1', 'south'), ('r2', 'south');
-- with a join: leaving rows mark the groups they fall in, which are recomputed
SELECT make_view('gs_t_join', $$SELECT d.zone, o.cust, grouping(d.zone, o.cust) AS g, count(*) AS n,
       max(o.qty) AS hi
  FROM gs_orders o JOIN gs_dim d ON d.region = o.region GROUP BY CUBE (d.zone, o.cust)$$);
SELECT differences();
INSERT INTO gs_orders VALUES (43, 'c9', 'r2', 9, 99, 2.5);
SELECT differences();
UPDATE gs_orders SET qty = qty + 1, amount = amount + 1 WHERE id % 3 = 0;
UPDATE gs_orders SET region = 'r0' WHERE id = 42;
SELECT differences();
DELETE FROM gs_orders WHERE id % 4 = 0;
DELETE FROM gs_orders WHERE cust = 'c9';
SELECT differences();
SELECT * FROM gs_t_rollup WHERE g > 0 ORDER BY g, cust, region;
BEGIN;
DELETE FROM gs_orders;
SELECT * FROM gs_t_rollup;
SELECT differences();
ROLLBACK;
SELECT differences();
BEGIN;
SAVEPOINT s;
UPDATE gs_orders SET cust = 'c0';
SELECT differences();
ROLLBACK TO SAVEPOINT s;
UPDATE gs_orders SET weight = weight + 0.25 WHERE cust = 'c2';
COMMIT;
SELECT differences();
TRUNCATE gs_orders;
SELECT * FROM gs_t_rollup;
SELECT differences();
INSERT INTO gs_orders SELECT i, 'c' || (i % 5), 'r' || (i % 3), i % 6, i, (i % 4) * 0.25
  FROM generate_series(1, 300) i;
DELETE FROM gs_orders WHERE id % 7 = 0;
SELECT differences();

--
-- 3. A new version of a view over a table, rebuilt and swapped in.
--
CREATE PROCEDURE wait_live(name text) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        IF (SELECT state FROM kappa.views WHERE view_name = name) = 'live' THEN
            RETURN;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE EXCEPTION 'view % not live after 60 s', name;
END $$;
SELECT kappa.replace_view('gs_t_rollup', $$SELECT cust, region, grouping(cust, region) AS g, count(*) AS n,
       sum(amount) AS total, min(qty) AS lo, max(amount) AS hi, sum(weight) AS w, max(qty) AS top
  FROM gs_orders GROUP BY CUBE (cust, region)$$);
CALL wait_live('gs_t_rollup');
UPDATE checks SET query = $$SELECT cust, region, grouping(cust, region) AS g, count(*) AS n,
       sum(amount) AS total, min(qty) AS lo, max(amount) AS hi, sum(weight) AS w, max(qty) AS top
  FROM gs_orders GROUP BY CUBE (cust, region)$$ WHERE view = 'gs_t_rollup';
SELECT kappa.rebuild_view('gs_rollup');
CALL wait_live('gs_rollup');
DELETE FROM gs_orders WHERE id % 5 = 0;
INSERT INTO gs_events VALUES ('eu', 'a', 1, 1, 1);
SELECT differences();

--
-- 4. Refused: more group keys than a set's id holds, and several empty
-- sets without keys.
--
CREATE FUNCTION try_view(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hint text;
BEGIN
    PERFORM kappa.create_view('gs_refused', query);
    RETURN 'created';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || E'\nHINT: ' || hint;
END $$;
SELECT try_view($$SELECT count(*) FROM gs_events GROUP BY ROLLUP (
  qty + 1, qty + 2, qty + 3, qty + 4, qty + 5, qty + 6, qty + 7, qty + 8, qty + 9, qty + 10,
  qty + 11, qty + 12, qty + 13, qty + 14, qty + 15, qty + 16, qty + 17, qty + 18, qty + 19, qty + 20,
  qty + 21, qty + 22, qty + 23, qty + 24, qty + 25, qty + 26, qty + 27, qty + 28, qty + 29, qty + 30,
  qty + 31, qty + 32)$$);
SELECT try_view($$SELECT count(*) FROM gs_events GROUP BY GROUPING SETS ((), ())$$);

--
-- 5. A trojan = (integer, integer) ahead of pg_catalog on the search_path
-- is never called by the engine's own SQL (the user view of a repeated set
-- compares the set's id).
--
CREATE SCHEMA regress_gs_evil;
CREATE TABLE regress_gs_evil.hits (what text);
CREATE FUNCTION regress_gs_evil.trojan_int4eq(integer, integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_gs_evil.hits VALUES ('= (integer, integer)');
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_gs_evil.= (LEFTARG = integer, RIGHTARG = integer,
                                   FUNCTION = regress_gs_evil.trojan_int4eq);
SET search_path = regress_gs_evil, pg_catalog, regress_gs, public;
SELECT kappa.create_view('regress_gs.gs_hostile', $$SELECT region, count(*) AS n
  FROM regress_gs.gs_events GROUP BY GROUPING SETS ((region), (region), ())$$);
INSERT INTO regress_gs.gs_events VALUES ('eu', 'z', 1, 1, 1);
SELECT count(*) FROM regress_gs.gs_hostile;
DELETE FROM regress_gs.gs_orders WHERE id < 10;
SELECT what, count(*) FROM regress_gs_evil.hits GROUP BY what;
SET search_path = regress_gs, public;
INSERT INTO checks VALUES ('gs_hostile', $$SELECT region, count(*) AS n
  FROM regress_gs.gs_events GROUP BY GROUPING SETS ((region), (region), ())$$);
SELECT differences();

SET client_min_messages = warning;
DROP SCHEMA regress_gs_evil CASCADE;
SELECT kappa.drop_stream('gs_events', cascade => true);
DROP SCHEMA regress_gs CASCADE;
RESET client_min_messages;
