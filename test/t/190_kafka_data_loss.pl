# Never a silent loss: messages the broker dropped before a source read them
# are reported, never skipped unseen.
#
# The dev broker keeps only about 5 MiB per partition and drops older data.
# Two sources read a 1-partition topic each; after 100 messages they are
# paused and 60,000 more (~100 bytes each) are produced, so the partition's
# low watermark moves past the committed offset 100.  On resume:
#
# - lf (on_data_loss => 'fail') shows state failed, the missing range and
#   the hint in last_error, applies nothing more and keeps the lag current;
#   resume_source('lf', on_data_loss => 'record') then records the gap and
#   goes on;
# - lr (on_data_loss => 'record') writes one gap row to kappa.errors and
#   goes on.
#
# For both, with a few malformed messages before and after the gap:
#
#     messages produced = rows applied + dead letters + messages in gaps
#
# exactly, and the lost count equals the broker's low watermark (read with
# kcat) minus the committed offset.  Last, the broker is replaced by a fresh
# one on the same port: the stored next offsets are past the end of the new
# partitions, and both sources (one per policy) stop with state failed and
# "is past its end", recording nothing.

use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

# Start the dev broker with these topics on a port of our choosing (as in
# 180_kafka_partitions.pl); stopped at the end by 100_kafka_common.pl.
sub start_broker_on_port
{
	my ($port, %topics) = @_;
	no warnings 'once';
	my @args = ($main::kafka_dev_broker, '--exit-on-eof', '--port', $port);
	push @args, '--topic', "$_:$topics{$_}" for sort keys %topics;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(\@args, '<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while ($out !~ /^BOOTSTRAP (\S+)/m)
	{
		if (!$h->pumpable || time > $deadline)
		{
			eval { $h->kill_kill(grace => 1); 1 };
			return undef;
		}
		$h->pump_nb;
		usleep(20_000);
	}
	$out =~ /^BOOTSTRAP (\S+)/m;
	my $broker = { h => $h, in => \$in, out => \$out, err => \$err, bootstrap => $1 };
	push @main::kafka_brokers, $broker;
	return $broker;
}

my ($broker, $port);
for (1 .. 20)
{
	$port = 30000 + int(rand(25000));
	$broker = start_broker_on_port($port, lf => 1, lr => 1);
	last if $broker;
}
ok($broker, "dev broker on port $port");
my $bs = $broker->{bootstrap};

# the first offset the broker still holds in partition 0 of $topic
sub low_watermark
{
	my ($topic) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'kcat', '-C', '-b', $bs, '-t', $topic, '-p', '0', '-o', 'beginning',
			'-c', '1', '-e', '-f', '%o\n' ],
		'<', \'', '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
	die "kcat printed no offset: $out $err" unless $out =~ /^(\d+)$/m;
	return $1;
}

# Messages are numbered by their offset (one partition, one producer at a
# time): message $o is {"id": $o, ...}, ~100 bytes, or malformed JSON.
my %malformed = map { $_ => 1 } (
	7, 42, 99,                    # before the gap
	100, 101, 5000,               # will be lost
	50000, 59999, 60099,          # after the gap, in the same production
	60100, 60110, 60149);         # later
