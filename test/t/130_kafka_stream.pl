# A source into a stream: rows reach every continuous view through the
# engine's batch apply, in the batch's transaction; an error raised while
# applying to a view (division by zero in a view expression) is isolated to
# the offending messages, which become dead letters; interval-retained rows
# are expired by the background workers.  Also the csv, text and bytea
# formats into tables.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(pay => 4, csv => 1, txt => 1, bin => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_stream');

$node->safe_psql('postgres', qq{
SELECT kappa.create_stream('pay',
  'card text, merchant text, amount numeric, country text, ts timestamptz, kafka_partition int',
  retain => '3 seconds');
SELECT kappa.create_view('pay_by_merchant',
  \$\$SELECT merchant, count(*) AS n, sum(amount) AS total, max(ts) AS last_seen
      FROM pay GROUP BY merchant\$\$);
SELECT kappa.create_view('pay_ratio',
  \$\$SELECT country, sum(100 / amount::int) AS inverse, count(*) AS n
      FROM pay GROUP BY country\$\$);
SELECT kappa.create_kafka_source('pay_src', target => 'pay', topic => 'pay',
    brokers => '$bs', parallelism => 2, options => '{"batch_size": 1000}');
});

my $n = 5000;
my (@msgs, $bad, $sum);
$bad = 0;
$sum = 0;
for my $i (1 .. $n)
{
	my $amount = $i % 97 == 0 ? 0 : ($i % 50) + 1;    # 0: division by zero in pay_ratio
	my $m = sprintf('{"card": "c%d", "merchant": "m%d", "amount": %d, "country": "%s", "ts": "2024-01-01T00:%02d:00Z"}',
		$i % 300, $i % 7, $amount, ('FR', 'DE', 'US')[ $i % 3 ], $i % 60);
	$m = '{"card": "broken' if $i % 211 == 0;
	if ($amount == 0 || $i % 211 == 0) { $bad++; } else { $sum += $amount; }
	push @msgs, $m;
}
kafka_produce($broker, 'pay', \@msgs);

kafka_wait($node,
	q{SELECT (SELECT sum(n) FROM pay_by_merchant) + (SELECT count(*) FROM kappa.errors)},
	$n, 'produced = rows applied + dead letters');
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), $bad, 'dead letters');
like($node->safe_psql('postgres',
	q{SELECT string_agg(DISTINCT error, ' | ') FROM kappa.errors WHERE sqlstate = '22012'}),
	qr/division by zero/, 'view errors isolated as dead letters');
is($node->safe_psql('postgres', 'SELECT sum(n), sum(total) FROM pay_by_merchant'),
	($n - $bad) . "|$sum", 'view totals');
is($node->safe_psql('postgres', 'SELECT sum(n) FROM pay_ratio'), $n - $bad,
	'both views got the same rows');

# while retained, the view equals its query over the stream's rows
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT merchant, count(*) AS n, sum(amount) AS total, max(ts) AS last_seen FROM pay GROUP BY 1
  EXCEPT SELECT * FROM pay_by_merchant) d}), 0, 'view equals plain SQL over the stream');

# expiry of retained rows runs in the background
kafka_wait($node, 'SELECT count(*) FROM pay', 0, 'retained rows expire', 60);
is($node->safe_psql('postgres', 'SELECT sum(n) FROM pay_by_merchant'), $n - $bad,
	'views keep their state after expiry');

# csv, text, bytea
$node->safe_psql('postgres', qq{
CREATE TABLE c (id int, name text, amount numeric);
CREATE TABLE t (line text, kafka_offset bigint);
CREATE TABLE b (raw bytea, kafka_key bytea);
SELECT kappa.create_kafka_source('csv_src', target => 'c', topic => 'csv', brokers => '$bs',
    format => 'csv', options => '{"delimiter": ";"}');
SELECT kappa.create_kafka_source('txt_src', target => 't', topic => 'txt', brokers => '$bs',
    format => 'text');
SELECT kappa.create_kafka_source('bin_src', target => 'b', topic => 'bin', brokers => '$bs',
    format => 'bytea');
});
kafka_produce($broker, 'csv', [ '1;one;1.5', '2;"two; quoted";2.5', 'x;bad;1' ]);
kafka_produce($broker, 'txt', [ 'hello world', 'second line' ]);
kafka_produce($broker, 'bin', [ "k1|\x01\x02\xff", "k2|plain" ], key_delim => '|');
kafka_wait($node, 'SELECT count(*), sum(amount) FROM c', '2|4.0', 'csv rows');
is($node->safe_psql('postgres', q{SELECT name FROM c WHERE id = 2}), 'two; quoted', 'csv quoting');
kafka_wait($node, q{SELECT string_agg(line, ',' ORDER BY kafka_offset) FROM t},
	'hello world,second line', 'text rows');
kafka_wait($node, q{SELECT string_agg(encode(raw, 'hex'), ',' ORDER BY kafka_key) FROM b},
	'0102ff,706c61696e', 'bytea rows');
kafka_wait($node, q{SELECT count(*) FROM kappa.errors WHERE source = 'csv_src'}, 1,
	'bad csv row is a dead letter');

# metadata columns: timestamp and headers
$node->safe_psql('postgres', qq{
CREATE TABLE meta (id int, kafka_key text, kafka_partition int, kafka_offset bigint,
                   kafka_timestamp timestamptz, kafka_headers jsonb);
SELECT kappa.create_kafka_source('meta_src', target => 'meta', topic => 'txt',
    brokers => '$bs', format => 'json', options => '{"strict": false}');
});
kafka_produce($broker, 'txt', [ 'm1|{"id": 1}' ], key_delim => '|',
	headers => [ 'trace=abc', 'tenant=t1' ]);
kafka_wait($node, q{SELECT count(*) FROM meta}, 1, 'message with headers');
is($node->safe_psql('postgres', q{
SELECT kafka_key, kafka_partition, kafka_offset >= 0,
       abs(extract(epoch FROM now() - kafka_timestamp)) < 60,
       kafka_headers->>'trace', kafka_headers->>'tenant'
  FROM meta}), 'm1|0|t|t|abc|t1', 'kafka_key, partition, offset, timestamp and headers');

$node->stop;
kafka_stop_broker($broker);
done_testing();
