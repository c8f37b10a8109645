# pg_dump and restore of a database with streams and continuous views.
#
# The source database has a non-retained stream, a stream retained forever
# and one retained for an interval (owned by a non-superuser, with a view
# granted to another role), views that are grouped, global, joined to a
# table, with HAVING/ORDER BY/LIMIT, named with spaces, quotes and upper
# case, one in an upper-case schema; shadow tables hold the same rows as
# the streams.  It is dumped with pg_dump -Fc and restored into new
# databases with pg_restore (serially, and with -j 2), and dumped as plain
# SQL and restored with psql.  In each restored database:
#   - every view has the same contents as in the source database, and equals
#     its query run as plain SQL over the restored shadow tables;
#   - the catalog (kappa.streams, kappa.views) lists the same streams and
#     views, and the retained rows are back;
#   - after new rows (new and existing groups) go into the streams and the
#     shadows, every view still equals its query over the shadows: the views
#     keep updating;
#   - a new view on the retained stream is backfilled from the restored rows;
#   - the non-superuser owner can still feed its stream, and the reader role
#     still read the granted view;
#   - data contracts: the expectations on a table and on a stream are
#     listed as before and still act (a violating row is skipped, a
#     warned one kept).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $t0 = time;
my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_kappa'
max_worker_processes = 16
fsync = off
});
$node->start;

$node->safe_psql('postgres', q{
CREATE ROLE kappa_owner LOGIN;
CREATE ROLE kappa_reader LOGIN;
CREATE DATABASE src;
});

# ---------------------------------------------------------------- source
$node->safe_psql('src', q{
CREATE EXTENSION pg_kappa;
GRANT CREATE ON SCHEMA public TO kappa_owner;
CREATE SCHEMA "Analytics";

-- data contracts on a table and on a retained stream
CREATE TABLE orders (id int, amount numeric, note text);
SELECT kappa.add_expectation('orders', 'positive amount', 'amount > 0', on_violation => 'dead_letter');
SELECT kappa.add_expectation('orders', 'has_note', 'note IS NOT NULL', on_violation => 'warn');
SELECT kappa.create_stream('checked', 'id int, v int', retain => 'infinity');
SELECT kappa.add_expectation('checked', 'small', 'v < 100', on_violation => 'dead_letter');
INSERT INTO orders VALUES (1, 10, 'a'), (2, -1, 'b'), (3, 5, NULL);
INSERT INTO checked VALUES (1, 1), (2, 500);

SELECT kappa.create_stream('events',
  'user_id int, url text, amount numeric, ts timestamptz', retain => NULL);
SELECT kappa.create_stream('"Kept Events"',
  'user_id int, amount numeric, ts timestamptz', retain => 'infinity');
CREATE TABLE users (user_id int PRIMARY KEY, country text);
INSERT INTO users SELECT i, 'c' || (i % 4) FROM generate_series(1, 20) i;
CREATE TABLE events_shadow (user_id int, url text, amount numeric, ts timestamptz);
CREATE TABLE kept_shadow (user_id int, amount numeric, ts timestamptz);

SELECT kappa.create_view('per_url',
  $$SELECT url, count(*) AS n, sum(amount) AS total, avg(amount) AS mean, max(ts) AS last
      FROM events GROUP BY url$$);
SELECT kappa.create_view('"Totals"',
  $$SELECT count(*) AS n, sum(amount) AS total, min(ts) AS first, max(ts) AS last,
           count(*) FILTER (WHERE amount > 50) AS big
      FROM events$$);
SELECT kappa.create_view('"per ""Country"""',
  $$SELECT u.country, count(*) AS n, sum(e.amount) AS total
      FROM events e JOIN users u ON u.user_id = e.user_id
     GROUP BY u.country HAVING count(*) > 1 ORDER BY sum(e.amount) DESC LIMIT 3$$);
SELECT kappa.create_view('"Analytics"."Daily Totals"',
  $$SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day, count(*) AS n, sum(amount) AS total
      FROM events GROUP BY 1$$);
SELECT kappa.create_view('url_rollup',
  $$SELECT url, user_id % 3 AS part, grouping(url, user_id % 3) AS level, count(*) AS n,
           sum(amount) AS total, max(ts) AS last
      FROM events GROUP BY ROLLUP (url, user_id % 3)$$);
SELECT kappa.create_view('kept_by_user',
  $$SELECT user_id, count(*) AS n, sum(amount) AS total FROM "Kept Events" GROUP BY user_id$$);

-- a view over a table with a primary key (restored before its triggers)
CREATE TABLE accounts (id int PRIMARY KEY, branch int NOT NULL, balance numeric NOT NULL);
INSERT INTO accounts SELECT i, i % 6, i * 2.5 FROM generate_series(1, 300) i;
SELECT kappa.create_view('by_branch',
  $$SELECT branch, count(*) AS n, sum(balance) AS total, max(balance) AS top FROM accounts GROUP BY branch$$);

SET ROLE kappa_owner;
SELECT kappa.create_stream('"Owned Stream"', 'k int, v numeric', retain => '7 days');
CREATE TABLE owned_shadow (k int, v numeric);
SELECT kappa.create_view('"Owned By K"',
  $$SELECT k, count(*) AS n, sum(v) AS sv FROM "Owned Stream" GROUP BY k$$);
GRANT SELECT ON "Owned By K" TO kappa_reader;
RESET ROLE;
});