my $pad = 'x' x 75;
sub messages
{
	my ($from, $to) = @_;
	return [ map {
		$malformed{$_}
		  ? qq({"id": $_, "pad": "$pad)
		  : qq({"id": $_, "pad": "$pad"})
	} ($from .. $to) ];
}
my %produced = (lf => 0, lr => 0);
sub produce
{
	my ($topic, $from, $to) = @_;
	die "offsets out of order" unless $from == $produced{$topic};
	$produced{$topic} += kafka_produce($broker, $topic, messages($from, $to));
}

# What a source must show when offsets [0, $committed) and [$lo, produced)
# were read and [$committed, $lo) lost: rows, dead letters and their offsets.
sub expected
{
	my ($topic, $committed, $lo) = @_;
	my @read = ((0 .. $committed - 1), ($lo .. $produced{$topic} - 1));
	my @dead = grep { $malformed{$_} } @read;
	return {
		rows => scalar(@read) - scalar(@dead),
		dead => scalar(@dead),
		dead_offsets => join(',', @dead),
		first_after => (grep { !$malformed{$_} } ($lo .. $produced{$topic} - 1))[0],
	};
}

my $node = kafka_node('kafka_data_loss');
$node->safe_psql('postgres', qq{
CREATE TABLE lf_t (id int PRIMARY KEY, pad text, kafka_offset bigint);
CREATE TABLE lr_t (id int PRIMARY KEY, pad text, kafka_offset bigint);
SELECT kappa.create_kafka_source('lf', target => 'lf_t', topic => 'lf',
    brokers => '$bs', start => 'earliest');
SELECT kappa.create_kafka_source('lr', target => 'lr_t', topic => 'lr',
    brokers => '$bs', start => 'earliest', on_data_loss => 'record');
});
is($node->safe_psql('postgres',
	q{SELECT string_agg(source || ':' || on_data_loss, ',' ORDER BY source) FROM kappa.sources}),
	'lf:fail,lr:record', 'on_data_loss: fail by default, record when asked');

# --- 100 messages each, 3 malformed; read completely
for my $t (qw(lf lr))
{
	produce($t, 0, 99);
	kafka_wait($node,
		qq{SELECT (SELECT count(*) FROM ${t}_t), dead_letters, committed_offsets, lag
		     FROM kappa.sources WHERE source = '$t'},
		'97|3|{100}|0', "$t: the first 100 messages read (97 rows, 3 dead letters)");
}

# --- paused, the sources fall 60,000 messages behind; the broker drops
# the oldest of them
for my $t (qw(lf lr))
{
	$node->safe_psql('postgres', qq{SELECT kappa.pause_source('$t')});
	kafka_wait($node,
		qq{SELECT state, workers, partitions FROM kappa.sources WHERE source = '$t'},
		'paused|1|0', "$t: paused, one worker holding no partition");
}
produce($_, 100, 60099) for qw(lf lr);
for my $t (qw(lf lr))
{
	kafka_wait($node,
		qq{SELECT lag, high_watermarks FROM kappa.sources WHERE source = '$t'},
		'60000|{60100}', "$t: the lag of the paused source counts the 60,000 new messages");
}
my %lo = map { $_ => low_watermark($_) } qw(lf lr);
for my $t (qw(lf lr))
{
	note "$t: low watermark $lo{$t}";
	ok($lo{$t} > 5001 && $lo{$t} <= 50000,
		"$t: the broker dropped offsets 100 to at least 5000, kept 50000 on (low watermark $lo{$t})");
}

# --- lf, on_data_loss 'fail': stops, says what is missing, applies nothing
$node->safe_psql('postgres', q{SELECT kappa.resume_source('lf')});
kafka_wait($node,
	q{SELECT state, workers, partitions, committed_offsets, lag, recorded_gaps, lost_messages
	    FROM kappa.sources WHERE source = 'lf'},
	'failed|1|0|{100}|60000|0|0',
	'lf: resumed under fail: state failed, no partition held, offset kept', 90);
my $lost_f = $lo{lf} - 100;
is($node->safe_psql('postgres', q{SELECT last_error FROM kappa.sources WHERE source = 'lf'}),
	"the broker no longer holds offsets 100 to @{[ $lo{lf} - 1 ]} of partition 0 of topic \"lf\" "
	  . "($lost_f messages lost); on_data_loss is 'fail'. To record the gap in kappa.errors and go on: "
	  . "SELECT kappa.resume_source('lf', on_data_loss => 'record'); or rewind the source.",
	'lf: last_error names the partition, the missing range, the count and the way on');

# the lag stays current while failed; nothing is applied
produce('lf', 60100, 60119);
kafka_wait($node,
	q{SELECT lag, high_watermarks FROM kappa.sources WHERE source = 'lf'},
	'60020|{60120}', 'lf: failed, its lag follows the 20 messages produced since');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM lf_t), (SELECT max(kafka_offset) FROM lf_t),
       (SELECT count(*) FROM kappa.errors WHERE source = 'lf'),
       state, partitions, committed_offsets, messages
  FROM kappa.sources WHERE source = 'lf'}),
	'97|98|3|failed|0|{100}|97', 'lf: failed: nothing applied, nothing recorded, offset not moved');

# --- lr, on_data_loss 'record': one gap row, and on
$node->safe_psql('postgres', q{SELECT kappa.resume_source('lr')});
my $e = expected('lr', 100, $lo{lr});
my $lost_r = $lo{lr} - 100;
kafka_wait($node,
	q{SELECT state, partitions, (SELECT count(*) FROM lr_t), dead_letters, recorded_gaps,
	         lost_messages, committed_offsets, lag
	    FROM kappa.sources WHERE source = 'lr'},
	"running|1|$e->{rows}|$e->{dead}|1|$lost_r|{60100}|0",
	"lr: gap recorded, the rest read: $e->{rows} rows, $e->{dead} dead letters, $lost_r lost",
	90);
