--
-- Continuous views: every query shape a view may have, each checked against
-- the same query run as plain SQL over the same rows.
--
-- Rows go into the stream "clicks" and, by the same statements, into a
-- plain table "shadow"; "shadow_enriched" also records the dimension rows
-- each row was joined with when its batch was applied.  diff(view, query)
-- returns the number of rows that differ (EXCEPT ALL both ways): 0 means
-- the view equals the plain query.
CREATE SCHEMA regress_views;
SET search_path = regress_views, public;

CREATE FUNCTION diff(v regclass, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM ((TABLE %s EXCEPT ALL (%s)) UNION ALL ((%s) EXCEPT ALL TABLE %s)) d',
                   v, q, q, v) INTO n;
    RETURN n;
END $$;

-- Dimension tables for enrichment.
CREATE TABLE dim_url (url text PRIMARY KEY, category text NOT NULL);
CREATE TABLE dim_cat (category text PRIMARY KEY, weight int NOT NULL);
INSERT INTO dim_url VALUES ('u0', 'news'), ('u1', 'news'), ('u2', 'shop'),
                           ('u3', 'shop'), ('u4', 'blog');
INSERT INTO dim_cat VALUES ('news', 1), ('shop', 10);

SELECT kappa.create_stream('clicks',
  'user_id int, url text, amount numeric, ts timestamptz, price float8');
CREATE TABLE shadow (user_id int, url text, amount numeric, ts timestamptz, price float8);
CREATE TABLE batch (LIKE shadow);
CREATE TABLE shadow_enriched (LIKE shadow, category text, weight int);
-- :record copies the rows of "batch" into the shadows, with the dimension
-- rows as they are now, and empties it.
\set record 'INSERT INTO shadow SELECT * FROM batch; INSERT INTO shadow_enriched SELECT b.*, d.category, k.weight FROM batch b LEFT JOIN dim_url d ON d.url = b.url LEFT JOIN dim_cat k ON k.category = d.category; TRUNCATE batch;'

-- The views.  Created before any row arrives.
-- WHERE
SELECT kappa.create_view('v_where',
  $$SELECT url, count(*) AS n, sum(amount) AS total FROM clicks WHERE amount > 0 GROUP BY url$$);
-- expressions in the select list, over group keys and over aggregates
SELECT kappa.create_view('v_expr',
  $$SELECT upper(url) AS u, coalesce(url, '-') || '!' AS tagged,
           sum(amount) / count(*) AS mean, sum(amount) * 2 + count(*) AS mixed,
           max(ts) - min(ts) AS span, round(avg(amount), 3) AS avg3,
           count(*) > 3 AS busy
      FROM clicks GROUP BY upper(url), url$$);
-- GROUP BY expressions, positions, and a key that is not in the select list
SELECT kappa.create_view('v_group',
  $$SELECT user_id % 3 AS bucket, url, count(*) AS n, sum(user_id) AS s
      FROM clicks GROUP BY 1, url$$);
SELECT kappa.create_view('v_hidden_key',
  $$SELECT count(*) AS n, min(user_id) AS lo FROM clicks GROUP BY user_id % 2$$);
-- tumbling windows
SELECT kappa.create_view('v_bin',
  $$SELECT date_bin('10 minutes', ts, timestamptz '2024-01-01 00:00:00+00') AS minute10,
           count(*) AS n, sum(amount) AS total, max(ts) AS last_seen
      FROM clicks GROUP BY 1$$);
SELECT kappa.create_view('v_trunc',
  $$SELECT date_trunc('hour', ts) AS hour, url, count(*) AS n
      FROM clicks GROUP BY date_trunc('hour', ts), url$$);
SELECT kappa.create_view('v_trunc_local',
  $$SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day, count(*) AS n
      FROM clicks GROUP BY 1$$);
-- NULL group keys: all NULLs form one group, also in a multi-column key
SELECT kappa.create_view('v_nulls',
  $$SELECT url, user_id % 2 AS parity, count(*) AS n, count(url) AS n_url
      FROM clicks GROUP BY url, parity$$);
