--
-- Transactions: a view changes with the transaction that inserts into its
-- stream; rolled-back transactions, savepoints and failed statements change
-- no view.
--
CREATE SCHEMA regress_tx;
SET search_path = regress_tx, public;

SELECT kappa.create_stream('t', 'k text, v int CHECK (v >= 0)');
CREATE TABLE shadow (k text, v int);
SELECT kappa.create_view('t_by_k', 'SELECT k, count(*) AS n, sum(v) AS total FROM t GROUP BY k');
SELECT kappa.create_view('t_all', 'SELECT count(*) AS n, sum(v) AS total, max(k) AS max_k FROM t');
-- compare() compares both views with the plain queries over "shadow",
-- which receives exactly the rows that should have reached the views.
CREATE FUNCTION compare(OUT by_k_diff bigint, OUT all_diff bigint) LANGUAGE plpgsql AS $$
BEGIN
    SELECT count(*) INTO by_k_diff FROM (
      (TABLE t_by_k EXCEPT ALL SELECT k, count(*), sum(v) FROM shadow GROUP BY k)
      UNION ALL
      (SELECT k, count(*), sum(v) FROM shadow GROUP BY k EXCEPT ALL TABLE t_by_k)) d;
    SELECT count(*) INTO all_diff FROM (
      (TABLE t_all EXCEPT ALL SELECT count(*), sum(v), max(k) FROM shadow)
      UNION ALL
      (SELECT count(*), sum(v), max(k) FROM shadow EXCEPT ALL TABLE t_all)) d;
END $$;
\set show 'SELECT * FROM t_by_k ORDER BY k; SELECT * FROM t_all; SELECT * FROM compare();'

INSERT INTO t VALUES ('a', 1), ('b', 2);
INSERT INTO shadow VALUES ('a', 1), ('b', 2);
:show

-- Inside the transaction the view already shows the rows; a rollback
-- takes them back, including a group that only they created.
BEGIN;
INSERT INTO t VALUES ('a', 10), ('new', 5);
SELECT * FROM t_by_k ORDER BY k;
SELECT * FROM t_all;
ROLLBACK;
:show

-- Savepoints: what is rolled back to a savepoint is gone, the rest stays.
BEGIN;
INSERT INTO t VALUES ('a', 100);
SAVEPOINT s1;
INSERT INTO t VALUES ('a', 1000), ('sp', 1);
SAVEPOINT s2;
INSERT INTO t VALUES ('b', 10000);
ROLLBACK TO SAVEPOINT s1;
INSERT INTO t VALUES ('c', 3);
SAVEPOINT s3;
INSERT INTO t VALUES ('c', 4);
RELEASE SAVEPOINT s3;
SELECT * FROM t_by_k ORDER BY k;
COMMIT;
INSERT INTO shadow VALUES ('a', 100), ('c', 3), ('c', 4);
:show

-- A statement that fails in the middle applies none of its rows.
INSERT INTO t VALUES ('a', 1), ('a', -1), ('d', 1);
COPY t FROM STDIN (FORMAT csv);
a,1
d,1
a,-5
\.
INSERT INTO t SELECT 'e', 10 / (3 - g) FROM generate_series(1, 5) g;
:show
-- ... even when it had already applied some batches of its rows.
SET kappa.stream_batch_memory = '64kB';
INSERT INTO t SELECT 'big', CASE WHEN g = 9000 THEN -1 ELSE 1 END FROM generate_series(1, 10000) g;
RESET kappa.stream_batch_memory;
:show
-- A failed statement inside a transaction, recovered with a savepoint.
BEGIN;
INSERT INTO t VALUES ('f', 1);
SAVEPOINT before_bad;
INSERT INTO t VALUES ('f', 2), ('f', -2);
ROLLBACK TO SAVEPOINT before_bad;
INSERT INTO t VALUES ('f', 3);
COMMIT;
INSERT INTO shadow VALUES ('f', 1), ('f', 3);
:show
-- A transaction that fails and ends with COMMIT rolls back.
BEGIN;
INSERT INTO t VALUES ('g', 1);
INSERT INTO t VALUES ('g', -1);
INSERT INTO t VALUES ('g', 2);
COMMIT;
:show

