# Worker life cycle: without shared_preload_libraries create_kafka_source
# still starts the worker (with a warning); SIGTERM stops a worker within a
# second; SIGHUP reloads settings; with the launcher, sources come back
# after pg_ctl restart and a worker killed with SIGKILL comes back; parallelism
# spreads the partitions over the workers; the launcher finds sources in
# every database.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(w => 4, backlog => 1, prefetch => 1);
my $bs = $broker->{bootstrap};

# --- without preloading
my $plain = kafka_node('kafka_plain', preload => 0);
$plain->safe_psql('postgres', 'CREATE TABLE w (id int)');
my ($ret, $out, $err) = $plain->psql('postgres', qq{
SELECT kappa.create_kafka_source('w_src', target => 'w', topic => 'w', brokers => '$bs')});
is($ret, 0, 'source created without preloading');
like($err, qr/WARNING:.*will not restart after a server restart/, 'with a warning');
kafka_produce($broker, 'w', [ map { qq({"id": $_}) } 1 .. 100 ]);
kafka_wait($plain, 'SELECT count(*) FROM w', 100, 'the worker runs without the launcher');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
   WHERE backend_type = 'pg_kappa worker' AND application_name = 'pg_kappa source w_src'}),
	1, 'in pg_stat_activity');

# SIGTERM stops the worker (how fast is for the log, not for a check)
my $pid = $plain->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'});
my $t0 = time;
kill 'TERM', $pid;
usleep(20_000) while kill(0, $pid) && time - $t0 < 60;
ok(!kill(0, $pid), 'SIGTERM stops the worker');
note sprintf('the worker exited %.3f s after SIGTERM', time - $t0);

# after a restart it is not back, until resume_source starts it again
$plain->restart;
sleep 1;
is($plain->safe_psql('postgres', q{SELECT state FROM kappa.sources}), 'stopped',
	'not preloaded: stopped after a restart');
kafka_produce($broker, 'w', [ map { qq({"id": $_}) } 101 .. 150 ]);
($ret, $out, $err) = $plain->psql('postgres', q{SELECT kappa.resume_source('w_src')});
like($err, qr/WARNING/, 'resume_source starts it again, with the warning');
kafka_wait($plain, 'SELECT count(*), count(DISTINCT id) FROM w', '150|150',
	'resumed from the stored offsets');
$plain->stop;

# --- with the launcher
my $node = kafka_node('kafka_launcher');
sub kafka_wait_other
{
	for (1 .. 300)
	{
		my ($r, $o) = $node->psql('other', 'SELECT count(*) = 250 AND count(DISTINCT id) = 250 FROM w2');
		return 't' if $r == 0 && $o eq 't';
		usleep(100_000);
	}
	return 'f';
}
$node->safe_psql('postgres', q{
CREATE DATABASE other;
CREATE TABLE w (id int, kafka_partition int);
});
$node->safe_psql('other', q{CREATE EXTENSION pg_kappa; CREATE TABLE w2 (id int);});
($ret, $out, $err) = $node->psql('postgres', qq{
SELECT kappa.create_kafka_source('w_par', target => 'w', topic => 'w', brokers => '$bs',
    parallelism => 2)});
is($err, '', 'no warning with the launcher');
$node->safe_psql('other', qq{
SELECT kappa.create_kafka_source('w_other', target => 'w2', topic => 'w', brokers => '$bs')});
kafka_wait($node, 'SELECT count(*) FROM w', 150, 'parallel source consumed everything');
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	3, 'workers for both databases');
kafka_wait($node, 'SELECT count(*) FROM w2', 150, 'source in another database', 60, 'other');
is($node->safe_psql('postgres', q{
SELECT string_agg(array_to_string(partitions, ','), '|' ORDER BY slot)
  FROM kappa.source_status}), '0,2|1,3', 'partitions spread over the two workers');

# SIGHUP reloads settings; the worker stays
$node->append_conf('postgresql.conf', "kappa.batch_size = 7\n");
my @pids = sort split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'});
$node->reload;
kafka_produce($broker, 'w', [ map { qq({"id": $_}) } 151 .. 200 ]);
kafka_wait($node, 'SELECT count(*) FROM w', 200, 'consumes after a reload');
is(join(',', sort split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'})),
	join(',', @pids), 'workers survive SIGHUP');
cmp_ok($node->safe_psql('postgres',
	q{SELECT sum(batches) FROM kappa.source_status s JOIN kappa.source_catalog c ON c.id = s.source_id
	   WHERE c.name = 'w_par'}), '>=', 8, 'the reloaded batch size applies');

# Batches end when full or max_latency after their first message -- and
# when a backlog has been read to its end: with max_latency 20 s and
# batch_size 100, a backlog of 250 messages is applied as 100 + 100 + 50 at
# once, not with the last 50 waiting 20 s.  Messages that trickle in after
# that (no full batch before them) wait for max_latency as before.
$node->safe_psql('postgres', 'CREATE TABLE bl (id int)');
kafka_produce($broker, 'backlog', [ map { qq({"id": $_}) } 1 .. 250 ]);
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('bl_src', target => 'bl', topic => 'backlog', brokers => '$bs',
    options => '{"batch_size": 100, "max_latency": "20s"}')});
