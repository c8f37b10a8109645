# kappa.rewind_source against the dev broker: a table with envelope 'none'
# rewound with truncate_target ends with each message once (and its dead
# letters once); refused without it; rewinds while the worker consumes
# still give exactly once; 'latest' skips what is there; explicit offsets
# move only the partitions named; a time resolves through the broker's
# offsets-for-times (the dev broker answers -1: the partitions' ends); an
# upsert source with an ordering guard converges to the latest change of
# every key, computed here in Perl, with and without truncating; a stream
# target and a role that does not own the source are refused.
#
# produced = rows + dead letters, exactly, after every rewind.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(ev => 2, kv => 2, st => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_rewind');
my ($ret, $out, $err);

$node->safe_psql('postgres', q{
CREATE TABLE ev (id int NOT NULL, kafka_partition int, kafka_offset bigint,
                 kafka_timestamp timestamptz);
CREATE TABLE kv (id int PRIMARY KEY, v text NOT NULL, seq bigint);
SELECT kappa.create_stream('st', 'id int');
SELECT kappa.create_view('st_count', $$SELECT count(*) AS n FROM st$$);
CREATE ROLE regress_rw_other LOGIN;
});

# events: ids 1.., every 50th not JSON (a dead letter)
my $produced = 0;
my $bad = 0;

sub produce_events
{
	my ($count) = @_;
	my @msgs;
	for my $i ($produced + 1 .. $produced + $count)
	{
		if ($i % 50 == 0) { push @msgs, "not json $i"; $bad++; }
		else { push @msgs, qq({"id": $i}); }
	}
	kafka_produce($broker, 'ev', \@msgs);
	$produced += $count;
}

# the table holds every good message exactly once, and kappa.errors every
# bad one once
sub check_exactly_once
{
	my ($what) = @_;
	kafka_wait($node,
		q{SELECT (SELECT count(*) FROM ev) + (SELECT dead_letters FROM kappa.sources WHERE source = 'ev_src')},
		$produced, "$what: produced = rows + dead letters");
	is($node->safe_psql('postgres', q{
SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset)) + count(*) - count(DISTINCT id) FROM ev}),
		0, "$what: no message twice");
	is($node->safe_psql('postgres', q{SELECT count(*) FROM ev}), $produced - $bad,
		"$what: every good message once");
	is($node->safe_psql('postgres', q{SELECT dead_letters FROM kappa.sources WHERE source = 'ev_src'}),
		$bad, "$what: every bad message once in kappa.errors");
}

produce_events(400);
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('ev_src', target => 'ev', topic => 'ev', brokers => '$bs',
    options => '{"batch_size": 50}');
});
check_exactly_once('first read');

# refused without truncate_target: nothing changes
($ret, $out, $err) = $node->psql('postgres', q{SELECT kappa.rewind_source('ev_src', 'earliest')});
like($err, qr/cannot rewind kafka source "ev_src" into table "ev" without truncating it.*truncate_target => true/s,
	'envelope none: refused without truncate_target, with a hint');

# rewind to earliest, truncating
is($node->safe_psql('postgres', q{SELECT kappa.rewind_source('ev_src', 'earliest', truncate_target => true)}),
	'{"0": 0, "1": 0}', 'earliest: every partition back to 0');
check_exactly_once('after a rewind to earliest');

# rewinds while the worker consumes: every batch either commits before the
# rewind (and is truncated away) or fails on its offsets and is read again
$node->safe_psql('postgres', q{
SELECT kappa.pause_source('ev_src');
-- slow the worker down, so that the rewinds meet batches in flight
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN PERFORM pg_catalog.pg_sleep(0.0003); RETURN NEW; END$$;
CREATE TRIGGER slow BEFORE INSERT ON ev FOR EACH ROW EXECUTE FUNCTION slow();
});
produce_events(3000);
$node->safe_psql('postgres', q{SELECT kappa.resume_source('ev_src')});
for my $round (1 .. 4)
{
	kafka_wait($node, q{SELECT count(*) > 0 FROM ev}, 't', "race $round: the worker is consuming");
	usleep(50_000 * $round);
	$node->safe_psql('postgres', q{SELECT kappa.rewind_source('ev_src', 'earliest', truncate_target => true)});
}
check_exactly_once('rewinds while consuming');
$node->safe_psql('postgres', q{DROP TRIGGER slow ON ev});

# 'latest' skips what is there: paused, produce, rewind, resume
$node->safe_psql('postgres', q{SELECT kappa.pause_source('ev_src')});
# (a worker notices a pause between batches, within a second)
kafka_wait($node, q{SELECT partitions FROM kappa.sources WHERE source = 'ev_src'}, 0,
	'paused: no partition held');
kafka_produce($broker, 'ev', [ map { qq({"id": $_}) } 900001 .. 900100 ]);
my $ends = $node->safe_psql('postgres', q{SELECT kappa.rewind_source('ev_src', 'latest')});
$node->safe_psql('postgres', q{SELECT kappa.resume_source('ev_src')});
my $committed_sql = q{
SELECT '{' || string_agg(format('"%s": %s', partition, committed_offset), ', ' ORDER BY partition) || '}'
  FROM kappa.source_partitions WHERE source = 'ev_src'};
is($node->safe_psql('postgres', $committed_sql), $ends,
	"latest: the committed offsets are the partitions' ends ($ends)");
