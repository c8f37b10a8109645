# Concurrent writers of the same groups: pgbench runs 4 clients that insert
# random rows into a stream and the same rows into a shadow table in one
# transaction, over a handful of hot groups (and windows that keep creating
# new groups), with rows in ascending or descending key order, some large
# inserts (the delta plan for large batches), some rollbacks and some
# savepoints rolled back.  Afterwards pgbench must report no failed
# transaction, the server log no deadlock, and every view must equal its
# query run as plain SQL over the shadow (EXCEPT ALL both ways; float8
# columns within a relative 1e-9).
#
# Then the same views over an ordinary table that 4 pgbench clients insert
# into, update (values, group keys, join keys) and delete from, over the
# same hot groups, with rollbacks and savepoints rolled back: retractions in
# place and recomputed groups under concurrency, compared with the same
# queries over the table itself.
#
# KAPPA_PGBENCH_TX=<n> changes the transactions per client (default 1500).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $t0 = time;
my $tx = $ENV{KAPPA_PGBENCH_TX} // 1500;
my $clients = 4;

my $node = PostgreSQL::Test::Cluster->new('concurrency');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_kappa'
max_worker_processes = 16
fsync = off
log_lock_waits = on
deadlock_timeout = 10ms
});
$node->start;

my $columns = 'k int, g text, x numeric, f float8, ts timestamptz, flag bool';
$node->safe_psql('postgres', qq{
CREATE EXTENSION pg_kappa;
SELECT kappa.create_stream('s', '$columns', retain => NULL);
CREATE TABLE shadow ($columns);
CREATE TABLE dim (k int PRIMARY KEY, name text);
INSERT INTO dim SELECT i, 'd' || (i % 3) FROM generate_series(1, 8) i;
CREATE FUNCTION float_close(a float8, b float8) RETURNS bool
  LANGUAGE sql IMMUTABLE
  AS \$\$ SELECT (a IS NULL AND b IS NULL)
             OR (a = b)
             OR (abs(a - b) <= 1e-9 * greatest(abs(a), abs(b))) \$\$;
});

# name => [query with {S} for the relation, key columns, float columns]
my %views = (
	c_k => [
		q{SELECT k, count(*) AS n, sum(x) AS sx, sum(f) AS sf, max(ts) AS mts,
		         bool_or(flag) AS bor, bool_and(flag) AS band
		    FROM {S} GROUP BY k},
		['k'], ['sf'] ],
	c_g => [
		q{SELECT g, flag, count(*) AS n, sum(x) AS sx, avg(x) AS ax, min(k) AS mink
		    FROM {S} GROUP BY g, flag},
		[qw(g flag)], [] ],
	c_w => [
		q{SELECT date_bin('10 minutes', ts, timestamptz '2024-01-01 00:00:00+00') AS w,
		         count(*) AS n, sum(x) AS sx, max(f) AS mf
		    FROM {S} GROUP BY 1},
		['w'], ['mf'] ],
	c_glob => [
		q{SELECT count(*) AS n, sum(x) AS sx, sum(k) AS sk, avg(f) AS af,
		         count(*) FILTER (WHERE flag) AS nflag
		    FROM {S}},
		[], ['af'] ],
	c_join => [
		q{SELECT d.name, count(*) AS n, sum(s.x) AS sx, max(s.ts) AS mts
		    FROM {S} s JOIN dim d ON d.k = s.k GROUP BY d.name},
		['name'], [] ],
);

sub view_sql
{
	my ($name, $rel) = @_;
	(my $q = $views{$name}[0]) =~ s/\{S\}/$rel/g;
	return $q;
}

for my $name (sort keys %views)
{
	my $q = view_sql($name, 's');
	$node->safe_psql('postgres', "SELECT kappa.create_view('$name', \$kq\$$q\$kq\$)");
}

