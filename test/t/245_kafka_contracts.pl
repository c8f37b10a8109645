# Data contracts on Kafka sources (docs/contracts.md): expectations on a
# stream (with a continuous view) and on a table, each action.
#
# * 'warn' keeps the row and counts it; 'dead_letter' sends the message to
#   kappa.errors with the expectation's name in the error:
#   produced = rows applied + dead letters, exactly, and kappa.expectations
#   counts every message once (a range tried again after a bad message is
#   not counted twice);
# * a keyed changelog (envelope 'upsert') is checked on insert and on
#   update: a change that would make a row violate is a dead letter and the
#   row keeps its last good version;
# * 'fail' stops the source, stream or table: state failed with the
#   expectation in last_error, the batch not applied, no restart loop;
#   replacing the expectation with a 'dead_letter' one lets it go on from
#   where it stopped, exactly.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(clicks => 3, orders => 2, cards => 1, audit => 1, ledger => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_contracts');

$node->safe_psql('postgres', q{
SELECT kappa.create_stream('clicks', 'user_id int, url text, amount numeric', retain => 'infinity');
SELECT kappa.create_view('clicks_per_url',
  $$SELECT url, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY url$$);
SELECT kappa.add_expectation('clicks', 'positive_amount', 'amount > 0', 'dead_letter');
SELECT kappa.add_expectation('clicks', 'has_url', 'url IS NOT NULL', 'warn');

CREATE TABLE orders (id int PRIMARY KEY, qty int, price numeric);
SELECT kappa.add_expectation('orders', 'positive_qty', 'qty > 0', 'dead_letter');
SELECT kappa.add_expectation('orders', 'priced', 'price IS NOT NULL', 'warn');

CREATE TABLE cards (id int PRIMARY KEY, credit_limit numeric);
SELECT kappa.add_expectation('cards', 'positive_limit', 'credit_limit > 0', 'dead_letter');

SELECT kappa.create_stream('audit', 'x int', retain => 'infinity');
SELECT kappa.add_expectation('audit', 'small', 'x < 100', 'fail');
CREATE TABLE ledger (x int);
SELECT kappa.add_expectation('ledger', 'small', 'x < 100', 'fail');
});

# ------------------------------------------------------------ warn, dead_letter
srand(245);
my (@clicks, $neg, $nourl);
my $n = 3000;
for my $i (1 .. $n)
{
	my $amount = ($i % 10 == 3) ? -$i : $i;
	my $url = ($i % 17 == 5) ? 'null' : '"/p' . ($i % 7) . '"';
	$neg++ if $amount <= 0;
	$nourl++ if $url eq 'null';
	push @clicks, qq({"user_id": $i, "url": $url, "amount": $amount});
}
kafka_produce($broker, 'clicks', \@clicks);

my (@orders, $badqty, $noprice);
my $m = 1000;
for my $i (1 .. $m)
{
	my $qty = ($i % 13 == 0) ? 0 : 1 + $i % 5;
	my $price = ($i % 11 == 0) ? 'null' : $i;
	$badqty++ if $qty <= 0;
	$noprice++ if $price eq 'null';
	push @orders, qq({"id": $i, "qty": $qty, "price": $price});
}
kafka_produce($broker, 'orders', \@orders);

$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('clicks_src', target => 'clicks', topic => 'clicks',
    brokers => '$bs', options => '{"batch_size": 500}');
SELECT kappa.create_kafka_source('orders_src', target => 'orders', topic => 'orders',
    brokers => '$bs', options => '{"batch_size": 300}');
});

kafka_wait($node,
	q{SELECT (SELECT count(*) FROM clicks) + (SELECT count(*) FROM kappa.errors WHERE source = 'clicks_src')},
	$n, 'stream: produced = rows applied + dead letters');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clicks'), $n - $neg, 'stream: rows applied');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.errors WHERE source = 'clicks_src' AND sqlstate = '23514'
   AND error LIKE 'row violates expectation "positive_amount" of stream "clicks"%'}),
	$neg, 'stream: every dead letter names the expectation');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clicks WHERE url IS NULL'),
	scalar(grep { /"url": null/ && !/"amount": -/ } @clicks), "stream: 'warn' keeps the row");
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT * FROM clicks_per_url
                      EXCEPT SELECT url, count(*), sum(amount) FROM clicks GROUP BY url) d}),
	'0', 'stream: the view equals its query over the rows applied');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT url, count(*), sum(amount) FROM clicks GROUP BY url
                      EXCEPT SELECT * FROM clicks_per_url) d}),
	'0', 'stream: and the other way round');
is($node->safe_psql('postgres', q{
SELECT string_agg(format('%s %s %s', name, rows_checked, rows_violating), ', ' ORDER BY name)
  FROM kappa.expectations WHERE relation = 'clicks'::regclass}),
	"has_url $n $nourl, positive_amount $n $neg", 'stream: each message counted once');

kafka_wait($node,
	q{SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM kappa.errors WHERE source = 'orders_src')},
	$m, 'table: produced = rows applied + dead letters');
is($node->safe_psql('postgres', 'SELECT count(*) FROM orders'), $m - $badqty, 'table: rows applied');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.errors WHERE source = 'orders_src' AND sqlstate = '23514'
   AND error LIKE 'row violates expectation "positive_qty" of table "orders"%'}),
	$badqty, 'table: every dead letter names the expectation');
