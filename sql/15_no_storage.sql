-- A stream without retention writes no heap rows and no WAL for its raw
-- rows: 100,000 rows stream through and only the view's few groups are
-- written.  A retained stream, by contrast, keeps every row.
SELECT kappa.create_stream('nostore', 'k int, payload text');
SELECT kappa.create_view('nostore_counts',
  'SELECT k % 10 AS bucket, count(*) AS n, sum(length(payload)) AS bytes FROM nostore GROUP BY 1');

-- no relation holds the stream's rows
SELECT backing IS NULL AS no_backing FROM kappa.stream_catalog WHERE stream = 'nostore'::regclass;

SELECT pg_current_wal_insert_lsn() AS lsn_before \gset
INSERT INTO nostore SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i;
SELECT pg_current_wal_insert_lsn() AS lsn_after \gset

-- 100,000 rows of ~110 bytes would be over 10 MB of heap and WAL; the view's
-- ten groups take a few kilobytes.
SELECT pg_wal_lsn_diff(:'lsn_after', :'lsn_before') < 200000 AS wal_stays_small;
SELECT pg_total_relation_size(mat) < 100000 AS materialization_stays_small
  FROM kappa.view_catalog WHERE view = 'nostore_counts'::regclass;

-- the view saw every row; compare with the same query as plain SQL
SELECT count(*) AS diff FROM (
  (TABLE nostore_counts
   EXCEPT ALL
   SELECT k % 10, count(*), sum(length(repeat('x', 100))) FROM generate_series(1, 100000) k GROUP BY 1)
  UNION ALL
  (SELECT k % 10, count(*), sum(length(repeat('x', 100))) FROM generate_series(1, 100000) k GROUP BY 1
   EXCEPT ALL
   TABLE nostore_counts)) d;

-- the same rows into a retained stream are kept, so its storage grows
SELECT kappa.create_stream('kept', 'k int, payload text', retain => 'infinity');
INSERT INTO kept SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i;
SELECT pg_relation_size(backing) > 10000000 AS retained_rows_take_space
  FROM kappa.stream_catalog WHERE stream = 'kept'::regclass;
SELECT count(*) FROM kept;
