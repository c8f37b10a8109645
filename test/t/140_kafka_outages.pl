# Outages: a topic that does not exist yet, the broker down for 10 seconds
# mid-stream, and request errors injected by the dev broker.  The worker
# retries with backoff, shows its state and last error in kappa.sources, and
# resumes with no loss and no duplicate.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(other => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_outages');

# The mock cluster creates a topic when a client asks for its metadata
# (librdkafka 2.0.2), so a missing topic is simulated by the dev broker
# answering UNKNOWN_TOPIC_OR_PART for it, as a broker without it would.
like(kafka_broker_cmd($broker, 'topic-error late UNKNOWN_TOPIC_OR_PART'), qr/^OK/,
	'topic reported missing');

$node->safe_psql('postgres', qq{
CREATE TABLE o (id int PRIMARY KEY, kafka_partition int, kafka_offset bigint);
SELECT kappa.create_kafka_source('o_src', target => 'o', topic => 'late',
    brokers => '$bs', options => '{"batch_size": 200}');
});

# the topic does not exist yet
kafka_wait($node, q{SELECT state, last_error ~ 'late' FROM kappa.sources},
	'waiting|t', 'missing topic: waiting, with the error');

like(kafka_broker_cmd($broker, 'topic-error late NO_ERROR'), qr/^OK/, 'topic appears');
my $next = 1;
my $produce = sub {
	my ($n) = @_;
	my @m = map { qq({"id": $_}) } ($next .. $next + $n - 1);
	$next += $n;
	kafka_produce($broker, 'late', \@m);
};
$produce->(3000);
kafka_wait($node, 'SELECT count(*) FROM o', 3000, 'consumed once the topic exists');
kafka_wait($node, q{SELECT state FROM kappa.sources}, 'running', 'running again');

# broker down for 10 seconds mid-stream
$produce->(20000);
like(kafka_broker_cmd($broker, 'down'), qr/^OK/, 'broker down');
my $during = $node->safe_psql('postgres', 'SELECT count(*) FROM o');
kafka_wait($node, q{SELECT state, last_error IS NOT NULL FROM kappa.sources},
	'retrying|t', 'broker down: retrying, with the error', 30);
is($node->safe_psql('postgres', q{SELECT workers FROM kappa.sources}), 1,
	'worker stays up while the broker is down');

# SIGTERM is obeyed even while librdkafka waits for the broker: the worker
# exits while the broker is still down (it stays down until "up" below)
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'});
my $t0 = time;
kill 'TERM', $pid;
usleep(10_000) while kill(0, $pid) && time - $t0 < 60;
ok(!kill(0, $pid), 'SIGTERM stops the worker while the broker is down');
note sprintf('the worker exited %.3f s after SIGTERM', time - $t0);
kafka_wait($node, q{SELECT workers FROM kappa.sources}, 1,
	'the launcher restarts it', 20);
sleep 5;
like(kafka_broker_cmd($broker, 'up'), qr/^OK/, 'broker up');
$produce->(2000);
kafka_wait($node, 'SELECT count(*) FROM o', $next - 1, 'every message after the outage');
note "rows when the broker went down: $during";
kafka_wait($node, q{SELECT state FROM kappa.sources}, 'running', 'running after the outage');

# injected request errors
like(kafka_broker_cmd($broker, 'error Fetch NOT_LEADER_FOR_PARTITION 5'), qr/^OK/, 'fetch errors injected');
$produce->(3000);
like(kafka_broker_cmd($broker, 'error Metadata LEADER_NOT_AVAILABLE 3'), qr/^OK/, 'metadata errors injected');
like(kafka_broker_cmd($broker, 'error ListOffsets NOT_LEADER_FOR_PARTITION 3'), qr/^OK/, 'offset errors injected');
$produce->(3000);
kafka_wait($node, 'SELECT count(*) FROM o', $next - 1, 'every message despite request errors');

is($node->safe_psql('postgres', 'SELECT count(*) = count(DISTINCT id), max(id) FROM o'),
	't|' . ($next - 1), 'no loss, no duplicate');
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), 0, 'no dead letters');

$node->stop;
kafka_stop_broker($broker);
done_testing();