kafka_wait($node, 'SELECT count(*) FROM bl', 250,
	'a backlog is applied at once to its end, without waiting for max_latency (20 s)', 15);
is($node->safe_psql('postgres', q{
SELECT s.batches FROM kappa.source_status s JOIN kappa.source_catalog c ON c.id = s.source_id
 WHERE c.name = 'bl_src'}), 3, 'in batches of 100, 100 and 50');
kafka_produce($broker, 'backlog', [ map { qq({"id": $_}) } 251 .. 260 ]);
sleep 3;
is($node->safe_psql('postgres', 'SELECT count(*) FROM bl'), 250,
	'messages after the backlog wait for max_latency');
kafka_wait($node, 'SELECT count(*) FROM bl', 260, 'and are applied then', 40);
is($node->safe_psql('postgres', q{SELECT count(*) FROM kappa.errors WHERE source = 'bl_src'}),
	0, 'produced = rows (no dead letters)');
$node->safe_psql('postgres', q{SELECT kappa.drop_source('bl_src')});

# Prefetching: librdkafka (2.0.2) stops fetching when its consumer queue is
# full and, left alone, resumes only when a broker thread next wakes up, up
# to a second later for every queueful.  The worker wakes it as it drains
# the queue (kc_wake_fetcher).  With a 16 kB queue, 4 kB fetches and record
# batches of 200 messages, 60,000 messages of ~70 bytes are ~300 queuefuls:
# more than 4 s here if nothing wakes the fetcher (20 ms to 1 s each), well
# under a second if the worker does.  How long it takes is noted, not
# checked (timings belong in bench/kafka_bench.sh, where the wake-up is worth
# 20-30% of the throughput); the check is that all of it arrives.
$node->safe_psql('postgres', 'CREATE TABLE pf (id int)');
kafka_produce($broker, 'prefetch',
	[ map { qq({"id": $_, "pad": ") . ('x' x 40) . '"}' } 1 .. 60000 ], batch => 200);
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('pf_src', target => 'pf', topic => 'prefetch', brokers => '$bs',
    options => '{"batch_size": 60000, "max_latency": "60s",
                 "queued.max.messages.kbytes": "16", "max.partition.fetch.bytes": "4096"}')});
my $pf_t0 = time;
kafka_wait($node, 'SELECT count(*), count(DISTINCT id) FROM pf', '60000|60000',
	'a small prefetch queue keeps being refilled', 120);
note sprintf('60,000 messages through a 16 kB prefetch queue in %.1f s', time - $pf_t0);
is($node->safe_psql('postgres', q{SELECT count(*) FROM kappa.errors WHERE source = 'pf_src'}),
	0, 'produced = rows (no dead letters)');
$node->safe_psql('postgres', q{SELECT kappa.drop_source('pf_src')});

# pg_ctl restart: back by themselves
$node->restart;
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	3, 'workers back after pg_ctl restart');

# SIGKILL of a worker: crash recovery, and the workers come back
$pid = (split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'}))[0];
kill 'KILL', $pid;
kafka_produce($broker, 'w', [ map { qq({"id": $_}) } 201 .. 250 ]);
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	3, 'workers back after SIGKILL');
kafka_wait($node, 'SELECT count(*), count(DISTINCT id) FROM w', '250|250', 'exactly once');
is(kafka_wait_other(), 't',
	'exactly once in the other database');

# pausing stops the workers but the first, which holds no partition and
# keeps the lag current; resuming brings them back
$node->safe_psql('postgres', q{SELECT kappa.pause_source('w_par')});
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	2, 'paused source: its workers stop, but one');
kafka_wait($node, q{SELECT state, workers, partitions FROM kappa.sources WHERE source = 'w_par'},
	'paused|1|0', 'paused source: one worker, no partition');
$node->safe_psql('postgres', q{SELECT kappa.resume_source('w_par')});
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	3, 'resumed source: workers back');

$node->stop;
kafka_stop_broker($broker);
done_testing();
