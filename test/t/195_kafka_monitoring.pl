# kappa.sources tells the truth: a source whose workers cannot all start is
# degraded, says why, and its lag counts the partitions nobody reads (lag +
# rows = produced); a paused source's lag stays current; a consumer that
# cannot be created makes the source failed, with librdkafka's reason; a
# source whose every message is a dead letter is degraded until
# kappa.dead_letter_alert says otherwise; kappa.batch_bytes bounds a batch.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(ceil);

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(deg => 4, pz => 2, tls => 1, dl => 2, big => 4);
my $bs = $broker->{bootstrap};

# the columns of kappa.sources for one source
sub source_row
{
	my (undef, $name, $cols) = @_;
	return "SELECT $cols FROM kappa.sources WHERE source = '$name'";
}

# batches applied by a source's workers
sub batches
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce(sum(ss.batches), 0) FROM kappa.source_status ss
  JOIN kappa.source_catalog c ON c.id = ss.source_id WHERE c.name = '$name'});
}

# --- (1) parallelism above the free background worker slots: degraded.
# max_worker_processes = 4: the logical replication launcher and the
# pg_kappa launcher take two, a scanner one every 10 s while it runs; so
# of the 4 workers wanted, 1 or 2 start.
my $node = kafka_node('kafka_monitoring', conf => "max_worker_processes = 4\n");
is($node->safe_psql('postgres', 'SHOW max_worker_processes'), 4, 'max_worker_processes = 4');

# 100 messages in each of the 4 partitions
for my $p (0 .. 3)
{
	kafka_produce($broker, 'deg', [ map { my $id = $p * 100 + $_; qq({"id": $id}) } 1 .. 100 ],
		partition => $p);
}
$node->safe_psql('postgres', qq{
CREATE TABLE deg (id int);
SELECT kappa.create_kafka_source('deg_src', target => 'deg', topic => 'deg', brokers => '$bs',
    parallelism => 4);
});

# Each worker (slot s) reads partition s: partitions = workers.  The
# partitions they read are consumed to their end; the others are lag.
kafka_wait($node, source_row($node, 'deg_src', q{
    state, workers BETWEEN 1 AND 3, partitions = workers, partitions < partitions_in_topic,
    partitions_in_topic,
    lag + (SELECT count(*) FROM deg),
    (SELECT count(*) FROM deg) = 100 * partitions AND lag = 100 * (partitions_in_topic - partitions),
    last_error ~ ('^' || (partitions_in_topic - partitions) || ' of 4 partitions of topic "deg" are not being read: '
                  || 'worker [1-3]: no free background worker slot \(max_worker_processes = 4\)')}),
	'degraded|t|t|t|4|400|t|t',
	'degraded: fewer partitions read than the topic has, the reason, and lag + rows = produced', 90);
is($node->safe_psql('postgres', q{
SELECT count(*), sum(high_watermark), count(*) FILTER (WHERE committed_offset IN (0, 100))
  FROM kappa.source_partitions WHERE source = 'deg_src'}),
	'4|400|4', 'every partition has a start offset and a current high watermark, read or not');
is($node->safe_psql('postgres', q{SELECT count(DISTINCT id) FROM deg}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM deg}), 'nothing applied twice');
like($node->safe_psql('postgres', source_row($node, 'deg_src', 'last_error')),
	qr/^[1-3] of 4 partitions of topic "deg" are not being read: worker \d: no free background worker slot \(max_worker_processes = 4\)(; worker \d: no free background worker slot \(max_worker_processes = 4\))*$/,
	'last_error names every worker that could not start');

# with enough slots it is running and reads everything
$node->append_conf('postgresql.conf', "max_worker_processes = 24\n");
$node->restart;
kafka_wait($node, source_row($node, 'deg_src', q{
    state, workers, partitions, partitions_in_topic, lag, (SELECT count(*) FROM deg),
    (SELECT count(DISTINCT id) FROM deg), coalesce(last_error, '') ~ 'not being read'}),
	'running|4|4|4|0|400|400|f', 'with enough worker slots: running, every partition read', 90);
$node->safe_psql('postgres', q{SELECT kappa.drop_source('deg_src')});