-- global aggregates: one row, even before any input
SELECT kappa.create_view('v_global',
  $$SELECT count(*) AS n, count(amount) AS n_amount, sum(amount) AS total,
           min(ts) AS first_ts, max(url) AS max_url, avg(price) AS mean_price
      FROM clicks$$);
SELECT kappa.create_view('v_global_where',
  $$SELECT count(*) AS n, sum(amount) AS total FROM clicks WHERE url = 'never'$$);
-- joins with ordinary tables, looked up as of each batch
SELECT kappa.create_view('v_join1',
  $$SELECT d.category, count(*) AS n, sum(c.amount) AS total
      FROM clicks c JOIN dim_url d ON d.url = c.url GROUP BY d.category$$);
SELECT kappa.create_view('v_join2',
  $$SELECT k.weight, d.category, count(*) AS n, sum(c.amount * k.weight) AS weighted
      FROM clicks c JOIN dim_url d ON d.url = c.url
      JOIN dim_cat k ON k.category = d.category
     WHERE k.weight > 0
     GROUP BY k.weight, d.category$$);
SELECT kappa.create_view('v_left',
  $$SELECT coalesce(d.category, 'none') AS category, count(*) AS n
      FROM clicks c LEFT JOIN dim_url d USING (url) GROUP BY 1$$);
SELECT kappa.create_view('v_using',
  $$SELECT category, count(*) AS n FROM dim_url JOIN clicks USING (url) GROUP BY category$$);
-- HAVING, ORDER BY, LIMIT and OFFSET apply when reading
SELECT kappa.create_view('v_having',
  $$SELECT url, count(*) AS n FROM clicks GROUP BY url HAVING sum(amount) > 10$$);
SELECT kappa.create_view('v_top',
  $$SELECT url, count(*) AS n, sum(amount) AS total FROM clicks
     GROUP BY url HAVING count(*) > 1
     ORDER BY n DESC, url NULLS FIRST LIMIT 3 OFFSET 1$$);
SELECT kappa.create_view('v_order_hidden',
  $$SELECT url FROM clicks GROUP BY url ORDER BY max(ts) DESC, url LIMIT 4$$);

-- Before any input: grouped views are empty, global ones have their row.
SELECT * FROM v_where;
SELECT * FROM v_global;
SELECT * FROM v_global_where;

-- The plain queries over the shadows.
CREATE TEMP TABLE q (v regclass PRIMARY KEY, q text NOT NULL);
INSERT INTO q VALUES
 ('v_where', $$SELECT url, count(*) AS n, sum(amount) AS total FROM shadow WHERE amount > 0 GROUP BY url$$),
 ('v_expr', $$SELECT upper(url) AS u, coalesce(url, '-') || '!' AS tagged,
           sum(amount) / count(*) AS mean, sum(amount) * 2 + count(*) AS mixed,
           max(ts) - min(ts) AS span, round(avg(amount), 3) AS avg3,
           count(*) > 3 AS busy
      FROM shadow GROUP BY upper(url), url$$),
 ('v_group', $$SELECT user_id % 3 AS bucket, url, count(*) AS n, sum(user_id) AS s
      FROM shadow GROUP BY 1, url$$),
 ('v_hidden_key', $$SELECT count(*) AS n, min(user_id) AS lo FROM shadow GROUP BY user_id % 2$$),
 ('v_bin', $$SELECT date_bin('10 minutes', ts, timestamptz '2024-01-01 00:00:00+00') AS minute10,
           count(*) AS n, sum(amount) AS total, max(ts) AS last_seen
      FROM shadow GROUP BY 1$$),
 ('v_trunc', $$SELECT date_trunc('hour', ts) AS hour, url, count(*) AS n
      FROM shadow GROUP BY date_trunc('hour', ts), url$$),
 ('v_trunc_local', $$SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day, count(*) AS n
      FROM shadow GROUP BY 1$$),
 ('v_nulls', $$SELECT url, user_id % 2 AS parity, count(*) AS n, count(url) AS n_url
      FROM shadow GROUP BY url, parity$$),
 ('v_global_where', $$SELECT count(*) AS n, sum(amount) AS total FROM shadow WHERE url = 'never'$$),
 -- joins: over the dimension rows recorded with each batch
 ('v_join1', $$SELECT category, count(*) AS n, sum(amount) AS total
      FROM shadow_enriched WHERE category IS NOT NULL GROUP BY category$$),
 ('v_join2', $$SELECT weight, category, count(*) AS n, sum(amount * weight) AS weighted
      FROM shadow_enriched WHERE weight > 0 GROUP BY weight, category$$),
 ('v_left', $$SELECT coalesce(category, 'none') AS category, count(*) AS n
      FROM shadow_enriched GROUP BY 1$$),
 ('v_using', $$SELECT category, count(*) AS n
      FROM shadow_enriched WHERE category IS NOT NULL GROUP BY category$$),
 ('v_having', $$SELECT url, count(*) AS n FROM shadow GROUP BY url HAVING sum(amount) > 10$$),
 ('v_top', $$SELECT url, count(*) AS n, sum(amount) AS total FROM shadow
     GROUP BY url HAVING count(*) > 1
     ORDER BY n DESC, url NULLS FIRST LIMIT 3 OFFSET 1$$),
 ('v_order_hidden', $$SELECT url FROM shadow GROUP BY url ORDER BY max(ts) DESC, url LIMIT 4$$);

