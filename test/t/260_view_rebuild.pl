# Kappa reprocessing: kappa.replace_view, kappa.rebuild_view and
# kappa.cancel_rebuild against the dev broker (issue 11, points 1-3 and 5).
#
# A new version of a continuous view is built beside the live one and swapped
# in when complete.  Every scenario ends with the view compared, EXCEPT ALL
# both ways, with its new query run as plain SQL over the history: the table,
# the retained rows, or a shadow table into which this test inserts every
# good message it produces (same values, same partition and offset).
#
#  1. a view over a table, replace_view changing the filter and adding a
#     max() (retracted by recomputing its group) while pgbench inserts,
#     updates and deletes; the writer must not be held up by the build for
#     more than a moment (issue 11: the old version keeps updating until the
#     swap): writers log their changes while it builds
#     1b. held at the gate while building from a table: writes commit at
#     once, a TRUNCATE (and rows after it) waits for the build's snapshot
#     only and goes through the change log; 1c. SIGKILL of the rebuild
#     worker while it applies the logged changes: it resumes, exact; no
#     change log is left
#  2. a stream with retain 'infinity': a function the view calls is fixed,
#     rebuild_view; then replace_view adding a column; pgbench inserts; a
#     transaction that writes the stream before and after its rebuild_view
#  3. the main case: a non-retained stream fed by a running Kafka source
#     (with malformed messages); replace_view changing the filter, adding a
#     column, changing the tumbling window, while the test produces chunks
#     and readers (psql \watch: one as a role granted SELECT, one through a
#     dependent view, one polling kappa.views) run throughout: every reading
#     must be exactly one version over a prefix of each partition (counts,
#     groups and sums are checked against the offsets the reading shows),
#     never empty, never a step back to an older version, never an error;
#     name, grants, comment and the dependent view survive; produced =
#     applied + dead letters
#  5. cancel_rebuild of that view (its new version held at the gate): a
#     second rebuild and a non-owner are refused while it builds; afterwards
#     no extra relation in kappa_data, no rebuild process, the live view
#     unchanged and still updating
#  4. a stream fed by two sources, so two replay workers at once (one per
#     source); SIGKILL of a replay worker (postmaster crash restart), then a
#     plain restart during another rebuild: both resume and end exact
#  3b. readers with open transactions: the swap waits for transactions
#     older than the build's end (state swapping) without holding up other
#     readers; a REPEATABLE READ snapshot from before reads one whole
#     version, and kappa.views works throughout
#  6. a topic whose oldest messages the dev broker dropped: on_data_loss
#     'fail' refuses naming the missing offsets; 'record' builds from what is
#     there and counts the gap: produced = applied + dead letters + gaps,
#     also once the new version is live
#  7. hostile: a role that does not own the view; a trojan (operators and
#     functions shadowing pg_catalog's on the owner's search_path) that must
#     never run in the rebuild
#  8. refusals: an incompatible column list, no history, a second rebuild
#     (the other synchronous refusals are in sql/56_rebuild.sql)
#
# Builds are made observable, never timed: kt.pace() sleeps 1 ms on every
# 20th row, and kt.gate() waits on an advisory lock the test holds, but only
# in a rebuild worker (application_name 'pg_kappa rebuild of ...'); elsewhere
# they return their argument.  Both are STABLE: a view may call them.
# kt.pace() slows the build itself (a large history), not the application of
# the changes a table's writers logged meanwhile, which it would stretch
# 50-fold: the last of those steps holds the writers for its length.

