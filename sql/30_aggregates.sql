--
-- Aggregates: built-in aggregates of many kinds and one from another
-- extension (hll), each maintained through its combine function, fed in
-- several batches so that states are merged, and compared with the same
-- aggregates run as plain SQL over the same rows: exactly for integer,
-- numeric, text, timestamp and boolean results, within a relative 1e-9 for
-- float8 ones.
--
CREATE SCHEMA regress_aggs;
SET search_path = regress_aggs, public;
CREATE EXTENSION hll SCHEMA regress_aggs;

CREATE FUNCTION diff(v regclass, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM ((TABLE %s EXCEPT ALL (%s)) UNION ALL ((%s) EXCEPT ALL TABLE %s)) d',
                   v, q, q, v) INTO n;
    RETURN n;
END $$;
-- float8 values equal within a relative 1e-9
CREATE FUNCTION close(a float8, b float8) RETURNS boolean LANGUAGE sql IMMUTABLE AS
  $$SELECT a IS NULL AND b IS NULL
        OR abs(a - b) <= 1e-9 * greatest(abs(a), abs(b), 1)$$;

SELECT kappa.create_stream('m',
  'g text, i4 int4, i8 int8, n numeric, f float8, t text, ts timestamptz, b bool, bits int4, x float8, y float8');
CREATE TABLE shadow (g text, i4 int4, i8 int8, n numeric, f float8, t text, ts timestamptz,
                     b bool, bits int4, x float8, y float8);
CREATE TABLE batch (LIKE shadow);
\set record 'INSERT INTO shadow SELECT * FROM batch; TRUNCATE batch;'

-- Exact aggregates, grouped.
SELECT kappa.create_view('a_exact', $$
SELECT g,
       count(*) AS cnt, count(n) AS cnt_n,
       sum(i4) AS sum_i4, sum(i8) AS sum_i8, sum(n) AS sum_n,
       avg(i4) AS avg_i4, avg(n) AS avg_n,
       min(i4) AS min_i4, max(i4) AS max_i4,
       min(t) AS min_t, max(t) AS max_t,
       min(ts) AS min_ts, max(ts) AS max_ts,
       min(n) AS min_n, max(n) AS max_n,
       stddev_samp(i4) AS sd_i4, var_pop(n) AS vp_n,
       bool_and(b) AS all_b, bool_or(b) AS any_b, every(b) AS every_b,
       bit_or(bits) AS or_bits, bit_and(bits | 1) AS and_bits,
       sum(n) FILTER (WHERE b) AS sum_n_b,
       count(*) FILTER (WHERE i4 > 0) AS cnt_pos,
       max(t) FILTER (WHERE i4 < 0) AS max_t_neg
  FROM m GROUP BY g$$);
-- Float aggregates, grouped.
SELECT kappa.create_view('a_float', $$
SELECT g,
       sum(f) AS sum_f, avg(f) AS avg_f,
       stddev_samp(f) AS sd_f, var_pop(f) AS vp_f,
       corr(y, x) AS corr_yx, regr_slope(y, x) AS slope_yx,
       avg(f) FILTER (WHERE b) AS avg_f_b
  FROM m GROUP BY g$$);
-- hll: distinct counts from a mergeable sketch.
SELECT kappa.create_view('a_hll', $$
SELECT g, hll_cardinality(hll_add_agg(hll_hash_text(t))) AS distinct_t,
       hll_cardinality(hll_add_agg(hll_hash_integer(i4 % 50))) AS distinct_i4
  FROM m GROUP BY g$$);
-- Global: one row, even with no input.
SELECT kappa.create_view('a_global', $$
SELECT count(*) AS cnt, count(i4) AS cnt_i4, sum(i4) AS sum_i4, sum(i8) AS sum_i8,
       sum(n) AS sum_n, avg(n) AS avg_n, min(ts) AS min_ts, max(t) AS max_t,
       bool_and(b) AS all_b, bool_or(b) AS any_b, bit_or(bits) AS or_bits,
       stddev_samp(n) AS sd_n, var_pop(i8) AS vp_i8,
       count(*) FILTER (WHERE g IS NULL) AS cnt_null_g,
       hll_cardinality(hll_add_agg(hll_hash_text(t))) AS distinct_t
  FROM m$$);
