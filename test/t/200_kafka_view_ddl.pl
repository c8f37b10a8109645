# Continuous views created, dropped or replaced while a Kafka source worker
# writes into their stream (the Kafka counterpart of
# test/isolation/specs/view_ddl.spec).  A writer reads the set of views of a
# stream after it holds the stream's lock, with a snapshot taken then;
# kappa.create_view and kappa.drop_view take a SHARE lock on the stream, so a
# worker's batch transaction waits for them.
#
# The stream is retained (retain => 'infinity'), so plain SQL over the stream
# is the reference: after each scenario every view equals its own query
# (kappa.views.query) run as plain SQL, EXCEPT ALL both ways, and messages
# produced = rows in the stream + dead letters, exactly.
#
# Each interleaving is forced: a session holds the DDL in an open transaction,
# messages are produced, the test waits (pg_locks, pg_blocking_pids) until the
# worker is blocked by that session, then commits.
#  (a) create_view (a pushed view and a delta-query view with a join) while
#      the worker waits: the new views get the waiting batch and all later ones
#  (b) drop_view while the worker waits: the worker goes on
#  (c) replace (drop_view + create_view of the same name, another query)
#  (d) plain DROP VIEW (no lock on the stream; the worker's cached entry knows
#      the views) while batches keep coming: no XX000, the worker goes on
#  (e) churn: create, drop, replace and DROP VIEW in their own transactions
#      while chunks of messages are produced
# Throughout, the worker never restarts (same pid) and records no error.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

require "./test/t/100_kafka_common.pl";

my $t0 = time;
my $broker = kafka_start_broker(ev => 2);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_view_ddl', conf => "log_error_verbosity = verbose\n");

# view queries: pushed views read the stream alone, delta views join dim
my %q = (
	push_a => q{SELECT g, count(*) AS n, sum(v) AS s, max(id) AS m FROM ev GROUP BY g},
	push_b => q{SELECT g, k, count(*) AS n, min(v) AS lo, avg(v) AS mean, sum(id) AS ids FROM ev GROUP BY g, k},
	push_c => q{SELECT count(*) AS n, sum(v) AS s, count(v) AS nv, max(v) AS hi FROM ev},
	join_a => q{SELECT d.name, count(*) AS n, sum(e.v) AS s FROM ev e JOIN dim d ON d.k = e.k GROUP BY d.name},
	join_b => q{SELECT d.name, e.g, count(*) AS n, max(e.id) AS m, sum(d.w * e.v) AS ws FROM ev e JOIN dim d ON d.k = e.k WHERE e.v IS NOT NULL GROUP BY d.name, e.g},
	join_c => q{SELECT d.name, count(*) AS n, min(e.v) AS lo FROM ev e LEFT JOIN dim d ON d.k = e.k GROUP BY d.name},
);

# view_diffs(): for each continuous view of ev, the number of rows by which
# it differs from its own query run over the retained rows, both ways
$node->safe_psql('postgres', qq{
CREATE TABLE dim (k int PRIMARY KEY, name text, w int);
INSERT INTO dim SELECT i, 'd' || (i % 3), i + 1 FROM generate_series(0, 7) i;
SELECT kappa.create_stream('ev', 'id int, k int, g text, v int', retain => 'infinity');
CREATE FUNCTION view_diffs() RETURNS TABLE (view_name name, diff bigint)
LANGUAGE plpgsql AS \$f\$
DECLARE
  r record;
  q text;
BEGIN
  FOR r IN SELECT kv.view_name, kv.view, kv.query FROM kappa.views kv
            WHERE kv.stream = 'ev'::regclass ORDER BY kv.view_name
  LOOP
    q := rtrim(r.query, '; ');
    view_name := r.view_name;
    EXECUTE format('SELECT count(*) FROM ((TABLE %s EXCEPT ALL (%s)) UNION ALL ((%s) EXCEPT ALL TABLE %s)) d',
                   r.view, q, q, r.view) INTO diff;
    RETURN NEXT;
  END LOOP;
END \$f\$;
SELECT kappa.create_view('v_push', \$\$$q{push_a}\$\$);
SELECT kappa.create_view('v_join', \$\$$q{join_a}\$\$);
SELECT kappa.create_view('v_glob', \$\$$q{push_c}\$\$);
SELECT kappa.create_view('b_push', \$\$$q{push_b}\$\$);
SELECT kappa.create_view('b_join', \$\$$q{join_b}\$\$);
SELECT kappa.create_view('d_push', \$\$$q{push_b}\$\$);
SELECT kappa.create_view('d_join', \$\$$q{join_b}\$\$);
SELECT kappa.create_kafka_source('ev_src', target => 'ev', topic => 'ev',
    brokers => '$bs', format => 'json',
    options => '{"batch_size": 100, "max_latency": "20ms"}');
});
my %views = map { $_ => 1 } qw(v_push v_join v_glob b_push b_join d_push d_join);

