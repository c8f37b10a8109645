# format 'avro': messages in the Confluent wire format, encoded by an
# independent implementation (Debian's python3-avro, through
# test/avro_tool.py) with writer schemas in the dev schema registry
# (test/dev_registry.py).
#
#  - types: every primitive and logical type, enum (into text and into a
#    PostgreSQL enum, the second through a named reference), fixed, array
#    (into an array column), map and record (into jsonb, and into a
#    composite type by attribute name), nullable and other
#    unions.  The expected table is computed independently: the same JSON
#    the encoder was given, turned into rows by PostgreSQL's own
#    jsonb_populate_recordset and input functions.
#  - bad input: no magic byte, an unknown schema id (404), a truncated body,
#    invalid UTF-8, an enum index out of range, an array that claims more
#    items than the message holds, a decimal too large for its column: dead
#    letters with the reason, nothing else stops.
#  - the registry down (503): the source waits in state 'retrying' with
#    last_error, no dead letters, and catches up when the registry is back.
#  - evolution under a running source: a field added (ignored), removed
#    (NULL or the default), promoted (int to long, float to double); then
#    changes the target cannot absorb (a record for an integer column, a
#    NOT NULL column whose field vanished): dead letters naming the schema
#    id, and the source shows degraded.  kappa.sources shows the schema ids.
#  - a stream with a continuous view, through SIGKILLs of the worker and of
#    the postmaster: the view equals its query as plain SQL over the
#    retained rows.
#  - envelope 'upsert' with Avro keys (a record key and a one-value key)
#    and Avro values; tombstones delete.
#  - registry credentials from the user mapping; wrong ones: retrying.
#  - who may point a worker at a registry, and at what.
#
# Every topic: messages produced = rows applied + dead letters, exactly.

use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

require "./test/t/100_kafka_common.pl";

plan skip_all => "/usr/bin/python3 has no avro module (Debian's python3-avro)"
  unless system("/usr/bin/python3 -c 'import avro.io' >/dev/null 2>&1") == 0;

my $json = JSON::PP->new->utf8->canonical;
my $registry = kafka_start_registry();
my $reg = $registry->{url};
my $broker = kafka_start_broker(types => 2, small => 1, events => 2, acct => 2, acct1 => 1, evol => 1, dbz => 1, jdrift => 1, evols => 1, acctv => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_avro');
my $http = HTTP::Tiny->new;

$node->safe_psql('postgres', qq{
CREATE SERVER reg FOREIGN DATA WRAPPER kappa_kafka
  OPTIONS (brokers '$bs', schema_registry '$reg');
CREATE TYPE mood AS ENUM ('HAPPY', 'SAD', 'ANGRY');
CREATE TYPE inner_t AS (y text, x int, z date);  -- by name, not position
});

sub count_of
{
	my ($sql) = @_;
	return kafka_query($node, $sql);
}

# ---------------------------------------------------------------- types
my $types_schema = $json->encode({
	type => 'record', name => 'Row', namespace => 'test',
	fields => [
		{ name => 'id', type => 'int' },
		{ name => 'l', type => 'long' },
		{ name => 'f', type => 'float' },
		{ name => 'd', type => 'double' },
		{ name => 'b', type => 'boolean' },
		{ name => 's', type => 'string' },
		{ name => 'by', type => 'bytes' },
		{ name => 'fx', type => { type => 'fixed', name => 'Four', size => 4 } },
		{ name => 'dec', type => { type => 'bytes', logicalType => 'decimal', precision => 10, scale => 2 } },
		{ name => 'decf', type => { type => 'fixed', name => 'Money', size => 8,
				logicalType => 'decimal', precision => 18, scale => 4 } },
		{ name => 'dt', type => { type => 'int', logicalType => 'date' } },
		{ name => 'tm', type => { type => 'int', logicalType => 'time-millis' } },
		{ name => 'tu', type => { type => 'long', logicalType => 'time-micros' } },
		{ name => 'tsm', type => { type => 'long', logicalType => 'timestamp-millis' } },
		{ name => 'tsu', type => { type => 'long', logicalType => 'timestamp-micros' } },
		{ name => 'lts', type => { type => 'long', logicalType => 'local-timestamp-micros' } },
		{ name => 'u', type => { type => 'string', logicalType => 'uuid' } },
		{ name => 'e', type => { type => 'enum', name => 'Mood', symbols => [ 'HAPPY', 'SAD', 'ANGRY' ] } },
		{ name => 'e2', type => 'Mood' },
		{ name => 'arr', type => { type => 'array', items => 'int' } },
		{ name => 'm', type => { type => 'map', values => 'long' } },
		{ name => 'rec', type => { type => 'record', name => 'Inner',
				fields => [ { name => 'x', type => 'int' }, { name => 'y', type => [ 'null', 'string' ] } ] } },
		{ name => 'opt', type => [ 'null', 'string' ], default => undef },
		{ name => 'un', type => [ 'int', 'string' ] },
		{ name => 'money2', type => 'Money' },
		{ name => 'rec2', type => 'Inner' },
		{ name => 'extra', type => 'string' },
	] });

# the target: a column per field (but 'extra'), one without a field
# (default), metadata
my $cols = q{id int, l bigint, f real, d float8, b boolean, s text, "by" bytea, fx bytea,
  dec numeric, decf numeric, dt date, tm time, tu time, tsm timestamptz, tsu timestamptz,
  lts timestamp, u uuid, e text, e2 mood, arr int[], m jsonb, rec jsonb, opt text, un text,
  money2 numeric, rec2 inner_t};
$node->safe_psql('postgres', qq{
CREATE TABLE types ($cols, missing int DEFAULT 42, kafka_partition int, kafka_offset bigint);
CREATE TABLE types_expected ($cols);
SELECT kappa.create_kafka_source('types_src', target => 'types', topic => 'types',
    server => 'reg', format => 'avro');
});

srand(20261126);
my @values;
for my $i (1 .. 300)
{
	my $ts = sprintf('20%02d-%02d-%02dT%02d:%02d:%02d', 10 + int(rand(20)), 1 + int(rand(12)),
		1 + int(rand(28)), int(rand(24)), int(rand(60)), int(rand(60)));
	push @values, {
		id => $i,
		l => int(rand(2**52)) * (rand() < 0.5 ? -1 : 1),
		f => (int(rand(4000)) - 2000) / 4,
		d => (int(rand(2e6)) - 1e6) / 1000,
		b => (rand() < 0.5 ? JSON::PP::true : JSON::PP::false),
		s => "text $i \x{e9}\x{4e2d}",
		by => sprintf('\\x%02x%02x%02x', $i % 256, int(rand(256)), int(rand(256))),
		fx => sprintf('\\x%08x', int(rand(2**32))),
		dec => sprintf('%.2f', (rand() - 0.5) * 2e6),
		decf => sprintf('%.4f', (rand() - 0.5) * 2e12),
		dt => substr($ts, 0, 10),
		tm => sprintf('%02d:%02d:%02d.%03d', int(rand(24)), int(rand(60)), int(rand(60)), int(rand(1000))),
		tu => sprintf('%02d:%02d:%02d.%06d', int(rand(24)), int(rand(60)), int(rand(60)), int(rand(1e6))),
		tsm => sprintf('%s.%03d+00:00', $ts, int(rand(1000))),
		tsu => sprintf('%s.%06d+02:00', $ts, int(rand(1e6))),
		lts => sprintf('%s.%06d', $ts, int(rand(1e6))),
		u => sprintf('%08x-%04x-4%03x-a%03x-%06x%06x', int(rand(2**32)), int(rand(2**16)),
			int(rand(2**12)), int(rand(2**12)), int(rand(2**24)), int(rand(2**24))),
		e => (qw(HAPPY SAD ANGRY))[ $i % 3 ],
		e2 => (qw(HAPPY SAD ANGRY))[ ($i + 1) % 3 ],
		arr => [ map { int(rand(1000)) - 500 } 1 .. ($i % 5) ],
		m => { map { ("k$_" => int(rand(1e9))) } 1 .. ($i % 4) },
		rec => { x => $i, y => ($i % 2 ? "y$i" : undef) },
		opt => ($i % 3 ? "o$i" : undef),
		un => ($i % 2 ? $i * 10 : "u$i"),
		money2 => sprintf('%.4f', $i / 7),
		rec2 => { x => -$i, y => ($i % 3 ? qq(a "quoted", \\ (y$i)) : undef) },
		extra => 'not a column',
	};
}
my $types_lines = [ map { $json->encode({ value => $_ }) } @values ];
my $answer = kafka_produce_avro($registry, $broker, 'types', $types_lines,
	value_schema => $types_schema, value_subject => 'types-value');
my $types_id = $answer->{value_schema_id};
ok($types_id > 0, "types schema registered as id $types_id");

# the expected rows, by PostgreSQL from the same JSON
my $values_json = $json->encode(\@values);
$node->safe_psql('postgres', qq{
INSERT INTO types_expected
  SELECT * FROM jsonb_populate_recordset(NULL::types_expected, \$json\$$values_json\$json\$);
});

kafka_wait($node, 'SELECT count(*) FROM types', 300, 'types: every message applied');
my $collist = 'id, l, f, d, b, s, "by", fx, dec, decf, dt, tm, tu, tsm, tsu, lts, u, e, e2, arr, m, rec, opt, un, money2, rec2';
is(count_of(qq{SELECT count(*) FROM (SELECT $collist FROM types EXCEPT ALL
                                     SELECT $collist FROM types_expected) x}),
	0, 'types: no row that the independent encoding does not have');
is(count_of(qq{SELECT count(*) FROM (SELECT $collist FROM types_expected EXCEPT ALL
                                     SELECT $collist FROM types) x}),
	0, 'types: no row missing');
is(count_of('SELECT count(*) FROM types WHERE missing = 42'), 300,
	'types: a column without a field gets its default');
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'types_src'}), 0,
	'types: no dead letters');
