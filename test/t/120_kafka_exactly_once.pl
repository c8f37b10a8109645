# Exactly once across crashes: 200,000 JSON messages over 16 partitions are
# consumed into a table and into a stream with a continuous view, while the
# workers are killed with SIGKILL at random moments (each one a crash and
# recovery of the whole server), the server is restarted with pg_ctl, and
# the postmaster itself is killed with SIGKILL.  At the end the table and the
# view equal plain SQL over the produced messages: none missing, none twice.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

require "./test/t/100_kafka_common.pl";

my $total = $ENV{KAPPA_EO_MESSAGES} // 200_000;
my $chunks = 20;
my $per_chunk = $total / $chunks;

my $broker = kafka_start_broker(eo => 16);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_eo', conf => "restart_after_crash = on\n");

$node->safe_psql('postgres', qq{
CREATE TABLE eo_t (id int, v int, kafka_partition int, kafka_offset bigint);
SELECT kappa.create_stream('eo_s', 'id int, v int, kafka_partition int');
SELECT kappa.create_view('eo_v',
  \$\$SELECT kafka_partition, count(*) AS n, sum(v) AS s, max(id) AS m
      FROM eo_s GROUP BY kafka_partition\$\$);
SELECT kappa.create_kafka_source('eo_table', target => 'eo_t', topic => 'eo',
    brokers => '$bs', parallelism => 2, options => '{"batch_size": 2000}');
SELECT kappa.create_kafka_source('eo_stream', target => 'eo_s', topic => 'eo',
    brokers => '$bs', parallelism => 2, options => '{"batch_size": 3000}');
});

srand(42);
my $expected_sum = 0;
my $kills = 0;
my $id = 0;
for my $chunk (1 .. $chunks)
{
	my @msgs;
	for (1 .. $per_chunk)
	{
		$id++;
		my $v = ($id * 7919) % 1000;
		$expected_sum += $v;
		push @msgs, qq({"id": $id, "v": $v});
	}
	kafka_produce($broker, 'eo', \@msgs);
	# a random moment, mostly while the workers are applying this chunk
	usleep(int(rand(60_000)));

	if ($chunk % 3 == 1)
	{
		# SIGKILL one worker at a random moment of its work
		my @pids = split /\n/, kafka_query($node,
			q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'});
		if (@pids)
		{
			my $pid = $pids[ int(rand(@pids)) ];
			kill 'KILL', $pid;
			$kills++;
			note "chunk $chunk: SIGKILL worker $pid";
		}
	}
	elsif ($chunk == 11)
	{
		note "chunk $chunk: pg_ctl restart";
		$node->restart;
	}
	elsif ($chunk == 15)
	{
		note "chunk $chunk: SIGKILL postmaster";
		$node->kill9;
		# children exit when they notice; start once the old ones are gone
		for my $try (1 .. 50)
		{
			# a failed start may have read the stale postmaster.pid
			$node->{_pid} = undef;
			last if $node->start(fail_ok => 1);
			usleep(200_000);
		}
	}
}
cmp_ok($kills, '>=', 5, "killed workers $kills times");

kafka_wait($node, 'SELECT count(*) FROM eo_t', $total, 'table has every message', 150);
kafka_wait($node, 'SELECT sum(n) FROM eo_v', $total, 'view counted every message', 60);

is($node->safe_psql('postgres', 'SELECT count(DISTINCT id), sum(v), max(id) FROM eo_t'),
	"$total|$expected_sum|$total", 'table: no message missing, none twice');
is($node->safe_psql('postgres', 'SELECT sum(n), sum(s), max(m) FROM eo_v'),
	"$total|$expected_sum|$total", 'view equals plain SQL over the messages');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT kafka_partition, count(*) AS n, sum(v) AS s, max(id) AS m FROM eo_t GROUP BY 1
  EXCEPT SELECT kafka_partition, n, s, m FROM eo_v) d}), 0,
	'view equals the same query over the table, per partition');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT kafka_partition, kafka_offset FROM eo_t
                      GROUP BY 1, 2 HAVING count(*) > 1) d}), 0, 'no offset applied twice');
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), 0, 'no dead letters');
is($node->safe_psql('postgres', q{
SELECT bool_and(committed_offset = high_watermark), sum(committed_offset)
  FROM kappa.source_partitions WHERE source = 'eo_table'}), "t|$total",
	'offsets of the table source at the end of every partition');
like($node->safe_psql('postgres',
	q{SELECT string_agg(state || '/' || workers, ',' ORDER BY source) FROM kappa.sources}),
	qr/^running\/2,running\/2$/, 'both sources running with 2 workers each');

$node->stop;
kafka_stop_broker($broker);
done_testing();