# ---------------------------------------------------------------- helpers

my ($produced, $bad, $next_id) = (0, 0, 0);

# produce $n messages: every 53rd is malformed JSON, every 71st has a value
# of the wrong type (both dead letters), every 13th a NULL v; k 8 and 9 have
# no row in dim
sub produce
{
	my ($n) = @_;
	my @m;
	for (1 .. $n)
	{
		my $i = ++$next_id;
		if ($i % 53 == 0)
		{
			push @m, qq({"id": $i, "k": );
			$bad++;
		}
		elsif ($i % 71 == 0)
		{
			push @m, qq({"id": $i, "k": "x", "g": "g1", "v": 1});
			$bad++;
		}
		else
		{
			my $v = $i % 13 == 0 ? 'null' : ($i * 7919) % 1000;
			push @m, sprintf('{"id": %d, "k": %d, "g": "g%d", "v": %s}', $i, $i % 10, $i % 5, $v);
		}
	}
	kafka_produce($broker, 'ev', \@m);
	$produced += $n;
}

my $applied_sql = q{SELECT (SELECT count(*) FROM ev)
  + (SELECT count(*) FROM kappa.errors WHERE source = 'ev_src')};

# the offsets committed with the batches; read instead of the stream while
# DDL is open (a scan of the stream loads its views, and waits for a
# transaction that is dropping one)
my $offsets_sql = q{SELECT sum(committed_offset) FROM kappa.source_partitions WHERE source = 'ev_src'};

sub wait_applied
{
	my ($what) = @_;
	kafka_wait($node, $applied_sql, $produced,
		"$what: produced = rows in the stream + dead letters ($produced)", 90);
}

sub worker_pid
{
	return $node->safe_psql('postgres', q{
SELECT string_agg(pid::text, ',') FROM pg_stat_activity
 WHERE backend_type = 'pg_kappa worker' AND application_name = 'pg_kappa source ev_src'});
}

# every view of ev (exactly the expected set) equals its query as plain SQL
sub check_views
{
	my ($what) = @_;
	is($node->safe_psql('postgres', 'SELECT view_name, diff FROM view_diffs()'),
		join("\n", map { "$_|0" } sort keys %views),
		"$what: every view equals its query as plain SQL over the stream");
}

my $wpid;

sub check_worker
{
	my ($what) = @_;
	is(worker_pid(), $wpid, "$what: the worker did not restart (pid $wpid)");
	is($node->safe_psql('postgres', q{
SELECT state, workers, coalesce(last_error, '(none)') FROM kappa.sources WHERE source = 'ev_src'}),
		'running|1|(none)', "$what: source running, no last_error");
}

sub check_counts
{
	my ($what) = @_;
	is($node->safe_psql('postgres', qq{
WITH good AS (SELECT i FROM generate_series(1, $produced) i WHERE i % 53 <> 0 AND i % 71 <> 0),
     bad AS (SELECT i FROM generate_series(1, $produced) i WHERE i % 53 = 0 OR i % 71 = 0),
     dead AS (SELECT substring(encode(payload, 'escape') FROM '"id": ([0-9]+)')::int AS i, sqlstate
                FROM kappa.errors WHERE source = 'ev_src')
SELECT (SELECT count(*) FROM ev),
       (SELECT count(*) FROM ((SELECT i FROM good EXCEPT ALL SELECT id FROM ev)
                   UNION ALL (SELECT id FROM ev EXCEPT ALL SELECT i FROM good)) d),
       (SELECT count(*) FROM dead),
       (SELECT count(*) FROM ((SELECT i FROM bad EXCEPT ALL SELECT i FROM dead)
                   UNION ALL (SELECT i FROM dead EXCEPT ALL SELECT i FROM bad)) d),
       (SELECT count(*) FROM dead WHERE sqlstate <> '22P02'),
       (SELECT sum(committed_offset) FROM kappa.source_partitions WHERE source = 'ev_src')}),
		($produced - $bad) . "|0|$bad|0|0|$produced",
		"$what: each good message once in the stream, each bad one a dead letter (22P02), offsets at the end");
}

# a session holding DDL in an open transaction
sub ddl_session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->set_query_timer_restart;
	$s->query_safe('SET client_min_messages = warning');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	return ($s, $pid);
}