is(count_of(q{SELECT schema_ids = ARRAY[} . $types_id . q{] AND last_schema_id = } . $types_id
		  . q{ FROM kappa.sources WHERE source = 'types_src'}),
	't', 'types: kappa.sources shows the schema id');
kafka_wait($node, q{SELECT drift FROM kappa.sources WHERE source = 'types_src'}, 300,
	'types: every message counted as drift (field "extra" has no column)');
# spot checks of conversions a populate_recordset cannot tell apart
is(count_of(q{SELECT count(*) FROM types WHERE un ~ '^[0-9]+$' AND id % 2 = 1}), 150,
	'types: union branch int fills a text column with its number');

# ---------------------------------------------------------------- bad input
# a small schema whose bodies are crafted byte by byte for what an encoder
# would not write
my $small_v1 = $json->encode({
	type => 'record', name => 'Small',
	fields => [
		{ name => 's', type => 'string' },
		{ name => 'e', type => { type => 'enum', name => 'AB', symbols => [ 'A', 'B' ] } },
		{ name => 'a', type => { type => 'array', items => 'null' } },
		{ name => 'dec', type => { type => 'bytes', logicalType => 'decimal', precision => 10, scale => 2 } },
		{ name => 'n', type => 'int' },
		{ name => 'f', type => 'float' },
	] });
$node->safe_psql('postgres', q{
CREATE TABLE small (s text, e text, a jsonb, dec numeric(7,2), n int NOT NULL, f float8,
                    kafka_offset bigint);
SELECT kappa.create_kafka_source('small_src', target => 'small', topic => 'small',
    server => 'reg', format => 'avro');
});

# zigzag varint
sub zz
{
	my ($v) = @_;
	my $u = $v >= 0 ? 2 * $v : -2 * $v - 1;
	my $out = '';
	do
	{
		my $b = $u % 128;
		$u = int($u / 128);
		$out .= sprintf('%02x', $u ? $b | 128 : $b);
	} while ($u);
	return $out;
}

my $produced_small = 0;
my @good_small = map {
	$json->encode({ value => { s => "s$_", e => ($_ % 2 ? 'A' : 'B'), a => [ undef, undef ],
				dec => sprintf('%.2f', $_ * 1.25), n => $_, f => 0.1 } })
} 1 .. 10;
$answer = kafka_produce_avro($registry, $broker, 'small', \@good_small,
	value_schema => $small_v1, value_subject => 'small-value');
my $small1 = $answer->{value_schema_id};
$produced_small += 10;

my $hdr = sprintf('00%08x', $small1);
my $good_tail = '00' . '00' . '0264' . zz(7) . '00000000';    # e A, a [], dec 1.00, n 7, f 0
my @bad_small = (
	$json->encode({ value_raw_hex => '6e6f7420617672' }),                    # no magic byte
	$json->encode({ value_raw_hex => '00000f423f' . '0261' }),              # id 999999: 404
	$json->encode({ value_raw_hex => $hdr . '04c328' . $good_tail }),       # invalid UTF-8
	$json->encode({ value_raw_hex => $hdr . '026b' . '08' . '00' . '0264' . zz(7) . '00000000' }), # enum 4
	$json->encode({ value_raw_hex => $hdr . '026b' . '00' . zz(1e12) . '00' . '0264' . zz(7) . '00000000' }), # bomb
	$json->encode({ value_raw_hex => $hdr . '026b' . '00' . '00' . '0800bc614e' . zz(7) . '00000000' }), # 123456.78
	$json->encode({ value_raw_hex => $hdr . '026b' . '00' . '00' . '0264' }),   # truncated in n
	$json->encode({ value => { s => 'x', e => 'A', a => [], dec => '1.00', n => 1, f => 1 }, truncate => 3 }),
);
kafka_produce_avro($registry, $broker, 'small', \@bad_small,
	value_schema => $small_v1, value_subject => 'small-value');
