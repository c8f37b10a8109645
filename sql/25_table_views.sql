--
-- Continuous views over ordinary tables: every INSERT, UPDATE, DELETE,
-- TRUNCATE, COPY and MERGE of the table reaches its views in the writer's
-- transaction.  After every step each view must equal its query run as
-- plain SQL over the table: (TABLE v EXCEPT ALL q) UNION ALL (q EXCEPT ALL
-- TABLE v) is empty.  Floats are multiples of 0.25, so their sums are exact
-- in any order.
--
CREATE SCHEMA regress_tv;
SET search_path = regress_tv, public;

CREATE TABLE orders (id int PRIMARY KEY, cust text, qty int, amount numeric,
                     weight float8, paid bool);
INSERT INTO orders
SELECT i, 'c' || (i % 4), i % 7, (i * 1.25)::numeric, (i % 9) * 0.25, i % 3 <> 0
  FROM generate_series(1, 40) i;

-- invertible aggregates: rows retract in place
SELECT kappa.create_view('tv_inv',
  $$SELECT cust, count(*) AS n, count(qty) AS nq, sum(qty::bigint) AS q8,
           sum(amount) AS total, avg(amount) AS mean, var_samp(amount) AS var,
           avg(qty) AS mean_qty
      FROM orders GROUP BY cust$$);
-- aggregates without an inverse: touched groups are recomputed
SELECT kappa.create_view('tv_rec',
  $$SELECT cust, paid, count(*) AS n, min(qty) AS lo, max(amount) AS hi,
           sum(qty) AS q4, sum(weight) AS w, bool_and(paid) AS all_paid
      FROM orders WHERE qty > 1 GROUP BY cust, paid$$);
-- a global view, and HAVING / ORDER BY / LIMIT applied at read time
SELECT kappa.create_view('tv_all',
  $$SELECT count(*) AS n, sum(amount) AS total, max(qty) AS top FROM orders$$);
SELECT kappa.create_view('tv_top',
  $$SELECT qty, count(*) AS n, sum(amount) AS total FROM orders
     GROUP BY qty HAVING count(*) > 5 ORDER BY total DESC LIMIT 3$$);

-- the views and their queries
CREATE TABLE checks (view text PRIMARY KEY, query text);
INSERT INTO checks VALUES
 ('tv_inv', $$SELECT cust, count(*) AS n, count(qty) AS nq, sum(qty::bigint) AS q8,
           sum(amount) AS total, avg(amount) AS mean, var_samp(amount) AS var,
           avg(qty) AS mean_qty FROM orders GROUP BY cust$$),
 ('tv_rec', $$SELECT cust, paid, count(*) AS n, min(qty) AS lo, max(amount) AS hi,
           sum(qty) AS q4, sum(weight) AS w, bool_and(paid) AS all_paid
      FROM orders WHERE qty > 1 GROUP BY cust, paid$$),
 ('tv_all', $$SELECT count(*) AS n, sum(amount) AS total, max(qty) AS top FROM orders$$),
 ('tv_top', $$SELECT qty, count(*) AS n, sum(amount) AS total FROM orders
     GROUP BY qty HAVING count(*) > 5 ORDER BY total DESC LIMIT 3$$);

-- differing rows per view (all zero when the views are exact)
CREATE FUNCTION differences() RETURNS text LANGUAGE sql
  AS $$SELECT public.view_differences('checks')$$;

-- backfill: the views start with the table's rows
SELECT differences();
SELECT * FROM tv_all;
SELECT * FROM tv_top;
SELECT view::text, groups, rows_applied FROM kappa.views
 WHERE schema_name = 'regress_tv' ORDER BY 1;
SELECT view::text, stream::text FROM kappa.views WHERE schema_name = 'regress_tv' ORDER BY 1;

