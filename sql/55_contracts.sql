--
-- Data contracts (docs/contracts.md): kappa.add_expectation and
-- kappa.drop_expectation, each action on INSERT, COPY and UPDATE into a
-- stream with a continuous view and into a table, the WARNING summary,
-- kappa.expectation_errors, the counts in kappa.expectations, and who runs
-- the checks.
--
CREATE SCHEMA regress_contracts;
SET search_path = regress_contracts, public;

CREATE ROLE regress_ct_owner LOGIN;
CREATE ROLE regress_ct_writer LOGIN;
CREATE ROLE regress_ct_mallory LOGIN;
GRANT CREATE, USAGE ON SCHEMA regress_contracts TO regress_ct_owner;
GRANT USAGE ON SCHEMA regress_contracts TO regress_ct_writer, regress_ct_mallory;

-- try(sql) runs a statement and reports its error as SQLSTATE: message
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- the counts of a relation's expectations
CREATE FUNCTION counts(rel regclass)
RETURNS TABLE (name text, action text, rows_checked bigint, rows_violating bigint, seen boolean)
LANGUAGE sql AS $$
    SELECT e.name, e.action, e.rows_checked, e.rows_violating, e.last_violation_at IS NOT NULL
      FROM kappa.expectations e WHERE e.relation = rel ORDER BY e.name
$$;

--
-- 1. A stream with a continuous view; the view is compared with the same
-- query as plain SQL over the rows the stream kept (retain => 'infinity').
--
SET ROLE regress_ct_owner;
SELECT kappa.create_stream('clicks', 'user_id int, url text, amount numeric, ts timestamptz',
                           retain => 'infinity');
SELECT kappa.create_view('clicks_per_url',
  $$SELECT url, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY url$$);
GRANT INSERT ON clicks TO regress_ct_writer;
CREATE VIEW clicks_per_url_sql AS
  SELECT url, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY url;
CREATE FUNCTION view_matches() RETURNS boolean LANGUAGE sql AS $$
  SELECT NOT EXISTS (SELECT * FROM clicks_per_url EXCEPT SELECT * FROM clicks_per_url_sql)
     AND NOT EXISTS (SELECT * FROM clicks_per_url_sql EXCEPT SELECT * FROM clicks_per_url)
$$;

-- the SQL surface
SELECT kappa.add_expectation('clicks', 'positive_amount', 'amount > 0',
                             on_violation => 'dead_letter');