use strict;
use warnings;
use IPC::Run ();
use POSIX qw(strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

my $t_start = time;
my $broker = kafka_start_broker(ev => 3, ks => 2, ks2 => 1, dl => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('view_rebuild');
my $tmp = PostgreSQL::Test::Utils::tempdir();
my ($ret, $out, $err);
my $log_pos;

$node->safe_psql('postgres', q{
CREATE SCHEMA kt;
CREATE FUNCTION kt.pace(id bigint, v int) RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF id % 20 = 0 AND current_setting('application_name') ~ '^pg_kappa (rebuild|replay)'
     AND NOT EXISTS (SELECT FROM pg_stat_activity
                      WHERE pid = pg_backend_pid() AND query ~ 'changes logged') THEN
    PERFORM pg_sleep(0.001);
  END IF;
  RETURN v;
END$$;
CREATE FUNCTION kt.gate(v int) RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF current_setting('application_name') ~ '^pg_kappa (rebuild|replay)' THEN
    PERFORM pg_advisory_xact_lock_shared(4242);
  END IF;
  RETURN v;
END$$;
-- a second gate, only in the steps that apply a table's logged changes
CREATE FUNCTION kt.gate2(v int) RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF current_setting('application_name') ~ '^pg_kappa rebuild'
     AND EXISTS (SELECT FROM pg_stat_activity
                  WHERE pid = pg_backend_pid() AND query ~ 'changes logged') THEN
    PERFORM pg_advisory_xact_lock_shared(4243);
  END IF;
  RETURN v;
END$$;
CREATE ROLE rb_reader LOGIN;
CREATE ROLE rb_other LOGIN;
});

# ---------------------------------------------------------------- helpers

# run $sql (as $role if given) with VERBOSITY verbose: errors show SQLSTATEs
sub try_sql
{
	my ($sql, %o) = @_;
	my $pre = "\\set VERBOSITY verbose\n";
	$pre .= "SET ROLE $o{role};\n" if $o{role};
	my ($r, $so, $se) = $node->psql('postgres', $pre . $sql, timeout => 60);
	return ($r, $so, $se);
}

# the number of rows by which relation $rel and plain SQL $q differ, both ways
sub diff_count
{
	my ($rel, $q) = @_;
	my ($r, $so, $se) = $node->psql('postgres',
		"SELECT count(*) FROM ((TABLE $rel EXCEPT ALL ($q)) UNION ALL (($q) EXCEPT ALL TABLE $rel)) d");
	return $r == 0 ? $so : "ERROR: $se";
}

# run a call that must succeed; a failure is a failed check, not the end
sub call_ok
{
	my ($sql) = @_;
	my ($r, $so, $se) = $node->psql('postgres', $sql, timeout => 60);
	(my $short = $sql) =~ s/\s+/ /g;
	is($r == 0 ? '' : $se, '', 'succeeds: ' . substr($short, 0, 60));
}

# the result of $sql, or its error: a check that fails does not stop the test
sub q_or_err
{
	my ($sql) = @_;
	my ($r, $so, $se) = $node->psql('postgres', $sql);
	return $r == 0 ? $so : "ERROR: $se";
}

sub view_row
{
	my ($view, $cols) = @_;
	return q_or_err("SELECT $cols FROM kappa.views WHERE view_name = '$view'");
}

# wait until $view is live again with its new definition ($marker, a regexp
# on kappa.views.query) and no rebuild error
sub wait_swapped
{
	my ($view, $marker, $what, $timeout) = @_;
	kafka_wait($node, qq{
SELECT state, history IS NULL, rebuild_error IS NULL, query ~ '$marker'
  FROM kappa.views WHERE view_name = '$view'},
		'live|t|t|t', "$what: swapped in (state live, no rebuild error, new definition)",
		$timeout // 60);
	my $e = view_row($view, 'rebuild_error');
	note "$view: rebuild_error: $e" if $e ne '';
}

# start pgbench at a steady rate with $script; output in files
sub start_pgbench
{
	my ($name, $script, $rate) = @_;
	PostgreSQL::Test::Utils::append_to_file("$tmp/$name.pgb", $script);
	my @cmd = ('pgbench', '-n', '-c', '1', '-R', $rate, '-T', '300', '-f', "$tmp/$name.pgb",
		'-h', $node->host, '-p', $node->port, 'dbname=postgres application_name=rb_writer');
	return IPC::Run::start(\@cmd, '<', \'', '>', "$tmp/$name.out", '2>', "$tmp/$name.err");
}

# while $view is building: the longest time (s) the writer (pgbench) spent
# waiting for the rebuild worker, and the writer's sequence before and after
sub watch_writer
{
	my ($view, $seq) = @_;
	my ($longest, $since, $deadline) = (0, undef, time + 60);
	my ($first, $last);
	while (time < $deadline)
	{
		my ($state, $blocked, $v, $active) = split /\|/, q_or_err(qq{
SELECT (SELECT state FROM kappa.views WHERE view_name = '$view'),
       EXISTS (SELECT FROM pg_stat_activity a, pg_stat_activity r
                WHERE a.application_name = 'rb_writer' AND r.application_name ~ '^pg_kappa rebuild'
                  AND r.pid = ANY (pg_blocking_pids(a.pid))),
       (SELECT last_value FROM $seq),
       EXISTS (SELECT FROM pg_stat_activity WHERE application_name ~ '^pg_kappa rebuild' AND state = 'active')});
		last if !defined $state || $state ne 'building';
		next unless $active eq 't';
		$first //= $v;
		$last = $v;
		if ($blocked eq 't') { $since //= time; $longest = time - $since if time - $since > $longest; }
		else { $since = undef; }
	}
	continue
	{
		usleep(20_000);
	}
	return ($longest, $first // 0, $last // 0);
}

sub stop_process
{
	my ($h) = @_;
	eval { $h->kill_kill(grace => 2); 1 };
	eval { $h->finish; 1 };
}

# wait until the server log, from $pos on, matches $re
sub wait_log
{
	my ($pos, $re, $what) = @_;
	my $deadline = time + 60;
	while (slurp_file($node->logfile, $pos) !~ $re)
	{
		return fail("$what (timed out)") if time > $deadline;
		usleep(100_000);
	}
	return pass($what);
}

sub kappa_data_relations
{
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace});
}

# ------------------------------------------- 8. synchronous refusals (TAP)

$node->safe_psql('postgres', q{
SELECT kappa.create_stream('nh', 'id int, v int');
SELECT kappa.create_view('nh_v', $$SELECT v, count(*) AS n FROM nh GROUP BY v$$);
INSERT INTO nh SELECT i, i % 3 FROM generate_series(1, 30) i;
});
($ret, $out, $err) = try_sql(q{SELECT kappa.rebuild_view('nh_v')});
like($err, qr/ERROR:  55000: .*history.*not available.*\nHINT:  \S/s,
	'no history (non-retained stream, no Kafka source): refused, 55000, with a hint');
($ret, $out, $err) = try_sql(q{SELECT kappa.replace_view('nh_v', $$SELECT v, count(*) AS n, sum(id) AS s FROM nh GROUP BY v$$)});
like($err, qr/ERROR:  55000: .*history.*not available/s, 'no history: replace_view refused too');
is(view_row('nh_v', 'state') . '|' . $node->safe_psql('postgres', 'SELECT sum(n) FROM nh_v'),
	'live|30', 'no history: the view is untouched');

# ------------------------------------------------- 1. a view over a table

$node->safe_psql('postgres', q{
CREATE TABLE orders (id bigint PRIMARY KEY, cust int NOT NULL, qty int NOT NULL, amount numeric NOT NULL);
CREATE SEQUENCE orders_seq START 100001;
INSERT INTO orders SELECT i, i % 13, i % 10, i * 0.5 FROM generate_series(1, 20000) i;
SELECT kappa.create_view('tv',
  $$SELECT cust, count(*) AS n, sum(qty) AS q, sum(amount) AS total FROM orders WHERE qty > 2 GROUP BY cust$$);
});
my $tv_new = q{SELECT cust, count(*) AS n, sum(qty) AS q, sum(amount) AS total, max(amount) AS hi FROM orders WHERE kt.pace(id, qty) > 4 GROUP BY cust};

# incompatible column lists: refused, with a hint, nothing changes
for my $bad (
	[ 'a renamed column', q{SELECT cust, count(*) AS cnt, sum(qty) AS q, sum(amount) AS total FROM orders GROUP BY cust} ],
	[ 'a retyped column', q{SELECT cust, count(*)::int AS n, sum(qty) AS q, sum(amount) AS total FROM orders GROUP BY cust} ],
	[ 'a removed column', q{SELECT cust, count(*) AS n, sum(qty) AS q FROM orders GROUP BY cust} ])
{
	($ret, $out, $err) = try_sql("SELECT kappa.replace_view('tv', \$q\$$bad->[1]\$q\$)");
	like($err, qr/ERROR:  42P16: .*\nHINT:  \S/s, "$bad->[0]: refused, 42P16, with a hint");
}
is(view_row('tv', 'state'), 'live', 'incompatible column lists: the view stays live, nothing building');

my $pg_orders = start_pgbench('orders', q{
\set a random(1, 20000)
\set q random(0, 9)
BEGIN;
INSERT INTO orders VALUES (nextval('orders_seq'), :a % 13, :q, :a * 0.25);
UPDATE orders SET qty = :q, amount = amount + 1, cust = (cust + 1) % 13 WHERE id = :a;
DELETE FROM orders WHERE id = :a + 7;
END;
}, 300);
kafka_wait($node, q{SELECT last_value > 100020 FROM orders_seq}, 't', 'table: pgbench is writing');
call_ok("SELECT kappa.replace_view('tv', \$q\$$tv_new\$q\$)");
is(view_row('tv', 'state, history, rebuild_error IS NULL'), 'building|table|t',
	'table: building from the table once replace_view returns');
my ($held, $seq1, $seq2) = watch_writer('tv', 'orders_seq');
cmp_ok($held, '<', 1, sprintf('table: the writing client is never held up by the build for more than a moment (longest %.1f s)', $held));
cmp_ok($seq2, '>', $seq1, "table: the client's writes commit while the view builds ($seq1 -> $seq2)");
wait_swapped('tv', 'pace', 'table');
$seq2 = $node->safe_psql('postgres', 'SELECT last_value FROM orders_seq');
is(diff_count('tv', $tv_new), 0, 'table: equals its new query (client still writing)');
kafka_wait($node, "SELECT last_value > $seq2 + 50 FROM orders_seq", 't', 'table: more writes after the swap');
stop_process($pg_orders);
is(diff_count('tv', $tv_new), 0, 'table: equals its new query after the client stopped');
is(q_or_err( 'SELECT count(*) > 5 FROM tv'), 't', 'table: the view is not empty');
unlike(slurp_file("$tmp/orders.err"), qr/ERROR|abort/i, 'table: the client never saw an error');

# 1b. held at the gate while building from a table
$node->safe_psql('postgres', q{
CREATE TABLE items (id bigint PRIMARY KEY, g int NOT NULL, v int NOT NULL);
INSERT INTO items SELECT i, i % 7, i % 100 FROM generate_series(1, 5000) i;
SELECT kappa.create_view('iv', $$SELECT g, count(*) AS n, sum(v) AS s FROM items GROUP BY g$$);
});
my $iv_new = q{SELECT g, count(*) AS n, sum(kt.gate(v)) AS s, min(v) AS lo FROM items GROUP BY g};
my $ig = $node->background_psql('postgres');
$ig->query_safe('SELECT pg_advisory_lock(4242)');
call_ok("SELECT kappa.replace_view('iv', \$q\$$iv_new\$q\$)");
kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}, 't',
	'table, gated: the build reaches the gate');
is(q_or_err(q{SELECT history, log IS NOT NULL, built FROM kappa.view_rebuilds WHERE view = 'iv'::regclass}),
	'table|t|f', 'table, gated: building, with a change log for the writers');
($ret, $out, $err) = $node->psql('postgres', q{
INSERT INTO items SELECT i, i % 7, i % 100 FROM generate_series(5001, 5200) i;
UPDATE items SET v = v + 1, g = (g + 1) % 7 WHERE id % 10 = 0;
DELETE FROM items WHERE id % 13 = 0;
SELECT count(*) FROM items}, timeout => 60);
is("$ret|$out", '0|4800', 'table, gated: INSERT, UPDATE and DELETE commit while the view builds');
is(q_or_err(q{SELECT sum(n) FROM iv}), '4800', 'table, gated: the live version took them');
# a TRUNCATE needs the table to itself: it waits for the build, then is logged
my $it = $node->background_psql('postgres');
$it->query_until(qr/truncating/, q{
\echo truncating
BEGIN;
TRUNCATE items;
INSERT INTO items SELECT i, i % 5, i % 50 FROM generate_series(1, 300) i;
COMMIT;
INSERT INTO items SELECT i, i % 5, i % 50 FROM generate_series(301, 400) i;
DELETE FROM items WHERE id % 9 = 0;
\echo done
});
kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE relation = 'items'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted}, 't',
	'table, gated: the TRUNCATE waits for the build');