-- INSERT, and UPDATE of values, of the WHERE (rows move in and out of
-- tv_rec), and of group keys
INSERT INTO orders VALUES (100, 'c9', 5, 10, 0.5, true), (101, NULL, NULL, NULL, NULL, NULL);
SELECT differences();
UPDATE orders SET amount = amount + 1 WHERE cust = 'c1';
SELECT differences();
UPDATE orders SET qty = CASE WHEN qty > 1 THEN 0 ELSE 4 END WHERE id % 5 = 0;
SELECT differences();
UPDATE orders SET cust = 'c2', paid = NOT paid WHERE cust = 'c3';
SELECT differences();
UPDATE orders SET cust = NULL WHERE id IN (1, 2);
SELECT differences();

-- DELETE down to zero: the group disappears
DELETE FROM orders WHERE cust = 'c9';
SELECT differences();
SELECT count(*) FROM tv_inv WHERE cust = 'c9';
DELETE FROM orders WHERE cust IS NULL;
SELECT differences();

-- COPY, MERGE, INSERT ... ON CONFLICT
COPY orders FROM stdin;
200	c5	3	7.5	1.25	t
201	c5	8	2.5	0.75	f
202	\N	2	\N	\N	\N
\.
SELECT differences();
MERGE INTO orders o
USING (SELECT i, 'c' || (i % 6) AS cust FROM generate_series(30, 60, 2) i) s ON o.id = s.i
 WHEN MATCHED AND s.i % 4 = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET qty = o.qty + 2, cust = s.cust
 WHEN NOT MATCHED THEN INSERT VALUES (s.i, s.cust, s.i % 5, s.i, 0.25, s.i % 3 = 0);
SELECT differences();
INSERT INTO orders VALUES (3, 'c7', 9, 99, 2.5, false), (300, 'c7', 1, 1, 0.25, true)
    ON CONFLICT (id) DO UPDATE SET cust = excluded.cust, amount = orders.amount + excluded.amount;
SELECT differences();
INSERT INTO orders VALUES (3, 'c8', 0, 0, 0, false) ON CONFLICT DO NOTHING;
SELECT differences();

-- rollback and savepoints take the view changes with the rows
BEGIN;
DELETE FROM orders WHERE qty > 2;
SELECT differences();
ROLLBACK;
SELECT differences();
BEGIN;
UPDATE orders SET cust = 'c0' WHERE cust = 'c1';
SAVEPOINT s1;
DELETE FROM orders WHERE cust = 'c0';
SELECT differences();
ROLLBACK TO s1;
SELECT differences();
SAVEPOINT s2;
INSERT INTO orders VALUES (400, 'c4', 6, 4, 1, true);
RELEASE s2;
COMMIT;
SELECT differences();

-- a statement on the table run from a trigger of a statement on the table
CREATE FUNCTION orders_echo() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id < 1000 THEN
        INSERT INTO orders VALUES (NEW.id + 1000, NEW.cust, NEW.qty, NEW.amount, NEW.weight, NEW.paid);
        DELETE FROM orders WHERE id = NEW.id - 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER echo AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_echo();
INSERT INTO orders VALUES (501, 'c1', 2, 5, 0.5, true), (503, 'c2', 7, 6, 0.25, false);
SELECT differences();
DROP TRIGGER echo ON orders;

-- read time: HAVING and ORDER BY
SELECT * FROM tv_top;

-- TRUNCATE empties every view; the global one keeps its row
BEGIN;
TRUNCATE orders;
SELECT differences();
SELECT * FROM tv_all;
ROLLBACK;
SELECT differences();
TRUNCATE orders;
SELECT differences();
SELECT * FROM tv_all;
INSERT INTO orders VALUES (1, 'c1', 3, 1.5, 0.25, true);
SELECT differences();