is($node->safe_psql('postgres', q{
SELECT kind, topic, partition, "offset", last_offset, messages, key IS NULL, payload IS NULL,
       sqlstate IS NULL, error
  FROM kappa.errors WHERE source = 'lr' AND kind = 'gap'}),
	"gap|lr|0|100|@{[ $lo{lr} - 1 ]}|$lost_r|t|t|t|"
	  . "the broker no longer holds offsets 100 to @{[ $lo{lr} - 1 ]} of partition 0 of topic \"lr\" "
	  . "($lost_r messages lost)",
	'lr: one gap row: partition, first and last missing offsets, count, no payload');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM lr_t)
     + (SELECT sum(messages) FROM kappa.errors WHERE source = 'lr')}),
	$produced{lr}, "lr: produced ($produced{lr}) = rows + dead letters + messages in gaps (kappa.errors)");
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM lr_t) + dead_letters + lost_messages
  FROM kappa.sources WHERE source = 'lr'}),
	$produced{lr}, "lr: produced ($produced{lr}) = rows + dead letters + lost messages (kappa.sources)");
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE kafka_offset >= 100 AND kafka_offset < } . $lo{lr} . q{),
       count(*) FILTER (WHERE id <> kafka_offset),
       min(kafka_offset) FILTER (WHERE kafka_offset >= 100)
  FROM lr_t}),
	"0|0|$e->{first_after}", 'lr: no row from the gap; reading went on at the low watermark');
is($node->safe_psql('postgres', q{
SELECT string_agg("offset"::text, ',' ORDER BY "offset")
  FROM kappa.errors WHERE source = 'lr' AND kind = 'dead_letter'}),
	$e->{dead_offsets}, 'lr: dead letters are the malformed messages before and after the gap');

# later messages are read as usual
produce('lr', 60100, 60149);
$e = expected('lr', 100, $lo{lr});
kafka_wait($node,
	q{SELECT state, (SELECT count(*) FROM lr_t), dead_letters, recorded_gaps, lost_messages,
	         committed_offsets, lag,
	         (SELECT count(*) FROM lr_t) + dead_letters + lost_messages
	    FROM kappa.sources WHERE source = 'lr'},
	"running|$e->{rows}|$e->{dead}|1|$lost_r|{60150}|0|$produced{lr}",
	'lr: 50 later messages read; still produced = rows + dead letters + lost');

# --- lf, failed, resumed with on_data_loss => 'record'
$lo{lf} = low_watermark('lf');    # the 20 messages since may have moved it
note "lf: low watermark $lo{lf}";
$node->safe_psql('postgres',
	q{SELECT kappa.resume_source('lf', on_data_loss => 'record')});
$e = expected('lf', 100, $lo{lf});
$lost_f = $lo{lf} - 100;
kafka_wait($node,
	q{SELECT on_data_loss, state, partitions, (SELECT count(*) FROM lf_t), dead_letters,
	         recorded_gaps, lost_messages, committed_offsets, lag
	    FROM kappa.sources WHERE source = 'lf'},
	"record|running|1|$e->{rows}|$e->{dead}|1|$lost_f|{60120}|0",
	"lf: resumed with record: gap recorded ($lost_f lost), the rest read", 90);
is($node->safe_psql('postgres', q{
SELECT kind, partition, "offset", last_offset, messages, payload IS NULL
  FROM kappa.errors WHERE source = 'lf' AND kind = 'gap'}),
	"gap|0|100|@{[ $lo{lf} - 1 ]}|$lost_f|t", 'lf: one gap row, from the committed offset to the low watermark');
is($node->safe_psql('postgres', q{
SELECT string_agg("offset"::text, ',' ORDER BY "offset")
  FROM kappa.errors WHERE source = 'lf' AND kind = 'dead_letter'}),
	$e->{dead_offsets}, 'lf: dead letters are the malformed messages before and after the gap');
produce('lf', 60120, 60149);
$e = expected('lf', 100, $lo{lf});
kafka_wait($node,
	q{SELECT state, (SELECT count(*) FROM lf_t), committed_offsets, lag
	    FROM kappa.sources WHERE source = 'lf'},
	"running|$e->{rows}|{60150}|0", 'lf: 30 later messages read');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM lf_t)
     + (SELECT sum(messages) FROM kappa.errors WHERE source = 'lf'),
       (SELECT count(*) FROM lf_t) + dead_letters + lost_messages,
       (SELECT count(*) FROM lf_t WHERE kafka_offset >= 100 AND kafka_offset < } . $lo{lf} . q{)
  FROM kappa.sources WHERE source = 'lf'}),
	"$produced{lf}|$produced{lf}|0",
	"lf: produced ($produced{lf}) = rows + dead letters + messages in gaps, no row from the gap");

