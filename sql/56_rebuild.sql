--
-- kappa.replace_view, kappa.rebuild_view, kappa.cancel_rebuild: what is
-- refused at once, before a new version is registered or a worker started
-- (the rebuilds themselves are in test/t/260_view_rebuild.pl).  Each call
-- goes through rb_try, which shows the SQLSTATE, the message, the detail and
-- the hint.
-- At the end every view is as it was: live, same definition, same rows.
--
CREATE SCHEMA regress_rb;
SET search_path = regress_rb, public;

CREATE FUNCTION rb_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    detail text;
    hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(E'\nDETAIL: ' || nullif(detail, ''), '')
           || coalesce(E'\nHINT: ' || nullif(hint, ''), '');
END $$;

-- the functions
SELECT p.oid::regprocedure AS function, p.prorettype::regtype AS returns, p.proisstrict AS strict
  FROM pg_proc p
 WHERE p.pronamespace = 'kappa'::regnamespace
   AND p.proname IN ('replace_view', 'rebuild_view', 'cancel_rebuild')
 ORDER BY 1::text;

CREATE TABLE rb_t (id int, cust int, qty int, amount numeric);
INSERT INTO rb_t SELECT i, i % 3, i % 5, i FROM generate_series(1, 30) i;
SELECT kappa.create_view('rb_tv',
  $$SELECT cust, count(*) AS n, sum(qty) AS q FROM rb_t GROUP BY cust$$);
-- a stream neither retained nor fed by a Kafka source: no history
SELECT kappa.create_stream('rb_s', 'id int, v int');
SELECT kappa.create_view('rb_sv', $$SELECT v, count(*) AS n FROM rb_s GROUP BY v$$);
INSERT INTO rb_s SELECT i, i % 2 FROM generate_series(1, 10) i;
-- a stream retained for an hour, two hours old: its history is gone too
SELECT kappa.create_stream('rb_r', 'id int, v int', retain => '1 hour');
SELECT kappa.create_view('rb_rv', $$SELECT v, count(*) AS n FROM rb_r GROUP BY v$$);
INSERT INTO rb_r SELECT i, i % 2 FROM generate_series(1, 10) i;
UPDATE kappa.stream_catalog SET created_at = now() - interval '2 hours'
 WHERE stream = 'rb_r'::regclass;
CREATE VIEW rb_plain AS SELECT 1 AS x;

-- incompatible column lists, as CREATE OR REPLACE VIEW: 42P16 with a hint
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, count(*) AS cnt, sum(qty) AS q FROM rb_t GROUP BY cust')$$) AS renamed;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, count(*)::int AS n, sum(qty) AS q FROM rb_t GROUP BY cust')$$) AS retyped;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, count(*) AS n FROM rb_t GROUP BY cust')$$) AS removed;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, sum(qty) AS q, count(*) AS n FROM rb_t GROUP BY cust')$$) AS reordered;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, max(id) AS hi, count(*) AS n, sum(qty) AS q FROM rb_t GROUP BY cust')$$) AS added_not_at_the_end;

-- a query that is no continuous view: refused as create_view refuses it
SELECT rb_try($$SELECT kappa.replace_view('rb_tv', 'SELECT cust FROM rb_t')$$) AS no_aggregate;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, count(*) AS n, sum(qty) AS q, max(random()) AS r FROM rb_t GROUP BY cust')$$) AS volatile;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv', 'SELECT cust, count(*) AS n, sum(qty) AS q')$$) AS not_sql;

-- another relation than the view's
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT v AS cust, count(*) AS n, sum(id) AS q FROM rb_s GROUP BY v')$$) AS other_relation;
-- "from" applies to Kafka histories only; NULL names and queries
SELECT rb_try($$SELECT kappa.rebuild_view('rb_tv', "from" => now() - interval '1 day')$$) AS from_for_a_table;
SELECT rb_try($$SELECT kappa.replace_view(NULL, 'SELECT 1')$$) AS null_name;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv', NULL)$$) AS null_query;
SELECT rb_try($$SELECT kappa.rebuild_view(NULL)$$) AS null_name;
SELECT kappa.cancel_rebuild(NULL) AS null_name;

-- not a continuous view, or nothing by that name
SELECT rb_try($$SELECT kappa.replace_view('rb_plain', 'SELECT 1 AS x')$$) AS plain_view;
SELECT rb_try($$SELECT kappa.rebuild_view('rb_plain')$$) AS plain_view;
SELECT rb_try($$SELECT kappa.cancel_rebuild('rb_plain')$$) AS plain_view;
SELECT rb_try($$SELECT kappa.rebuild_view('rb_t')$$) AS a_table;
SELECT rb_try($$SELECT kappa.rebuild_view('rb_nonesuch')$$) AS nonesuch;

-- no history: 55000 with a hint
SELECT rb_try($$SELECT kappa.rebuild_view('rb_sv')$$) AS not_retained;
SELECT rb_try($$SELECT kappa.replace_view('rb_sv',
  'SELECT v, count(*) AS n, sum(id) AS s FROM rb_s GROUP BY v')$$) AS not_retained;
SELECT rb_try($$SELECT kappa.rebuild_view('rb_rv')$$) AS retained_too_briefly;

-- only the owner: 42501
CREATE ROLE regress_rb_other;
GRANT USAGE ON SCHEMA regress_rb TO regress_rb_other;
GRANT SELECT ON rb_tv TO regress_rb_other;
SET ROLE regress_rb_other;
SELECT rb_try($$SELECT kappa.replace_view('rb_tv',
  'SELECT cust, count(*) AS n, sum(qty) AS q, max(id) AS hi FROM rb_t GROUP BY cust')$$) AS not_owner;
SELECT rb_try($$SELECT kappa.rebuild_view('rb_tv')$$) AS not_owner;
SELECT rb_try($$SELECT kappa.cancel_rebuild('rb_tv')$$) AS not_owner;
RESET ROLE;

-- nothing building: cancel_rebuild says so
SELECT kappa.cancel_rebuild('rb_tv');

-- every view as it was, and no rebuild started
SELECT view_name, state, history, replayed, to_replay, rebuild_error
  FROM kappa.views WHERE schema_name = 'regress_rb' ORDER BY view_name;
SELECT view_name, query FROM kappa.views WHERE schema_name = 'regress_rb' ORDER BY view_name;
SELECT * FROM rb_tv ORDER BY cust;
SELECT * FROM rb_sv ORDER BY v;
SELECT count(*) AS rebuild_workers FROM pg_stat_activity WHERE backend_type = 'pg_kappa rebuild';

SET client_min_messages = warning;
DROP SCHEMA regress_rb CASCADE;
RESET client_min_messages;
DROP ROLE regress_rb_other;