-- Hostile: a trojan operator and function on the writer's search_path do
-- not run; the view's code and pg_kappa's own SQL name what they use.
CREATE SCHEMA regress_trojan;
CREATE FUNCTION regress_trojan.trojan_eq(int, int) RETURNS bool LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'trojan operator ran'; END$$;
CREATE OPERATOR regress_trojan.= (LEFTARG = int, RIGHTARG = int, FUNCTION = regress_trojan.trojan_eq);
CREATE FUNCTION regress_trojan.lower(text) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'trojan function ran'; END$$;
CREATE FUNCTION regress_trojan.int4pl(int, int) RETURNS int LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'trojan function ran'; END$$;
SELECT kappa.create_view('tv_lower',
  $$SELECT lower(cust) AS c, count(*) AS n, min(qty + 1) AS m FROM orders WHERE qty = qty GROUP BY 1$$);
INSERT INTO checks VALUES ('tv_lower',
  $$SELECT lower(cust) AS c, count(*) AS n, min(qty + 1) AS m FROM orders WHERE qty = qty GROUP BY 1$$);
SET search_path = regress_trojan, pg_catalog, regress_tv, public;
INSERT INTO regress_tv.orders VALUES (2, 'C1', 4, 2, 0.5, false), (3, 'C2', 1, 3, 0.75, true);
UPDATE regress_tv.orders SET qty = 8 WHERE id OPERATOR(pg_catalog.=) 2;
DELETE FROM regress_tv.orders WHERE id OPERATOR(pg_catalog.=) 1;
SET search_path = regress_tv, public;
SELECT differences();

-- Hostile: a writer with no privilege on the views' storage writes the
-- table; the views stay exact.
CREATE ROLE regress_tv_writer;
GRANT USAGE ON SCHEMA regress_tv TO regress_tv_writer;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders TO regress_tv_writer;
SET ROLE regress_tv_writer;
INSERT INTO orders VALUES (10, 'c3', 5, 10, 1, true), (11, 'c3', 2, 11, 1.5, false);
UPDATE orders SET qty = qty + 3, cust = 'c4' WHERE id = 10;
DELETE FROM orders WHERE id = 11;
SELECT count(*) FROM tv_inv;  -- no privilege to read the view either
RESET ROLE;
SELECT differences();

-- Hostile: a role without SELECT on the table cannot create a view over
-- it; one with SELECT but without TRIGGER cannot either.
CREATE ROLE regress_tv_reader;
GRANT USAGE, CREATE ON SCHEMA regress_tv TO regress_tv_reader;
SET ROLE regress_tv_reader;
SELECT kappa.create_view('tv_denied', 'SELECT cust, count(*) FROM orders GROUP BY cust');
RESET ROLE;
GRANT SELECT ON orders TO regress_tv_reader;
SET ROLE regress_tv_reader;
SELECT kappa.create_view('tv_denied', 'SELECT cust, count(*) FROM orders GROUP BY cust');
RESET ROLE;

-- Hostile: nobody writes a materialization directly, not even its owner.
DO $$
DECLARE mat regclass := (SELECT materialization FROM kappa.views WHERE view = 'regress_tv.tv_inv'::regclass);
BEGIN
    EXECUTE format('DELETE FROM %s', mat);
END $$;