$ig->query_safe('SELECT pg_advisory_unlock(4242)');
$it->query_until(qr/done/, '');
$it->quit;
$ig->quit;
wait_swapped('iv', 'gate', 'table, gated');
is(diff_count('iv', $iv_new), 0, 'table, gated: after TRUNCATE and writes during the build, equals its new query');
is(q_or_err(q{SELECT sum(n) FROM iv}), '356', 'table, gated: the view counts the rows after the TRUNCATE');
$node->safe_psql('postgres', q{UPDATE items SET v = 0 WHERE id % 4 = 0; DELETE FROM items WHERE id % 7 = 1});
is(diff_count('iv', $iv_new), 0, 'table, gated: live writers keep the new version exact after the swap');

# 1c. SIGKILL of the rebuild worker between the build and the catch-up:
# the build waits at the gate while the writes are logged; then the step
# that applies them waits at the second gate (4243), which the test holds
my $iv_new2 = q{SELECT g, count(*) AS n, sum(kt.gate(kt.gate2(v))) AS s, min(v) AS lo, max(v) AS hi FROM items GROUP BY g};
$ig = $node->background_psql('postgres');
$ig->query_safe('SELECT pg_advisory_lock(4242), pg_advisory_lock(4243)');
call_ok("SELECT kappa.replace_view('iv', \$q\$$iv_new2\$q\$)");
kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}, 't',
	'table, kill: the build reaches the gate');
$node->safe_psql('postgres', q{
INSERT INTO items SELECT i, i % 5, i % 50 FROM generate_series(401, 600) i;
UPDATE items SET v = v + 2 WHERE id % 3 = 0;
DELETE FROM items WHERE id % 11 = 0});
# let the build through; the step applying the logged rows stops at 4243
$ig->query_safe('SELECT pg_advisory_unlock(4242)');
kafka_wait($node, q{
SELECT b.built AND EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243 AND NOT granted)
  FROM kappa.view_rebuilds b WHERE b.view = 'iv'::regclass}, 't',
	'table, kill: built, and applying the changes logged meanwhile (at the gate)');
my $tvictim = $node->safe_psql('postgres', q{
SELECT string_agg(l.pid || ' ' || a.application_name, ',')
  FROM pg_locks l JOIN pg_stat_activity a USING (pid)
 WHERE l.locktype = 'advisory' AND l.objid = 4243 AND NOT l.granted});
like($tvictim, qr/^\d+ pg_kappa rebuild of iv$/, "table, kill: the rebuild worker waits ($tvictim)");
($tvictim) = $tvictim =~ /^(\d+) /;
$log_pos = -s $node->logfile;
if (defined $tvictim && $tvictim > 1) { kill 'KILL', $tvictim; }
else { fail('table, kill: no rebuild worker to kill'); }
wait_log($log_pos, qr/terminated by signal 9.*reinitializing/s, 'table, kill: the postmaster saw the worker killed');
eval { $ig->quit; 1 };
kafka_wait($node, 'SELECT 1', 1, 'table, kill: the server is back');
$node->safe_psql('postgres', q{UPDATE items SET g = (g + 1) % 5 WHERE id % 17 = 0});
wait_swapped('iv', 'gate2', 'table, kill: the rebuild resumed and finished', 90);
is(diff_count('iv', $iv_new2), 0, 'table, kill: equals its new query, nothing applied twice or lost');
is(q_or_err(q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'kappa_data' AND c.relname ~ '_log$'}), '0',
	'table: no change log is left after the swaps');

# ------------------------------------------ 2. a stream retained forever

$node->safe_psql('postgres', q{
SELECT kappa.create_stream('rs', 'id bigint, b int, v int', retain => 'infinity');
CREATE SEQUENCE rs_seq;
CREATE FUNCTION kt.bucket(b int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$BEGIN RETURN b % 5; END$$;
INSERT INTO rs SELECT nextval('rs_seq'), i % 17, i % 100 FROM generate_series(1, 20000) i;
SELECT kappa.create_view('rv',
  $$SELECT kt.bucket(kt.pace(id, b)) AS g, count(*) AS n, sum(v) AS s FROM rs GROUP BY 1$$);
});
my $rv_q1 = q{SELECT kt.bucket(kt.pace(id, b)) AS g, count(*) AS n, sum(v) AS s FROM rs GROUP BY 1};
my $rv_q2 = q{SELECT kt.bucket(kt.pace(id, b)) AS g, count(*) AS n, sum(v) AS s, max(v) AS hi FROM rs GROUP BY 1};
my $pg_rs = start_pgbench('rs', q{
\set b random(0, 16)
\set v random(0, 99)
INSERT INTO rs VALUES (nextval('rs_seq'), :b, :v);
}, 300);
kafka_wait($node, q{SELECT last_value > 20020 FROM rs_seq}, 't', 'retained: pgbench is inserting');
# the bug fix: bucket() changes; the live view is now wrong until rebuilt
$node->safe_psql('postgres',
	q{CREATE OR REPLACE FUNCTION kt.bucket(b int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$BEGIN RETURN b % 4; END$$});
call_ok(q{SELECT kappa.rebuild_view('rv')});
is(view_row('rv', 'state, history'), 'building|retained', 'retained: rebuild_view builds from the retained rows');
($held, $seq1, $seq2) = watch_writer('rv', 'rs_seq');
cmp_ok($held, '<', 1, sprintf('retained: the inserting client is never held up by the build for more than a moment (longest %.1f s)', $held));
cmp_ok($seq2, '>', $seq1, "retained: the client's inserts commit while the view builds ($seq1 -> $seq2)");
wait_swapped('rv', 'bucket', 'retained: rebuild_view');
is(diff_count('rv', $rv_q1), 0, 'retained: after rebuild_view, equals its query with the fixed function');
call_ok("SELECT kappa.replace_view('rv', \$q\$$rv_q2\$q\$)");
is(view_row('rv', 'state, history'), 'building|retained', 'retained: replace_view builds from the retained rows');
wait_swapped('rv', 'AS hi', 'retained: replace_view adding a column');
is(diff_count('rv', $rv_q2), 0, 'retained: after replace_view, equals its new query (inserts going on)');
stop_process($pg_rs);
is(diff_count('rv', $rv_q2), 0, 'retained: equals its new query after the inserts stopped');
is(q_or_err( 'SELECT count(*), sum(n) = (SELECT count(*) FROM rs) FROM rv'), '4|t',
	'retained: four groups, every retained row counted once');
unlike(slurp_file("$tmp/rs.err"), qr/ERROR|abort/i, 'retained: the inserting client never saw an error');

# the transaction that calls rebuild_view also writes the stream, before
# and after the call: its rows are inside the rebuild's cut and it does not
# feed the new version, so each counts once; later writes are fed
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO rs SELECT nextval('rs_seq'), i % 17, i % 100 FROM generate_series(1, 500) i;
SELECT kappa.rebuild_view('rv');
INSERT INTO rs SELECT nextval('rs_seq'), i % 17, i % 100 FROM generate_series(1, 700) i;
COMMIT;
INSERT INTO rs SELECT nextval('rs_seq'), i % 17, i % 100 FROM generate_series(1, 300) i;
});
wait_swapped('rv', 'AS hi', 'retained: rebuild_view by a transaction that writes the stream');
$node->safe_psql('postgres',
	q{INSERT INTO rs SELECT nextval('rs_seq'), i % 17, i % 100 FROM generate_series(1, 200) i});