-- check_all() compares every view with its plain query: views_checked
-- views, none differing.  v_global has a float column, compared with a
-- relative tolerance of 1e-9; the ordered views are compared in order too.
CREATE FUNCTION check_all(OUT views_checked bigint, OUT differing text,
                          OUT v_global_ok boolean, OUT in_order boolean)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT count(*), coalesce(string_agg(v::text || ' by ' || d, ', ') FILTER (WHERE d <> 0), 'none')
      INTO views_checked, differing
      FROM (SELECT v, diff(v, q) AS d FROM q ORDER BY v::text) c;
    SELECT g.n = s.n AND g.n_amount = s.n_amount
           AND g.total IS NOT DISTINCT FROM s.total
           AND g.first_ts IS NOT DISTINCT FROM s.first_ts
           AND g.max_url IS NOT DISTINCT FROM s.max_url
           AND (g.mean_price IS NULL AND s.mean_price IS NULL
                OR abs(g.mean_price - s.mean_price)
                   <= 1e-9 * greatest(abs(g.mean_price), abs(s.mean_price), 1))
      INTO v_global_ok
      FROM v_global g,
           (SELECT count(*) AS n, count(amount) AS n_amount, sum(amount) AS total,
                   min(ts) AS first_ts, max(url) AS max_url, avg(price) AS mean_price
              FROM shadow) s;
    SELECT (SELECT array_agg(t::text) FROM v_top t)
           IS NOT DISTINCT FROM
           (SELECT array_agg(t::text)
              FROM (SELECT url, count(*) AS n, sum(amount) AS total FROM shadow
                     GROUP BY url HAVING count(*) > 1
                     ORDER BY n DESC, url NULLS FIRST LIMIT 3 OFFSET 1) t)
       AND (SELECT array_agg(t::text) FROM v_order_hidden t)
           IS NOT DISTINCT FROM
           (SELECT array_agg(t::text)
              FROM (SELECT url FROM shadow GROUP BY url ORDER BY max(ts) DESC, url LIMIT 4) t)
      INTO in_order;
END $$;
\set checks 'SELECT * FROM check_all();'

:checks

-- Batch 1: one row.
INSERT INTO batch VALUES (1, 'u1', 5, '2024-01-01 00:00:10+00', 0.5);
INSERT INTO clicks SELECT * FROM batch;
:record
SELECT * FROM v_where;
SELECT * FROM v_expr;
SELECT * FROM v_global;
SELECT * FROM v_join1;
:checks