-- Refused: constructs and relations a view over a table cannot maintain.
CREATE TABLE customers (cust text PRIMARY KEY, region text);
CREATE TABLE parted (k int, v int) PARTITION BY RANGE (k);
CREATE MATERIALIZED VIEW orders_mv AS SELECT * FROM orders;
CREATE VIEW orders_plain AS SELECT * FROM orders;
CREATE TEMP TABLE orders_tmp (cust text, qty int);
CREATE TABLE orders_child () INHERITS (customers);
\set VERBOSITY default
SELECT kappa.create_view('tv_bad', 'SELECT c.region, count(*) FROM orders o JOIN customers c USING (cust) JOIN orders o2 ON o2.id = o.id + 1 GROUP BY c.region');
SELECT kappa.create_view('tv_bad', 'SELECT a.cust, count(*) FROM orders a JOIN orders b ON b.id = a.id GROUP BY a.cust');
SELECT kappa.create_view('tv_bad', 'SELECT q.region, count(*) FROM orders o JOIN (SELECT * FROM customers WHERE region <> ''x'') q USING (cust) GROUP BY q.region');
SELECT kappa.create_view('tv_bad', 'WITH c AS (SELECT * FROM customers) SELECT c.region, count(*) FROM orders o JOIN c USING (cust) GROUP BY c.region');
SELECT kappa.create_view('tv_bad', 'SELECT c.region, count(*) FROM orders o RIGHT JOIN customers c USING (cust) GROUP BY c.region');
SELECT kappa.create_view('tv_bad', 'SELECT o.cust, count(*) FROM orders o JOIN customers c TABLESAMPLE system (50) USING (cust) GROUP BY o.cust');
SELECT kappa.create_view('tv_bad', 'SELECT o.cust, max(o.xmin::text) FROM orders o GROUP BY o.cust');
SELECT kappa.create_view('tv_bad', 'SELECT cust, count(*) FROM orders WHERE cust IN (SELECT cust FROM customers) GROUP BY cust');
SELECT kappa.create_view('tv_bad', 'SELECT k, count(*) FROM parted GROUP BY k');
SELECT kappa.create_view('tv_bad', 'SELECT cust, count(*) FROM orders_mv GROUP BY cust');
SELECT kappa.create_view('tv_bad', 'SELECT cust, count(*) FROM orders_plain GROUP BY cust');
SELECT kappa.create_view('tv_bad', 'SELECT cust, count(*) FROM orders_tmp GROUP BY cust');
SELECT kappa.create_view('tv_bad', 'SELECT region, count(*) FROM customers GROUP BY region');
\set VERBOSITY terse

-- What would make the views silently stale is refused while they exist.
\set VERBOSITY default
ALTER TABLE orders DISABLE TRIGGER kappa_capture_update;
ALTER TABLE orders DISABLE TRIGGER ALL;
DROP TRIGGER kappa_capture_insert ON orders;
ALTER TRIGGER kappa_capture_delete ON orders RENAME TO kappa_other;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE TABLE orders_heir () INHERITS (orders);
\set VERBOSITY terse
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgenabled = 'O';

-- DROP TABLE needs CASCADE while views depend on the table; the last view
-- to go takes the capturing triggers with it.
DROP TABLE orders;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'orders'::regclass ORDER BY 1;
SELECT kappa.drop_view('tv_top');
SELECT kappa.drop_view('tv_lower');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
DROP VIEW tv_all;
SELECT kappa.drop_view('tv_rec');
SELECT kappa.drop_view('tv_inv');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
SELECT kappa.create_view('tv_again', 'SELECT paid, count(*) AS n FROM orders GROUP BY paid');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
DROP TABLE orders CASCADE;
SELECT count(*) FROM kappa.view_catalog v WHERE v.view::text LIKE '%tv_again%';
SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace AND relname LIKE 'tv\_%';

-- Views over a table joined to other tables ("dimensions"): the first
-- relation of FROM is the aggregated table, the others are read as of each
-- change.  Sales of shops 9 and 10 have no shop: an inner join drops them,
-- a LEFT JOIN keeps them with NULLs, as plain SQL does.
DELETE FROM checks;
CREATE TABLE regions (id int PRIMARY KEY, name text);
CREATE TABLE shops (id int PRIMARY KEY, region int, kind text);
INSERT INTO regions VALUES (1, 'north'), (2, 'south'), (3, 'east');
INSERT INTO shops
SELECT i, 1 + i % 3, CASE WHEN i % 2 = 0 THEN 'big' ELSE 'small' END
  FROM generate_series(1, 8) i;
CREATE TABLE sales (id int PRIMARY KEY, shop int, qty int, amount numeric,
                    weight float8);
