-- Edge cases of the engine found in review, each compared with the answer
-- plain SQL gives.

-- 1. The row that fills kappa.stream_batch_memory is the statement's last:
--    the chunk is combined in memory and must still be written at the end.
SET kappa.stream_batch_memory = '64kB';
SELECT kappa.create_stream('edge_ints', 'a int');
SELECT kappa.create_view('edge_ints_total', 'SELECT count(*) AS n, sum(a) AS s FROM edge_ints');
INSERT INTO edge_ints SELECT generate_series(1, 1171);
SELECT n, s, (SELECT sum(i) FROM generate_series(1, 1171) i) AS plain_sum FROM edge_ints_total;
RESET kappa.stream_batch_memory;

-- 2. Per-group expressions get the planner's preprocessing: named
--    arguments, default arguments, COLLATE.
SELECT kappa.create_view('edge_exprs', $$
  SELECT a % 2 AS k,
         make_interval(days => count(*)::int) AS days,
         make_interval(count(*)::int) AS years,
         ('x' || max(a)::text) COLLATE "C" AS label
    FROM edge_ints GROUP BY 1$$);
INSERT INTO edge_ints VALUES (1), (2), (3);
SELECT * FROM edge_exprs ORDER BY k;
SELECT a % 2 AS k, make_interval(days => count(*)::int) AS days, make_interval(count(*)::int) AS years,
       ('x' || max(a)::text) COLLATE "C" AS label
  FROM (VALUES (1), (2), (3)) v(a) GROUP BY 1 ORDER BY 1;

-- 3. INSERT ... RETURNING into a stream returns the rows it applied.
INSERT INTO edge_ints VALUES (10), (20) RETURNING a;

-- 4. A stream with retention that is altered afterwards refuses to store or
--    show rows its retained-rows table cannot hold, instead of guessing.
SELECT kappa.create_stream('edge_kept', 'a int, b text', retain => 'infinity');
INSERT INTO edge_kept VALUES (1, 'x');
ALTER FOREIGN TABLE edge_kept ALTER COLUMN b TYPE int;
\set VERBOSITY terse
INSERT INTO edge_kept VALUES (2, 5);
SELECT * FROM edge_kept;
\set VERBOSITY default
ALTER FOREIGN TABLE edge_kept ALTER COLUMN b TYPE text;
SELECT * FROM edge_kept;
