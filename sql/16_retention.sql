-- Streams created with an interval retention keep rows that long:
-- kappa.expire_retained_rows() deletes older rows (the background workers
-- call it periodically); views keep the aggregates of every row.
SELECT kappa.create_stream('recent', 'a int', retain => '1 hour');
SELECT kappa.create_view('recent_total', 'SELECT count(*) AS n, sum(a) AS total FROM recent');
INSERT INTO recent SELECT generate_series(1, 100);
SELECT retention FROM kappa.streams WHERE stream = 'recent'::regclass;

-- age the first 30 rows past the retention
DO $$
BEGIN
    EXECUTE format('UPDATE %s SET kappa_arrived_at = now() - interval ''2 hours'' WHERE a <= 30',
                   (SELECT backing FROM kappa.stream_catalog WHERE stream = 'recent'::regclass));
END $$;
SELECT kappa.expire_retained_rows() AS expired;
SELECT count(*), min(a) FROM recent;
SELECT * FROM recent_total;
SELECT kappa.expire_retained_rows() AS expired_again;

-- invalid retentions are refused
SELECT kappa.create_stream('bad_retention', 'a int', retain => '-1 day');
SELECT kappa.create_stream('bad_retention', 'a int', retain => 'forever');