# --- the broker is replaced by a fresh one on the same port: the stored
# offsets are past the end of its partitions, for either policy
my $lf_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_kappa source lf'});
like($lf_pid, qr/^\d+$/, 'lf: one worker');
$node->safe_psql('postgres',
	q{SELECT kappa.resume_source('lf', on_data_loss => 'fail')});
kafka_wait($node,
	qq{SELECT count(*), count(*) FILTER (WHERE pid <> $lf_pid) FROM pg_stat_activity
	    WHERE application_name = 'pg_kappa source lf'},
	'1|1', 'lf: resume_source with on_data_loss restarts the worker', 90);
kafka_wait($node,
	q{SELECT string_agg(concat_ws(':', source, on_data_loss, state, workers, partitions, lag), ','
	                    ORDER BY source)
	    FROM kappa.sources},
	'lf:fail:running:1:1:0,lr:record:running:1:1:0',
	'lf back to on_data_loss fail; both read to the end', 90);
# what each source holds now, in full: rows, dead letters, gaps, lost
my %final = map { $_ => expected($_, 100, $lo{$_}) } qw(lf lr);
my $final = join(',', map {
	"$_:$produced{$_}:$final{$_}{rows}:$final{$_}{dead}:1:@{[ $lo{$_} - 100 ]}"
} qw(lf lr));
my $holds = q{
WITH r (source, n) AS (SELECT 'lf', count(*) FROM lf_t UNION ALL SELECT 'lr', count(*) FROM lr_t)
SELECT string_agg(concat_ws(':', s.source, r.n + s.dead_letters + s.lost_messages, r.n,
                            s.dead_letters, s.recorded_gaps, s.lost_messages), ',' ORDER BY s.source)
  FROM kappa.sources s JOIN r USING (source)};
is($node->safe_psql('postgres', $holds), $final,
	'both: produced = rows + dead letters + lost, before the broker is replaced');
kafka_wait($node, q{
WITH r (source, n) AS (SELECT 'lf', count(*) FROM lf_t UNION ALL SELECT 'lr', count(*) FROM lr_t)
SELECT string_agg(s.source || ':' || s.messages || ':' || r.n, ',' ORDER BY s.source)
  FROM kappa.sources s JOIN r USING (source)},
	"lf:$final{lf}{rows}:$final{lf}{rows},lr:$final{lr}{rows}:$final{lr}{rows}",
	'kappa.sources.messages counts the rows applied, across worker restarts');
my $counted = $node->safe_psql('postgres', q{
SELECT string_agg(concat_ws(':', source, messages,
                            (SELECT count(*) FROM kappa.errors e WHERE e.source = s.source)),
                  ',' ORDER BY source)
  FROM kappa.sources s});
note "messages and kappa.errors rows: $counted";

kafka_stop_broker($broker);
$broker = undef;
for (1 .. 50)
{
	$broker = start_broker_on_port($port, lf => 1, lr => 1);
	last if $broker;
	usleep(100_000);
}
ok($broker, 'a fresh dev broker on the same port');
for my $t (qw(lf lr))
{
	kafka_wait($node,
		qq{SELECT state, workers, partitions, committed_offsets, last_error
		     FROM kappa.sources WHERE source = '$t'},
		"failed|1|0|{60150}|the next offset 60150 of partition 0 of topic \"$t\" is past its end (0): "
		  . "the topic was deleted and created again, or the broker lost its log. "
		  . "Drop the source and create it again to read the topic from its start.",
		"$t: offset past the end of the new partition: failed, with the reason", 90);
}

# new messages on the new broker are not read (nor counted as a gap)
$produced{$_} = 0 for qw(lf lr);
produce($_, 0, 4) for qw(lf lr);
kafka_wait($node,
	q{SELECT string_agg(source || ':' || high_watermarks::text, ',' ORDER BY source) FROM kappa.sources},
	'lf:{5},lr:{5}', 'the failed sources see the new partitions\' 5 messages');
is($node->safe_psql('postgres', $holds), $final,
	'past the end: nothing applied, no gap recorded, no dead letter');
is($node->safe_psql('postgres', q{
SELECT string_agg(concat_ws(':', source, messages,
                            (SELECT count(*) FROM kappa.errors e WHERE e.source = s.source)),
                  ',' ORDER BY source)
  FROM kappa.sources s}),
	$counted, 'past the end: no message counted, no row added to kappa.errors');
is($node->safe_psql('postgres',
		q{SELECT string_agg(source || ':' || state || ':' || committed_offsets::text, ',' ORDER BY source)
		    FROM kappa.sources}),
	'lf:failed:{60150},lr:failed:{60150}', 'past the end: both still failed, offsets kept');

$node->stop;
kafka_stop_broker($broker);
done_testing();