is(diff_count('rv', $rv_q2), 0,
	'retained: rows written by the rebuilding transaction, before and after the call, count once');

# ------------------------------- 3. the main case: a non-retained stream

my $epoch0 = 1704067200;    # 2024-01-01 00:00:00 UTC, the date_bin origin
my $bin = q{timestamptz '2024-01-01 00:00:00+00'};
my %evq = (
	A => qq{SELECT kafka_partition AS p, date_bin('10 minutes', ts, $bin) AS w, count(*) AS n, max(kafka_offset) AS mo FROM ev WHERE amount % 2 = 0 GROUP BY 1, 2},
	B => qq{SELECT kafka_partition AS p, date_bin('10 minutes', ts, $bin) AS w, count(*) AS n, max(kafka_offset) AS mo FROM ev WHERE kt.pace(id, amount) % 3 = 0 GROUP BY 1, 2},
	C => qq{SELECT kafka_partition AS p, date_bin('10 minutes', ts, $bin) AS w, count(*) AS n, max(kafka_offset) AS mo, sum(amount) AS total FROM ev WHERE kt.pace(id, amount) % 3 = 0 GROUP BY 1, 2},
	D => qq{SELECT kafka_partition AS p, date_bin('1 hour', ts, $bin) AS w, count(*) AS n, max(kafka_offset) AS mo, sum(amount) AS total FROM ev WHERE kt.pace(id, amount) % 3 = 0 GROUP BY 1, 2});
sub shadow_q { my ($v) = @_; (my $q = $evq{$v}) =~ s/ FROM ev / FROM ev_shadow /; return $q; }
my @versions = (
	{ name => 'A', mod => 2, width => 600,  total => 0 },
	{ name => 'B', mod => 3, width => 600,  total => 0 },
	{ name => 'C', mod => 3, width => 600,  total => 1 },
	{ name => 'D', mod => 3, width => 3600, total => 1 });

$node->safe_psql('postgres', qq{
SELECT kappa.create_stream('ev', 'id bigint, k int, amount int, ts timestamptz, kafka_partition int, kafka_offset bigint');
CREATE TABLE ev_shadow (id bigint, k int, amount int, ts timestamptz, kafka_partition int, kafka_offset bigint);
SELECT kappa.create_view('ev_all', \$\$SELECT count(*) AS n FROM ev\$\$);
SELECT kappa.create_view('ev_win', \$q\$$evq{A}\$q\$);
COMMENT ON VIEW ev_win IS 'windows of ev';
GRANT SELECT ON ev_win TO rb_reader;
CREATE VIEW ev_win_dep AS SELECT p, w, n, mo FROM ev_win;
SELECT kappa.create_kafka_source('ev_src', target => 'ev', topic => 'ev', brokers => '$bs',
    options => '{"batch_size": 200}');
});
my $ev_oid = $node->safe_psql('postgres', q{SELECT 'ev_win'::regclass::oid});

# messages: i = 1, 2, ...; partition i % 3; every 101st malformed.
# @cum[version][partition][offset] = [n, groups, sum, last bin]: what a
# version holds after that offset of that partition
my @part_len = (0, 0, 0);
my @cum;
my $ev_next = 1;
my ($ev_produced, $ev_bad) = (0, 0);

sub ev_produce
{
	my ($count) = @_;
	my (@msgs, @rows);
	for my $i ($ev_next .. $ev_next + $count - 1)
	{
		my $p = $i % 3;
		my $off = $part_len[$p]++;
		my $bad = $i % 101 == 0;
		my ($k, $amount, $epoch) = ($i % 7, ($i * 7) % 50, $epoch0 + $i);
		my $ts = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($epoch));
		if ($bad)
		{
			push @{ $msgs[$p] }, qq({"id": $i, "amount": );
			$ev_bad++;
		}
		else
		{
			push @{ $msgs[$p] }, qq({"id": $i, "k": $k, "amount": $amount, "ts": "$ts"});
			push @rows, "($i,$k,$amount,'$ts',$p,$off)";
		}
		for my $v (0 .. $#versions)
		{
			my $prev = $off > 0 ? $cum[$v][$p][ $off - 1 ] : [ 0, 0, 0, -1 ];
			my @c = @$prev;
			if (!$bad && $amount % $versions[$v]{mod} == 0)
			{
				my $b = int(($epoch - $epoch0) / $versions[$v]{width});
				$c[0]++;
				$c[2] += $amount;
				if ($b != $c[3]) { $c[1]++; $c[3] = $b; }
			}
			$cum[$v][$p][$off] = \@c;
		}
	}
	$ev_next += $count;
	for my $p (0 .. 2)
	{
		kafka_produce($broker, 'ev', $msgs[$p], partition => $p) if $msgs[$p];
	}
	$node->safe_psql('postgres', 'INSERT INTO ev_shadow VALUES ' . join(',', @rows)) if @rows;
	$ev_produced += $count;
}

# every produced message applied to the live views or a dead letter
sub ev_wait_applied
{
	my ($what) = @_;
	kafka_wait($node, q{
SELECT (SELECT n FROM ev_all) + dead_letters FROM kappa.sources WHERE source = 'ev_src'},
		$ev_produced, "$what: produced = applied + dead letters ($ev_produced)");
}

ev_produce(21000);
ev_wait_applied('history');
is(diff_count('ev_win', shadow_q('A')), 0, 'version A equals its query over the shadow table');

# two readers polling from their own connections until the end of 5.
my %readers;
sub start_reader
{
	my ($name, $user, $sql, $interval) = @_;
	$interval //= 0.05;
	PostgreSQL::Test::Utils::append_to_file("$tmp/$name.sql", "$sql \\watch $interval\n");
	my @cmd = ('psql', '-X', '-At', '-d', $node->connstr('postgres') . ($user ? " user=$user" : '') . " application_name=$name",
		'-f', "$tmp/$name.sql");
	$readers{$name} = IPC::Run::start(\@cmd, '<', \'', '>', "$tmp/$name.out", '2>', "$tmp/$name.err");
}
start_reader('reader_grantee', 'rb_reader', q{
SELECT 'R ' || coalesce((SELECT string_agg(concat_ws(':', p, n, mo, g, coalesce(t::text, '-')), ' ' ORDER BY p)
  FROM (SELECT p, sum(n) AS n, max(mo) AS mo, count(*) AS g, sum((to_jsonb(v) ->> 'total')::bigint) AS t
          FROM ev_win v GROUP BY p) x), 'EMPTY')});
start_reader('reader_dependent', undef, q{
SELECT 'R ' || coalesce((SELECT string_agg(concat_ws(':', p, n, mo, g), ' ' ORDER BY p)
  FROM (SELECT p, sum(n) AS n, max(mo) AS mo, count(*) AS g FROM ev_win_dep GROUP BY p) x), 'EMPTY')});
# and kappa.views, as a monitoring tool would poll it, as fast as it can
start_reader('reader_catalog', 'rb_reader', q{
SELECT 'C ' || count(*) || ' ' || string_agg(view_name || ':' || state || ':' || length(query), ' ' ORDER BY view_name)
  FROM kappa.views}, 0.01);
my $readers_t0 = time;

# replace_view($from, $to, $marker): while the new version builds, produce
# chunks of 600 messages, each applied before the next
sub ev_replace
{
	my ($to, $marker, $what) = @_;
	# the live source has committed everything: what is to replay is known
	ev_wait_applied("$what: before");
	kafka_wait($node, q{SELECT lag FROM kappa.sources WHERE source = 'ev_src'}, 0, "$what: no lag");
	my $at_registration = $ev_produced;
	call_ok("SELECT kappa.replace_view('ev_win', \$q\$$evq{$to}\$q\$)");
	is(view_row('ev_win', 'state, history, rebuild_error IS NULL'), 'building|kafka|t',
		"$what: building from Kafka once replace_view returns");
	kafka_wait($node, q{
SELECT state = 'live' OR (replayed > 0 AND to_replay >= 0 AND (eta IS NULL OR eta >= interval '0'))
  FROM kappa.views WHERE view_name = 'ev_win'}, 't', "$what: progress shown");
	my ($state, $total, $ok) = split /\|/, view_row('ev_win', 'state, to_replay, replayed <= to_replay');
	is("$total|$ok", "$at_registration|t",
		"$what: to_replay = the committed offsets at registration ($at_registration), replayed <= to_replay")
	  if $state eq 'building';
	my ($chunks, $deadline) = (0, time + 60);
	while (view_row('ev_win', 'state') ne 'live' && time < $deadline)
	{
		ev_produce(600);
		ev_wait_applied("$what: chunk " . ++$chunks);
	}
	cmp_ok($chunks, '>', 0, "$what: $chunks chunks produced and applied during the build");
	wait_swapped('ev_win', $marker, $what);
	ev_wait_applied("$what: after the swap");
	is(diff_count('ev_win', shadow_q($to)), 0, "$what: equals its query over every produced message");
}

ev_replace('B', 'pace', 'B: replace_view changing the filter');
ev_replace('C', 'AS total', 'C: replace_view adding a column');
ev_replace('D', '01:00:00', 'D: replace_view changing the window');
is(q_or_err( qq{
SELECT 'ev_win'::regclass::oid = $ev_oid, obj_description('ev_win'::regclass, 'pg_class'),
       has_table_privilege('rb_reader', 'ev_win', 'SELECT'), has_table_privilege('rb_other', 'ev_win', 'SELECT'),
       (SELECT count(*) FROM ev_win_dep) = (SELECT count(*) FROM ev_win)}),
	't|windows of ev|t|f|t', 'the view keeps its name (and oid), comment, grants and dependent view');
is(q_or_err( q{SELECT dead_letters FROM kappa.sources WHERE source = 'ev_src'}),
	$ev_bad, "every malformed message is one dead letter ($ev_bad)");

# ----------------------------------------------------- 5. cancel_rebuild

# the new version (D through the gate) is held at the gate until cancelled
(my $ev_gated = $evq{D}) =~ s/sum\(amount\)/sum(kt.gate(amount))/;
my $rels = kappa_data_relations();
my $gs = $node->background_psql('postgres');
$gs->query_safe('SELECT pg_advisory_lock(4242)');
call_ok("SELECT kappa.replace_view('ev_win', \$q\$$ev_gated\$q\$)");
kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}, 't',
	'cancel: the rebuild reaches the gate');