-- Batch 2: a few rows, with NULL keys and NULL values, written with VALUES.
INSERT INTO clicks VALUES
  (2, 'u2', 12.5, '2024-01-01 00:05:00+00', 1.25),
  (3, NULL, 1, '2024-01-01 00:12:00+00', NULL),
  (4, NULL, NULL, '2024-01-01 01:12:00+00', 2),
  (5, 'u9', -3, '2024-01-01 00:59:59+00', 0.1),
  (NULL, 'u1', 7, NULL, 3.5);
INSERT INTO batch VALUES
  (2, 'u2', 12.5, '2024-01-01 00:05:00+00', 1.25),
  (3, NULL, 1, '2024-01-01 00:12:00+00', NULL),
  (4, NULL, NULL, '2024-01-01 01:12:00+00', 2),
  (5, 'u9', -3, '2024-01-01 00:59:59+00', 0.1),
  (NULL, 'u1', 7, NULL, 3.5);
:record
SELECT * FROM v_where ORDER BY url;
SELECT * FROM v_expr ORDER BY u;
SELECT * FROM v_group ORDER BY bucket, url;
SELECT * FROM v_hidden_key ORDER BY lo;
SELECT * FROM v_bin ORDER BY minute10;
SELECT * FROM v_trunc ORDER BY hour, url;
SELECT * FROM v_nulls ORDER BY url, parity;
SELECT * FROM v_global;
SELECT * FROM v_join1 ORDER BY category;
SELECT * FROM v_join2 ORDER BY weight;
SELECT * FROM v_left ORDER BY category;
SELECT * FROM v_having;
TABLE v_top;
TABLE v_order_hidden;
:checks
-- (and diff() does see a difference when there is one: 3 rows each way)
SELECT diff('v_where', $$SELECT url, count(*) + 1 AS n, sum(amount) AS total
                           FROM shadow WHERE amount > 0 GROUP BY url$$) AS diff;

-- Dimension rows change between batches: a batch joins with the rows as
-- they are when it is applied; earlier groups keep what they got.
UPDATE dim_url SET category = 'shop' WHERE url = 'u1';
INSERT INTO dim_url VALUES ('u9', 'blog');
INSERT INTO dim_cat VALUES ('blog', 100);
UPDATE dim_cat SET weight = 20 WHERE category = 'shop';
INSERT INTO batch VALUES (6, 'u1', 2, '2024-01-01 00:20:00+00', 1),
                         (7, 'u9', 4, '2024-01-01 00:21:00+00', 1),
                         (8, 'u2', 1, '2024-01-01 00:22:00+00', 1);
INSERT INTO clicks SELECT * FROM batch;
:record
SELECT * FROM v_join1 ORDER BY category;
SELECT * FROM v_join2 ORDER BY weight;
SELECT * FROM v_left ORDER BY category;
-- (the same join over the current dimension rows gives other numbers)
SELECT d.category, count(*) AS n, sum(c.amount) AS total
  FROM shadow c JOIN dim_url d ON d.url = c.url GROUP BY d.category ORDER BY 1;
:checks

-- Batch 4: a COPY.
COPY clicks FROM STDIN (FORMAT csv);
10,u3,3.5,2024-01-01 02:00:00+00,0.25
11,u3,,2024-01-01 02:09:59.999999+00,0.75
12,,8,2024-01-01 02:10:00+00,
13,u4,100,2024-01-02 00:00:00+00,1e10
\.
COPY batch FROM STDIN (FORMAT csv);
10,u3,3.5,2024-01-01 02:00:00+00,0.25
11,u3,,2024-01-01 02:09:59.999999+00,0.75
12,,8,2024-01-01 02:10:00+00,
13,u4,100,2024-01-02 00:00:00+00,1e10
\.
:record
:checks

-- Batch 5: 5000 generated rows in one statement, applied in several batches.
SET kappa.stream_batch_memory = '64kB';
INSERT INTO batch
SELECT g % 97, CASE WHEN g % 11 = 0 THEN NULL ELSE 'u' || (g % 7) END,
       (g % 13) - 3 + (g % 5) * 0.25,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 seconds',
       (g % 17) * 0.1
  FROM generate_series(1, 5000) g;