$produced_small += @bad_small;
# one good crafted message: the byte layout above is right
kafka_produce_avro($registry, $broker, 'small',
	[ $json->encode({ value_raw_hex => $hdr . '04' . unpack('H*', 'ok') . $good_tail }) ],
	value_schema => $small_v1, value_subject => 'small-value');
$produced_small += 1;

kafka_wait($node, q{SELECT (SELECT count(*) FROM small) + (SELECT count(*) FROM kappa.errors WHERE source = 'small_src')},
	$produced_small, 'small: produced = applied + dead letters');
is(count_of(q{SELECT count(*) FROM small}), 11, 'small: the good messages applied');
is(count_of(q{SELECT s || '|' || e || '|' || dec || '|' || n || '|' || f FROM small WHERE s = 'ok'}),
	'ok|A|1.00|7|0', 'small: the crafted good message decoded as laid out');
is(count_of(q{SELECT count(*) FROM small WHERE f = 0.10000000149011612::float8}), 10,
	'small: float widened to double in binary');
my $errors = count_of(q{SELECT string_agg(error, E'\n' ORDER BY "offset") FROM kappa.errors WHERE source = 'small_src'});
my @errors = split /\n/, $errors;
is(scalar(@errors), 8, 'small: eight dead letters');
like($errors[0], qr/not in the Avro wire format/, 'no magic byte: dead letter');
like($errors[1], qr/Schema id 999999 is not in the schema registry \(404\)/, 'unknown schema id: dead letter');
like($errors[2], qr/invalid byte sequence for encoding "UTF8".*writer schema id $small1/,
	'invalid UTF-8: dead letter naming the schema id');
like($errors[3], qr/enum index 4 is not one of its 2 symbols/, 'enum index out of range: dead letter');
like($errors[4], qr/claims 1000000000000 items/, 'array bomb: dead letter');
like($errors[5], qr/numeric field overflow.*field "dec"/, 'oversized decimal: dead letter naming the field');
like($errors[6], qr/In field "n": the message ends inside a number/, 'body ending early: dead letter');
like($errors[7], qr/not valid Avro/, 'truncated body: dead letter');

# a schema avro-c accepts but whose decimal scale is not a number: every
# message of it is a dead letter (the worker once kept a half-built plan
# after the first one's error, and crashed on the second)
my $badscale = $json->encode({
	type => 'record', name => 'BadScale',
	fields => [ { name => 'dec', type => { type => 'bytes', logicalType => 'decimal',
										   precision => 10, scale => 'x' } } ] });
$node->safe_psql('postgres', q{
CREATE TABLE badscale (dec numeric);
SELECT kappa.create_kafka_source('badscale_src', target => 'badscale', topic => 'badscale',
    server => 'reg', format => 'avro');
});
# no lines: only registers the schema
my $badscale_id = kafka_produce_avro($registry, $broker, 'badscale', [],
	value_schema => $badscale, value_subject => 'badscale-value')->{value_schema_id};
kafka_produce_avro($registry, $broker, 'badscale',
	[ map { $json->encode({ value_raw_hex => sprintf('00%08x', $badscale_id) . '0205' }) } 1 .. 3 ],
	value_schema => $badscale, value_subject => 'badscale-value');
kafka_wait($node, q{SELECT count(*) FROM kappa.errors WHERE source = 'badscale_src'}, 3,
	'a decimal scale that is not a number: every message a dead letter');
like(count_of(q{SELECT min(error) FROM kappa.errors WHERE source = 'badscale_src'}),
	qr/invalid input syntax for type integer: "x"/, 'the dead letter says why');
is(count_of(q{SELECT count(*) FROM badscale}), 0, 'a decimal scale that is not a number: nothing applied');

# ---------------------------------------------------------------- registry down, evolution
# v2: 'added' (ignored), 'e' removed (NULL), n int -> long, f float -> double
my $small_v2 = $json->encode({
	type => 'record', name => 'Small',
	fields => [
		{ name => 's', type => 'string' },
		{ name => 'added', type => 'string', default => '' },
		{ name => 'a', type => { type => 'array', items => 'null' } },
		{ name => 'dec', type => { type => 'bytes', logicalType => 'decimal', precision => 10, scale => 2 } },
		{ name => 'n', type => 'long' },
		{ name => 'f', type => 'double' },
	] });
$node->safe_psql('postgres', q{SELECT kappa.pause_source('small_src')});
# the worker's own state: it has let its partitions go
kafka_wait($node, q{SELECT string_agg(ss.state, ',') FROM kappa.source_status ss
                      JOIN kappa.source_catalog s ON s.id = ss.source_id WHERE s.name = 'small_src'},
	'paused', 'small: the worker paused');
$answer = kafka_produce_avro($registry, $broker, 'small',
	[ map { $json->encode({ value => { s => "v2_$_", added => 'x', a => [], dec => '2.50', n => 70_000 + $_, f => 0.1 } }) } 1 .. 5 ],
	value_schema => $small_v2, value_subject => 'small-value');
my $small2 = $answer->{value_schema_id};
$produced_small += 5;
isnt($small2, $small1, "v2 registered as id $small2");

# the registry answers 503 until told otherwise
my $res = $http->post("$reg/_dev/fail", { content => '{"status": 503, "count": 1000000}' });
ok($res->{success}, 'registry fails from now on');
$node->safe_psql('postgres', q{SELECT kappa.resume_source('small_src')});
kafka_wait($node, q{SELECT state || ' ' || (last_error LIKE '%schema registry%503%') FROM kappa.sources WHERE source = 'small_src'},
	'retrying true', 'registry down: the source retries and says why');
is(count_of(q{SELECT (SELECT count(*) FROM small) || ' ' || (SELECT count(*) FROM kappa.errors WHERE source = 'small_src')}),
	'11 8', 'registry down: nothing applied, no dead letter');