is($node->safe_psql('postgres', 'SELECT count(*) FROM orders WHERE price IS NULL'),
	scalar(grep { /"price": null/ && !/"qty": 0,/ } @orders), "table: 'warn' keeps the row");
is($node->safe_psql('postgres', q{
SELECT string_agg(format('%s %s %s', name, rows_checked, rows_violating), ', ' ORDER BY name)
  FROM kappa.expectations WHERE relation = 'orders'::regclass}),
	"positive_qty $m $badqty, priced $m $noprice", 'table: each message counted once');

# ------------------------------------------------------------ keyed changes
# card 1 is created, then raised, then set to -5 (refused: keeps 200,
# whether or not the batch folded its changes into the last one); card 2
# is created at -1 (refused: absent); card 3 is created and deleted; card
# 5 is created at 0 (refused)
kafka_produce($broker, 'cards', [
	'{"id": 1}|{"id": 1, "credit_limit": 100}',
	'{"id": 1}|{"id": 1, "credit_limit": 200}',
	'{"id": 1}|{"id": 1, "credit_limit": -5}',
	'{"id": 2}|{"id": 2, "credit_limit": -1}',
	'{"id": 3}|{"id": 3, "credit_limit": 30}',
	'{"id": 3}|',
	'{"id": 4}|{"id": 4, "credit_limit": 40}',
	'{"id": 5}|{"id": 5, "credit_limit": 0}',
], key_delim => '|', null_empty => 1);
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('cards_src', target => 'cards', topic => 'cards',
    brokers => '$bs', envelope => 'upsert');
});
kafka_wait($node, q{SELECT committed_offsets[1] FROM kappa.sources WHERE source = 'cards_src'},
	'8', 'upsert: every change applied or a dead letter');
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s=%s', id, credit_limit), ' ' ORDER BY id) FROM cards}),
	'1=200 4=40', 'upsert: violating changes refused, the last good version kept');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.errors WHERE source = 'cards_src'
   AND error LIKE 'row violates expectation "positive_limit"%'}),
	'3', 'upsert: one dead letter per violating change');

# ------------------------------------------------------------ fail
# a source of a stream and one of a table: five good messages, then a bad
# one among good ones
for my $t ('audit', 'ledger')
{
	$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('${t}_src', target => '$t', topic => '$t', brokers => '$bs');
});
	kafka_produce($broker, $t, [ map { qq({"x": $_}) } 1 .. 5 ]);
	kafka_wait($node, "SELECT count(*) FROM $t", '5', "$t: the good messages applied");
	kafka_produce($broker, $t, [ map { qq({"x": $_}) } 6, 7, 500, 8, 9 ]);
	kafka_wait($node, "SELECT state FROM kappa.sources WHERE source = '${t}_src'",
		'failed', "$t: 'fail' stops the source");
	like($node->safe_psql('postgres', "SELECT last_error FROM kappa.sources WHERE source = '${t}_src'"),
		qr/^stopped by an expectation: row violates expectation "small" of (stream|table) "$t": The row does not satisfy x < 100/,
		"$t: last_error names the expectation");
	is($node->safe_psql('postgres', "SELECT count(*) FROM $t"), '5', "$t: the failing batch is not applied");
	is($node->safe_psql('postgres',
		"SELECT committed_offsets[1] FROM kappa.sources WHERE source = '${t}_src'"),
		'5', "$t: its offsets neither");

	# the worker stays, failed, without restarting: same pid for 3 seconds
	my $pid = $node->safe_psql('postgres', qq{
SELECT st.pid FROM kappa.source_status st JOIN kappa.source_catalog s ON s.id = st.source_id
 WHERE s.name = '${t}_src'});
	my $deadline = time + 3;
	my $steady = 1;
	while (time < $deadline)
	{
		my $now = $node->safe_psql('postgres', qq{
SELECT format('%s %s', st.pid, src.state)
  FROM kappa.source_status st JOIN kappa.source_catalog s ON s.id = st.source_id
  JOIN kappa.sources src ON src.source = s.name
 WHERE s.name = '${t}_src'});
		$steady = 0 if $now ne "$pid failed";
		usleep(200_000);
	}
	ok($steady, "$t: the worker stays failed, not restarting");
	ok($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '1',
		"$t: the worker is alive");

	# the expectation replaced by a 'dead_letter' one: the source goes on
	$node->safe_psql('postgres', qq{
BEGIN;
SELECT kappa.drop_expectation('$t', 'small');
SELECT kappa.add_expectation('$t', 'small', 'x < 100', 'dead_letter');
COMMIT;
});
	kafka_wait($node,
		"SELECT (SELECT count(*) FROM $t) + (SELECT count(*) FROM kappa.errors WHERE source = '${t}_src')",
		'10', "$t: produced = rows applied + dead letters after the source went on");
	is($node->safe_psql('postgres', "SELECT string_agg(x::text, ',' ORDER BY x) FROM $t"),
		'1,2,3,4,5,6,7,8,9', "$t: each good message applied once");
	kafka_wait($node, "SELECT state FROM kappa.sources WHERE source = '${t}_src'",
		'running', "$t: running again");
}

# no worker ever ended in an internal error
unlike(slurp_file($node->logfile), qr/ XX000 /, 'no internal error in the log');

done_testing();
