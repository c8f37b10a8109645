--
-- Streams: create_stream / drop_stream, every way of writing rows into a
-- stream, constraints, retention and SELECT, names, kappa.streams.
--
-- pg_regress runs every file in the same database, so each file works in
-- its own schema and drops it at the end.
CREATE SCHEMA regress_streams;
SET search_path = regress_streams, public;
-- (relations in kappa_data before this file, to check that none is left)
SELECT count(*) AS base_data FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace \gset

-- try(sql) runs a statement and reports its error as SQLSTATE: message
-- (no error position, so the output does not depend on the caller's text).
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A non-retained stream and a view that counts everything that reaches it.
SELECT kappa.create_stream('events',
  'id int NOT NULL, kind text, amount numeric CHECK (amount >= 0), ts timestamptz');
SELECT kappa.create_view('events_count',
  $$SELECT count(*) AS n, count(kind) AS kinds, sum(id) AS ids, sum(amount) AS amount,
           max(ts) AS last_ts FROM events$$);
-- A global aggregate has its row before any input.
SELECT * FROM events_count;

-- The stream is a foreign table of the kappa_streams server.
SELECT c.relkind, s.srvname
  FROM pg_class c JOIN pg_foreign_table f ON f.ftrelid = c.oid
  JOIN pg_foreign_server s ON s.oid = f.ftserver
 WHERE c.oid = 'events'::regclass;

-- Single-row INSERT.
INSERT INTO events VALUES (1, 'a', 1.5, '2024-01-01 00:00:00+00');
SELECT * FROM events_count;
-- Multi-row INSERT.
INSERT INTO events VALUES (2, 'b', 2, '2024-01-01 00:01:00+00'),
                          (3, NULL, 3.25, '2024-01-01 00:02:00+00'),
                          (4, 'a', 0, NULL);
SELECT * FROM events_count;
-- INSERT with a column list: the other columns are NULL.
INSERT INTO events (id) VALUES (5);
SELECT * FROM events_count;
-- INSERT ... SELECT.
INSERT INTO events
SELECT g, 'gen', g * 0.5, '2024-01-02'::timestamptz + g * interval '1 minute'
  FROM generate_series(100, 199) g;
SELECT * FROM events_count;
-- INSERT ... SELECT of more rows than one batch holds (the rows go straight
-- into the view, which reads the stream alone; the statistics count them).
SELECT rows_applied AS rows_before FROM kappa.streams WHERE stream = 'events'::regclass \gset
SET kappa.stream_batch_memory = '64kB';
INSERT INTO events SELECT g, 'chunk', 1, NULL FROM generate_series(10000, 14999) g;
RESET kappa.stream_batch_memory;
SELECT rows_applied - :rows_before AS rows_counted
  FROM kappa.streams WHERE stream = 'events'::regclass;
SELECT * FROM events_count;
-- Prepared INSERT.
PREPARE ins(int, text, numeric) AS
  INSERT INTO events VALUES ($1, $2, $3, '2024-01-05 00:00:00+00');
EXECUTE ins(1000, 'p', 10);
EXECUTE ins(1001, 'p', 20);
EXECUTE ins(1002, NULL, NULL);
DEALLOCATE ins;
SELECT * FROM events_count;
-- COPY FROM STDIN, text format.
COPY events FROM STDIN;
2000	copy	1.25	2024-01-03 00:00:00+00
2001	\N	2.75	\N
2002	copy	0	2024-01-06 00:00:01+00
\.
SELECT * FROM events_count;
-- COPY FROM STDIN, csv format with a header and a column list.
COPY events (id, kind, amount) FROM STDIN (FORMAT csv, HEADER true);
id,kind,amount
3000,csv,100
3001,"with, comma",200
3002,,300
\.
SELECT * FROM events_count;
-- INSERT ... RETURNING returns the rows inserted, like any table.
INSERT INTO events VALUES (4000, 'ret', 4, NULL) RETURNING id, kind, amount;
SELECT * FROM events_count;
-- kappa.streams counts the rows applied.
SELECT rows_applied FROM kappa.streams WHERE stream = 'events'::regclass;

-- Constraints are enforced, and a statement that violates one applies
-- nothing, not even its rows before the bad one.
INSERT INTO events VALUES (NULL, 'bad', 1, '2024-01-01');
INSERT INTO events VALUES (5000, 'ok', 1, NULL), (5001, 'bad', -1, NULL);
COPY events FROM STDIN;
6000	copy	1	\N
6001	copy	-5	\N
\.
INSERT INTO events SELECT g, 'gen', CASE WHEN g = 5 THEN -1 ELSE 1 END, NULL
  FROM generate_series(1, 10) g;
-- ... also when earlier batches of the statement were already applied.
SET kappa.stream_batch_memory = '64kB';
INSERT INTO events SELECT g, 'gen', CASE WHEN g = 4999 THEN -1 ELSE 1 END, NULL
  FROM generate_series(1, 5000) g;
RESET kappa.stream_batch_memory;
-- Type errors too.
SELECT try($$INSERT INTO events VALUES (7000, 'x', 'not a number', NULL)$$);
SELECT * FROM events_count;

-- A stream without retention keeps no rows: reading it is refused (KV023).
\set VERBOSITY sqlstate
SELECT * FROM events;
SELECT count(*) FROM events;
\set VERBOSITY default
SELECT * FROM events;

-- Retained streams: 'infinity' and an interval keep rows, SELECT returns them.
SELECT kappa.create_stream('kept_all', 'id int, v text', retain => 'infinity');
SELECT kappa.create_stream('kept_day', 'id int, v text', retain => '1 day');
INSERT INTO kept_all VALUES (1, 'one'), (2, 'two');
INSERT INTO kept_day VALUES (1, 'one'), (2, 'two');
COPY kept_all FROM STDIN (FORMAT csv);
3,three
\.
COPY kept_day FROM STDIN (FORMAT csv);
3,three
\.
SELECT * FROM kept_all ORDER BY id;
SELECT * FROM kept_day ORDER BY id;
SELECT count(*), sum(id) FROM kept_all WHERE v <> 'two';
-- A retained stream with defaults and a table CHECK constraint.
SELECT kappa.create_stream('kept_defaults', 'a int, b int DEFAULT 7, CHECK (a < b)',
                           retain => 'INFINITY');
INSERT INTO kept_defaults VALUES (1);
INSERT INTO kept_defaults (a) VALUES (8);
INSERT INTO kept_defaults DEFAULT VALUES;
TABLE kept_defaults;
-- Streams are append-only.
UPDATE kept_all SET v = 'x';
DELETE FROM kept_all;
TRUNCATE kept_all;

-- Invalid retention.
SELECT try($$SELECT kappa.create_stream('bad_retain', 'id int', retain => '-1 day')$$);
SELECT try($$SELECT kappa.create_stream('bad_retain', 'id int', retain => '0')$$);
SELECT try($$SELECT kappa.create_stream('bad_retain', 'id int', retain => 'forever')$$);
SELECT try($$SELECT kappa.create_stream('bad_retain', 'id int', retain => '')$$);

-- Invalid column lists are refused, and no SQL rides along with them.
CREATE TABLE victim (a int);
SELECT try($$SELECT kappa.create_stream('bad', '')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a nosuchtype')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int, a text')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int PRIMARY KEY')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int UNIQUE')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int GENERATED ALWAYS AS (1) STORED')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int REFERENCES victim')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'LIKE victim')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int DEFAULT (SELECT 1)')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'kappa_arrived_at timestamptz')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int); DROP TABLE victim; --')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int); CREATE TABLE pwned (x int); CREATE TABLE t2 (b int')$$);
SELECT try($$SELECT kappa.create_stream('bad', 'a int) ON COMMIT DROP')$$);
-- Clauses of CREATE TABLE after the column list are refused too, not
-- ignored (SQLSTATE only: invalid parameter value, as for other invalid
-- column lists).
SELECT left(try($$SELECT kappa.create_stream('bad_inh', 'a int) INHERITS (victim')$$), 5) AS sqlstate;
SELECT left(try($$SELECT kappa.create_stream('bad_part', 'a int) PARTITION BY RANGE (a')$$), 5) AS sqlstate;
SELECT left(try($$SELECT kappa.create_stream('bad_with', 'a int) WITH (fillfactor = 10')$$), 5) AS sqlstate;
SELECT try($$SELECT kappa.create_stream(NULL, 'a int')$$);
SELECT try($$SELECT kappa.create_stream('bad', NULL)$$);
-- Nothing was created and the victim is still there.
SELECT relname FROM pg_class
 WHERE relname IN ('bad', 'bad_inh', 'bad_part', 'bad_with', 'pwned', 't2', 'bad_retain', 'victim')
 ORDER BY 1;

-- A name that exists.
SELECT try($$SELECT kappa.create_stream('events', 'a int')$$);
SELECT try($$SELECT kappa.create_stream('victim', 'a int')$$);

-- Names are parsed like regclass input: quotes for upper case, spaces and
-- quotes; schema qualification.
SELECT kappa.create_stream('"My Stream"', 'x int, "Odd Col" text');
SELECT kappa.create_stream('"we""ird"', 'x int', retain => 'infinity');
SELECT kappa.create_stream('UPPER', 'x int');
CREATE SCHEMA "Other Schema";
SELECT kappa.create_stream('"Other Schema"."Str"', 'x int', retain => 'infinity');
SELECT try($$SELECT kappa.create_stream('bad name', 'x int')$$);
SELECT try($$SELECT kappa.create_stream('no_such_schema.s', 'x int')$$);
SELECT c.oid::regclass AS stream, c.relkind FROM pg_class c
 WHERE c.relname IN ('My Stream', 'we"ird', 'upper', 'UPPER', 'Str') ORDER BY 1::text COLLATE "C";
INSERT INTO "My Stream" VALUES (1, 'a');
INSERT INTO "we""ird" VALUES (1), (2);
INSERT INTO upper VALUES (1);
INSERT INTO "Other Schema"."Str" VALUES (42);
COPY "we""ird" FROM STDIN;
3
\.
SELECT * FROM "we""ird" ORDER BY 1;
SELECT * FROM "Other Schema"."Str";

-- kappa.streams: stream, columns, retention, views on it, rows applied.
-- (The counters of events are left out: they are statistics, and whether
-- they count the rows of the failed statements above is not specified.)
SELECT stream, schema_name, stream_name, columns, retention, views,
       CASE WHEN stream <> 'events'::regclass THEN rows_applied END AS rows_applied,
       CASE WHEN stream <> 'events'::regclass THEN batches END AS batches,
       last_batch_at IS NOT NULL AS fed, created_at <= now() AS created
  FROM kappa.streams
 WHERE schema_name IN ('regress_streams', 'Other Schema') AND stream_name NOT LIKE 'bad%'
 ORDER BY stream::text COLLATE "C";
-- what it says matches kappa.stream_catalog
SELECT s.stream, c.backing IS NOT NULL AS has_backing, c.retain_all, c.retain
  FROM kappa.streams s JOIN kappa.stream_catalog c USING (stream)
 WHERE schema_name IN ('regress_streams', 'Other Schema') AND stream_name NOT LIKE 'bad%'
 ORDER BY stream::text COLLATE "C";

-- drop_stream
SELECT kappa.drop_stream('"My Stream"');
SELECT kappa.drop_stream('"we""ird"');
SELECT kappa.drop_stream('upper');
SELECT kappa.drop_stream('"Other Schema"."Str"');
SELECT kappa.drop_stream('kept_day');
SELECT kappa.drop_stream('kept_defaults');
SELECT try($$SELECT kappa.drop_stream('no_such_stream')$$);
SELECT try($$SELECT kappa.drop_stream('victim')$$);
SELECT try($$SELECT kappa.drop_stream('events_count')$$);
-- A stream with views is dropped only with cascade.
SELECT kappa.drop_stream('events');
SET client_min_messages = warning;
SELECT kappa.drop_stream('events', cascade => true);
RESET client_min_messages;
SELECT kappa.drop_stream('kept_all', false);
SELECT count(*) AS streams_left FROM kappa.streams
 WHERE schema_name IN ('regress_streams', 'Other Schema') AND stream_name NOT LIKE 'bad%';
SELECT count(*) AS views_left FROM kappa.views WHERE schema_name = 'regress_streams';
-- nothing of them is left in kappa_data or the catalog
SELECT count(*) - :base_data AS data_left FROM pg_class
 WHERE relnamespace = 'kappa_data'::regnamespace;
SELECT count(*) AS catalog_left FROM kappa.stream_catalog
 WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = stream);

DROP SCHEMA "Other Schema";
SET client_min_messages = warning;
DROP SCHEMA regress_streams CASCADE;
RESET client_min_messages;