$gs->query_safe('SELECT pg_advisory_unlock(4242), pg_advisory_lock(4242)');
kafka_wait($node, q{SELECT state, replayed > 0 FROM kappa.views WHERE view_name = 'ev_win'},
	'building|t', 'cancel: a rebuild is replaying');
cmp_ok(kappa_data_relations(), '>', $rels, 'cancel: the building version has its relations in kappa_data');
# 8. a second rebuild while one runs
($ret, $out, $err) = try_sql(q{SELECT kappa.rebuild_view('ev_win')});
like($err, qr/ERROR:  55006: .*\nHINT:  .*cancel_rebuild/s, 'a second rebuild_view is refused (55006), hint: cancel_rebuild');
($ret, $out, $err) = try_sql("SELECT kappa.replace_view('ev_win', \$q\$$evq{D}\$q\$)");
like($err, qr/ERROR:  55006: .*\nHINT:  .*cancel_rebuild/s, 'a replace_view while one runs is refused (55006)');
# 7. a role that does not own the view
for my $call (q{SELECT kappa.cancel_rebuild('ev_win')}, q{SELECT kappa.rebuild_view('ev_win')},
	"SELECT kappa.replace_view('ev_win', \$q\$$evq{D}\$q\$)")
{
	($ret, $out, $err) = try_sql($call, role => 'rb_other');
	like($err, qr/ERROR:  42501: /, "not the owner: refused (42501): $call");
}
is(view_row('ev_win', 'state'), 'building', 'cancel: the refusals left the rebuild running');
is(q_or_err( q{SELECT kappa.cancel_rebuild('ev_win')}), 't', 'cancel_rebuild: true');
is(view_row('ev_win', 'state, history'), 'live|', 'cancel: state live at once');
$gs->query_safe('SELECT pg_advisory_unlock(4242)');
eval { $gs->quit; 1 };
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE application_name ~ '^pg_kappa (rebuild|replay)'}, 0,
	'cancel: no rebuild process left');
kafka_wait($node, q{SELECT count(*) FROM pg_class WHERE relnamespace = 'kappa_data'::regnamespace}, $rels,
	"cancel: the building relations are gone ($rels in kappa_data)");
ev_produce(600);
ev_wait_applied('cancel: the live view still updates');
is(diff_count('ev_win', shadow_q('D')), 0, 'cancel: the live view is version D over every message');
($ret, $out, $err) = try_sql(q{SELECT kappa.cancel_rebuild('ev_win')});
is($out, 'f', 'cancel_rebuild with nothing building: false');
like($err, qr/NOTICE:  /, 'cancel_rebuild with nothing building: a notice');

# the readers: every reading one version over a prefix of every partition
# (the counts, groups and sums its max offsets imply), never empty, never
# back to an older version, and at the end version D
# (a reader whose psql met an error has stopped: its .err file says why)
is(q_or_err(q{SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity
               WHERE application_name IN ('reader_dependent', 'reader_grantee')}),
	'reader_dependent,reader_grantee', 'the two readers of the view are still connected');
my $readers_secs = time - $readers_t0;
stop_process($_) for values %readers;