# The rows of one transaction: a deterministic function of i and the
# \set variables, so the same SELECT feeds the stream and the shadow.
# ORDER BY i * :dir sends them in ascending or descending key order.
my $rows = q{SELECT CASE WHEN (:v + i) % 17 = 0 THEN NULL ELSE (:a + i) % 8 + 1 END,
       CASE WHEN (:b + i) % 13 = 0 THEN NULL ELSE 'h' || ((:b + i) % 6) END,
       ((:v + i * 37) % 100000) / 100.0,
       abs(:v + i)::float8 / 7 + 0.5,
       timestamptz '2024-01-01 00:00:00+00' + ((:t + i * 7) % 3000) * interval '1 minute',
       (:v + i) % 5 <> 0
  FROM generate_series(1, :n) i ORDER BY i * :dir};
$rows =~ s/\s*\n\s*/ /g;    # pgbench: one line per command

my $script = <<"EOS";
\\set a random(1, 8)
\\set b random(0, 5)
\\set v random(-100000, 100000)
\\set t random(0, 3000)
\\set n random(1, 40)
\\set dir random(0, 1) * 2 - 1
\\set big random(1, 40)
\\if :big = 1
\\set n random(1001, 2500)
\\endif
\\set r random(1, 10)
BEGIN;
\\if :r = 2
SAVEPOINT sp;
INSERT INTO s $rows;
ROLLBACK TO SAVEPOINT sp;
\\endif
INSERT INTO s $rows;
INSERT INTO shadow $rows;
\\if :r = 1
ROLLBACK;
\\else
COMMIT;
\\endif
EOS