SELECT kappa.create_view('a_global_float', $$
SELECT sum(f) AS sum_f, avg(f) AS avg_f, stddev_samp(f) AS sd_f, var_pop(f) AS vp_f,
       corr(y, x) AS corr_yx, regr_slope(y, x) AS slope_yx
  FROM m$$);

-- No input yet.
SELECT * FROM a_exact;
\x on
SELECT * FROM a_global;
SELECT * FROM a_global_float;
\x off

CREATE TEMP TABLE q (v regclass PRIMARY KEY, q text NOT NULL);
INSERT INTO q VALUES
 ('a_exact', $$
SELECT g,
       count(*) AS cnt, count(n) AS cnt_n,
       sum(i4) AS sum_i4, sum(i8) AS sum_i8, sum(n) AS sum_n,
       avg(i4) AS avg_i4, avg(n) AS avg_n,
       min(i4) AS min_i4, max(i4) AS max_i4,
       min(t) AS min_t, max(t) AS max_t,
       min(ts) AS min_ts, max(ts) AS max_ts,
       min(n) AS min_n, max(n) AS max_n,
       stddev_samp(i4) AS sd_i4, var_pop(n) AS vp_n,
       bool_and(b) AS all_b, bool_or(b) AS any_b, every(b) AS every_b,
       bit_or(bits) AS or_bits, bit_and(bits | 1) AS and_bits,
       sum(n) FILTER (WHERE b) AS sum_n_b,
       count(*) FILTER (WHERE i4 > 0) AS cnt_pos,
       max(t) FILTER (WHERE i4 < 0) AS max_t_neg
  FROM shadow GROUP BY g$$),
 ('a_hll', $$
SELECT g, hll_cardinality(hll_add_agg(hll_hash_text(t))) AS distinct_t,
       hll_cardinality(hll_add_agg(hll_hash_integer(i4 % 50))) AS distinct_i4
  FROM shadow GROUP BY g$$),
 ('a_global', $$
SELECT count(*) AS cnt, count(i4) AS cnt_i4, sum(i4) AS sum_i4, sum(i8) AS sum_i8,
       sum(n) AS sum_n, avg(n) AS avg_n, min(ts) AS min_ts, max(t) AS max_t,
       bool_and(b) AS all_b, bool_or(b) AS any_b, bit_or(bits) AS or_bits,
       stddev_samp(n) AS sd_n, var_pop(i8) AS vp_i8,
       count(*) FILTER (WHERE g IS NULL) AS cnt_null_g,
       hll_cardinality(hll_add_agg(hll_hash_text(t))) AS distinct_t
  FROM shadow$$);

-- check_all(): exact views by EXCEPT ALL both ways, float views key by key
-- with close().  Prints how many views/groups were compared and which
-- differ (none).
CREATE FUNCTION check_all(OUT exact_views bigint, OUT exact_differing text,
                          OUT float_groups bigint, OUT float_differing text,
                          OUT global_float_ok boolean)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT count(*), coalesce(string_agg(v::text || ' by ' || d, ', ') FILTER (WHERE d <> 0), 'none')
      INTO exact_views, exact_differing
      FROM (SELECT v, diff(v, q) AS d FROM q ORDER BY v::text) c;
    SELECT count(*),
           coalesce(string_agg(coalesce(p.g, s.g, 'NULL'), ', ' ORDER BY coalesce(p.g, s.g))
                      FILTER (WHERE NOT (p.g IS NOT DISTINCT FROM s.g AND
                                         close(p.sum_f, s.sum_f) AND close(p.avg_f, s.avg_f) AND
                                         close(p.sd_f, s.sd_f) AND close(p.vp_f, s.vp_f) AND
                                         close(p.corr_yx, s.corr_yx) AND
                                         close(p.slope_yx, s.slope_yx) AND
                                         close(p.avg_f_b, s.avg_f_b))), 'none')
      INTO float_groups, float_differing
      FROM a_float p
      FULL JOIN (SELECT g, sum(f) AS sum_f, avg(f) AS avg_f,
                        stddev_samp(f) AS sd_f, var_pop(f) AS vp_f,
                        corr(y, x) AS corr_yx, regr_slope(y, x) AS slope_yx,
                        avg(f) FILTER (WHERE b) AS avg_f_b
                   FROM shadow GROUP BY g) s ON coalesce(p.g, '<null>') = coalesce(s.g, '<null>');
    SELECT close(p.sum_f, s.sum_f) AND close(p.avg_f, s.avg_f) AND
           close(p.sd_f, s.sd_f) AND close(p.vp_f, s.vp_f) AND
           close(p.corr_yx, s.corr_yx) AND close(p.slope_yx, s.slope_yx)
      INTO global_float_ok
      FROM a_global_float p,
           (SELECT sum(f) AS sum_f, avg(f) AS avg_f, stddev_samp(f) AS sd_f, var_pop(f) AS vp_f,
                   corr(y, x) AS corr_yx, regr_slope(y, x) AS slope_yx FROM shadow) s;