sub check_readings
{
	my ($name, $with_total) = @_;
	my @lines = grep { /^R / } split /\n/, slurp_file("$tmp/$name.out");
	my ($floor, $bad, $back, $regress, %seen, @prev) = (0, 0, 0, 0);
	my @order;
	for my $line (@lines)
	{
		my @parts = map { [ split /:/ ] } split / /, substr($line, 2);
		my @match;
		if (@parts == 3 && join(',', map { $_->[0] } @parts) eq '0,1,2')
		{
		  VERSION: for my $v (0 .. $#versions)
			{
				for my $r (@parts)
				{
					my ($p, $n, $mo, $g, $t) = @$r;
					my $c = $mo =~ /^\d+$/ ? $cum[$v][$p][$mo] : undef;
					next VERSION unless $c && $c->[0] == $n && $c->[1] == $g;
					next VERSION if $with_total && $t ne ($versions[$v]{total} ? $c->[2] : '-');
				}
				push @match, $v;
			}
		}
		if (!@match)
		{
			note "$name: not one version over a prefix: $line" if $bad++ < 5;
			next;
		}
		my @ok = grep { $_ >= $floor } @match;
		if (!@ok)
		{
			note "$name: back to an older version: $line" if $back++ < 5;
			next;
		}
		my $v = $ok[0];
		if ($v == $floor && @prev)
		{
			for my $i (0 .. 2)
			{
				$regress++ if $parts[$i][2] < $prev[$i][2] || $parts[$i][1] < $prev[$i][1];
			}
		}
		push @order, $versions[$v]{name} unless @order && $order[-1] eq $versions[$v]{name};
		$floor = $v;
		@prev = @parts;
	}
	note "$name: " . scalar(@lines) . " readings, versions seen in order: @order";
	cmp_ok(scalar(@lines), '>=', 20, "$name: polled throughout (" . scalar(@lines) . " readings)");
	is($bad, 0, "$name: every reading is one whole version, never empty, never partial, never a mix");
	is($back, 0, "$name: never back to an older version");
	is($regress, 0, "$name: within a version, counts and offsets never decrease");
	is($order[-1] // '', 'D', "$name: ends on version D");
	is(slurp_file("$tmp/$name.err"), '', "$name: no error");
}
check_readings('reader_grantee', 1);
check_readings('reader_dependent', 0);
my @catalog = grep { /^C / } split /\n/, slurp_file("$tmp/reader_catalog.out");
cmp_ok(scalar(@catalog), '>=', 20, 'reader_catalog: kappa.views polled throughout (' . scalar(@catalog) . ' readings)');
is(slurp_file("$tmp/reader_catalog.err"), '', 'reader_catalog: kappa.views never failed during the swaps');
note sprintf("readers ran %.1f s", $readers_secs);

# ------------------------- 4. SIGKILL of a replay worker; a restart
# (two sources feed the stream: a replay worker each)

$node->safe_psql('postgres', qq{
SELECT kappa.create_stream('ks', 'id bigint, g int, v int');
CREATE TABLE ks_shadow (id bigint, g int, v int);
SELECT kappa.create_view('ks_v', \$\$SELECT g, count(*) AS n, sum(v) AS s FROM ks GROUP BY g\$\$);
SELECT kappa.create_kafka_source('ks_src', target => 'ks', topic => 'ks', brokers => '$bs',
    options => '{"batch_size": 100}');
SELECT kappa.create_kafka_source('ks_src2', target => 'ks', topic => 'ks2', brokers => '$bs',
    options => '{"batch_size": 100}');
});
my $ks_q = q{SELECT g, count(*) AS n, sum(kt.gate(v)) AS s, max(id) AS hi FROM ks GROUP BY g};
(my $ks_shadow_q = $ks_q) =~ s/ FROM ks / FROM ks_shadow /;
my ($ks_next, $ks_produced, $ks_bad) = (1, 0, 0);

sub ks_produce
{
	my ($count) = @_;
	my (@msgs, @rows);
	for my $i ($ks_next .. $ks_next + $count - 1)
	{
		# partitions 0 and 1 of ks, and ks2 (a second source)
		if ($i % 97 == 0) { push @{ $msgs[ $i % 3 ] }, qq({"id": $i, "g": ); $ks_bad++; next; }
		push @{ $msgs[ $i % 3 ] }, sprintf('{"id": %d, "g": %d, "v": %d}', $i, $i % 5, $i % 10);
		push @rows, sprintf('(%d,%d,%d)', $i, $i % 5, $i % 10);
	}
	$ks_next += $count;
	kafka_produce($broker, 'ks', $msgs[$_], partition => $_) for (0, 1);
	kafka_produce($broker, 'ks2', $msgs[2], partition => 0);
	$node->safe_psql('postgres', 'INSERT INTO ks_shadow VALUES ' . join(',', @rows));
	$ks_produced += $count;
}

sub ks_wait_applied
{
	my ($what) = @_;
	kafka_wait($node, q{
SELECT (SELECT sum(n) FROM ks_v) + sum(dead_letters) FROM kappa.sources WHERE source IN ('ks_src', 'ks_src2')},
		$ks_produced, "$what: produced = applied + dead letters ($ks_produced)", 90);
}

# the gate: the rebuild waits on advisory lock 4242 while we hold it; each
# release-and-take lets at least one of its batches through
sub gate_waiter
{
	return $node->safe_psql('postgres', q{
SELECT string_agg(l.pid || ' ' || a.application_name, ',')
  FROM pg_locks l JOIN pg_stat_activity a USING (pid)
 WHERE l.locktype = 'advisory' AND l.objid = 4242 AND NOT l.granted});
}

sub gated_progress
{
	my ($gs, $what) = @_;
	kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}, 't',
		"$what: the rebuild reaches the gate");
	for (1 .. 5)
	{
		last if view_row('ks_v', 'replayed > 0') eq 't';
		$gs->query_safe('SELECT pg_advisory_unlock(4242), pg_advisory_lock(4242)');
	}
	kafka_wait($node, q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}, 't',
		"$what: the rebuild waits at the gate again");
	is(view_row('ks_v', 'state, history, replayed > 0, replayed < to_replay'), 'building|kafka|t|t',
		"$what: building, part replayed, part to replay");
}

ks_produce(40000);
ks_wait_applied('kill: history');
$gs = $node->background_psql('postgres');
$gs->query_safe('SELECT pg_advisory_lock(4242)');
call_ok("SELECT kappa.replace_view('ks_v', \$q\$$ks_q\$q\$)");
gated_progress($gs, 'kill');
kafka_wait($node, q{
SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity
 WHERE application_name ~ '^pg_kappa rebuild of ks_v: replay of '},
	'pg_kappa rebuild of ks_v: replay of ks_src,pg_kappa rebuild of ks_v: replay of ks_src2',
	'kill: one replay worker per source, at the same time');
# the live version keeps updating while the rebuild is held
ks_produce(1000);
ks_wait_applied('kill: while the rebuild is held, the live view');
my $waiter = gate_waiter();
like($waiter, qr/^\d+ .*rebuild/, "kill: the process replaying is the rebuild worker ($waiter)");
my ($victim) = $waiter =~ /^(\d+) /;
$log_pos = -s $node->logfile;
# (never kill(KILL, 0): that would be this test's own process group)
if (defined $victim && $victim > 1)
{
	kill 'KILL', $victim;
}
else
{
	fail('kill: no rebuild worker to kill');
}
wait_log($log_pos, qr/terminated by signal 9.*reinitializing/s, 'kill: the postmaster saw the worker killed and reinitialized');
kafka_wait($node, 'SELECT 1', 1, 'kill: the server is back after the crash restart');
eval { $gs->quit; 1 };
ks_produce(1000);
wait_swapped('ks_v', 'AS hi', 'kill: the rebuild resumed and finished', 90);
ks_wait_applied('kill: after the swap');
is(diff_count('ks_v', $ks_shadow_q), 0, 'kill: exact, nothing counted twice or lost');

# a plain restart (fast shutdown) while building
$gs = $node->background_psql('postgres');
$gs->query_safe('SELECT pg_advisory_lock(4242)');
call_ok(q{SELECT kappa.rebuild_view('ks_v')});
gated_progress($gs, 'restart');
$node->restart;
eval { $gs->quit; 1 };
kafka_wait($node, q{SELECT state FROM kappa.views WHERE view_name = 'ks_v'}, 'live',
	'restart: the rebuild resumed after the restart and finished', 90);
is(view_row('ks_v', 'rebuild_error IS NULL'), 't', 'restart: no rebuild error');
ks_produce(1000);
ks_wait_applied('restart: after the swap');
is(diff_count('ks_v', $ks_shadow_q), 0, 'restart: exact, nothing counted twice or lost');
is(q_or_err( q{SELECT sum(dead_letters) FROM kappa.sources WHERE source IN ('ks_src', 'ks_src2')}),
	$ks_bad, "kill, restart: every malformed message is one dead letter ($ks_bad)");

# ------------------------------------ 3b. readers with open transactions