INSERT INTO sales
SELECT i, 1 + i % 10, i % 7, i * 1.5, (i % 5) * 0.25 FROM generate_series(1, 60) i;
INSERT INTO checks VALUES
 ('tj_inv', $$SELECT r.name, count(*) AS n, sum(s.amount) AS total, avg(s.qty) AS mean
      FROM sales s JOIN shops h ON h.id = s.shop JOIN regions r ON r.id = h.region
     GROUP BY r.name$$),
 ('tj_rec', $$SELECT h.kind, s.qty > 3 AS many, count(*) AS n, min(s.amount) AS lo,
           max(s.weight) AS hi, sum(s.qty) AS q
      FROM sales s, shops h WHERE h.id = s.shop AND s.amount > 5 AND h.kind <> 'none'
     GROUP BY 1, 2$$),
 ('tj_left', $$SELECT h.region, count(*) AS n, count(h.id) AS matched, sum(s.amount) AS total
      FROM sales s LEFT JOIN shops h ON h.id = s.shop GROUP BY h.region$$),
 ('tj_all', $$SELECT count(*) AS n, max(s.amount) AS top
      FROM sales s JOIN shops h ON h.id = s.shop WHERE h.kind = 'big'$$);
SELECT kappa.create_view(view, query) IS NOT NULL FROM checks ORDER BY view;
SELECT differences();
SELECT * FROM tj_inv ORDER BY name;
SELECT * FROM tj_left ORDER BY region;

-- INSERT with and without a shop; UPDATE of values, of the join key (to
-- another shop, to none and back), in and out of WHERE; DELETE
INSERT INTO sales VALUES (100, 3, 5, 10, 0.5), (101, 9, 1, 2, 0.25), (102, NULL, 2, 3, 0);
SELECT differences();
UPDATE sales SET amount = amount + 1 WHERE shop = 2;
SELECT differences();
UPDATE sales SET shop = CASE WHEN shop = 8 THEN 1 ELSE shop + 1 END WHERE id % 4 = 0;
SELECT differences();
UPDATE sales SET shop = 9 WHERE shop = 5;
SELECT differences();
UPDATE sales SET shop = 5 WHERE shop = 9 AND id % 2 = 0;
SELECT differences();
UPDATE sales SET amount = CASE WHEN amount > 5 THEN 1 ELSE 50 END, qty = qty + 1 WHERE id % 3 = 0;
SELECT differences();
DELETE FROM sales WHERE shop IN (1, 4);
SELECT differences();
DELETE FROM sales WHERE shop = 3 OR shop IS NULL;
SELECT differences();

-- COPY, MERGE, ON CONFLICT
COPY sales FROM stdin;
300	4	3	7.5	1.25
301	10	8	2.5	0.75
302	\N	2	\N	\N
\.
SELECT differences();
MERGE INTO sales o
USING (SELECT i, 1 + i % 11 AS shop FROM generate_series(20, 70, 3) i) m ON o.id = m.i
 WHEN MATCHED AND m.i % 2 = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET shop = m.shop, qty = o.qty + 1
 WHEN NOT MATCHED THEN INSERT VALUES (m.i, m.shop, m.i % 5, m.i, 0.25);
SELECT differences();
INSERT INTO sales VALUES (300, 6, 1, 1, 0), (303, 7, 7, 7, 0.5)
    ON CONFLICT (id) DO UPDATE SET shop = excluded.shop, amount = sales.amount + 1;
SELECT differences();

-- rollback and savepoints
BEGIN;
DELETE FROM sales WHERE qty > 2;
UPDATE sales SET shop = 2;
SELECT differences();
ROLLBACK;
SELECT differences();
BEGIN;
UPDATE sales SET shop = 6 WHERE shop = 7;
SAVEPOINT s1;
DELETE FROM sales WHERE shop = 6;
SELECT differences();
ROLLBACK TO s1;
INSERT INTO sales VALUES (400, 2, 6, 4, 1);
COMMIT;
SELECT differences();

-- a function in FROM over the table's rows, a whole-row reference, and a
-- dropped column of the table (attribute numbers keep their places)
ALTER TABLE sales ADD COLUMN tags text[], ADD COLUMN note text;
UPDATE sales SET tags = ARRAY['t' || (id % 3), 't' || (id % 2)] WHERE id % 5 <> 0;
ALTER TABLE sales DROP COLUMN note;
INSERT INTO checks VALUES
 ('tj_tags', $$SELECT tag, h.kind, count(*) AS n, max(s.amount) AS top, count(s) AS rows
      FROM sales s JOIN shops h ON h.id = s.shop, unnest(s.tags) tag GROUP BY tag, h.kind$$);