# --- (2) a paused source: its lag stays current
$node->safe_psql('postgres', qq{
CREATE TABLE pz (id int);
SELECT kappa.create_kafka_source('pz_src', target => 'pz', topic => 'pz', brokers => '$bs');
});
kafka_produce($broker, 'pz', [ map { qq({"id": $_}) } 1 .. 10 ], partition => 0);
kafka_produce($broker, 'pz', [ map { qq({"id": $_}) } 11 .. 20 ], partition => 1);
kafka_wait($node, source_row($node, 'pz_src', q{state, lag, (SELECT count(*) FROM pz)}),
	'running|0|20', 'pz_src consumed its topic');
$node->safe_psql('postgres', q{SELECT kappa.pause_source('pz_src')});
kafka_wait($node, source_row($node, 'pz_src', 'state, workers, partitions'), 'paused|1|0',
	'paused: one worker, no partition');
kafka_produce($broker, 'pz', [ map { qq({"id": $_}) } 21 .. 40 ], partition => 0);
kafka_produce($broker, 'pz', [ map { qq({"id": $_}) } 41 .. 50 ], partition => 1);
kafka_wait($node, source_row($node, 'pz_src', q{state, lag, (SELECT count(*) FROM pz)}),
	'paused|30|20', 'paused: the lag counts what was produced since');
kafka_produce($broker, 'pz', [ map { qq({"id": $_}) } 51 .. 90 ], partition => 1);
kafka_wait($node, source_row($node, 'pz_src', q{state, lag, (SELECT count(*) FROM pz)}),
	'paused|70|20', 'paused: the lag keeps growing with what is produced');
is($node->safe_psql('postgres', q{
SELECT string_agg(committed_offset || '/' || high_watermark, ',' ORDER BY partition)
  FROM kappa.source_partitions WHERE source = 'pz_src'}), '10/30,10/60',
	'per partition: committed offsets unchanged, high watermarks current');
$node->safe_psql('postgres', q{SELECT kappa.resume_source('pz_src')});
kafka_wait($node, source_row($node, 'pz_src',
	q{state, lag, (SELECT count(*) FROM pz), (SELECT count(DISTINCT id) FROM pz)}),
	'running|0|90|90', 'resumed: the lag is consumed, exactly once');
$node->safe_psql('postgres', q{SELECT kappa.drop_source('pz_src')});

# --- (3) a consumer that cannot be created: failed, with librdkafka's reason
$node->safe_psql('postgres', qq{
CREATE TABLE tls (id int);
SELECT kappa.create_kafka_source('tls_src', target => 'tls', topic => 'tls', brokers => '$bs',
    options => '{"security.protocol": "ssl", "ssl.key.location": "/nonexistent/key.pem",
                 "ssl.certificate.location": "/nonexistent/cert.pem"}');
});
kafka_wait($node, source_row($node, 'tls_src', q{
    state, last_error ~ '^the consumer could not be created: could not create a Kafka consumer for source "tls_src": \S',
    last_error_at IS NOT NULL}),
	'failed|t|t', 'consumer creation failed: state failed, with the reason', 60);
my $error = $node->safe_psql('postgres', source_row($node, 'tls_src', 'last_error'));
like($error, qr/ssl/i, "librdkafka's text is in last_error");
note "last_error: $error";
# the launcher restarts it (with a backoff), and it fails again
my $started = $node->safe_psql('postgres', q{
SELECT ss.started_at FROM kappa.source_status ss JOIN kappa.source_catalog c ON c.id = ss.source_id
 WHERE c.name = 'tls_src'});
kafka_wait($node, qq{
SELECT ss.started_at > '$started' FROM kappa.source_status ss
  JOIN kappa.source_catalog c ON c.id = ss.source_id WHERE c.name = 'tls_src'},
	't', 'the launcher restarts the worker', 60);
kafka_wait($node, source_row($node, 'tls_src', q{
    state, last_error ~ '^the consumer could not be created: could not create a Kafka consumer for source "tls_src": \S'}),
	'failed|t', 'and it fails again, with the same reason', 60);
$node->safe_psql('postgres', q{SELECT kappa.drop_source('tls_src')});

# --- (4) every message a dead letter: degraded, until kappa.dead_letter_alert says otherwise
$node->safe_psql('postgres', qq{
SELECT kappa.create_stream('s', 'x int');
SELECT kappa.create_view('v', 'SELECT count(*) AS n, sum(1/(x-x)) AS bad FROM s');
SELECT kappa.create_kafka_source('dl_src', target => 's', topic => 'dl', brokers => '$bs');
});
kafka_wait($node, source_row($node, 'dl_src', q{state, workers, partitions}), 'running|1|2',
	'dl_src runs');