# wait until the worker is blocked by $ddlpid (on the stream's lock unless
# $any_relation)
sub wait_blocked
{
	my ($ddlpid, $what, $any_relation) = @_;
	my $rel = $any_relation ? '' : q{AND relation = 'ev'::regclass};
	kafka_wait($node, qq{
SELECT count(*) > 0 AND $ddlpid = ANY (pg_blocking_pids($wpid))
  FROM pg_locks
 WHERE pid = $wpid AND NOT granted AND locktype = 'relation' $rel},
		't', $what, 60);
}

sub create_sql
{
	my ($name, $query) = @_;
	return "SELECT kappa.create_view('$name', \$kq\$$query\$kq\$) IS NOT NULL";
}

# ---------------------------------------------------------------- start

kafka_wait($node, q{SELECT state, workers FROM kappa.sources WHERE source = 'ev_src'},
	'running|1', 'source running');
produce(400);
wait_applied('start');
$wpid = worker_pid();
like($wpid, qr/^\d+$/, 'one worker');
check_views('start');
check_counts('start');

# ---------------------------------------------------------------- (a)
# create_view while the worker waits for the stream's lock
{
	my ($s, $ddlpid) = ddl_session();
	$s->query_safe('BEGIN');
	$s->query_safe(create_sql('a_push', $q{push_b}));
	$s->query_safe(create_sql('a_join', $q{join_b}));
	my $before = $produced;
	produce(500);
	wait_blocked($ddlpid, "(a) the worker waits for the stream's lock held by create_view");
	is($node->safe_psql('postgres', $offsets_sql), $before,
		'(a) nothing of the new messages applied while the worker waits');
	$s->query_safe('COMMIT');
	$views{$_} = 1 for qw(a_push a_join);
	produce(300);
	wait_applied('(a)');
	check_views('(a) views created while the worker waited');
	check_counts('(a)');
	check_worker('(a)');
	is($node->safe_psql('postgres', q{
SELECT (SELECT sum(n) FROM a_push) = (SELECT count(*) FROM ev),
       (SELECT max(m) FROM a_join) = (SELECT max(id) FROM ev WHERE k < 8 AND v IS NOT NULL)}),
		't|t', '(a) the new views include the waiting batch and the later ones');
	$s->quit;
}

# ---------------------------------------------------------------- (b)
# drop_view while the worker waits
{
	my ($s, $ddlpid) = ddl_session();
	$s->query_safe('BEGIN');
	$s->query_safe(q{SELECT kappa.drop_view('b_push')});
	$s->query_safe(q{SELECT kappa.drop_view('b_join')});
	my $before = $produced;
	produce(500);
	wait_blocked($ddlpid, "(b) the worker waits for the stream's lock held by drop_view");
	is($node->safe_psql('postgres', $offsets_sql), $before,
		'(b) nothing of the new messages applied while the worker waits');
	$s->query_safe('COMMIT');
	delete $views{$_} for qw(b_push b_join);
	produce(300);
	wait_applied('(b)');
	check_views('(b) views dropped while the worker waited');
	check_counts('(b)');
	check_worker('(b)');
	is($node->safe_psql('postgres',
		q{SELECT to_regclass('b_push') IS NULL AND to_regclass('b_join') IS NULL}),
		't', '(b) the dropped views are gone');
	$s->quit;
}

# ---------------------------------------------------------------- (c)
# replace (drop_view + create_view of the same name, another query) in one
# transaction while the worker waits
{
	my ($s, $ddlpid) = ddl_session();
	$s->query_safe('BEGIN');
	$s->query_safe(q{SELECT kappa.drop_view('v_push')});
	$s->query_safe(create_sql('v_push', $q{push_b}));
	$s->query_safe(q{SELECT kappa.drop_view('v_join')});
	$s->query_safe(create_sql('v_join', $q{join_c}));
	my $before = $produced;
	produce(500);
	wait_blocked($ddlpid, "(c) the worker waits for the stream's lock held by the replace");
	is($node->safe_psql('postgres', $offsets_sql), $before,
		'(c) nothing of the new messages applied while the worker waits');
	$s->query_safe('COMMIT');
	produce(300);
	wait_applied('(c)');
	check_views('(c) views replaced while the worker waited');
	check_counts('(c)');
	check_worker('(c)');
	is($node->safe_psql('postgres', q{
SELECT string_agg(view_name || ':' || (CASE view_name WHEN 'v_push' THEN query ~ 'AS ids' ELSE query ~ 'LEFT JOIN' END), ',' ORDER BY view_name)
  FROM kappa.views WHERE view_name IN ('v_push', 'v_join')}),
		'v_join:true,v_push:true', '(c) the replaced views have their new queries');
	$s->quit;
}