SELECT kappa.create_view('tj_tags', query) IS NOT NULL FROM checks WHERE view = 'tj_tags';
INSERT INTO sales VALUES (700, 2, 1, 70, 0.5, '{t9,t0}'), (701, 9, 1, 71, 0.5, '{t9}');
UPDATE sales SET tags = tags || '{t8}'::text[] WHERE id % 7 = 0;
DELETE FROM sales WHERE 't1' = ANY (tags) AND id % 2 = 0;
SELECT differences();
SELECT * FROM tj_tags WHERE tag IN ('t8', 't9') ORDER BY 1, 2;

-- Hostile: a trojan operator and function on the writer's search_path do
-- not run (the view's = over int and lower() are pg_catalog's)
SELECT kappa.create_view('tj_lower',
  $$SELECT lower(h.kind) AS k, count(*) AS n, max(s.qty + 1) AS m
      FROM sales s JOIN shops h ON h.id = s.shop WHERE s.qty = s.qty GROUP BY 1$$);
INSERT INTO checks VALUES ('tj_lower',
  $$SELECT lower(h.kind) AS k, count(*) AS n, max(s.qty + 1) AS m
      FROM sales s JOIN shops h ON h.id = s.shop WHERE s.qty = s.qty GROUP BY 1$$);
SET search_path = regress_trojan, pg_catalog, regress_tv, public;
INSERT INTO regress_tv.sales VALUES (500, 2, 4, 2, 0.5), (501, 3, 1, 3, 0.75);
UPDATE regress_tv.sales SET shop = 4 WHERE id OPERATOR(pg_catalog.=) 500;
DELETE FROM regress_tv.sales WHERE id OPERATOR(pg_catalog.=) 501;
SET search_path = regress_tv, public;
SELECT differences();

-- Hostile: a writer with no privilege on the dimensions or the views
GRANT SELECT, INSERT, UPDATE, DELETE ON sales TO regress_tv_writer;
SET ROLE regress_tv_writer;
INSERT INTO sales VALUES (600, 1, 5, 10, 1), (601, 2, 2, 11, 1.5);
UPDATE sales SET shop = 3 WHERE id = 600;
DELETE FROM sales WHERE id = 601;
RESET ROLE;
SELECT differences();

-- Hostile: the view's owner needs SELECT on every table it joins
GRANT SELECT, TRIGGER ON sales TO regress_tv_reader;
SET ROLE regress_tv_reader;
SELECT kappa.create_view('tj_denied', 'SELECT h.kind, count(*) FROM sales s JOIN shops h ON h.id = s.shop GROUP BY h.kind');
RESET ROLE;

-- TRUNCATE of the table empties the views (the global one keeps its row)
BEGIN;
TRUNCATE sales;
SELECT differences();
SELECT * FROM tj_all;
ROLLBACK;
SELECT differences();

-- Changes to the dimensions do not reach the views (documented): after a
-- shop moves, its sales stay counted in the region they were counted in,
-- and sales that change later are counted in the new one.  Re-creating
-- the view counts everything anew.
UPDATE shops SET region = 1 WHERE id = 2;
SELECT differences() AS after_a_shop_moved;
SELECT kappa.drop_view('tj_inv');
SELECT kappa.drop_view('tj_left');
SELECT kappa.create_view(view, query) IS NOT NULL FROM checks
 WHERE view IN ('tj_inv', 'tj_left') ORDER BY view;
SELECT differences();

RESET search_path;
DROP SCHEMA regress_tv CASCADE;
DROP SCHEMA regress_trojan CASCADE;
DROP ROLE regress_tv_writer;
DROP ROLE regress_tv_reader;