-- A PL/pgSQL exception block is a subtransaction too.
DO $$
BEGIN
    INSERT INTO t VALUES ('h', 1);
    BEGIN
        INSERT INTO t VALUES ('h', 2);
        RAISE EXCEPTION 'undo the inner insert';
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    INSERT INTO t VALUES ('h', 4);
END $$;
INSERT INTO shadow VALUES ('h', 1), ('h', 4);
:show

-- Many statements in one transaction, then a rollback of all of them.
BEGIN;
INSERT INTO t SELECT 'm' || (g % 3), g FROM generate_series(1, 300) g;
INSERT INTO t VALUES ('a', 7);
COPY t FROM STDIN;
m1	5
\.
SELECT sum(n) AS rows_in_transaction FROM t_by_k;
ROLLBACK;
:show

-- Retained rows follow the transaction too.
SELECT kappa.create_stream('kept', 'k text, v int CHECK (v >= 0)', retain => 'infinity');
SELECT kappa.create_view('kept_sum', 'SELECT k, sum(v) AS total FROM kept GROUP BY k');
INSERT INTO kept VALUES ('a', 1);
BEGIN;
INSERT INTO kept VALUES ('a', 2), ('b', 3);
SAVEPOINT s;
INSERT INTO kept VALUES ('c', 4);
ROLLBACK TO SAVEPOINT s;
SELECT * FROM kept ORDER BY k, v;
ROLLBACK;
INSERT INTO kept VALUES ('b', 5), ('b', -5);
SELECT * FROM kept ORDER BY k, v;
SELECT * FROM kept_sum ORDER BY k;

-- DDL is transactional: a view or stream created in a rolled-back
-- transaction leaves nothing, a drop that is rolled back keeps the view
-- working.
BEGIN;
SELECT kappa.create_stream('tmp', 'a int', retain => 'infinity');
SELECT kappa.create_view('tmp_v', 'SELECT a, count(*) FROM tmp GROUP BY a');
SELECT kappa.create_view('t_tmp', 'SELECT count(*) FROM t');
INSERT INTO tmp VALUES (1);
INSERT INTO t VALUES ('z', 1);
SELECT * FROM tmp_v;
SELECT * FROM t_tmp;
ROLLBACK;
SELECT to_regclass('tmp') AS tmp, to_regclass('tmp_v') AS tmp_v, to_regclass('t_tmp') AS t_tmp;
SELECT count(*) FROM kappa.views WHERE view_name IN ('tmp_v', 't_tmp');
SELECT views FROM kappa.streams WHERE stream = 't'::regclass;
INSERT INTO t VALUES ('a', 1);
INSERT INTO shadow VALUES ('a', 1);
:show
BEGIN;
SELECT kappa.drop_view('t_all');
INSERT INTO t VALUES ('a', 1);
ROLLBACK;
BEGIN;
SET client_min_messages = warning;
SELECT kappa.drop_stream('t', cascade => true);
RESET client_min_messages;
ROLLBACK;
INSERT INTO t VALUES ('a', 2);
INSERT INTO shadow VALUES ('a', 2);
:show
-- A view created in a transaction sees the rows inserted after it in the
-- same transaction.
BEGIN;
SELECT kappa.create_view('t_late', 'SELECT k, sum(v) AS total FROM t GROUP BY k');
INSERT INTO t VALUES ('late', 9);
INSERT INTO shadow VALUES ('late', 9);
COMMIT;
SELECT * FROM t_late ORDER BY k;
:show

SET client_min_messages = warning;
DROP SCHEMA regress_tx CASCADE;
RESET client_min_messages;