$res = $http->post("$reg/_dev/fail", { content => '{"status": 503, "count": 0}' });
ok($res->{success}, 'registry back');
kafka_wait($node, q{SELECT count(*) FROM small WHERE s LIKE 'v2_%'}, 5,
	'registry back: the waiting messages applied', 90);
is(count_of(q{SELECT count(*) FROM small WHERE s LIKE 'v2_%' AND e IS NULL AND n > 70000
              AND f = 0.1::float8 AND dec = 2.50}),
	5, 'evolution: removed field NULL, added field ignored, int -> long and float -> double promoted');
kafka_wait($node, q{SELECT state <> 'retrying' FROM kappa.sources WHERE source = 'small_src'}, 't',
	'registry back: no longer retrying');

# v3 changes the target cannot absorb (compatibility NONE lets them in)
$res = $http->request('PUT', "$reg/config/small-value",
	{ content => '{"compatibility": "NONE"}', headers => { 'Content-Type' => 'application/json' } });
ok($res->{success}, 'subject small-value takes any schema');
my $small_v3 = $json->encode({
	type => 'record', name => 'Small',
	fields => [
		{ name => 's', type => 'string' },
		{ name => 'n', type => { type => 'record', name => 'N', fields => [ { name => 'x', type => 'int' } ] } },
	] });
$answer = kafka_produce_avro($registry, $broker, 'small',
	[ map { $json->encode({ value => { s => "v3_$_", n => { x => $_ } } }) } 1 .. 20 ],
	value_schema => $small_v3, value_subject => 'small-value');
my $small3 = $answer->{value_schema_id};
$produced_small += 20;
my $small_v4 = $json->encode({
	type => 'record', name => 'Small', fields => [ { name => 's', type => 'string' } ] });
$answer = kafka_produce_avro($registry, $broker, 'small',
	[ map { $json->encode({ value => { s => "v4_$_" } }) } 1 .. 20 ],
	value_schema => $small_v4, value_subject => 'small-value');
my $small4 = $answer->{value_schema_id};
$produced_small += 20;

kafka_wait($node, q{SELECT (SELECT count(*) FROM small) + (SELECT count(*) FROM kappa.errors WHERE source = 'small_src')},
	$produced_small, 'evolution: produced = applied + dead letters');
is(count_of(qq{SELECT count(*) FROM kappa.errors WHERE source = 'small_src'
                 AND error LIKE '%Avro record cannot fill column "n" of type integer%writer schema id $small3%'}),
	20, 'a record for an integer column: dead letters naming the schema id');
is(count_of(qq{SELECT count(*) FROM kappa.errors WHERE source = 'small_src'
                 AND error LIKE 'writer schema id $small4 has no field for column "n", which is NOT NULL%'}),
	20, 'a NOT NULL column whose field vanished: dead letters naming the schema id');
my @ids = sort { $a <=> $b } ($small1, $small2, $small3, $small4, 999999);
is(count_of(q{SELECT schema_ids::text || ' ' || last_schema_id FROM kappa.sources WHERE source = 'small_src'}),
	'{' . join(',', @ids) . "} $small4", 'kappa.sources: the schema ids seen and the last one');
kafka_wait($node, q{SELECT state FROM kappa.sources WHERE source = 'small_src'}, 'degraded',
	'the source shows degraded');
is(count_of(q{SELECT drift FROM kappa.sources WHERE source = 'small_src'}), 5,
	'drift: the v2 messages, whose field "added" has no column');

# the same rules for JSON: drift counted, or refused with strict
$node->safe_psql('postgres', q{
CREATE TABLE jdrift (id int, v text);
CREATE TABLE jdrift_strict (id int, v text);
SELECT kappa.create_kafka_source('jdrift_src', target => 'jdrift', topic => 'jdrift', server => 'reg');
SELECT kappa.create_kafka_source('jdrift_strict_src', target => 'jdrift_strict', topic => 'jdrift',
    server => 'reg', options => '{"strict": true}');
});
kafka_produce($broker, 'jdrift', [ map { $_ % 4 ? qq({"id": $_, "v": "x"}) : qq({"id": $_, "v": "x", "new": $_}) } 1 .. 40 ]);
kafka_wait($node, q{SELECT (SELECT count(*) FROM jdrift) || ' ' || drift FROM kappa.sources WHERE source = 'jdrift_src'},
	'40 10', 'json: unknown keys are ignored and counted as drift');
kafka_wait($node, q{SELECT (SELECT count(*) FROM jdrift_strict) || ' ' || dead_letters || ' ' || drift
                      FROM kappa.sources WHERE source = 'jdrift_strict_src'},
	'30 10 0', 'json with strict: those messages are dead letters');

# ---------------------------------------------------------------- stream, view, SIGKILL
my $events_schema = $json->encode({
	type => 'record', name => 'Event',
	fields => [
		{ name => 'card', type => 'string' },
		{ name => 'amount', type => { type => 'bytes', logicalType => 'decimal', precision => 12, scale => 2 } },
		{ name => 'ts', type => { type => 'long', logicalType => 'timestamp-millis' } },
	] });
$node->safe_psql('postgres', q{
SELECT kappa.create_stream('events', 'card text, amount numeric, ts timestamptz', retain => 'infinity');
SELECT kappa.create_view('events_by_card',
  $$SELECT card, count(*) AS n, sum(amount) AS total, max(ts) AS last_ts FROM events GROUP BY card$$);
SELECT kappa.create_kafka_source('events_src', target => 'events', topic => 'events',
    server => 'reg', format => 'avro', parallelism => 2, options => '{"batch_size": 200}');
});
my ($produced_events, $kills) = (0, 0);
for my $chunk (1 .. 8)
{
	my @lines = map {
		$json->encode({ value => { card => 'c' . int(rand(50)),
					amount => sprintf('%.2f', rand(1000)),
					ts => sprintf('2026-11-%02dT10:00:%02d.%03dZ', 1 + $chunk, int(rand(60)), int(rand(1000))) } })
	} 1 .. 1500;
	kafka_produce_avro($registry, $broker, 'events', \@lines,
		value_schema => $events_schema, value_subject => 'events-value');
	$produced_events += @lines;
	usleep(int(rand(100_000)));
	my @pids = split /\n/, kafka_query($node,
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'
		    AND application_name = 'pg_kappa source events_src'});
	if (@pids && $chunk % 2 == 1)
	{
		kill 'KILL', $pids[ int(rand(@pids)) ];
		$kills++;
	}
	elsif ($chunk == 6)
	{
		# the postmaster itself; start once the old children are gone
		$node->kill9;
		for my $try (1 .. 50)
		{
			$node->{_pid} = undef;
			last if $node->start(fail_ok => 1);
			usleep(200_000);
		}
	}
}
cmp_ok($kills, '>=', 3, "events: killed workers $kills times");
kafka_wait($node, q{SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM kappa.errors WHERE source = 'events_src')},
	$produced_events, 'events: produced = applied + dead letters, through SIGKILLs', 180);
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'events_src'}), 0, 'events: no dead letters');
is(count_of(q{SELECT count(*) FROM (
   (SELECT card, n, total, last_ts FROM events_by_card
    EXCEPT ALL SELECT card, count(*), sum(amount), max(ts) FROM events GROUP BY card)
   UNION ALL
   (SELECT card, count(*), sum(amount), max(ts) FROM events GROUP BY card
    EXCEPT ALL SELECT card, n, total, last_ts FROM events_by_card)) x}),
	0, 'events: the view equals its query over the retained rows');