# Rows: the same statement feeds the stream and its shadow.
sub feed
{
	my ($db, $from, $to, $tag) = @_;
	my $ev = "SELECT i % 23 + 1, '$tag' || (i % 7), (i % 1000) / 10.0, "
	  . "timestamptz '2024-01-01 00:00:00+00' + i * interval '7 minutes' "
	  . "FROM generate_series($from, $to) i";
	my $kept = "SELECT i % 5, i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour' "
	  . "FROM generate_series($from, $to) i";
	my $owned = "SELECT i % 4, i * 1.5 FROM generate_series($from, $to) i";
	$node->safe_psql($db, qq{
BEGIN;
INSERT INTO events $ev;
INSERT INTO events_shadow $ev;
INSERT INTO "Kept Events" $kept;
INSERT INTO kept_shadow $kept;
COMMIT;
INSERT INTO events VALUES (NULL, NULL, NULL, NULL);
INSERT INTO events_shadow VALUES (NULL, NULL, NULL, NULL);
SET ROLE kappa_owner;
BEGIN;
INSERT INTO "Owned Stream" $owned;
INSERT INTO owned_shadow $owned;
COMMIT;
});
}
feed('src', 1, 3000, 'u');

# Each view and its query as plain SQL over the shadow tables.
my %views = (
	'per_url' => q{SELECT url, count(*) AS n, sum(amount) AS total, avg(amount) AS mean,
		max(ts) AS last FROM events_shadow GROUP BY url},
	'"Totals"' => q{SELECT count(*) AS n, sum(amount) AS total, min(ts) AS first, max(ts) AS last,
		count(*) FILTER (WHERE amount > 50) AS big FROM events_shadow},
	'"per ""Country"""' => q{SELECT u.country, count(*) AS n, sum(e.amount) AS total
		FROM events_shadow e JOIN users u ON u.user_id = e.user_id
		GROUP BY u.country HAVING count(*) > 1 ORDER BY sum(e.amount) DESC LIMIT 3},
	'"Analytics"."Daily Totals"' => q{SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day,
		count(*) AS n, sum(amount) AS total FROM events_shadow GROUP BY 1},
	'url_rollup' => q{SELECT url, user_id % 3 AS part, grouping(url, user_id % 3) AS level,
		count(*) AS n, sum(amount) AS total, max(ts) AS last
		FROM events_shadow GROUP BY ROLLUP (url, user_id % 3)},
	'kept_by_user' => q{SELECT user_id, count(*) AS n, sum(amount) AS total
		FROM kept_shadow GROUP BY user_id},
	'"Owned By K"' => q{SELECT k, count(*) AS n, sum(v) AS sv FROM owned_shadow GROUP BY k},
	'by_branch' => q{SELECT branch, count(*) AS n, sum(balance) AS total, max(balance) AS top
		FROM accounts GROUP BY branch},
);
my @names = sort keys %views;