my $tb = time;
$node->pgbench(
	"-n -c $clients -j 2 -t $tx",
	0,
	[
		qr{number of transactions actually processed: @{[ $clients * $tx ]}/@{[ $clients * $tx ]}},
		qr{number of failed transactions: 0 \(}
	],
	[qr{^(?!.*(?:ERROR|deadlock|aborted))}s],
	"pgbench: $clients clients x $tx transactions on hot groups",
	{ 'kappa_concurrency.sql' => $script },
	'postgres');
my $tbench = time - $tb;

ok(!$node->log_contains('deadlock detected'), 'no deadlock in the server log');
my $waits = () = slurp_file($node->logfile) =~ /still waiting for/g;
note "lock waits logged (waits longer than deadlock_timeout = 10ms): $waits";

# every view (named $prefix$name) against its query over $rel
sub compare_views
{
	my ($prefix, $rel) = @_;
	for my $name (sort keys %views)
	{
		my (undef, $keys, $floats) = @{ $views{$name} };
		my $view = "$prefix$name";
		my $plain = view_sql($name, $rel);
		my %isfloat = map { $_ => 1 } @$floats;
		my @cols = split /\n/, $node->safe_psql('postgres',
			"SELECT attname FROM pg_attribute WHERE attrelid = '$view'::regclass "
			  . "AND attnum > 0 AND NOT attisdropped ORDER BY attnum");
		my $exact = join(', ', grep { !$isfloat{$_} } @cols);
		my $on = @$keys ? join(' AND ', map { "v.$_ IS NOT DISTINCT FROM p.$_" } @$keys) : 'true';
		my $fl = @$floats ? join(' AND ', map { "float_close(v.$_, p.$_)" } @$floats) : 'true';
		my $res = $node->safe_psql('postgres', qq{
SELECT (SELECT count(*) FROM $view),
       (SELECT count(*) FROM (SELECT $exact FROM $view EXCEPT ALL SELECT $exact FROM ($plain) p) d),
       (SELECT count(*) FROM (SELECT $exact FROM ($plain) p EXCEPT ALL SELECT $exact FROM $view) d),
       (SELECT count(*) FROM $view v JOIN ($plain) p ON $on WHERE NOT ($fl))});
		my ($n, $extra, $lacking, $badfloat) = split /\|/, $res;
		my $ok = ok($n > 0 && $extra == 0 && $lacking == 0 && $badfloat == 0,
			"$view equals its query over $rel ($n rows)");
		if (!$ok)
		{
			diag "$view: $extra rows only in the view, $lacking only in the plain query, "
			  . "$badfloat with float columns beyond 1e-9";
			diag $node->safe_psql('postgres', qq{
SELECT 'view only:  ' || t::text FROM (SELECT $exact FROM $view EXCEPT ALL SELECT $exact FROM ($plain) p) t
UNION ALL
SELECT 'plain only: ' || t::text FROM (SELECT $exact FROM ($plain) p EXCEPT ALL SELECT $exact FROM $view) t
LIMIT 20});
		}
	}
}

compare_views('', 'shadow');

my $nrows = $node->safe_psql('postgres', 'SELECT count(*) FROM shadow');
is($node->safe_psql('postgres', 'SELECT n FROM c_glob'), $nrows,
	"the global count equals the shadow's ($nrows rows)");

# ---------------------------------------------------------------- a table
# The same views over an ordinary table (id added, for updates and
# deletes), which the clients change with INSERT, UPDATE and DELETE.
$node->safe_psql('postgres', qq{
CREATE TABLE tbl (id bigserial PRIMARY KEY, $columns);
INSERT INTO tbl (k, g, x, f, ts, flag)
  SELECT i % 8 + 1, 'h' || (i % 6), i / 100.0, i::float8 / 7 + 0.5,
         timestamptz '2024-01-01 00:00:00+00' + (i % 3000) * interval '1 minute', i % 5 <> 0
    FROM generate_series(1, 5000) i;
});
for my $name (sort keys %views)
{
	my $q = view_sql($name, 'tbl');
	$node->safe_psql('postgres', "SELECT kappa.create_view('t_$name', \$kq\$$q\$kq\$)");
}
my $tscript = <<"EOS";
\\set a random(1, 8)
\\set b random(0, 5)
\\set v random(-100000, 100000)
\\set t random(0, 3000)
\\set n random(1, 20)
\\set dir random(0, 1) * 2 - 1
\\set op random(1, 10)
\\set m random(0, 96)
\\set r random(1, 10)
BEGIN;
\\if :r = 2
SAVEPOINT sp;
UPDATE tbl SET x = x * 2 WHERE id % 97 = :m;
ROLLBACK TO SAVEPOINT sp;
\\endif
\\if :op <= 4
INSERT INTO tbl (k, g, x, f, ts, flag) $rows;
\\elif :op <= 8
UPDATE tbl SET x = x + 1, f = f * 1.5, g = 'h' || ((:b + id) % 6), k = CASE WHEN k IS NULL THEN NULL ELSE (k + :a) % 8 + 1 END, flag = NOT flag WHERE id % 97 = :m;
\\else
DELETE FROM tbl WHERE id % 97 = :m AND id % 3 = :a % 3;
\\endif
\\if :r = 1
ROLLBACK;
\\else
COMMIT;
\\endif
EOS
my $ttx = int($tx / 3) + 1;
$node->pgbench(
	"-n -c $clients -j 2 -t $ttx",
	0,
	[
		qr{number of transactions actually processed: @{[ $clients * $ttx ]}/@{[ $clients * $ttx ]}},
		qr{number of failed transactions: 0 \(}
	],
	[qr{^(?!.*(?:ERROR|deadlock|aborted))}s],
	"pgbench on a table: $clients clients x $ttx transactions of INSERT/UPDATE/DELETE",
	{ 'kappa_concurrency_table.sql' => $tscript },
	'postgres');
ok(!$node->log_contains('deadlock detected'), 'no deadlock in the server log (table)');
compare_views('t_', 'tbl');

$node->stop;
diag sprintf('002_concurrency: %d transactions, %d rows committed, pgbench %.1fs, total %.1fs',
	$clients * $tx, $nrows, $tbench, time - $t0);
done_testing();