# (ks_v now replays fast: nobody holds the gate)
my $ks_sum = q_or_err('SELECT sum(n) FROM ks_v');
is($ks_sum, $ks_produced - $ks_bad, 'open transactions: ks_v holds every good message');
my $lt = $node->background_psql('postgres', on_error_stop => 0);

# a reader's transaction that has read the view stays open while a swap
# comes: the swap may wait for it, but readers arriving meanwhile must not
# (a swap never blocks readers for more than a moment)
$lt->query_safe('BEGIN; SELECT sum(n) FROM ks_v;');
call_ok(q{SELECT kappa.rebuild_view('ks_v')});
kafka_wait($node, q{SELECT state FROM kappa.views WHERE view_name = 'ks_v'}, 'swapping',
	'open transactions: the rebuild is replayed and swapping while a reader\'s transaction is open');
($ret, $out, $err) = $node->psql('postgres', q{SET statement_timeout = '2s'; SELECT sum(n) FROM ks_v});
is("$out$err", $ks_sum, 'open transactions: a new reader is not held up by the pending swap');
$lt->query_safe('COMMIT');
kafka_wait($node, q{SELECT state FROM kappa.views WHERE view_name = 'ks_v'}, 'live',
	'open transactions: the swap happens once that transaction ends');

# a REPEATABLE READ snapshot taken before the build ends: the swap waits
# for it (as CREATE INDEX CONCURRENTLY waits for older snapshots), so the
# view read in it is one whole version (never an empty view); new readers
# are not held up meanwhile, and kappa.views works throughout
$lt->{stderr} = '';
$lt->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ks_shadow;');
call_ok(q{SELECT kappa.rebuild_view('ks_v')});
kafka_wait($node, q{SELECT state FROM kappa.views WHERE view_name = 'ks_v'}, 'swapping',
	'repeatable read: the swap waits for the older snapshot');
($ret, $out, $err) = $node->psql('postgres', q{SET statement_timeout = '2s'; SELECT sum(n) FROM ks_v});
is("$out$err", $ks_sum, 'repeatable read: a new reader is not held up while the swap waits');
$lt->{stderr} = '';
$out = $lt->query(q{SELECT coalesce(sum(n), -1) FROM ks_v});
is($out . $lt->{stderr}, $ks_sum, 'repeatable read: the view read in the old snapshot is one whole version');
$lt->{stderr} = '';
$out = $lt->query(q{SELECT count(query) FROM kappa.views WHERE view_name = 'ks_v'});
is($out . $lt->{stderr}, 1, 'repeatable read: kappa.views (with the query) works in it');
$lt->query('COMMIT');
kafka_wait($node, q{SELECT state FROM kappa.views WHERE view_name = 'ks_v'}, 'live',
	'repeatable read: the swap happens once that transaction ends');
is(q_or_err('SELECT sum(n) FROM ks_v'), $ks_sum, 'repeatable read: after the swap the view is whole');
eval { $lt->quit; 1 };

# ------------------------------------------------------ 6. data loss