END $$;
\set checks 'SELECT * FROM check_all();'
:checks

-- The rows: a deterministic function of k.
CREATE FUNCTION gen(k1 int, k2 int) RETURNS SETOF shadow LANGUAGE sql IMMUTABLE AS $$
SELECT (ARRAY['a', 'b', 'c', NULL])[k % 4 + 1],
       (k * 7919) % 1000 - 500,
       k::int8 * 1000000007,
       CASE WHEN k % 23 = 0 THEN NULL ELSE (k % 97) * 1.01 - 20 END,
       (k % 101) / 7.0,
       substr(md5(k::text), 1, 3),
       timestamptz '2024-01-01 00:00:00+00' + k * interval '13 minutes',
       CASE WHEN k % 17 = 0 THEN NULL ELSE k % 3 <> 0 END,
       1 << (k % 20),
       (k % 37)::float8,
       2.5 * (k % 37) + (k % 5)
  FROM generate_series(k1, k2) k
$$;

-- Batch 1: one row.
INSERT INTO batch SELECT * FROM gen(1, 1);
INSERT INTO m SELECT * FROM batch;
:record
SELECT g, cnt, sum_i4, avg_n, min_t, max_ts, sd_i4, vp_n, all_b, or_bits, cnt_pos FROM a_exact;
SELECT g, sum_f, avg_f, sd_f, vp_f, corr_yx, slope_yx FROM a_float;
SELECT * FROM a_hll;
:checks