# ---------------------------------------------------------------- upsert with Avro keys
my $acct_key = $json->encode({ type => 'record', name => 'AcctKey',
		fields => [ { name => 'id', type => 'int' }, { name => 'region', type => 'string' } ] });
my $acct_value = $json->encode({ type => 'record', name => 'Acct',
		fields => [ { name => 'owner', type => 'string' },
			{ name => 'balance', type => { type => 'bytes', logicalType => 'decimal', precision => 12, scale => 2 } } ] });
$node->safe_psql('postgres', q{
CREATE TABLE acct (id int, region text, owner text, balance numeric, PRIMARY KEY (id, region));
CREATE TABLE acct1 (id text PRIMARY KEY, owner text, balance numeric);
SELECT kappa.create_kafka_source('acct_src', target => 'acct', topic => 'acct', server => 'reg',
    format => 'avro', envelope => 'upsert', key_format => 'avro');
SELECT kappa.create_kafka_source('acct1_src', target => 'acct1', topic => 'acct1', server => 'reg',
    format => 'avro', envelope => 'upsert', key_format => 'avro');
});
my (%want, %want1, @lines, @lines1);
for my $i (1 .. 2000)
{
	my ($id, $region) = (int(rand(100)), (qw(eu us))[ int(rand(2)) ]);
	my $key = { id => $id, region => $region };
	my $key1 = "k$id";
	if (rand() < 0.1)
	{
		push @lines, $json->encode({ key => $key, value => undef });
		push @lines1, $json->encode({ key => $key1, value => undef });
		delete $want{"$id|$region"};
		delete $want1{$key1};
		next;
	}
	my $v = { owner => "o$i", balance => sprintf('%.2f', rand(1e6)) };
	push @lines, $json->encode({ key => $key, value => $v });
	push @lines1, $json->encode({ key => $key1, value => $v });
	$want{"$id|$region"} = "$v->{owner}|$v->{balance}";
	$want1{$key1} = "$v->{owner}|$v->{balance}";
}
# a key of one value: the schema "string"
kafka_produce_avro($registry, $broker, 'acct', \@lines,
	key_schema => $acct_key, value_schema => $acct_value,
	key_subject => 'acct-key', value_subject => 'acct-value');
kafka_produce_avro($registry, $broker, 'acct1', \@lines1,
	key_schema => '"string"', value_schema => $acct_value,
	key_subject => 'acct1-key', value_subject => 'acct1-value');
my $want_text = join("\n", map { "$_|$want{$_}" } sort keys %want);
my $want1_text = join("\n", map { "$_|$want1{$_}" } sort keys %want1);
kafka_wait($node, q{SELECT coalesce(string_agg(id || '|' || region || '|' || owner || '|' || balance, E'\n'
                                       ORDER BY id || '|' || region), '') FROM acct},
	$want_text, 'upsert: a record key and Avro values give the latest row per key', 90);
kafka_wait($node, q{SELECT coalesce(string_agg(id || '|' || owner || '|' || balance, E'\n' ORDER BY id), '') FROM acct1},
	$want1_text, 'upsert: a one-value key ("string") gives the latest row per key', 90);
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source IN ('acct_src', 'acct1_src')}), 0,
	'upsert: no dead letters');

# the ordering guard on an Avro value: a change older than the one applied
# for its key is dropped and counted
$node->safe_psql('postgres', q{
CREATE TABLE acctv (id text PRIMARY KEY, owner text, version bigint);
SELECT kappa.create_kafka_source('acctv_src', target => 'acctv', topic => 'acctv', server => 'reg',
    format => 'avro', envelope => 'upsert', key_format => 'text', order_by => 'meta.version');
});
my $acctv_value = $json->encode({ type => 'record', name => 'AcctV',
		fields => [ { name => 'owner', type => 'string' },
			{ name => 'meta', type => { type => 'record', name => 'Meta', fields => [ { name => 'version', type => 'long' } ] } },
			{ name => 'version', type => 'long' } ] });
kafka_produce_avro($registry, $broker, 'acctv',
	[ map { $json->encode({ key => $_->[0], value => { owner => "o$_->[1]", meta => { version => $_->[1] }, version => $_->[1] } }) }
		  ([ 'k1', 1 ], [ 'k1', 3 ], [ 'k2', 5 ], [ 'k1', 2 ], [ 'k2', 4 ], [ 'k2', 6 ]) ],
	value_schema => $acctv_value, value_subject => 'acctv-value');
kafka_wait($node, q{SELECT out_of_order FROM kappa.sources WHERE source = 'acctv_src'}, 2,
	'upsert avro with order_by: two stale changes dropped and counted');
is(count_of(q{SELECT string_agg(id || '=' || owner || '/' || version, ',' ORDER BY id) FROM acctv}),
	'k1=o3/3,k2=o6/6', 'upsert avro with order_by: the newest change of each key');

# ---------------------------------------------------------------- Debezium in Avro
# The schemas the PostgreSQL connector registers with the AvroConverter
# (Debezium documentation: "Avro serialization"; types per "Data type
# mappings": Decimal, MicroTimestamp, Date, VariableScaleDecimal).
my $dbz_key = $json->encode({ type => 'record', name => 'Key', namespace => 'dbserver1.inventory.customers',
		fields => [ { name => 'id', type => 'int' } ], 'connect.name' => 'dbserver1.inventory.customers.Key' });