kafka_produce($broker, 'dl', [ map { qq({"x": $_}) } 1 .. 200 ]);
kafka_wait($node, source_row($node, 'dl_src', q{
    state, dead_letter_share, messages, dead_letters, lag,
    (SELECT count(*) FROM kappa.errors WHERE source = 'dl_src' AND kind = 'dead_letter'),
    coalesce((SELECT sum(n) FROM v), 0)}),
	'degraded|1|0|200|0|200|0',
	'all dead letters: degraded; produced = applied (0) + dead letters, exactly');
my $dl_error = $node->safe_psql('postgres', source_row($node, 'dl_src', 'last_error'));
like($dl_error,
	qr/^100\.0% of the messages of the last minute went to kappa\.errors \(kappa\.dead_letter_alert is 50\.0%\)/,
	'last_error gives the share and the threshold');
like($dl_error, qr/\); the last one: .*division by zero/, 'and the error of the last dead letter');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.errors WHERE source = 'dl_src' AND error ~ 'division by zero'}),
	200, 'every dead letter says division by zero');

$node->safe_psql('postgres', 'ALTER SYSTEM SET kappa.dead_letter_alert = 1');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
# while the last minute's share is still 100% (more dead letters keep it so)
kafka_produce($broker, 'dl', [ map { qq({"x": $_}) } 201 .. 300 ]);
kafka_wait($node, source_row($node, 'dl_src', q{
    current_setting('kappa.dead_letter_alert'), state, dead_letter_share, dead_letters, messages,
    coalesce(last_error, '') ~ 'went to kappa.errors'}),
	'1|running|1|300|0|f',
	'kappa.dead_letter_alert = 1: the same 100% share is no longer degraded');
$node->safe_psql('postgres', q{SELECT kappa.drop_source('dl_src')});

# --- (5) batch_bytes bounds a batch.  28 messages of 400,000 bytes, 7 per
# partition (2.8 MB each); the same batch_size and max_latency for both
# sources, so that only batch_bytes tells them apart.
my $len = 400_000;
my @big;
for my $i (1 .. 28)
{
	my $head = qq({"id": $i, "pad": ");
	push @big, $head . ('x' x ($len - length($head) - 2)) . '"}';
}
die "message length" if grep { length($_) != $len } @big;
for my $p (0 .. 3)
{
	kafka_produce($broker, 'big', [ @big[ 7 * $p .. 7 * $p + 6 ] ], partition => $p);
}
my $total = 28 * $len;
$node->safe_psql('postgres', qq{
CREATE TABLE big_small (id int);
CREATE TABLE big_default (id int);
SELECT kappa.create_kafka_source('big_small', target => 'big_small', topic => 'big', brokers => '$bs',
    options => '{"batch_bytes": "1MB", "max_message_bytes": 2000000, "batch_size": 28,
                 "max_latency": "10s"}');
SELECT kappa.create_kafka_source('big_default', target => 'big_default', topic => 'big',
    brokers => '$bs',
    options => '{"max_message_bytes": 2000000, "batch_size": 28, "max_latency": "10s"}');
});
for my $name ('big_small', 'big_default')
{
	kafka_wait($node, source_row($node, $name, qq{
    messages, bytes, dead_letters, lag, (SELECT count(*) FROM $name),
    (SELECT count(DISTINCT id) FROM $name)}),
		"28|$total|0|0|28|28", "$name: every message applied exactly once, bytes counted", 90);
}
my $small = batches($node, 'big_small');
my $default = batches($node, 'big_default');
note "batches: batch_bytes 1MB: $small, default batch_bytes: $default";
my $bound = ceil($total / (1048576 + $len));
cmp_ok($small, '>=', $bound,
	"batch_bytes 1MB: at least ceil(total / (batch_bytes + one message)) = $bound batches");
cmp_ok($small, '>=', ceil(28 / 3), 'batch_bytes 1MB: at most 3 messages of 400 kB per batch');
cmp_ok($default, '<', $small, 'the default batch_bytes needs fewer batches');

$node->stop;
kafka_stop_broker($broker);
done_testing();