INSERT INTO clicks SELECT * FROM batch;
:record
RESET kappa.stream_batch_memory;
TABLE v_top;
TABLE v_order_hidden;
SELECT * FROM v_having ORDER BY url;
:checks

-- Batch 6: many single-row statements in one transaction.
BEGIN;
INSERT INTO clicks VALUES (20, 'u5', 1, '2024-01-03 00:00:00+00', 0.5);
INSERT INTO clicks VALUES (21, 'u5', 2, '2024-01-03 00:00:01+00', 0.5);
INSERT INTO clicks VALUES (22, 'u6', 3, '2024-01-03 00:00:02+00', 0.5);
INSERT INTO batch VALUES (20, 'u5', 1, '2024-01-03 00:00:00+00', 0.5),
                         (21, 'u5', 2, '2024-01-03 00:00:01+00', 0.5),
                         (22, 'u6', 3, '2024-01-03 00:00:02+00', 0.5);
:record
COMMIT;
:checks
SELECT count(*) AS rows_fed FROM shadow;

-- Every view of the stream is in kappa.views, in the user's schema.
-- (groups: rows of the view; rows_applied: rows that reached its groups)
SELECT view, schema_name, view_name, stream, groups, rows_applied
  FROM kappa.views WHERE schema_name = 'regress_views' ORDER BY view::text;
SELECT query FROM kappa.views WHERE view = 'v_having'::regclass;
SELECT views FROM kappa.streams WHERE stream = 'clicks'::regclass;
-- The view's columns have the types of the query's columns.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'v_expr'::regclass AND attnum > 0 ORDER BY attnum;

--
-- Backfill: a view created over a retained stream starts with the rows the
-- stream already has.
--
SELECT kappa.create_stream('orders', 'customer text, qty int, price numeric',
                           retain => 'infinity');
SELECT kappa.create_stream('orders_day', 'customer text, qty int', retain => '1 day');
SELECT kappa.create_stream('orders_none', 'customer text, qty int');
INSERT INTO orders SELECT 'c' || (g % 4), g, g * 1.5 FROM generate_series(1, 100) g;
INSERT INTO orders VALUES (NULL, 1, 1);
INSERT INTO orders_day SELECT 'c' || (g % 3), g FROM generate_series(1, 10) g;
INSERT INTO orders_none SELECT 'c' || (g % 3), g FROM generate_series(1, 10) g;
SELECT kappa.create_view('o_by_customer',
  $$SELECT customer, count(*) AS n, sum(qty) AS qty, sum(qty * price) AS revenue
      FROM orders GROUP BY customer$$);
SELECT kappa.create_view('o_total', $$SELECT count(*) AS n, sum(qty) AS qty FROM orders$$);
SELECT kappa.create_view('o_day', $$SELECT customer, count(*) AS n, sum(qty) AS qty FROM orders_day GROUP BY 1$$);
SELECT kappa.create_view('o_none', $$SELECT customer, count(*) AS n, sum(qty) AS qty FROM orders_none GROUP BY 1$$);
SELECT * FROM o_by_customer ORDER BY customer;
SELECT * FROM o_total;
SELECT * FROM o_day ORDER BY customer;
-- a stream without retention has nothing to backfill from
SELECT * FROM o_none ORDER BY customer;
SELECT diff('o_by_customer', $$SELECT customer, count(*) AS n, sum(qty) AS qty, sum(qty * price) AS revenue
      FROM orders GROUP BY customer$$) AS diff;
SELECT diff('o_total', $$SELECT count(*) AS n, sum(qty) AS qty FROM orders$$) AS diff;
SELECT diff('o_day', $$SELECT customer, count(*) AS n, sum(qty) AS qty FROM orders_day GROUP BY 1$$) AS diff;
-- and keeps up after it
INSERT INTO orders SELECT 'c' || (g % 5), g, 2 FROM generate_series(1, 50) g;
INSERT INTO orders_day VALUES ('c1', 1000), ('c9', 1);
INSERT INTO orders_none VALUES ('c1', 1000), ('c9', 1);
SELECT * FROM o_by_customer ORDER BY customer;
SELECT diff('o_by_customer', $$SELECT customer, count(*) AS n, sum(qty) AS qty, sum(qty * price) AS revenue
      FROM orders GROUP BY customer$$) AS diff;