# The contents of every view, as text, in a stable order.
sub contents
{
	my ($db) = @_;
	my %c;
	for my $v (@names)
	{
		$c{$v} = $node->safe_psql($db, "SELECT t::text FROM $v t ORDER BY 1");
	}
	return \%c;
}

# Views that differ from their query over the shadows (EXCEPT ALL both
# ways), and the read-time order of the ORDER BY/LIMIT view.
sub differing
{
	my ($db) = @_;
	my @bad;
	for my $v (@names)
	{
		my $q = $views{$v};
		my $d = $node->safe_psql($db, qq{
SELECT (SELECT count(*) FROM (SELECT * FROM $v EXCEPT ALL SELECT * FROM ($q) p) a)
     + (SELECT count(*) FROM (SELECT * FROM ($q) p EXCEPT ALL SELECT * FROM $v) b)});
		push @bad, "$v ($d rows)" if $d ne '0';
	}
	my $order = $node->safe_psql($db, qq{
SELECT (SELECT array_agg(country) FROM "per ""Country""")
       IS NOT DISTINCT FROM (SELECT array_agg(country) FROM ($views{'"per ""Country"""'}) p)});
	push @bad, 'order of "per ""Country"""' if $order ne 't';
	return @bad;
}

my @bad = differing('src');
is(join(', ', @bad), '', 'source: every view equals its query over the shadows');
my $before = contents('src');
my $catalog_sql = q{
SELECT string_agg(format('%s|%s|%s', stream, columns, retention), E'\n' ORDER BY stream::text)
  FROM kappa.streams;
SELECT string_agg(format('%s|%s|%s', view, stream, groups), E'\n' ORDER BY view::text)
  FROM kappa.views;
SELECT string_agg(format('%s|%s|%s|%s', relation, name, rule, action), E'\n' ORDER BY relation::text, name)
  FROM kappa.expectations;
SELECT string_agg(id::text, ',' ORDER BY id) FROM orders;
SELECT string_agg(id::text, ',' ORDER BY id) FROM checked;};
my $catalog = $node->safe_psql('src', $catalog_sql);
note "source catalog:\n$catalog";

# ---------------------------------------------------------------- dump
my $dumpfile = $node->basedir . '/src.dump';
my $sqlfile = $node->basedir . '/src.sql';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dumpfile, '-d', $node->connstr('src') ],
	'pg_dump -Fc');
$node->command_ok([ 'pg_dump', '-Fp', '-f', $sqlfile, '-d', $node->connstr('src') ],
	'pg_dump -Fp');