produce_events(100);
check_exactly_once('after latest (the skipped 100 never arrive)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ev WHERE id > 900000}), 0,
	'latest: the skipped messages are not in the table');
# they are in the topic: the next rewind to earliest reads them
$produced += 100;

# explicit offsets: partition 0 from offset 40, partition 1 untouched; the
# offsets 40.. of partition 0 (the skipped ones too) become rows or dead
# letters again
my $end0 = $node->safe_psql('postgres', q{
SELECT committed_offset FROM kappa.source_partitions WHERE source = 'ev_src' AND partition = 0});
is($node->safe_psql('postgres',
	q{SELECT kappa.rewind_source('ev_src', '{"0": 40}'::jsonb, truncate_target => true)}),
	'{"0": 40}', 'jsonb: returns the offsets given');
kafka_wait($node, q{
SELECT (SELECT count(*) FROM ev) +
       (SELECT count(*) FROM kappa.errors WHERE source = 'ev_src' AND partition = 0 AND "offset" >= 40)},
	$end0 - 40, 'jsonb: partition 0 read again from offset 40');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ev WHERE kafka_partition <> 0 OR kafka_offset < 40}), 0,
	'jsonb: nothing else');
# back to everything, for what follows
$node->safe_psql('postgres', q{SELECT kappa.rewind_source('ev_src', 'earliest', truncate_target => true)});
check_exactly_once('earliest again');

# a time: offsets-for-times of the broker; the dev broker answers -1 for
# every time, which Kafka defines as "no message at or after it": the end
my $mid = $node->safe_psql('postgres', q{SELECT min(kafka_timestamp) + interval '1 ms' FROM ev});
my $hw = $node->safe_psql('postgres', $committed_sql);
is($node->safe_psql('postgres',
	qq{SELECT kappa.rewind_source('ev_src', '$mid'::timestamptz, truncate_target => true)}),
	$hw, 'timestamptz: resolved by the broker (the dev broker: the partitions\' ends)');
is($node->safe_psql('postgres',
	qq{SELECT kappa.rewind_source('ev_src', '$mid', truncate_target => true)}),
	$hw, 'a timestamptz as text: the same');
usleep(1_500_000);
is($node->safe_psql('postgres', q{SELECT count(*) FROM ev}), 0,
	'timestamptz: nothing read again after the end');

# an upsert source with an ordering guard: 1500 changes over 100 keys
my (@changes, %want);
for my $seq (1 .. 1500)
{
	my $id = 1 + ($seq * 37) % 100;
	if ($seq % 11 == 0) { push @changes, qq({"id": $id}|); delete $want{$id}; }
	else { push @changes, qq({"id": $id}|{"v": "v$seq", "seq": $seq}); $want{$id} = "v$seq|$seq"; }
}
kafka_produce($broker, 'kv', \@changes, key_delim => '|', null_empty => 1);
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('kv_src', target => 'kv', topic => 'kv', brokers => '$bs',
    envelope => 'upsert', order_by => 'seq', options => '{"batch_size": 100}');
});
my $want = join("\n", map { "$_|$want{$_}" } sort { $a <=> $b } keys %want);
my $kv_sql = q{SELECT id, v, seq FROM kv ORDER BY id};
my $caught_up = q{SELECT lag = 0 AND committed_offsets = high_watermarks FROM kappa.sources WHERE source = 'kv_src'};
kafka_wait($node, $caught_up, 't', 'upsert: read');
is($node->safe_psql('postgres', $kv_sql), $want, 'upsert: the latest change of every key');

# someone damages the table; a rewind to earliest restores it
$node->safe_psql('postgres', q{DELETE FROM kv WHERE id % 3 = 0; UPDATE kv SET v = 'damaged' WHERE id % 3 = 1});
$node->safe_psql('postgres', q{SELECT kappa.rewind_source('kv_src', 'earliest')});
kafka_wait($node, $caught_up, 't', 'upsert: replayed');
is($node->safe_psql('postgres', $kv_sql), $want,
	'upsert rewound without truncating: converges to the same table');
cmp_ok($node->safe_psql('postgres', q{SELECT out_of_order FROM kappa.sources WHERE source = 'kv_src'}),
	'>', 0, 'upsert: the guard kept its positions (older changes dropped on replay)');

$node->safe_psql('postgres', q{SELECT kappa.rewind_source('kv_src', 'earliest', truncate_target => true)});
kafka_wait($node, $caught_up, 't', 'upsert: replayed from an empty table');
is($node->safe_psql('postgres', $kv_sql), $want,
	'upsert rewound with truncate_target: the same table again');

# refused: a stream target, a role that does not own the source
$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('st_src', target => 'st', topic => 'st', brokers => '$bs');
});
($ret, $out, $err) = $node->psql('postgres', q{SELECT kappa.rewind_source('st_src', 'earliest')});
like($err, qr/target "st" is a stream.*count messages twice.*drop and recreate/s,
	'a stream target is refused, with a hint');
($ret, $out, $err) = $node->psql('postgres',
	q{SET ROLE regress_rw_other; SELECT kappa.rewind_source('ev_src', 'latest')});
like($err, qr/must be owner of kafka source "ev_src"/, 'a role that does not own the source is refused');

# nothing went wrong in a worker: no internal error in the log
unlike(slurp_file($node->logfile), qr/TRAP:|was terminated by signal/,
	'no internal error, no crash');

done_testing();