-- Batch 2: a multi-row INSERT with NULLs in every column.
INSERT INTO m VALUES
  ('a', 10, 20, 1.5, 0.25, 'zzz', '2023-12-31 23:00:00+00', false, 1024, 1, 3),
  ('a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (NULL, -7, -8, -9.75, -1.5, 'aaa', '2025-01-01 00:00:00+00', true, 3, 2, 1),
  ('d', 1, 1, 1, 1, 'd', '2024-06-01 00:00:00+00', true, 0, NULL, 5);
INSERT INTO batch VALUES
  ('a', 10, 20, 1.5, 0.25, 'zzz', '2023-12-31 23:00:00+00', false, 1024, 1, 3),
  ('a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (NULL, -7, -8, -9.75, -1.5, 'aaa', '2025-01-01 00:00:00+00', true, 3, 2, 1),
  ('d', 1, 1, 1, 1, 'd', '2024-06-01 00:00:00+00', true, 0, NULL, 5);
:record
SELECT g, cnt, cnt_n, sum_i4, sum_i8, sum_n, avg_i4, min_t, max_t, all_b, any_b, every_b,
       or_bits, and_bits, sum_n_b, cnt_pos, max_t_neg
  FROM a_exact ORDER BY g;
SELECT * FROM a_hll ORDER BY g;
:checks

-- Batch 3: 2000 rows in one INSERT ... SELECT, applied in several batches.
SET kappa.stream_batch_memory = '64kB';
INSERT INTO batch SELECT * FROM gen(2, 2001);
INSERT INTO m SELECT * FROM batch;
:record
RESET kappa.stream_batch_memory;
:checks

-- Batch 4: a COPY in csv, with extreme values.
COPY m FROM STDIN (FORMAT csv);
b,2147483647,9223372036854775807,123456789.123456789,12345.678,zzzz,2030-01-01 00:00:00+00,true,1073741824,100,100
b,-2147483648,-9223372036854775807,-123456789.123456789,-0.001,,1970-01-01 00:00:00+00,false,0,100,101
c,0,0,0,0,,infinity,,0,,
\.
COPY batch FROM STDIN (FORMAT csv);
b,2147483647,9223372036854775807,123456789.123456789,12345.678,zzzz,2030-01-01 00:00:00+00,true,1073741824,100,100
b,-2147483648,-9223372036854775807,-123456789.123456789,-0.001,,1970-01-01 00:00:00+00,false,0,100,101
c,0,0,0,0,,infinity,,0,,
\.
:record
:checks

-- Batch 5: more rows, in many small statements in one transaction.
BEGIN;
INSERT INTO m SELECT * FROM gen(2002, 2010);
INSERT INTO m SELECT * FROM gen(2011, 2011);
INSERT INTO m SELECT * FROM gen(2012, 2100);
INSERT INTO batch SELECT * FROM gen(2002, 2100);
:record
COMMIT;
:checks

-- Batch 6: a prepared INSERT.
PREPARE ins AS INSERT INTO m SELECT * FROM gen($1, $2);
EXECUTE ins(5000, 5999);
EXECUTE ins(6000, 6000);
DEALLOCATE ins;
INSERT INTO batch SELECT * FROM gen(5000, 6000);
:record
:checks

-- The final contents, for the record.
SELECT g, cnt, cnt_n, sum_i4, sum_i8, sum_n, avg_i4, avg_n, min_i4, max_i4
  FROM a_exact ORDER BY g;
SELECT g, min_t, max_t, min_ts, max_ts, min_n, max_n
  FROM a_exact ORDER BY g;
SELECT g, sd_i4, vp_n, all_b, any_b, every_b, or_bits, and_bits, sum_n_b, cnt_pos, max_t_neg
  FROM a_exact ORDER BY g;
SELECT g, round(sum_f::numeric, 6) AS sum_f, round(avg_f::numeric, 6) AS avg_f,
       round(corr_yx::numeric, 6) AS corr_yx, round(slope_yx::numeric, 6) AS slope_yx
  FROM a_float ORDER BY g;
-- hll estimates distinct counts (equal to plain SQL's hll above, and close
-- to the exact counts here)
SELECT h.g, round(h.distinct_t::numeric) AS distinct_t,
       (SELECT count(DISTINCT t) FROM shadow s WHERE s.g IS NOT DISTINCT FROM h.g) AS exact_t,
       round(h.distinct_i4::numeric) AS distinct_i4,
       (SELECT count(DISTINCT i4 % 50) FROM shadow s WHERE s.g IS NOT DISTINCT FROM h.g) AS exact_i4
  FROM a_hll h ORDER BY g;
\x on
SELECT cnt, cnt_i4, sum_i4, sum_i8, sum_n, avg_n, min_ts, max_t, all_b, any_b, or_bits,
       sd_n, vp_i8, cnt_null_g, round(distinct_t::numeric) AS distinct_t
  FROM a_global;
\x off

-- A view can also keep the sketch itself, to be combined when reading.
-- (The stream keeps no rows: this view sees only the rows that follow.)
SELECT kappa.create_view('a_hll_sketch',
  $$SELECT g, hll_add_agg(hll_hash_text(t)) AS sketch FROM m GROUP BY g$$);
CREATE TABLE late AS SELECT * FROM gen(7000, 7100);
INSERT INTO m SELECT * FROM late WHERE g IS NULL OR g <> 'c';
INSERT INTO m SELECT * FROM late WHERE g = 'c';
INSERT INTO batch SELECT * FROM late;
:record
SELECT v.g, hll_cardinality(v.sketch) = p.card AS same_as_plain
  FROM a_hll_sketch v
  FULL JOIN (SELECT g, hll_cardinality(hll_add_agg(hll_hash_text(t))) AS card
               FROM late GROUP BY g) p ON coalesce(v.g, '<null>') = coalesce(p.g, '<null>')
 ORDER BY 1;
SELECT (SELECT hll_cardinality(hll_union_agg(sketch)) FROM a_hll_sketch)
       = (SELECT hll_cardinality(hll_add_agg(hll_hash_text(t))) FROM late) AS union_same_as_plain;
:checks

SET client_min_messages = warning;
DROP SCHEMA regress_aggs CASCADE;
RESET client_min_messages;