# The checks on a restored database.
sub check_restored
{
	my ($db) = @_;

	my $after = contents($db);
	for my $v (@names)
	{
		is($after->{$v}, $before->{$v}, "$db: $v has the same contents as in the source");
	}
	is($node->safe_psql($db, $catalog_sql), $catalog,
		"$db: kappa.streams and kappa.views list the same streams and views");
	is($node->safe_psql($db, 'SELECT count(*) FROM "Kept Events"'),
		$node->safe_psql($db, 'SELECT count(*) FROM kept_shadow'),
		"$db: the retained rows are back");
	my @bad = differing($db);
	is(join(', ', @bad), '', "$db: every view equals its query over the restored shadows");

	# the expectations still act
	my ($r, $o, $e) = $node->psql($db, q{
INSERT INTO orders VALUES (10, 1, 'x'), (11, 0, 'y'), (12, 2, NULL);
INSERT INTO checked VALUES (10, 2), (11, 200);
SELECT string_agg(id::text, ',' ORDER BY id) FROM orders WHERE id >= 10;
SELECT string_agg(id::text, ',' ORDER BY id) FROM checked WHERE id >= 10;});
	is("$r|$o", "0|10,12\n10", "$db: the restored expectations skip violating rows and keep warned ones");
	like($e, qr/skipped 1 row of table "orders".*\n.*"positive amount"/, "$db: with a WARNING naming the expectation");
	$node->safe_psql($db, 'DELETE FROM orders WHERE id >= 10');

	# the table's capture triggers are back: its view follows its changes
	is($node->safe_psql($db, q{SELECT count(*) FROM pg_constraint WHERE conrelid = 'accounts'::regclass AND contype = 'p'}),
		'1', "$db: the table under a continuous view has its primary key back");
	$node->safe_psql($db, q{
UPDATE accounts SET balance = balance + 1, branch = (branch + 1) % 6 WHERE id % 7 = 0;
DELETE FROM accounts WHERE id % 5 = 0;
INSERT INTO accounts SELECT i, i % 4, i FROM generate_series(1001, 1050) i;});

	# new rows: existing groups (u0..u6, users 1..23) and new ones (x0..x6, days)
	feed($db, 2001, 6000, 'x');
	@bad = differing($db);
	is(join(', ', @bad), '', "$db: after new rows, every view still equals its query over the shadows");
	isnt($node->safe_psql($db, 'SELECT n FROM "Totals"'),
		$node->safe_psql('src', 'SELECT n FROM "Totals"'), "$db: the global view moved on");

	# a new view on the retained stream is backfilled from the restored rows
	$node->safe_psql($db, q{SELECT kappa.create_view('kept_new',
		$$SELECT user_id % 2 AS p, count(*) AS n, sum(amount) AS total FROM "Kept Events" GROUP BY 1$$)});
	is($node->safe_psql($db, q{
SELECT count(*) FROM (
  (SELECT * FROM kept_new EXCEPT ALL
   SELECT user_id % 2, count(*), sum(amount) FROM kept_shadow GROUP BY 1)
  UNION ALL
  (SELECT user_id % 2, count(*), sum(amount) FROM kept_shadow GROUP BY 1
   EXCEPT ALL SELECT * FROM kept_new)) d}), '0',
		"$db: a new view on the retained stream is backfilled from the restored rows");

	# ownership and grants survived
	is($node->safe_psql($db, q{SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner), ',')
		FROM kappa.view_catalog v JOIN pg_class c ON c.oid IN (v.view, v.mat)
		WHERE v.view = '"Owned By K"'::regclass}), 'kappa_owner',
		"$db: the owner's view and its materialization still belong to it");
	my ($ret, $out, $err) = $node->psql($db, q{SET ROLE kappa_owner;
INSERT INTO "Owned Stream" VALUES (1, 1), (99, 2);
INSERT INTO owned_shadow VALUES (1, 1), (99, 2);
SET ROLE kappa_reader;
SELECT n FROM "Owned By K" WHERE k = 99;});
	is("$ret|$out|$err", '0|1|', "$db: the owner still feeds its stream, the reader still reads its view");
	@bad = differing($db);
	is(join(', ', @bad), '', "$db: every view still equals its query over the shadows");
}

my $t1;
# pg_restore into a new database
$t1 = time;
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('dst'), $dumpfile ],
	'pg_restore into a new database');
check_restored('dst');
note sprintf('pg_restore: %.1fs', time - $t1);

# pg_restore -j 2: data of the extension's configuration tables is loaded
# by parallel workers in any order
$t1 = time;
$node->safe_psql('postgres', 'CREATE DATABASE dst_parallel');
$node->command_ok([ 'pg_restore', '-j', '2', '-d', $node->connstr('dst_parallel'), $dumpfile ],
	'pg_restore -j 2 into a new database');
check_restored('dst_parallel');
note sprintf('pg_restore -j 2: %.1fs', time - $t1);

# plain SQL dump through psql
$t1 = time;
$node->safe_psql('postgres', 'CREATE DATABASE dst_plain');
$node->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('dst_plain'), '-f', $sqlfile ],
	'plain dump restored with psql');
check_restored('dst_plain');
note sprintf('plain dump: %.1fs', time - $t1);

# the source did not change meanwhile
is_deeply(contents('src'), $before, 'the source views did not change');

$node->stop;
diag sprintf('003_dump_restore: %.1fs', time - $t0);
done_testing();
