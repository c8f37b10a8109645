-- Statements larger than kappa.stream_batch_memory are applied in chunks:
-- each chunk's delta is combined in memory and every group is written once
-- at the end of the statement.  With the smallest setting, 100,000 rows are
-- many chunks; the views must still equal plain SQL over the same rows.
-- (The in-memory combining is bounded by work_mem * hash_mem_multiplier.)
SET kappa.stream_batch_memory = '64kB';
CREATE TABLE shadow (k int, g text, x numeric, f float8, ok bool);
SELECT kappa.create_stream('chunks', 'k int, g text, x numeric, f float8, ok bool');
SELECT kappa.create_view('chunk_groups', $$
  SELECT g, count(*) AS n, sum(x) AS sx, avg(x) AS ax, min(g) AS ming, max(k) AS maxk,
         bool_and(ok) AS all_ok, count(*) FILTER (WHERE ok) AS n_ok
    FROM chunks GROUP BY g$$);
SELECT kappa.create_view('chunk_total', $$
  SELECT count(*) AS n, sum(x) AS sx, avg(f) AS af, stddev_samp(f) AS sdf FROM chunks$$);
SELECT kappa.create_view('chunk_nullkeys', $$
  SELECT k % 3 AS m, ok, count(*) AS n, sum(k) AS sk FROM chunks GROUP BY 1, 2$$);
-- a view with a join cannot take rows one by one: it runs its delta query
-- over each chunk and combines the deltas in memory
CREATE TABLE chunk_dim (m int PRIMARY KEY, label text);
INSERT INTO chunk_dim VALUES (0, 'zero'), (1, 'one'), (2, 'two');
SELECT kappa.create_view('chunk_joined', $$
  SELECT d.label, count(*) AS n, sum(c.x) AS sx, max(c.g) AS maxg
    FROM chunks c JOIN chunk_dim d ON d.m = c.k % 3 GROUP BY d.label$$);

BEGIN;
INSERT INTO chunks
SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE 'g' || (i % 37) END, i / 7.0, i / 3.0,
       CASE WHEN i % 13 = 0 THEN NULL ELSE i % 5 <> 0 END
  FROM generate_series(1, 100000) i;
INSERT INTO shadow
SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE 'g' || (i % 37) END, i / 7.0, i / 3.0,
       CASE WHEN i % 13 = 0 THEN NULL ELSE i % 5 <> 0 END
  FROM generate_series(1, 100000) i;
COMMIT;
-- a second long statement merges into the groups the first one wrote; it
-- updates each group once, not once per chunk (the first statement only
-- inserted, so all updates counted here are this statement's)
BEGIN;
INSERT INTO chunks SELECT * FROM shadow WHERE k <= 50000;
INSERT INTO shadow SELECT * FROM shadow WHERE k <= 50000;
SELECT n_tup_upd AS group_updates
  FROM pg_stat_xact_user_tables
 WHERE relid = (SELECT mat FROM kappa.view_catalog WHERE view = 'chunk_groups'::regclass);
-- (counted inside the transaction: after it, pg_stat_xact_* shows only
-- what has not been flushed to the shared statistics yet, which depends on
-- timing)
SELECT n_tup_upd AS joined_group_updates
  FROM pg_stat_xact_user_tables
 WHERE relid = (SELECT mat FROM kappa.view_catalog WHERE view = 'chunk_joined'::regclass);
COMMIT;

SELECT count(*) AS diff_groups FROM (
  (TABLE chunk_groups EXCEPT ALL
   SELECT g, count(*), sum(x), avg(x), min(g), max(k), bool_and(ok), count(*) FILTER (WHERE ok)
     FROM shadow GROUP BY g)
  UNION ALL
  (SELECT g, count(*), sum(x), avg(x), min(g), max(k), bool_and(ok), count(*) FILTER (WHERE ok)
     FROM shadow GROUP BY g
   EXCEPT ALL TABLE chunk_groups)) d;
SELECT count(*) AS diff_nullkeys FROM (
  (TABLE chunk_nullkeys EXCEPT ALL SELECT k % 3, ok, count(*), sum(k) FROM shadow GROUP BY 1, 2)
  UNION ALL
  (SELECT k % 3, ok, count(*), sum(k) FROM shadow GROUP BY 1, 2 EXCEPT ALL TABLE chunk_nullkeys)) d;
SELECT count(*) AS diff_joined FROM (
  (TABLE chunk_joined EXCEPT ALL
   SELECT d.label, count(*), sum(c.x), max(c.g) FROM shadow c JOIN chunk_dim d ON d.m = c.k % 3 GROUP BY d.label)
  UNION ALL
  (SELECT d.label, count(*), sum(c.x), max(c.g) FROM shadow c JOIN chunk_dim d ON d.m = c.k % 3 GROUP BY d.label
   EXCEPT ALL TABLE chunk_joined)) d;
SELECT v.n = s.n AS n_equal, v.sx = s.sx AS sum_equal,
       abs(v.af - s.af) <= 1e-9 * abs(s.af) AS avg_within_tolerance,
       abs(v.sdf - s.sdf) <= 1e-9 * abs(s.sdf) AS stddev_within_tolerance
  FROM chunk_total v,
       (SELECT count(*) AS n, sum(x) AS sx, avg(f) AS af, stddev_samp(f) AS sdf FROM shadow) s;