SELECT diff('o_total', $$SELECT count(*) AS n, sum(qty) AS qty FROM orders$$) AS diff;
SELECT diff('o_day', $$SELECT customer, count(*) AS n, sum(qty) AS qty FROM orders_day GROUP BY 1$$) AS diff;
SELECT * FROM o_none ORDER BY customer;
-- A backfilled view with a join, HAVING and ORDER BY.
CREATE TABLE customers (customer text PRIMARY KEY, region text);
INSERT INTO customers VALUES ('c0', 'north'), ('c1', 'south'), ('c2', 'north');
SELECT kappa.create_view('o_region',
  $$SELECT r.region, count(*) AS n, sum(o.qty) AS qty FROM orders o
      JOIN customers r ON r.customer = o.customer
     GROUP BY r.region HAVING count(*) > 1 ORDER BY r.region$$);
TABLE o_region;
SELECT diff('o_region', $$SELECT r.region, count(*) AS n, sum(o.qty) AS qty FROM orders o
      JOIN customers r ON r.customer = o.customer
     GROUP BY r.region HAVING count(*) > 1 ORDER BY r.region$$) AS diff;

--
-- Names that need quoting: streams, columns and views with upper case,
-- spaces and quotes, in another schema too.
--
CREATE SCHEMA "Sales Data";
SELECT kappa.create_stream('"Sales Data"."Click Stream"',
  '"User Id" int, "Page ""Name""" text, "AMOUNT" numeric', retain => 'infinity');
INSERT INTO "Sales Data"."Click Stream" VALUES (1, 'home', 1), (2, 'home', 2), (2, 'Cart', 3);
SELECT kappa.create_view('"Sales Data"."Per ""Page"""',
  $$SELECT "Page ""Name""", count(*) AS "Hits", sum("AMOUNT") AS "Total Amount"
      FROM "Sales Data"."Click Stream" GROUP BY "Page ""Name"""$$);
SELECT kappa.create_view('"UPPER view"',
  $$SELECT "User Id" AS "User", count(*) FROM "Sales Data"."Click Stream" GROUP BY 1$$);
INSERT INTO "Sales Data"."Click Stream" VALUES (3, 'Cart', 4), (3, NULL, 5);
SELECT * FROM "Sales Data"."Per ""Page""" ORDER BY 1;
SELECT * FROM "UPPER view" ORDER BY 1;
SELECT diff('"Sales Data"."Per ""Page"""', $$SELECT "Page ""Name""", count(*) AS "Hits", sum("AMOUNT") AS "Total Amount"
      FROM "Sales Data"."Click Stream" GROUP BY "Page ""Name"""$$) AS diff;
SELECT diff('"UPPER view"', $$SELECT "User Id" AS "User", count(*) FROM "Sales Data"."Click Stream" GROUP BY 1$$) AS diff;
SELECT view, schema_name, view_name, stream FROM kappa.views
 WHERE stream = '"Sales Data"."Click Stream"'::regclass ORDER BY view::text;
SELECT kappa.drop_view('"UPPER view"');
SELECT kappa.drop_view('"Sales Data"."Per ""Page"""');
SELECT kappa.drop_stream('"Sales Data"."Click Stream"');
DROP SCHEMA "Sales Data";

-- drop_view of every view; the streams are left without views.
SELECT kappa.drop_view(v::text) FROM q ORDER BY v::text;
SELECT kappa.drop_view('v_global');
SELECT views FROM kappa.streams WHERE stream = 'clicks'::regclass;
SET client_min_messages = warning;
DROP SCHEMA regress_views CASCADE;
RESET client_min_messages;
SELECT count(*) AS views_left FROM kappa.views WHERE schema_name = 'regress_views';