my $dbz_value_record = {
	type => 'record', name => 'Value', namespace => 'dbserver1.inventory.customers',
	'connect.name' => 'dbserver1.inventory.customers.Value',
	fields => [
		{ name => 'id', type => 'int' },
		{ name => 'first_name', type => 'string' },
		{ name => 'bio', type => [ 'null', 'string' ], default => undef },
		{ name => 'balance', type => [ 'null', { type => 'bytes', scale => 2, precision => 10, 'connect.version' => 1,
					'connect.parameters' => { scale => '2', 'connect.decimal.precision' => '10' },
					'connect.name' => 'org.apache.kafka.connect.data.Decimal', logicalType => 'decimal' } ], default => undef },
		{ name => 'created', type => [ 'null', { type => 'long', 'connect.version' => 1,
					'connect.name' => 'io.debezium.time.MicroTimestamp' } ], default => undef },
		{ name => 'birthday', type => [ 'null', { type => 'int', 'connect.version' => 1,
					'connect.name' => 'io.debezium.time.Date' } ], default => undef },
		{ name => 'score', type => [ 'null', { type => 'record', name => 'VariableScaleDecimal', namespace => 'io.debezium.data',
					fields => [ { name => 'scale', type => 'int' }, { name => 'value', type => 'bytes' } ],
					'connect.version' => 1, 'connect.name' => 'io.debezium.data.VariableScaleDecimal' } ], default => undef },
	] };
my $dbz_value = $json->encode({ type => 'record', name => 'Envelope', namespace => 'dbserver1.inventory.customers',
		'connect.name' => 'dbserver1.inventory.customers.Envelope',
		fields => [
			{ name => 'before', type => [ 'null', $dbz_value_record ], default => undef },
			{ name => 'after', type => [ 'null', 'Value' ], default => undef },
			{ name => 'source', type => { type => 'record', name => 'Source', namespace => 'io.debezium.connector.postgresql',
					fields => [ { name => 'version', type => 'string' }, { name => 'connector', type => 'string' },
						{ name => 'name', type => 'string' }, { name => 'ts_ms', type => 'long' },
						{ name => 'db', type => 'string' }, { name => 'lsn', type => [ 'null', 'long' ], default => undef } ] } },
			{ name => 'op', type => 'string' },
			{ name => 'ts_ms', type => [ 'null', 'long' ], default => undef } ] });
$node->safe_psql('postgres', q{
CREATE TABLE customers (id int PRIMARY KEY, first_name text NOT NULL, bio text, balance numeric(10,2),
                        created timestamp, birthday date, score numeric);
SELECT kappa.create_kafka_source('dbz_src', target => 'customers', topic => 'dbz', server => 'reg',
    format => 'avro', envelope => 'debezium', key_format => 'avro', order_by => 'source.lsn');
});

# two's complement, big-endian, as hex
sub twos_hex
{
	use integer;    # arithmetic shifts of negative numbers
	my ($v) = @_;
	my @b;
	do { push @b, $v & 255; $v >>= 8; } while ($v != 0 && $v != -1);
	push @b, ($v < 0 ? 255 : 0) if (($b[-1] & 128) != ($v < 0 ? 128 : 0));
	return '\\x' . join('', map { sprintf('%02x', $_) } reverse @b);
}

my (%dbz, @dbz_lines);
my ($lsn, $next_id) = (1000, 1);
my $src = sub { return { version => '2.1.0', connector => 'postgresql', name => 'dbserver1',
		ts_ms => 1700000000000, db => 'inventory', lsn => $lsn++ } };
sub dbz_row
{
	my ($id, $i) = @_;
	my $unscaled = int(rand(2e6)) - 1e6;
	return { id => $id, first_name => "f$i", bio => ($i % 4 ? "bio $i" : undef),
		balance => sprintf('%.2f', (rand() - 0.5) * 1e6),
		created => 1700000000000000 + $i * 1_000_001, birthday => 19000 + $i,
		score => { scale => $i % 5, value => twos_hex($unscaled) },
		_score => ($unscaled / 10**($i % 5)) };
}
sub dbz_expect
{
	my ($r) = @_;
	my %e = %$r;
	delete $e{_score};
	$e{score} = $r->{_score};
	return \%e;
}
sub dbz_clean { my %r = %{ $_[0] }; delete $r{_score}; return \%r; }
for my $i (1 .. 600)
{
	my @ids = sort { $a <=> $b } keys %dbz;
	my $roll = rand();
	if ($i == 300)
	{
		push @dbz_lines, $json->encode({ key => undef, value => { before => undef, after => undef,
					source => $src->(), op => 't', ts_ms => undef } });
		%dbz = ();
	}
	elsif (@ids < 5 || $roll < 0.3)
	{
		my $id = $next_id++;
		my $r = dbz_row($id, $i);
		push @dbz_lines, $json->encode({ key => { id => $id }, value => { before => undef, after => dbz_clean($r),
					source => $src->(), op => ($i < 40 ? 'r' : 'c'), ts_ms => 1700000000000 } });
		$dbz{$id} = dbz_expect($r);
	}
	elsif ($roll < 0.75)
	{
		my $id = $ids[ int(rand(@ids)) ];
		my $new = rand() < 0.1 ? $next_id++ : $id;    # 10% change the key
		my $r = dbz_row($new, $i);
		my $e = dbz_expect($r);
		if ($new == $id && rand() < 0.3)
		{
			$r->{bio} = '__debezium_unavailable_value';    # unchanged TOAST value
			$e->{bio} = $dbz{$id}{bio};
		}
		push @dbz_lines, $json->encode({ key => { id => $new }, value => { before => { id => $id, first_name => '' },
					after => dbz_clean($r), source => $src->(), op => 'u', ts_ms => 1700000000000 } });
		delete $dbz{$id};
		$dbz{$new} = $e;
	}
	else
	{
		my $id = $ids[ int(rand(@ids)) ];
		push @dbz_lines, $json->encode({ key => { id => $id }, value => { before => { id => $id, first_name => '' },
					after => undef, source => $src->(), op => 'd', ts_ms => 1700000000000 } });
		push @dbz_lines, $json->encode({ key => { id => $id }, value => undef });    # the tombstone
		delete $dbz{$id};
	}
}
# an old change of a live key, behind the ordering guard: dropped and counted
my ($stale_id) = sort { $a <=> $b } keys %dbz;
my $stale = dbz_row($stale_id, 9999);
$lsn = 1;
push @dbz_lines, $json->encode({ key => { id => $stale_id }, value => { before => undef, after => dbz_clean($stale),
			source => $src->(), op => 'u', ts_ms => 1700000000000 } });
# before.id of 'u' events is the key, other before fields are absent in
# REPLICA IDENTITY DEFAULT; the encoder needs them, so first_name is ''
kafka_produce_avro($registry, $broker, 'dbz', \@dbz_lines,
	key_schema => $dbz_key, value_schema => $dbz_value, key_subject => 'dbz-key', value_subject => 'dbz-value');