# ---------------------------------------------------------------- (d)
# plain DROP VIEW (takes no lock on the stream) while batches keep coming;
# the worker's cached entry knows d_push and d_join (the last chunk of (c)
# was applied after the replace committed)
{
	my ($s, $ddlpid) = ddl_session();
	$s->query_safe('BEGIN');
	$s->query_safe('DROP VIEW d_push');
	$s->query_safe('DROP VIEW d_join');
	my $before = $produced;
	produce(500);
	wait_blocked($ddlpid, '(d) the worker waits for a lock held by DROP VIEW', 1);
	my $waits_on = $node->safe_psql('postgres', qq{
SELECT string_agg(relation::regclass::text, ',') FROM pg_locks
 WHERE pid = $wpid AND NOT granted AND locktype = 'relation'});
	note "(d) the worker waits for $waits_on";
	like($waits_on,
		qr/^(?:kappa_data\.)?d_(?:push|join)(?:_mat_\d+|_def_\d+)?$/,
		'(d) ... on a relation of a dropped view (the worker had it cached)');
	produce(300);
	# the worker is still blocked: nothing of the new messages was applied
	is($node->safe_psql('postgres', $offsets_sql), $before,
		'(d) nothing of the new messages applied while DROP VIEW is open');
	$s->query_safe('COMMIT');
	delete $views{$_} for qw(d_push d_join);
	produce(200);
	wait_applied('(d)');
	check_views('(d) views dropped with DROP VIEW while the worker waited');
	check_counts('(d)');
	check_worker('(d)');
	is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.views WHERE view_name IN ('d_push', 'd_join')}),
		0, '(d) the catalog forgot the dropped views');
	$s->quit;
}

# ---------------------------------------------------------------- (e)
# churn: create, drop, replace and DROP VIEW (each in its own transaction)
# while chunks of messages are produced
{
	my ($s) = ddl_session();
	my @kinds = qw(push_a join_a push_b join_b push_c join_c);
	my @live;    # churned views, oldest first
	my $pending = 0;
	for my $i (1 .. 12)
	{
		produce(150);
		my $name = "e_$i";
		my $kind = $kinds[ $i % @kinds ];
		# in the same round trip: were messages still pending?
		my ($done) = split /\n/, $s->query_safe("$offsets_sql; " . create_sql($name, $q{$kind}));
		$pending++ if $done < $produced;
		$views{$name} = 1;
		push @live, $name;
		if ($i % 3 == 0)
		{
			# replace the newest with another query
			my $other = $kinds[ ($i + 1) % @kinds ];
			$s->query_safe("BEGIN; SELECT kappa.drop_view('$name'); "
				  . create_sql($name, $q{$other}) . "; COMMIT;");
		}
		if (@live > 3)
		{
			my $old = shift @live;
			if ($i % 2)
			{
				$s->query_safe("SELECT kappa.drop_view('$old')");
			}
			else
			{
				$s->query_safe("DROP VIEW $old");
			}
			delete $views{$old};
		}
		produce(50);
	}
	note "(e) $pending of 12 create_view calls were issued while messages were pending";
	wait_applied('(e)');
	check_views('(e) views after churn');
	check_counts('(e)');
	check_worker('(e)');
	$s->quit;
}

# ---------------------------------------------------------------- the log

my $log = slurp_file($node->logfile);
unlike($log, qr/XX000|could not open relation with OID/, 'no XX000 in the server log');
unlike($log, qr/\[$wpid\][^\n]*(?:ERROR|FATAL|PANIC)/, 'no error logged by the worker');

$node->stop;
kafka_stop_broker($broker);
note sprintf('200_kafka_view_ddl: %d messages, %d dead letters, %.1fs', $produced, $bad, time - $t0);
done_testing();