SELECT kappa.add_expectation('clicks', 'has_url', 'url IS NOT NULL AND url <> ''''');
SELECT kappa.add_expectation('clicks', 'known_user', 'user_id BETWEEN 1 AND 1000', 'warn');
SELECT relation, name, rule, action, rows_checked, rows_violating, last_violation_at
  FROM kappa.expectations ORDER BY name;
SELECT name, rule, definition, on_violation FROM kappa.expectation_catalog ORDER BY name;

-- refusals
\set VERBOSITY default
SELECT kappa.add_expectation('clicks', 'positive_amount', 'amount > 1');
SELECT kappa.add_expectation('clicks', 'x', 'amount > 0', on_violation => 'drop');
SELECT kappa.add_expectation('clicks', 'x', 'amount');
SELECT kappa.add_expectation('clicks', 'x', 'no_such_column > 0');
SELECT kappa.add_expectation('clicks', 'x', 'amount > (SELECT 0)');
SELECT kappa.add_expectation('clicks', 'x', 'sum(amount) > 0');
SELECT kappa.add_expectation('clicks', 'x', 'generate_series(1, amount::int) > 0');
SELECT kappa.add_expectation('clicks', 'x', 'amount > random()');
SELECT kappa.add_expectation('clicks', 'x', 'true) FROM pg_class --');
SELECT kappa.add_expectation('clicks', 'x', 'true; DROP TABLE foo');
SELECT kappa.add_expectation('clicks', 'x', 'true FROM pg_class');
SELECT kappa.add_expectation('clicks', 'x', '');
SELECT kappa.add_expectation('clicks', '', 'true');
SELECT kappa.add_expectation('clicks', 'x', 'ctid IS NOT NULL');
SELECT kappa.add_expectation('clicks_per_url', 'x', 'n > 0');
SELECT kappa.drop_expectation('clicks', 'no_such_expectation');
SELECT kappa.add_expectation('no_such_relation', 'x', 'true');
\set VERBOSITY terse

-- INSERT: 'warn' keeps and counts, 'dead_letter' skips with one WARNING per
-- statement
INSERT INTO clicks VALUES (1, '/a', 10, now()), (2, '/a', -1, now()),
                          (3, '/b', 5, now()), (5000, '/b', 7, now()),
                          (4, '/c', 0, now()), (6, NULL, 3, now());
SELECT url, n, total FROM clicks_per_url ORDER BY url;
SELECT view_matches();
SELECT * FROM counts('clicks');

-- a row that violates two expectations is skipped once, counted in each
\set VERBOSITY default
INSERT INTO clicks VALUES (7000, '/d', -5, now());
\set VERBOSITY terse
SELECT * FROM counts('clicks');

-- COPY goes through the same check
COPY clicks (user_id, url, amount, ts) FROM STDIN;
10	/a	1	2024-01-01 00:00:00+00
11	/a	-2	2024-01-01 00:00:01+00
12	/e	3	2024-01-01 00:00:02+00
\.
SELECT url, n, total FROM clicks_per_url ORDER BY url;
SELECT view_matches();

-- kappa.expectation_errors: the writer asks for an error instead
SET kappa.expectation_errors = on;
SELECT try($$INSERT INTO clicks VALUES (20, '/a', 1, now()), (21, '/a', -1, now())$$);
\set VERBOSITY default
INSERT INTO clicks VALUES (21, '/a', -1, now());
\set VERBOSITY terse
RESET kappa.expectation_errors;

-- 'fail' fails the statement whatever the setting; nothing of it is applied
SELECT kappa.add_expectation('clicks', 'not_future', $$ts < '2100-01-01'$$, 'fail');
SELECT try($$INSERT INTO clicks VALUES (30, '/a', 1, now()), (31, '/f', 1, '2200-01-01')$$);
COPY clicks FROM STDIN;
32	/f	1	2024-01-01 00:00:00+00
33	/f	1	2200-01-01 00:00:00+00
\.
SELECT url, n, total FROM clicks_per_url ORDER BY url;
SELECT view_matches();
SELECT * FROM counts('clicks');

-- a writer that is not the owner: the checks still run (as the owner)
SET ROLE regress_ct_writer;
INSERT INTO clicks VALUES (40, '/w', 2, now()), (41, '/w', -2, now());
-- it cannot add or drop the owner's expectations
SELECT try($$SELECT kappa.add_expectation('clicks', 'mine', 'true')$$);
SELECT try($$SELECT kappa.drop_expectation('clicks', 'has_url')$$);
SET ROLE regress_ct_owner;
SELECT url, n, total FROM clicks_per_url ORDER BY url;
SELECT view_matches();

-- a stream that nothing reads (no view, no retention) still checks its rows
SELECT kappa.create_stream('bare', 'x int');
SELECT kappa.add_expectation('bare', 'small', 'x < 10', 'dead_letter');
INSERT INTO bare SELECT g FROM generate_series(8, 12) g;
SELECT * FROM counts('bare');

-- drop_expectation: the rule no longer applies
SELECT kappa.drop_expectation('clicks', 'positive_amount');
INSERT INTO clicks VALUES (50, '/z', -3, now());
SELECT url, n, total FROM clicks_per_url WHERE url = '/z';
SELECT view_matches();
SELECT name FROM kappa.expectations WHERE relation = 'clicks'::regclass ORDER BY name;

--
-- 2. A table: the triggers add_expectation creates check INSERT, COPY and
-- UPDATE; a continuous view over the table sees only the rows kept.
--
CREATE TABLE orders (id int PRIMARY KEY, customer text, qty int, price numeric);
SELECT kappa.create_view('orders_per_customer',
  $$SELECT customer, count(*) AS n, sum(qty * price) AS revenue FROM orders GROUP BY customer$$);
CREATE VIEW orders_per_customer_sql AS
  SELECT customer, count(*) AS n, sum(qty * price) AS revenue FROM orders GROUP BY customer;
SELECT kappa.add_expectation('orders', 'positive_qty', 'qty > 0', 'dead_letter');
SELECT kappa.add_expectation('orders', 'priced', 'price IS NOT NULL', 'warn');
SELECT kappa.add_expectation('orders', 'sane_price', 'price < 1000000', 'fail');
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'orders'::regclass
   AND tgname LIKE '%expectations%' ORDER BY tgname;

\set VERBOSITY default
INSERT INTO orders VALUES (1, 'ann', 2, 10), (2, 'bob', 0, 10), (3, 'bob', 1, NULL),
                          (4, 'cat', -1, 5);
\set VERBOSITY terse
COPY orders FROM STDIN;
5	ann	1	3
6	cat	0	3
\.
-- UPDATE: the new row is checked too; a skipped update keeps the old row
UPDATE orders SET qty = qty - 2 WHERE id IN (1, 5);
SELECT * FROM orders ORDER BY id;
SELECT * FROM orders_per_customer ORDER BY customer;
SELECT NOT EXISTS (SELECT * FROM orders_per_customer EXCEPT SELECT * FROM orders_per_customer_sql)
   AND NOT EXISTS (SELECT * FROM orders_per_customer_sql EXCEPT SELECT * FROM orders_per_customer)
       AS view_matches;
SELECT try($$INSERT INTO orders VALUES (7, 'dan', 1, 5000000)$$);
SET kappa.expectation_errors = on;
SELECT try($$INSERT INTO orders VALUES (8, 'dan', 0, 1)$$);
RESET kappa.expectation_errors;
SELECT * FROM counts('orders');

-- counts are not transactional (as kappa.stream_stats): a statement that
-- ended is counted, even if its transaction rolls back; a statement that
-- fails counts only the row that failed it
BEGIN;
SAVEPOINT a;
INSERT INTO orders VALUES (9, 'eve', 1, 1);
ROLLBACK TO a;
INSERT INTO orders VALUES (10, 'eve', 1, NULL);
SELECT try($$INSERT INTO orders VALUES (11, 'eve', 1, 1), (12, 'eve', 1, 1e9)$$);
ROLLBACK;
SELECT * FROM counts('orders');

-- the triggers go only with the last expectation, or with the table
SELECT try($$DROP TRIGGER zzz_kappa_expectations ON orders$$);
SELECT kappa.drop_expectation('orders', 'positive_qty');
SELECT kappa.drop_expectation('orders', 'priced');
SELECT kappa.drop_expectation('orders', 'sane_price');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass
   AND tgname LIKE '%expectations%';
SELECT kappa.add_expectation('orders', 'positive_qty', 'qty > 0', 'dead_letter');
RESET ROLE;
DROP TABLE orders CASCADE;
SELECT count(*) FROM kappa.expectation_catalog
 WHERE relation::text IN ('orders', 'regress_contracts.orders');

--
-- 3. Whose code runs, and the search_path.  Mallory owns a schema that the
-- writer puts ahead of pg_catalog, with a trojan lower(text) and a trojan >
-- for numerics; the owner's expectation calls a function of its own that
-- calls lower() without a schema.  Every trojan and spy records who ran it.
--
CREATE SCHEMA regress_ct_evil AUTHORIZATION regress_ct_mallory;
CREATE SCHEMA regress_ct_mallory_app AUTHORIZATION regress_ct_mallory;
GRANT USAGE ON SCHEMA regress_ct_evil TO PUBLIC;
SET ROLE regress_ct_mallory;
CREATE TABLE regress_ct_evil.hits (who name, what text);
GRANT INSERT, SELECT ON regress_ct_evil.hits TO PUBLIC;
CREATE FUNCTION regress_ct_evil.pwn(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_ct_evil.hits VALUES (current_user, what);
    BEGIN
        EXECUTE 'ALTER ROLE regress_ct_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $$;
CREATE FUNCTION regress_ct_evil.lower(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_ct_evil.pwn('lower');
    RETURN pg_catalog.lower($1);
END $$;
CREATE FUNCTION regress_ct_evil.trojan_gt(numeric, numeric) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM regress_ct_evil.pwn('>');
    RETURN $1 OPERATOR(pg_catalog.>) $2;
END $$;
CREATE OPERATOR regress_ct_evil.> (LEFTARG = numeric, RIGHTARG = numeric,
                                   FUNCTION = regress_ct_evil.trojan_gt);
-- and a stream of her own whose expectation spies on whoever writes it
CREATE FUNCTION regress_ct_mallory_app.spy(x int) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM regress_ct_evil.pwn('expectation');
    RETURN true;
END $$;
SELECT kappa.create_stream('regress_ct_mallory_app.m_events', 'x int');
SELECT kappa.add_expectation('regress_ct_mallory_app.m_events', 'spied',
                             'regress_ct_mallory_app.spy(x)');
GRANT USAGE ON SCHEMA regress_ct_mallory_app TO PUBLIC;
GRANT INSERT ON regress_ct_mallory_app.m_events TO PUBLIC;
RESET ROLE;

SET ROLE regress_ct_owner;
CREATE FUNCTION regress_contracts.web_url(u text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN lower(u) LIKE '/%';
END $$;
SELECT kappa.add_expectation('clicks', 'web', 'regress_contracts.web_url(url)', 'dead_letter');
SELECT kappa.add_expectation('clicks', 'positive_amount', 'amount > 0', 'dead_letter');
RESET ROLE;

-- a superuser writes with the trojans first on its search_path
SET search_path = regress_ct_evil, pg_catalog, regress_contracts;
INSERT INTO regress_contracts.clicks VALUES (60, '/S', 1, now()), (61, 'x', 1, now()),
                                            (62, '/s', -1, now());
INSERT INTO regress_ct_mallory_app.m_events VALUES (1);
-- the writer role too
SET ROLE regress_ct_writer;
INSERT INTO regress_contracts.clicks VALUES (63, '/W', 1, now());
INSERT INTO regress_ct_mallory_app.m_events VALUES (2);
RESET ROLE;
SET search_path = regress_contracts, public;
-- no trojan ran; mallory's spy ran as mallory only, and she is no superuser
SELECT who, what, count(*) FROM regress_ct_evil.hits GROUP BY who, what ORDER BY who, what;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_ct_mallory';
SELECT url, n, total FROM clicks_per_url WHERE url IN ('/S', '/W', 'x', '/s') ORDER BY url;
SELECT view_matches();
SELECT * FROM counts('clicks');
SELECT * FROM counts('regress_ct_mallory_app.m_events');

--
-- 4. A dropped stream takes its expectations along.
--
SET ROLE regress_ct_owner;
SELECT kappa.drop_stream('bare');
RESET ROLE;
SELECT count(*) FROM kappa.expectation_catalog WHERE NOT EXISTS
  (SELECT FROM pg_class c WHERE c.oid = relation);

-- clean up
SET ROLE regress_ct_owner;
SELECT kappa.drop_view('clicks_per_url');
DROP VIEW clicks_per_url_sql;
DROP FUNCTION view_matches();
SELECT kappa.drop_stream('clicks');
DROP FUNCTION regress_contracts.web_url(text);
RESET ROLE;
DROP SCHEMA regress_ct_mallory_app CASCADE;
DROP SCHEMA regress_ct_evil CASCADE;
DROP SCHEMA regress_contracts CASCADE;
SELECT count(*) FROM kappa.expectation_catalog;
DROP ROLE regress_ct_owner, regress_ct_writer, regress_ct_mallory;