my $dbz_want = join("\n", map {
	my $r = $dbz{$_};
	join('|', $r->{id}, $r->{first_name}, $r->{bio} // 'NULL', $r->{balance},
		$r->{created}, $r->{birthday}, $r->{score})
} sort { $a <=> $b } keys %dbz);
kafka_wait($node, q{SELECT out_of_order FROM kappa.sources WHERE source = 'dbz_src'}, 1,
	'debezium avro: the stale change was dropped by the ordering guard', 90);
is(count_of(q{SELECT coalesce(string_agg(concat_ws('|', id, first_name, coalesce(bio, 'NULL'), balance,
                  (extract(epoch FROM created) * 1000000)::bigint, birthday - DATE '1970-01-01', score::float8),
                  E'\n' ORDER BY id), '') FROM customers}),
	$dbz_want =~ s/\|(-?[0-9.e+-]+)$/'|' . ($1 + 0)/mger,
	'debezium avro: the table equals the changes applied in order (c, r, u with key changes, d, t, TOAST placeholder)');
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'dbz_src'}), 0, 'debezium avro: no dead letters');

# the same topic into a table that has only the key and first_name, with
# evolve: the other fields of "after" become columns, typed from the schema
$node->safe_psql('postgres', q{
CREATE TABLE customers2 (id int PRIMARY KEY, first_name text NOT NULL);
SELECT kappa.create_kafka_source('dbz2_src', target => 'customers2', topic => 'dbz', server => 'reg',
    format => 'avro', envelope => 'debezium', key_format => 'avro', order_by => 'source.lsn',
    options => '{"evolve": "add_columns"}');
});
kafka_wait($node, q{SELECT out_of_order FROM kappa.sources WHERE source = 'dbz2_src'}, 1,
	'debezium avro with evolve: caught up', 90);
is(count_of(q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                FROM pg_attribute WHERE attrelid = 'customers2'::regclass AND attnum > 0 AND NOT attisdropped}),
	'id integer, first_name text, bio text, balance numeric, created timestamp without time zone, birthday date, score numeric',
	'debezium avro with evolve: a column per new field of "after", typed from the schema');
is(count_of(q{SELECT count(*) FROM ((SELECT id, first_name, bio, balance, created, birthday, score FROM customers
                                     EXCEPT ALL SELECT id, first_name, bio, balance, created, birthday, score FROM customers2)
                                    UNION ALL
                                    (SELECT id, first_name, bio, balance, created, birthday, score FROM customers2
                                     EXCEPT ALL SELECT id, first_name, bio, balance, created, birthday, score FROM customers)) x}),
	0, 'debezium avro with evolve: the same rows as the table that had the columns');

# ---------------------------------------------------------------- evolve => 'add_columns'
$node->safe_psql('postgres', q{
CREATE TABLE evol (id int PRIMARY KEY, a text);
SELECT kappa.create_view('evol_by_a', $$SELECT a, count(*) AS n FROM evol GROUP BY a$$);
SELECT kappa.create_kafka_source('evol_src', target => 'evol', topic => 'evol', server => 'reg',
    format => 'avro', options => '{"evolve": "add_columns"}');
});
my $evol_v1 = $json->encode({ type => 'record', name => 'Evol',
		fields => [ { name => 'id', type => 'int' }, { name => 'a', type => 'string' } ] });
my $evol_v2 = $json->encode({ type => 'record', name => 'Evol',
		fields => [ { name => 'id', type => 'int' }, { name => 'a', type => 'string' },
			{ name => 'b', type => [ 'null', 'long' ], default => undef },
			{ name => 'when', type => { type => 'long', logicalType => 'timestamp-micros' }, default => 0 },
			{ name => 'tags', type => { type => 'array', items => 'string' }, default => [] },
			{ name => 'price', type => { type => 'bytes', logicalType => 'decimal', precision => 9, scale => 3 }, default => "\u0000" },
			{ name => 'Nested', type => { type => 'record', name => 'Nest', fields => [ { name => 'x', type => 'int' } ] },
			  default => { x => 0 } },
			# names a column cannot have, or that would make a metadata column
			{ name => 'xmin', type => 'int', default => 0 },
			{ name => 'kafka_offset', type => 'string', default => '' } ] });
kafka_produce_avro($registry, $broker, 'evol',
	[ map { $json->encode({ value => { id => $_, a => "a" . ($_ % 3) } }) } 1 .. 10 ],
	value_schema => $evol_v1, value_subject => 'evol-value');
kafka_wait($node, 'SELECT count(*) FROM evol', 10, 'evolve: v1 rows applied');
kafka_produce_avro($registry, $broker, 'evol',
	[ map { $json->encode({ value => { id => $_, a => "a" . ($_ % 3), b => $_ * 1000,
					when => '2026-11-26T10:00:00.000001Z', tags => [ "t$_", 'x' ],
					price => sprintf('%.3f', $_ / 8), Nested => { x => $_ } } }) } 11 .. 20 ],
	value_schema => $evol_v2, value_subject => 'evol-value');
kafka_wait($node, 'SELECT count(*) FROM evol', 20, 'evolve: v2 rows applied');
is(count_of(q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                FROM pg_attribute WHERE attrelid = 'evol'::regclass AND attnum > 0 AND NOT attisdropped}),
	'id integer, a text, b bigint, when timestamp with time zone, tags text[], price numeric, Nested jsonb',
	'evolve: a nullable column per new field, typed from the writer schema');
is(count_of(q{SELECT count(*) FROM evol WHERE id <= 10 AND b IS NULL AND "when" IS NULL AND tags IS NULL
                AND price IS NULL AND "Nested" IS NULL}), 10, 'evolve: the rows before have NULL there');
is(count_of(q{SELECT count(*) FROM evol WHERE id > 10 AND b = id * 1000
                AND "when" = '2026-11-26 10:00:00.000001+00' AND tags = ARRAY['t' || id, 'x']
                AND price = round(id / 8.0, 3) AND "Nested" = jsonb_build_object('x', id)}),
	10, 'evolve: the new fields fill the new columns');
is(count_of(q{SELECT count(*) FROM (
   (SELECT a, n FROM evol_by_a EXCEPT ALL SELECT a, count(*) FROM evol GROUP BY a)
   UNION ALL (SELECT a, count(*) FROM evol GROUP BY a EXCEPT ALL SELECT a, n FROM evol_by_a)) x}),
	0, 'evolve: the view over the table is unaffected and equals its query');
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'evol_src'}), 0, 'evolve: no dead letters');

