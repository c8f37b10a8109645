# Start modes: earliest replays the topic, latest starts at the end, and a
# timestamp starts at the first message at or after it -- where the broker
# answers offsets-for-times with -1 (the dev broker always does), at the
# partition's end, as Kafka defines it.  The start is resolved once and
# stored, so a restart does not skip what arrived in between.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(st => 2);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_start');

kafka_produce($broker, 'st', [ map { qq({"id": $_}) } 1 .. 100 ]);

for my $t (qw(t_earliest t_latest t_ts))
{
	$node->safe_psql('postgres', "CREATE TABLE $t (id int)");
}
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('s_earliest', target => 't_earliest', topic => 'st',
    brokers => '$bs', start => 'earliest');
SELECT kappa.create_kafka_source('s_latest', target => 't_latest', topic => 'st',
    brokers => '$bs', start => 'latest');
SELECT kappa.create_kafka_source('s_ts', target => 't_ts', topic => 'st',
    brokers => '$bs', start => (now() - interval '1 hour')::text);
});
like($node->safe_psql('postgres', q{SELECT start FROM kappa.sources WHERE source = 's_ts'}),
	qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00$/, 'timestamp start stored in UTC');

# the start offsets are resolved and stored before anything else arrives:
# latest and the timestamp at the end of each partition at once, earliest at
# their start (it then reads up to the end; when is not for this check to
# guess, so it waits for it)
kafka_wait($node, q{SELECT count(*) FROM kappa.source_partitions}, 6,
	'start offsets stored for every partition');
is($node->safe_psql('postgres', q{
SELECT source, sum(committed_offset) FROM kappa.source_partitions
 WHERE source IN ('s_latest', 's_ts') GROUP BY 1 ORDER BY 1}),
	"s_latest|100\ns_ts|100", 'latest and timestamp start at the end');
kafka_wait($node, q{SELECT sum(committed_offset) FROM kappa.source_partitions
 WHERE source = 's_earliest'}, 100, 'earliest starts at the beginning and reads to the end');
is($node->safe_psql('postgres', 'SELECT count(*), min(id) FROM t_earliest'), '100|1',
	'earliest: every message before the source was created');

kafka_produce($broker, 'st', [ map { qq({"id": $_}) } 101 .. 150 ]);
kafka_wait($node, 'SELECT count(*), min(id) FROM t_earliest', '150|1', 'earliest: the whole topic');
kafka_wait($node, 'SELECT count(*), min(id) FROM t_latest', '50|101', 'latest: only new messages');
kafka_wait($node, 'SELECT count(*), min(id) FROM t_ts', '50|101',
	'timestamp answered with -1: the partition end');

# a replay: a new source from earliest reads everything again
$node->safe_psql('postgres', qq{
CREATE TABLE t_replay (id int);
SELECT kappa.create_kafka_source('s_replay', target => 't_replay', topic => 'st',
    brokers => '$bs', start => 'earliest');
});
kafka_wait($node, 'SELECT count(*), count(DISTINCT id) FROM t_replay', '150|150', 'replay');

$node->stop;
kafka_stop_broker($broker);
done_testing();