# one topic read by two sources, one per policy; 60,000 messages of ~100
# bytes, produced in chunks read before the next (the live sources lose
# nothing), after which the dev broker holds only the newest ~5 MiB
$node->safe_psql('postgres', qq{
SELECT kappa.create_stream('dl_f', 'id bigint, amount int, pad text');
SELECT kappa.create_stream('dl_r', 'id bigint, amount int, pad text');
SELECT kappa.create_view('dlv_f', \$\$SELECT count(*) AS n, sum(amount) AS total FROM dl_f\$\$);
SELECT kappa.create_view('dlv_r', \$\$SELECT count(*) AS n, sum(amount) AS total FROM dl_r\$\$);
SELECT kappa.create_kafka_source('dlf', target => 'dl_f', topic => 'dl', brokers => '$bs');
SELECT kappa.create_kafka_source('dlr', target => 'dl_r', topic => 'dl', brokers => '$bs',
    on_data_loss => 'record');
});
my %dl_bad = map { $_ => 1 } (7, 42, 3000, 50001, 55555, 59999);
my $pad = 'x' x 75;
my $dl_produced = 0;
for my $chunk (0 .. 5)
{
	my @msgs = map {
		$dl_bad{$_} ? qq({"id": $_, "pad": "$pad) : qq({"id": $_, "amount": @{[ $_ % 11 ]}, "pad": "$pad"})
	} ($chunk * 10000 .. $chunk * 10000 + 9999);
	$dl_produced += kafka_produce($broker, 'dl', \@msgs);
	kafka_wait($node, q{
SELECT string_agg(((SELECT n FROM dlv_f) + dead_letters)::text || ',' || ((SELECT n FROM dlv_r) + dead_letters)::text
                  || ',' || lost_messages, ';' ORDER BY source)
  FROM kappa.sources WHERE source IN ('dlf', 'dlr')},
		"$dl_produced,$dl_produced,0;$dl_produced,$dl_produced,0", "data loss: chunk $chunk read by both, nothing lost");
}
my ($lo_out, $lo_err) = ('', '');
IPC::Run::run([ 'kcat', '-C', '-b', $bs, '-t', 'dl', '-p', '0', '-o', 'beginning', '-c', '1', '-e', '-f', '%o\n' ],
	'<', \'', '>', \$lo_out, '2>', \$lo_err) or die "kcat failed: $lo_err";
my ($lo) = $lo_out =~ /^(\d+)$/m;
ok($lo > 3000 && $lo <= 50000, "data loss: the broker dropped the oldest messages (low watermark $lo)");
my $last = $lo - 1;

my $dl_new = q{SELECT count(*) AS n, sum(kt.gate(amount)) AS total, min(id) AS lo_id FROM dl_};
($ret, $out, $err) = try_sql("SELECT kappa.replace_view('dlv_f', \$q\$${dl_new}f\$q\$)");
like($err, qr/ERROR:  55000: .*partition 0: offsets 0 to $last\b/s,
	"on_data_loss 'fail': refused (55000), naming the missing offsets 0 to $last");
is(view_row('dlv_f', 'state') . '|' . q_or_err('SELECT n FROM dlv_f'),
	'live|' . ($dl_produced - keys %dl_bad), "on_data_loss 'fail': the live view untouched");

# 'record': held at the gate while building, to read its progress
my @kept = grep { !$dl_bad{$_} } ($lo .. $dl_produced - 1);
my $dead_kept = grep { $_ >= $lo } keys %dl_bad;
my $total = 0;
$total += $_ % 11 for @kept;
$gs = $node->background_psql('postgres');
$gs->query_safe('SELECT pg_advisory_lock(4242)');
call_ok("SELECT kappa.replace_view('dlv_r', \$q\$${dl_new}r\$q\$)");
is(view_row('dlv_r', 'state, history, rebuild_gaps, to_replay'), "building|kafka|$lo|" . ($dl_produced - $lo),
	"on_data_loss 'record': building from offset $lo on, the $lo missing messages counted as gaps");
$gs->query_safe('SELECT pg_advisory_unlock(4242)');
eval { $gs->quit; 1 };
wait_swapped('dlv_r', 'lo_id', "on_data_loss 'record'");
is(q_or_err('SELECT n, total, lo_id FROM dlv_r'),
	scalar(@kept) . "|$total|$kept[0]", "on_data_loss 'record': built from offsets $lo on, exactly");
is(q_or_err(q{SELECT n + } . $dead_kept . q{ + (SELECT history_gaps FROM kappa.views WHERE view_name = 'dlv_r') FROM dlv_r}),
	$dl_produced, "on_data_loss 'record': after the swap, produced ($dl_produced) = applied + dead letters ($dead_kept) + recorded gaps ($lo)");

# ------------------------------------------------------------ 7. trojan

# rb_troj owns a view over its table; then it puts, in a schema searched
# before pg_catalog, operators and functions that shadow pg_catalog's and
# calls replace_view.  Each trojan logs a warning and a row, and answers
# like the original: it must never run.
$node->safe_psql('postgres', q{
CREATE ROLE rb_troj LOGIN;
GRANT CREATE ON DATABASE postgres TO rb_troj;
ALTER ROLE rb_troj SET search_path = trojan, pg_catalog, public;
});
my $troj = $node->connstr('postgres') . ' user=rb_troj';
$node->safe_psql('postgres', q{
CREATE SCHEMA troj_data;
CREATE TABLE troj_data.t (id int, cust int, qty int);
INSERT INTO troj_data.t SELECT i, i % 7, i % 10 FROM generate_series(1, 3000) i;
SELECT kappa.create_view('troj_data.troj_v',
  $$SELECT cust, pg_catalog.count(*) AS n, pg_catalog.sum(qty) AS q FROM troj_data.t
     WHERE qty OPERATOR(pg_catalog.>) 2 GROUP BY cust$$);
}, connstr => $troj);
# [kind, name, argument types, result type]
my @shadowed = (
	map({ [ 'OPERATOR', '=', $_, 'bool' ] } qw(int4 int8 oid text name regclass regproc)),
	map({ [ 'OPERATOR', '=', $_, 'bool' ] } ('regclass, oid', 'oid, regclass', 'name, text', 'text, name')),
	[ 'OPERATOR', '>', 'int4', 'bool' ], [ 'OPERATOR', '<>', 'oid', 'bool' ],
	[ 'FUNCTION', 'pg_get_viewdef', 'oid', 'text' ], [ 'FUNCTION', 'pg_get_viewdef', 'oid, bool', 'text' ],
	[ 'FUNCTION', 'quote_ident', 'text', 'text' ], [ 'FUNCTION', 'quote_literal', 'text', 'text' ],
	[ 'FUNCTION', 'format', 'text, text', 'text' ], [ 'FUNCTION', 'format', 'text, text, text', 'text' ],
	[ 'FUNCTION', 'to_regclass', 'text', 'regclass' ], [ 'FUNCTION', 'lower', 'text', 'text' ],
	[ 'FUNCTION', 'now', '', 'timestamptz' ], [ 'FUNCTION', 'current_setting', 'text', 'text' ],
	[ 'FUNCTION', 'set_config', 'text, text, bool', 'text' ],
	[ 'FUNCTION', 'pg_advisory_xact_lock', 'int8', 'void' ], [ 'FUNCTION', 'nextval', 'regclass', 'int8' ],
	[ 'FUNCTION', 'array_to_string', 'anyarray, text', 'text' ]);
my $trojan_sql = q{
CREATE SCHEMA trojan;
CREATE TABLE trojan.log (what text, by_user name, app text, at timestamptz DEFAULT pg_catalog.now());
GRANT USAGE ON SCHEMA trojan TO PUBLIC;
GRANT INSERT ON trojan.log TO PUBLIC;
CREATE FUNCTION trojan.fired(what text) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  RAISE WARNING 'TROJAN FIRED: % as % in %', what, current_user, current_setting('application_name');
  INSERT INTO trojan.log (what, by_user, app) VALUES (what, current_user, current_setting('application_name'));
END$$;
CREATE FUNCTION trojan.sum_sf(int8, int4) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM trojan.fired('sum(int4)'); RETURN coalesce($1, 0) + $2; END$$;
CREATE AGGREGATE trojan.sum(int4) (SFUNC = trojan.sum_sf, STYPE = int8);
CREATE FUNCTION trojan.count_sf(int8) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM trojan.fired('count(*)'); RETURN $1 + 1; END$$;
CREATE AGGREGATE trojan.count(*) (SFUNC = trojan.count_sf, STYPE = int8, INITCOND = '0');
};
my $fn = 0;
for my $s (@shadowed)
{
	my ($kind, $name, $args, $rettype) = @$s;
	$fn++;
	my @types = split /, /, $args;
	@types = ($args, $args) if $kind eq 'OPERATOR' && @types == 1;
	my $params = join(', ', map { "a$_ $types[$_ - 1]" } 1 .. @types);
	my $call = join(', ', map { "a$_" } 1 .. @types);
	my $body = $kind eq 'OPERATOR' ? "RETURN a1 OPERATOR(pg_catalog.$name) a2;"
	  : $rettype eq 'void' ? "PERFORM pg_catalog.$name($call);"
	  : "RETURN pg_catalog.$name($call);";
	my $fname = $kind eq 'OPERATOR' ? "op$fn" : $name;
	$trojan_sql .= qq{
CREATE FUNCTION trojan.$fname($params) RETURNS $rettype LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN PERFORM trojan.fired('$name($args)'); $body END\$\$;
};
	$trojan_sql .= qq{CREATE OPERATOR trojan.$name (LEFTARG = $types[0], RIGHTARG = $types[1], FUNCTION = trojan.$fname);\n}
	  if $kind eq 'OPERATOR';
}
$node->safe_psql('postgres', $trojan_sql, connstr => $troj);
# the trojans work: plain SQL of rb_troj's, unqualified, runs them
($ret, $out, $err) = $node->psql('postgres', q{SELECT 1 = 1, lower('X'), count(*) FROM (VALUES (1)) v},
	connstr => $troj);
ok($err =~ /TROJAN FIRED: =\(int4\)/ && $err =~ /TROJAN FIRED: lower\(text\)/ && $err =~ /TROJAN FIRED: count/,
	'trojan: the shadowing operators and functions are the ones rb_troj\'s own SQL finds')
  or note $err;
$node->safe_psql('postgres', 'TRUNCATE trojan.log');
$log_pos = -s $node->logfile;
my $troj_new = q{SELECT cust, pg_catalog.count(*) AS n, pg_catalog.sum(qty) AS q FROM troj_data.t
     WHERE qty OPERATOR(pg_catalog.>) 5 GROUP BY cust};
($ret, $out, $err) = $node->psql('postgres', "SELECT kappa.replace_view('troj_data.troj_v', \$q\$$troj_new\$q\$)",
	connstr => $troj);
is($ret, 0, 'trojan: replace_view by the owner succeeds');
unlike($err, qr/TROJAN/, 'trojan: nothing fired in the caller\'s session');
$node->safe_psql('postgres', 'INSERT INTO troj_data.t SELECT i, i % 7, i % 10 FROM generate_series(3001, 3100) i');
kafka_wait($node, q{
SELECT state, rebuild_error IS NULL, query ~ '> 5' FROM kappa.views
 WHERE schema_name = 'troj_data' AND view_name = 'troj_v'}, 'live|t|t', 'trojan: the rebuild finished (no error)');
is(q_or_err( "SELECT count(*) FROM ((TABLE troj_data.troj_v EXCEPT ALL ($troj_new)) UNION ALL (($troj_new) EXCEPT ALL TABLE troj_data.troj_v)) d"),
	0, 'trojan: the view equals its new query');
is(q_or_err( q{SELECT count(*) FROM trojan.log}), 0, 'trojan: never fired (no row logged)');
unlike(slurp_file($node->logfile, $log_pos), qr/TROJAN FIRED/, 'trojan: never fired (no warning in the log)');

# ------------------------------------------------------------------- end

my $log = slurp_file($node->logfile);
unlike($log, qr/TRAP:|terminated by signal (?!9:)/, 'no assertion failure, no crash but the one we caused');
my @xx000 = grep { /\] XX000 / } split /\n/, $log;
is(scalar(@xx000), 0, 'no internal error (XX000) logged') or note join("\n", @xx000[0 .. ($#xx000 < 5 ? $#xx000 : 5)]);
note sprintf('260_view_rebuild.pl ran %.1f s', time - $t_start);
$node->stop;
kafka_stop_broker($broker);
done_testing();
