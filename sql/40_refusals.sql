--
-- Refusals: what create_view cannot maintain incrementally is refused at
-- creation, each construct with its own SQLSTATE, a message that names it
-- and a hint with the alternative.  Nothing is left behind by a refusal.
--
CREATE SCHEMA regress_refusals;
SET search_path = regress_refusals, public;

SELECT kappa.create_stream('clicks', 'user_id int, url text, amount numeric, ts timestamptz, x xid');
SELECT kappa.create_stream('other', 'user_id int, url text');
CREATE TABLE dim_url (url text PRIMARY KEY, category text);
CREATE VIEW clicks_plain AS SELECT * FROM clicks;
CREATE SEQUENCE seq;
SELECT kappa.create_view('existing', 'SELECT url, count(*) FROM clicks GROUP BY url');

-- refusal(query[, name]) tries create_view and returns its error.
CREATE FUNCTION refusal(query text, name text DEFAULT 'refused',
                        OUT code text, OUT message text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kappa.create_view(name, query);
    code := 'none';
    message := 'created';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            hint = PG_EXCEPTION_HINT;
END $$;

CREATE TABLE cases (id serial, construct text, query text, name text DEFAULT 'refused');
INSERT INTO cases (construct, query) VALUES
 -- aggregates that cannot be merged
 ('distinct aggregate', 'SELECT url, count(DISTINCT user_id) FROM clicks GROUP BY url'),
 ('distinct aggregate', 'SELECT sum(DISTINCT amount) FROM clicks'),
 ('ordered-set aggregate', 'SELECT url, percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM clicks GROUP BY url'),
 ('ordered-set aggregate', 'SELECT mode() WITHIN GROUP (ORDER BY url) FROM clicks'),
 ('no combine function', 'SELECT url, array_agg(user_id) FROM clicks GROUP BY url'),
 ('no combine function', 'SELECT url, string_agg(url, '','') FROM clicks GROUP BY url'),
 ('no combine function', 'SELECT json_agg(url) FROM clicks'),
 ('ORDER BY in aggregate', 'SELECT sum(amount ORDER BY ts) FROM clicks'),
 -- window functions
 ('window function', 'SELECT url, count(*), rank() OVER (ORDER BY count(*)) FROM clicks GROUP BY url'),
 ('window function', 'SELECT url, sum(count(*)) OVER () FROM clicks GROUP BY url'),
 -- volatile functions, anywhere
 ('volatile function', 'SELECT url, sum(amount * random()) FROM clicks GROUP BY url'),
 ('volatile function', 'SELECT count(*) FROM clicks WHERE ts < clock_timestamp()'),
 ('volatile function', 'SELECT date_trunc(''hour'', clock_timestamp()) AS h, count(*) FROM clicks GROUP BY 1'),
 ('volatile function', 'SELECT url, count(*) + nextval(''seq'') FROM clicks GROUP BY url'),
 -- two streams
 ('two streams', 'SELECT c.url, count(*) FROM clicks c JOIN other o ON o.user_id = c.user_id GROUP BY c.url'),
 ('two streams', 'SELECT a.url, count(*) FROM clicks a, clicks b WHERE a.user_id = b.user_id GROUP BY a.url'),
 -- no aggregation
 ('no aggregate', 'SELECT url, amount FROM clicks'),
 ('no aggregate', 'SELECT url, amount FROM clicks WHERE amount > 0 ORDER BY url LIMIT 10'),
 -- subqueries, CTEs and views that read a stream
 ('subquery reading a stream', 'SELECT url, count(*) FROM (SELECT * FROM clicks WHERE amount > 0) s GROUP BY url'),
 ('subquery reading a stream', 'SELECT url, count(*) FROM clicks WHERE user_id IN (SELECT user_id FROM other) GROUP BY url'),
 ('subquery reading a stream', 'SELECT url, count(*) FROM clicks c WHERE EXISTS (SELECT 1 FROM clicks d WHERE d.url = c.url) GROUP BY url'),
 ('subquery reading a stream', 'WITH c AS (SELECT * FROM clicks) SELECT url, count(*) FROM c GROUP BY url'),
 ('subquery reading a stream', 'SELECT url, count(*) FROM clicks_plain GROUP BY url'),
 ('subquery reading a stream', 'SELECT s.url, count(*) FROM dim_url d, LATERAL (SELECT * FROM clicks c WHERE c.url = d.url) s GROUP BY s.url'),
 -- set operations
 ('set operation', 'SELECT url, count(*) FROM clicks GROUP BY url UNION ALL SELECT url, count(*) FROM clicks GROUP BY url'),
 ('set operation', 'SELECT count(*) FROM clicks EXCEPT SELECT 0'),
 -- no stream, or one that does not exist
 ('no stream', 'SELECT url, count(*) FROM (VALUES (''a'')) v(url) GROUP BY url'),
 ('no stream', 'SELECT count(*)'),
 ('stream does not exist', 'SELECT url, count(*) FROM no_such_stream GROUP BY url'),
 -- outer joins with the stream on the nullable side
 ('stream on the nullable side', 'SELECT d.url, count(c.url) FROM dim_url d LEFT JOIN clicks c ON c.url = d.url GROUP BY d.url'),
 ('stream on the nullable side', 'SELECT d.url, count(*) FROM clicks c RIGHT JOIN dim_url d ON c.url = d.url GROUP BY d.url'),
 ('stream on the nullable side', 'SELECT d.url, count(*) FROM clicks c FULL JOIN dim_url d ON c.url = d.url GROUP BY d.url'),
 -- grouping
 ('several empty grouping sets', 'SELECT count(*) FROM clicks GROUP BY GROUPING SETS ((), ())'),
 ('ungrouped column of a FULL JOIN USING', 'SELECT url, count(*) FROM clicks FULL JOIN dim_url USING (url) GROUP BY clicks.url'),
 ('SELECT DISTINCT', 'SELECT DISTINCT url FROM clicks GROUP BY url, user_id'),
 ('SELECT DISTINCT', 'SELECT DISTINCT ON (url) url, count(*) FROM clicks GROUP BY url, user_id ORDER BY url'),
 ('set-returning function', 'SELECT url, generate_series(1, count(*)::int) FROM clicks GROUP BY url'),
 ('subquery in the select list', 'SELECT url, (SELECT count(*) FROM dim_url) AS dims, count(*) FROM clicks GROUP BY url'),
 ('subquery in HAVING', 'SELECT url, count(*) FROM clicks GROUP BY url HAVING count(*) > (SELECT count(*) FROM dim_url)'),
 ('ungrouped column (parser)', 'SELECT url, user_id, count(*) FROM clicks GROUP BY url'),
 ('ungrouped column', 'SELECT d.url, d.category, count(*) FROM clicks c JOIN dim_url d ON d.url = c.url GROUP BY d.url'),
 ('key without btree ordering', 'SELECT x, count(*) FROM clicks GROUP BY x'),
 ('non-constant LIMIT', 'SELECT url, count(*) FROM clicks GROUP BY url ORDER BY url LIMIT (SELECT count(*) FROM dim_url)'),
 ('non-constant LIMIT', 'SELECT url, count(*) FROM clicks GROUP BY url ORDER BY url OFFSET extract(day FROM now())::int'),
 ('non-constant LIMIT', 'SELECT url, count(*) AS n FROM clicks GROUP BY url ORDER BY n FETCH FIRST 3 ROWS WITH TIES'),
 ('locking clause', 'SELECT url, count(*) FROM clicks GROUP BY url FOR UPDATE'),
 -- not a SELECT
 ('not a SELECT', 'INSERT INTO clicks VALUES (1)'),
 ('not a SELECT', 'SELECT count(*) FROM clicks; SELECT count(*) FROM clicks'),
 ('not a SELECT', 'SELECT count(*) INTO newtable FROM clicks'),
 ('not a SELECT', 'VALUES (1)'),
 ('not a SELECT', ''),
 ('syntax error', 'SELECT count(* FROM clicks'),
 ('unknown column', 'SELECT nope, count(*) FROM clicks GROUP BY nope');
INSERT INTO cases (construct, query, name) VALUES
 ('name exists: continuous view', 'SELECT count(*) FROM clicks', 'existing'),
 ('name exists: stream', 'SELECT count(*) FROM clicks', 'clicks'),
 ('name exists: table', 'SELECT count(*) FROM clicks', 'dim_url'),
 ('name exists: other schema', 'SELECT count(*) FROM clicks', 'kappa.streams'),
 ('invalid name', 'SELECT count(*) FROM clicks', 'bad name'),
 ('schema does not exist', 'SELECT count(*) FROM clicks', 'nope.v');

-- As the user sees one: the error points into the view's query.
SELECT kappa.create_view('refused',
  'SELECT url, count(DISTINCT user_id) FROM clicks GROUP BY url');
SELECT kappa.create_view('refused',
  'SELECT url, count(*) FROM clicks GROUP BY url ORDER BY random()');

\x on
SELECT c.id, c.construct, c.query, r.code, r.message, r.hint
  FROM cases c, LATERAL refusal(c.query, c.name) r ORDER BY c.id;
\x off

-- Every construct the issue lists has its own SQLSTATE: one code per
-- construct, no code shared by two constructs.
WITH r AS (
  SELECT c.construct, (refusal(c.query, c.name)).code
    FROM cases c
   WHERE c.construct IN ('distinct aggregate', 'ordered-set aggregate', 'no combine function',
                         'window function', 'volatile function', 'two streams', 'no aggregate',
                         'subquery reading a stream', 'set operation',
                         'name exists: continuous view', 'stream does not exist',
                         'stream on the nullable side', 'several empty grouping sets', 'SELECT DISTINCT',
                         'ungrouped column', 'non-constant LIMIT'))
SELECT construct, string_agg(DISTINCT code, ', ') AS codes,
       (SELECT string_agg(DISTINCT r2.construct, ', ') FROM r r2
         WHERE r2.code = ANY (array_agg(r.code)) AND r2.construct <> r.construct) AS shared_with
  FROM r GROUP BY construct ORDER BY min(code), construct;

-- No refusal left anything behind.
SELECT count(*) AS views FROM kappa.views WHERE schema_name = 'regress_refusals';
SELECT count(*) AS relations FROM pg_class
 WHERE relnamespace = 'regress_refusals'::regnamespace AND relname NOT IN
       ('clicks', 'other', 'dim_url', 'dim_url_pkey', 'clicks_plain', 'seq', 'existing',
        'cases', 'cases_id_seq');
SELECT count(*) AS data_relations FROM pg_class
 WHERE relnamespace = 'kappa_data'::regnamespace AND relname LIKE 'refused%';

-- What is close to a refused construct but can be maintained is accepted.
SELECT kappa.create_view('ok_left', 'SELECT d.category, count(*) FROM clicks c LEFT JOIN dim_url d ON c.url = d.url GROUP BY d.category');
SELECT kappa.create_view('ok_in_table', 'SELECT url, count(*) FROM clicks WHERE url IN (SELECT url FROM dim_url) GROUP BY url');
SELECT kappa.create_view('ok_stable', 'SELECT date_trunc(''day'', ts) AS day, count(*) FROM clicks GROUP BY 1');
SELECT kappa.create_view('ok_order_limit', 'SELECT url, count(*) AS n FROM clicks GROUP BY url ORDER BY n DESC, url LIMIT 2 OFFSET 1');
SELECT kappa.create_view('ok_fetch', 'SELECT url, count(*) AS n FROM clicks GROUP BY url ORDER BY n DESC, url FETCH FIRST 2 ROWS ONLY');
SELECT kappa.create_view('ok_only_group', 'SELECT url FROM clicks GROUP BY url');
SELECT kappa.create_view('ok_dim_pk', 'SELECT d.url, count(*) FROM clicks c JOIN dim_url d ON d.url = c.url GROUP BY d.url');
SELECT kappa.create_view('ok_xid_text', 'SELECT x::text AS x, count(*) FROM clicks GROUP BY 1');
-- a column merged by LEFT JOIN ... USING is the left table's: grouping by
-- either name is the same (as in plain SQL)
SELECT kappa.create_view('ok_using_qualified', 'SELECT url, count(*) AS n, max(category) AS c FROM clicks LEFT JOIN dim_url USING (url) GROUP BY clicks.url');
SELECT kappa.create_view('ok_using_merged', 'SELECT url, count(*) AS n, max(category) AS c FROM clicks LEFT JOIN dim_url USING (url) GROUP BY url');
INSERT INTO dim_url VALUES ('a', 'A'), ('b', 'B');
INSERT INTO clicks VALUES (1, 'a', 1, '2024-01-01', '1'), (2, 'b', 2, '2024-01-02', '2'),
                          (3, 'b', 3, '2024-01-02', '2'), (4, 'c', 4, NULL, NULL);
CREATE TABLE clicks_shadow (user_id int, url text);
INSERT INTO clicks_shadow VALUES (1, 'a'), (2, 'b'), (3, 'b'), (4, 'c');
SELECT * FROM ok_left ORDER BY 1;
SELECT * FROM ok_in_table ORDER BY 1;
TABLE ok_order_limit;
TABLE ok_fetch;
SELECT * FROM ok_only_group ORDER BY 1;
SELECT * FROM ok_xid_text ORDER BY 1;
SELECT * FROM ok_using_qualified ORDER BY 1;
SELECT url, count(*) AS n, max(category) AS c FROM clicks_shadow LEFT JOIN dim_url USING (url)
 GROUP BY clicks_shadow.url ORDER BY 1;
SELECT * FROM ok_using_merged ORDER BY 1;

SET client_min_messages = warning;
DROP SCHEMA regress_refusals CASCADE;
RESET client_min_messages;
