# Partitions added to a topic are picked up by a running worker, without a
# restart of the worker or of Postgres.
#
# librdkafka 2.0.2's mock cluster cannot add partitions to a topic (no mock
# API; CreatePartitions never completes).  So the test replaces the dev
# broker by one that has more partitions for the same topic, on the same
# port: to the consumer the topic grows from 2 to 4 partitions at the same
# bootstrap address.  The mock keeps nothing across the swap, so the first
# two partitions are left empty before it (their committed offsets stay at
# 0 and remain valid); the worker must show it is running on 2 partitions,
# ride out the swap as a broker outage, find partitions 2 and 3 by itself
# and consume all four, with the same process id throughout.

use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

# Start the dev broker with these topics on a port of our choosing.
sub start_broker_on_port
{
	my ($port, %topics) = @_;
	no warnings 'once';
	my @args = ($main::kafka_dev_broker, '--port', $port);
	push @args, '--topic', "$_:$topics{$_}" for sort keys %topics;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(\@args, '<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while ($out !~ /^BOOTSTRAP (\S+)/m)
	{
		return undef if !$h->pumpable || time > $deadline;
		$h->pump_nb;
		usleep(20_000);
	}
	$out =~ /^BOOTSTRAP (\S+)/m;
	return { h => $h, in => \$in, out => \$out, err => \$err, bootstrap => $1 };
}

my ($broker, $port);
for (1 .. 20)
{
	$port = 30000 + int(rand(25000));
	$broker = start_broker_on_port($port, grow => 2);
	last if $broker;
}
ok($broker, "dev broker on port $port");
my $bs = $broker->{bootstrap};

my $node = kafka_node('kafka_partitions',
	conf => "kappa.max_latency = 50ms\n");
$node->safe_psql('postgres', qq{
CREATE TABLE grown (id int, kafka_partition int);
SELECT kappa.create_kafka_source('grow_src', target => 'grown', topic => 'grow',
    brokers => '$bs', start => 'earliest',
    options => '{"topic.metadata.refresh.interval.ms": "1000"}');
});

kafka_wait($node, q{SELECT partitions FROM kappa.sources WHERE source = 'grow_src'}, '2',
	'the worker consumes the topic with 2 partitions');
my $pid = kafka_query($node,
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'});
like($pid, qr/^\d+$/, 'one worker');

# the topic grows: same address, 4 partitions
kafka_stop_broker($broker);
$broker = undef;
for (1 .. 50)
{
	$broker = start_broker_on_port($port, grow => 4);
	last if $broker;
	usleep(100_000);
}
ok($broker, 'dev broker back on the same port with 4 partitions');

my $n = 0;
for my $p (0 .. 3)
{
	$n += kafka_produce($broker, 'grow',
		[ map { qq({"id": @{[ 100 * $p + $_ ]}}) } 1 .. 25 ], partition => $p);
}
is($n, 100, 'produced 25 messages into each of the 4 partitions');

kafka_wait($node, q{SELECT count(*), count(DISTINCT kafka_partition) FROM grown},
	'100|4', 'all 100 messages from all 4 partitions, none twice', 90);
kafka_wait($node, q{SELECT partitions FROM kappa.sources WHERE source = 'grow_src'}, '4',
	'kappa.sources shows 4 partitions');
is( kafka_query($node,
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'}),
	$pid, 'the same worker process did it, without a restart');
is(kafka_query($node, q{SELECT count(*) FROM kappa.errors}), '0', 'no dead letters');

$node->stop;
kafka_stop_broker($broker);
done_testing();