# the same into a stream that retains its rows: the stream and its
# retained-rows table get the columns alike
$node->safe_psql('postgres', q{
SELECT kappa.create_stream('evols', 'id int, a text', retain => 'infinity');
SELECT kappa.create_view('evols_by_a', $$SELECT a, count(*) AS n, sum(id) AS ids FROM evols GROUP BY a$$);
SELECT kappa.create_kafka_source('evols_src', target => 'evols', topic => 'evols', server => 'reg',
    format => 'avro', options => '{"evolve": "add_columns"}');
});
kafka_produce_avro($registry, $broker, 'evols',
	[ map { $json->encode({ value => { id => $_, a => "a" . ($_ % 3) } }) } 1 .. 10 ],
	value_schema => $evol_v1, value_subject => 'evol-value');
kafka_wait($node, 'SELECT count(*) FROM evols', 10, 'evolve, stream: v1 rows');
kafka_produce_avro($registry, $broker, 'evols',
	[ map { $json->encode({ value => { id => $_, a => "a" . ($_ % 3), b => $_ * 1000,
					when => '2026-11-26T10:00:00.000001Z', tags => [ "t$_" ],
					price => '1.000', Nested => { x => $_ } } }) } 11 .. 20 ],
	value_schema => $evol_v2, value_subject => 'evol-value');
kafka_wait($node, 'SELECT count(*) FROM evols', 20, 'evolve, stream: v2 rows');
is(count_of(q{SELECT count(*) FROM evols WHERE id > 10 AND b = id * 1000 AND tags = ARRAY['t' || id]
                AND "Nested" = jsonb_build_object('x', id)}),
	10, 'evolve, stream: the new fields in the new columns, read back from the retained rows');
is(count_of(q{SELECT count(*) FROM evols WHERE id <= 10 AND b IS NULL}), 10,
	'evolve, stream: NULL in the rows before');
is(count_of(q{SELECT count(*) FROM (
   (SELECT a, n, ids FROM evols_by_a EXCEPT ALL SELECT a, count(*), sum(id) FROM evols GROUP BY a)
   UNION ALL (SELECT a, count(*), sum(id) FROM evols GROUP BY a EXCEPT ALL SELECT a, n, ids FROM evols_by_a)) x}),
	0, 'evolve, stream: the view equals its query over the retained rows');
is(count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'evols_src'}), 0, 'evolve, stream: no dead letters');

# ---------------------------------------------------------------- registry credentials
# the registry asks for HTTP basic auth: a source whose owner's user mapping
# has them reads; one whose credentials are wrong waits in 'retrying' (401)
$res = $http->post("$reg/_dev/auth", { content => '{"basic": "svc:s3cret"}' });
ok($res->{success}, 'the registry asks for credentials from now on');
$node->safe_psql('postgres', qq{
CREATE SERVER reg_auth FOREIGN DATA WRAPPER kappa_kafka
  OPTIONS (brokers '$bs', schema_registry '$reg', "schema_registry.username" 'svc');
CREATE USER MAPPING FOR CURRENT_USER SERVER reg_auth OPTIONS ("schema_registry.password" 's3cret');
CREATE ROLE wrong_pw LOGIN;
CREATE TABLE types_auth (LIKE types);
CREATE TABLE types_wrong (LIKE types);
GRANT INSERT ON types_wrong TO wrong_pw;
GRANT USAGE ON FOREIGN SERVER reg_auth TO wrong_pw;
CREATE USER MAPPING FOR wrong_pw SERVER reg_auth OPTIONS ("schema_registry.password" 'nope');
SELECT kappa.create_kafka_source('auth_src', target => 'types_auth', topic => 'types',
    server => 'reg_auth', format => 'avro');
SET ROLE wrong_pw;
SELECT kappa.create_kafka_source('wrong_src', target => 'types_wrong', topic => 'types',
    server => 'reg_auth', format => 'avro');
});
kafka_wait($node, 'SELECT count(*) FROM types_auth', 300, 'credentials from the user mapping: read');
kafka_wait($node, q{SELECT state || ' ' || (last_error LIKE '%HTTP 401%') FROM kappa.sources WHERE source = 'wrong_src'},
	'retrying true', 'wrong credentials: retrying, 401 in last_error');
is(count_of(q{SELECT count(*) FROM types_wrong}) . ' '
	  . count_of(q{SELECT count(*) FROM kappa.errors WHERE source = 'wrong_src'}),
	'0 0', 'wrong credentials: nothing applied, no dead letter');
is(count_of(q{SELECT count(*) FROM kappa.sources WHERE options::text LIKE '%s3cret%' OR last_error LIKE '%s3cret%'}),
	0, 'the password appears nowhere in kappa.sources');
$http->post("$reg/_dev/auth", { content => '{"basic": null}' });

# ---------------------------------------------------------------- who points a worker where
$node->safe_psql('postgres', q{
CREATE ROLE ingest LOGIN;
CREATE TABLE ingest_t (s text);
GRANT INSERT ON ingest_t TO ingest;
GRANT USAGE ON FOREIGN SERVER reg TO ingest;
});
my ($ret, $out, $err) = $node->psql('postgres', q{
SET ROLE ingest;
SELECT kappa.create_kafka_source('mine', target => 'ingest_t', topic => 'small', server => 'reg',
    format => 'avro', options => '{"schema_registry": "http://127.0.0.1:1"}');});
like($err, qr/permission denied to set option "schema_registry" on a source/,
	'a non-superuser cannot point a source at another registry');
($ret, $out, $err) = $node->psql('postgres', q{
SET ROLE ingest;
SELECT kappa.create_kafka_source('mine', target => 'ingest_t', topic => 'small', server => 'reg',
    format => 'avro', options => '{"evolve": "add_columns"}');});
like($err, qr/option "evolve" 'add_columns' needs a source owned by the owner of "ingest_t"/,
	'evolve: only the owner of the target may have columns added');
($ret, $out, $err) = $node->psql('postgres',
	q{CREATE SERVER bad FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers 'x:1', schema_registry 'file:///etc/passwd')});
like($err, qr/option "schema_registry" must be an http or https URL/, 'file:// is refused');
($ret, $out, $err) = $node->psql('postgres',
	q{CREATE SERVER bad FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers 'x:1', "schema_registry.password" 'p')});
like($err, qr/is a secret and cannot be a server option/, 'the registry password is not a server option');
($ret, $out, $err) = $node->psql('postgres', q{
CREATE SERVER noreg FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers 'x:1');
SELECT kappa.create_kafka_source('noreg', target => 'ingest_t', topic => 't', server => 'noreg', format => 'avro');});
like($err, qr/Avro messages need a schema registry/, 'format avro without a registry is refused');

$node->stop;
done_testing();
