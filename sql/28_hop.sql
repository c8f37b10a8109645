--
-- Hopping windows: kappa.hop(ts, slide, size), a set-returning function, in
-- continuous views over a stream and over a table.  Each view must equal
-- its query as plain SQL over the same rows after every step:
-- (TABLE v EXCEPT ALL q) UNION ALL (q EXCEPT ALL TABLE v) is empty.  The
-- stream retains its rows, which gives them.
--
CREATE SCHEMA regress_hop;
SET search_path = regress_hop, public;
SET timezone = 'UTC';

CREATE TABLE checks (view text PRIMARY KEY, query text);
CREATE FUNCTION differences() RETURNS text LANGUAGE sql
  AS $$SELECT public.view_differences('checks')$$;
CREATE FUNCTION make_view(name text, query text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kappa.create_view(name, query);
    INSERT INTO checks VALUES (name, query);
END $$;

--
-- 1. The function: every window of the size that contains the time, from
-- the earliest; windows are half-open and counted from the epoch.
--
SELECT * FROM kappa.hop(timestamptz '2026-11-26 10:07:30+00', slide => '5 minutes', size => '15 minutes');
-- on an edge: the window starting there, not the one ending there
SELECT * FROM kappa.hop(timestamptz '2026-11-26 10:05:00+00', '5 minutes', '15 minutes');
-- before the epoch, and a slide that does not divide an hour
SELECT * FROM kappa.hop(timestamptz '1969-12-31 23:59:59+00', '7 seconds', '14 seconds');
-- the same grid as date_bin gives tumbling windows on
SELECT count(*) AS disagreements
  FROM generate_series(timestamptz '2026-01-01', '2026-01-03', '17 minutes 13 seconds') t,
       LATERAL kappa.hop(t, '1 hour', '1 hour') w
 WHERE w.window_start <> date_bin('1 hour', t, timestamptz '1970-01-01 00:00:00+00');
SELECT * FROM kappa.hop(timestamp '2026-11-26 10:07:30', '10 minutes', '20 minutes');
-- a time in no window: NULL, infinity
SELECT count(*) FROM kappa.hop(NULL::timestamptz, '1 minute', '2 minutes');
SELECT count(*) FROM kappa.hop(timestamptz 'infinity', '1 minute', '2 minutes');
-- refusals: SQLSTATE, message, detail, hint
CREATE FUNCTION refusal(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    EXECUTE q;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' | ' || nullif(det, ''), '') || coalesce(' | ' || nullif(hnt, ''), '');
END $$;
SELECT refusal($$SELECT * FROM kappa.hop(now(), '4 minutes', '10 minutes')$$);
SELECT refusal($$SELECT * FROM kappa.hop(now(), '1 month', '2 months')$$);
SELECT refusal($$SELECT * FROM kappa.hop(now(), '0 seconds', '10 minutes')$$);
SELECT refusal($$SELECT * FROM kappa.hop(now(), '1 minute', '-10 minutes')$$);
SELECT refusal($$SELECT * FROM kappa.hop(timestamptz '294276-12-31 23:00:00+00', '1 hour', '2 hours')$$);

--
-- 2. Over a stream: bids with event times out of order, batches whose rows
-- cross window edges, a rolled-back batch.
--
SELECT kappa.create_stream('bids', 'auction int, price numeric, ts timestamptz NOT NULL',
                           retain => 'infinity');
SELECT make_view('hot_items', $$SELECT w.window_start, w.window_end, auction, count(*) AS bids,
       sum(price) AS total, max(price) AS top
  FROM bids, LATERAL kappa.hop(bids.ts, slide => '1 minute', size => '10 minutes') AS w
 GROUP BY w.window_start, w.window_end, auction$$);
SELECT make_view('per_window', $$SELECT w.window_start, count(*) AS bids, min(b.ts) AS first_bid
  FROM bids b, LATERAL kappa.hop(b.ts, '30 seconds', '2 minutes') AS w
 GROUP BY w.window_start HAVING count(*) > 2$$);
-- disorder: times jump back and forth by up to an hour
INSERT INTO bids
SELECT i % 5, (i * 37) % 101, timestamptz '2026-11-26 10:00:00+00' + ((i * 7919) % 3600) * interval '1 second'
  FROM generate_series(1, 2000) i;
SELECT differences();
BEGIN;
INSERT INTO bids
SELECT i % 3, i, timestamptz '2026-11-26 10:30:00+00' + (i % 120) * interval '1 second'
  FROM generate_series(1, 500) i;
ROLLBACK;
SELECT differences();
-- one statement, many batches' worth, across every edge of an hour
INSERT INTO bids
SELECT i % 11, i % 97, timestamptz '2026-11-26 09:55:00+00' + (i % 4000) * interval '1 second'
  FROM generate_series(1, 12000) i;
SELECT differences();
SELECT count(*) AS windows, sum(bids) AS hops FROM hot_items;
SELECT count(*) * 10 AS expected_hops FROM bids;

--
-- 3. Over a table: rows that leave their windows (max is recomputed).
--
CREATE TABLE trades (id int PRIMARY KEY, sym text NOT NULL, qty int NOT NULL, ts timestamp NOT NULL);
INSERT INTO trades SELECT i, 's' || (i % 4), i % 50, timestamp '2026-11-26 12:00:00' + ((i * 613) % 1800) * interval '1 second'
  FROM generate_series(1, 3000) i;
SELECT make_view('trade_windows', $$SELECT w.window_start, sym, count(*) AS n, sum(qty) AS q, max(qty) AS top
  FROM trades t, LATERAL kappa.hop(t.ts, '5 minutes', '15 minutes') AS w
 GROUP BY 1, 2$$);
SELECT differences();
UPDATE trades SET ts = ts + interval '7 minutes', qty = qty + 1 WHERE id % 7 = 0;
DELETE FROM trades WHERE qty >= 45;
SELECT differences();
BEGIN;
DELETE FROM trades WHERE id < 2000;
SAVEPOINT s;
UPDATE trades SET sym = 'x' WHERE id % 2 = 0;
ROLLBACK TO s;
COMMIT;
SELECT differences();
TRUNCATE trades;
INSERT INTO trades VALUES (1, 'a', 5, timestamp '2026-11-26 12:00:00');
SELECT differences();
SELECT * FROM trade_windows ORDER BY 1;

--
-- 4. A trojan = (timestamptz, timestamptz) ahead of pg_catalog on the
-- search_path is never called by the engine's own SQL on these keys.
--
CREATE SCHEMA regress_hop_evil;
CREATE TABLE regress_hop_evil.hits (what text);
CREATE FUNCTION regress_hop_evil.trojan_tseq(timestamptz, timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_hop_evil.hits VALUES ('= (timestamptz, timestamptz)');
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_hop_evil.= (LEFTARG = timestamptz, RIGHTARG = timestamptz,
                                    FUNCTION = regress_hop_evil.trojan_tseq);
SET search_path = regress_hop_evil, pg_catalog, regress_hop, public;
INSERT INTO regress_hop.bids VALUES (1, 1, timestamptz '2026-11-26 10:00:30+00'),
                                    (2, 2, timestamptz '2026-11-26 11:00:00+00');
SELECT count(*) FROM regress_hop.hot_items WHERE window_start OPERATOR(pg_catalog.=) timestamptz '2026-11-26 10:55:00+00';
SELECT count(*) AS trojan_calls FROM regress_hop_evil.hits;
SET search_path = regress_hop, public;
SELECT differences();

DROP SCHEMA regress_hop_evil CASCADE;
SELECT kappa.drop_view('hot_items');
SELECT kappa.drop_view('per_window');
SELECT kappa.drop_view('trade_windows');
SELECT kappa.drop_stream('bids');
DROP SCHEMA regress_hop CASCADE;
RESET timezone;
