# A Kafka source into an ordinary table: rows, metadata columns, offsets,
# dead letters for every kind of bad message, kappa.sources/kappa.errors,
# and the checks create_kafka_source makes at create time.
#
# produced = rows + dead letters, exactly.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(events => 4, other => 1, third => 1, shapes => 2);
my $bs = $broker->{bootstrap};
my ($ret, $out, $err);
my $node = kafka_node('kafka_basic');

$node->safe_psql('postgres', q{
CREATE TABLE events (
    id      int PRIMARY KEY,
    name    text NOT NULL,
    amount  numeric CHECK (amount >= 0),
    kafka_key text,
    kafka_partition int,
    kafka_offset bigint
);
});

# a row the topic's duplicates collide with (messages of different
# partitions have no order, so they cannot collide with each other
# deterministically)
$node->safe_psql('postgres', q{INSERT INTO events (id, name) VALUES (0, 'before the source')});

# a deferred constraint is checked per message too
$node->safe_psql('postgres', q{
CREATE FUNCTION no_zero() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.amount = 0 THEN RAISE EXCEPTION 'amount 0 refused by a deferred trigger'; END IF; RETURN NULL; END$$;
CREATE CONSTRAINT TRIGGER no_zero AFTER INSERT ON events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_zero();
});

# 2000 messages, 1% bad, keyed "k<i>|<json>"
my (@msgs, %bad);
my $n = 2000;
for my $i (1 .. $n)
{
	my $v = qq({"id": $i, "name": "n$i", "amount": $i.25, "extra": {"a": [1,2]}});
	if ($i % 100 == 7)
	{
		my $kind = int($i / 100) % 9;
		if    ($kind == 0) { $v = qq({"id": $i, "name": "n$i", "amount": ); }    # malformed
		elsif ($kind == 1) { $v = qq({"id": "abc$i", "name": "n$i"}); }         # wrong type
		elsif ($kind == 2) { $v = qq({"id": $i, "amount": 1}); }                # NOT NULL
		elsif ($kind == 3) { $v = qq({"id": $i, "name": "n$i", "amount": -1}); } # CHECK
		elsif ($kind == 4) { $v = qq({"id": $i, "name": ") . ('x' x 3000) . qq("}); } # oversize
		elsif ($kind == 5) { $v = qq({"id": $i, "name": "\xff\xfe$i"}); }      # invalid UTF-8
		elsif ($kind == 6) { $v = ''; }                                       # empty
		elsif ($kind == 7) { $v = qq({"id": 0, "name": "duplicate"}); }        # unique
		else               { $v = qq({"id": $i, "name": "n$i", "amount": 0}); } # deferred trigger
		$bad{$i} = $kind;
	}
	push @msgs, "k$i|$v";
}
my $nbad = scalar keys %bad;
kafka_produce($broker, 'events', \@msgs, key_delim => '|');

$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('events_src', target => 'events', topic => 'events',
    brokers => '$bs', format => 'json', start => 'earliest',
    options => '{"max_message_bytes": 2000, "batch_size": 500}');
});

kafka_wait($node,
	q{SELECT (SELECT count(*) FROM events WHERE id > 0) + (SELECT count(*) FROM kappa.errors)},
	$n, 'produced = rows + dead letters');
is($node->safe_psql('postgres', 'SELECT count(*) FROM events WHERE id > 0'), $n - $nbad, 'good rows');
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), $nbad, 'dead letters');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM events WHERE kafka_key = 'k' || id AND kafka_offset IS NOT NULL
	     AND kafka_partition BETWEEN 0 AND 3}),
	$n - $nbad, 'metadata columns filled');

# every dead letter has its coordinates, key, raw bytes and an error
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kappa.errors e
 WHERE source = 'events_src' AND topic = 'events' AND partition BETWEEN 0 AND 3
   AND "offset" >= 0 AND key IS NOT NULL AND payload IS NOT NULL
   AND error <> '' AND "when" IS NOT NULL}), $nbad, 'dead letters complete');
for my $kind (0 .. 8)
{
	my @ids = grep { $bad{$_} == $kind } keys %bad;
	my $keys = join(',', map { "'k$_'" } @ids);
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM kappa.errors WHERE convert_from(key, 'UTF8') IN ($keys)"),
		scalar(@ids), "dead letters of kind $kind");
}
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM kappa.errors WHERE length(payload) = 0}),
	scalar(grep { $_ == 6 } values %bad), 'empty messages kept as empty payloads');
like($node->safe_psql('postgres',
	q{SELECT string_agg(DISTINCT error, ' | ') FROM kappa.errors WHERE error ~ 'deferred'}),
	qr/refused by a deferred trigger/, 'deferred trigger error isolated');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM kappa.errors WHERE position('\xfffe'::bytea in payload) > 0}),
	scalar(grep { $_ == 5 } values %bad), 'invalid UTF-8 kept byte for byte');
like($node->safe_psql('postgres',
	q{SELECT string_agg(error, ' | ') FROM kappa.errors WHERE error ~* 'max_message_bytes'}),
	qr/exceeds max_message_bytes/, 'oversize message error');

# a dead letter's error ends with the decoder's context line: the message's
# partition and offset, and for a bad value the field and the value
# (P and O stand for the dead letter's own partition and offset)
sub dead_letter_error
{
	my ($key) = @_;
	return $node->safe_psql('postgres', qq{
SELECT replace(error, format('at partition %s, offset %s', partition, "offset"),
               'at partition P, offset O')
  FROM kappa.errors WHERE convert_from(key, 'UTF8') = '$key'});
}
is(dead_letter_error('k107'),
	'invalid input syntax for type integer: "abc107" '
	  . '(kafka message at partition P, offset O, field "id": "abc107")',
	'dead letter of a bad value: the field and the value in the context line');
is(dead_letter_error('k7'),
	'kafka message is not valid JSON: The input string ended unexpectedly. '
	  . 'The message begins with "{\"id\": 7, \"name\": \"n7\", \"amount\": ". '
	  . '(kafka message at partition P, offset O)',
	'dead letter of a malformed message: the message in the context line');

# offsets: committed = high watermark on every partition
kafka_wait($node,
	q{SELECT sum(committed_offset) = sum(high_watermark) AND count(*) = 4
	    FROM kappa.source_partitions WHERE source = 'events_src'},
	't', 'committed offsets reach the high watermarks');
is($node->safe_psql('postgres',
	q{SELECT sum(next_offset) FROM kappa.source_offsets}), $n, 'offsets cover every message');

# kappa.sources
kafka_wait($node,
	q{SELECT state, workers, partitions, lag, dead_letters, messages
	    FROM kappa.sources WHERE source = 'events_src'},
	"running|1|4|0|$nbad|" . ($n - $nbad), 'kappa.sources');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity
	   WHERE backend_type = 'pg_kappa worker' AND application_name = 'pg_kappa source events_src'}),
	1, 'worker in pg_stat_activity');

# more messages later: consumed incrementally, nothing twice
kafka_produce($broker, 'events',
	[ map { qq(k$_|{"id": $_, "name": "n$_", "amount": 1}) } ($n + 1 .. $n + 100) ],
	key_delim => '|');
kafka_wait($node, 'SELECT count(*) FROM events WHERE id > 0', $n - $nbad + 100, 'later messages');

# JSON of every shape through one decoder: keys in any order, present or
# not, escaped or not, duplicated, nested values, escapes in values, and
# some bad messages; each message is decoded by the fast path or, where it
# stops, by the general parser.  The table must equal what Perl expects.
$node->safe_psql('postgres',
	q{CREATE TABLE shapes (id int PRIMARY KEY, a int, b text, c numeric, j jsonb)});
{
	srand(20261125);
	my (@shape_msgs, %want);
	my $shape_bad = 0;
	my @jsons = ([ '[1,2]', '[1, 2]' ], [ '{ "k" :"v" }', '{"k": "v"}' ],
		[ '"s"', '"s"' ], [ '3.50', '3.50' ]);
	for my $id (1 .. 600)
	{
		if ($id % 100 == 50)
		{
			# bad: a lone surrogate in an ignored field; a trailing comma
			push @shape_msgs, $id % 200 == 50
			  ? qq({"id": $id, "zz": "\\ud800"}) : qq({"id": $id, "a": 1,});
			$shape_bad++;
			next;
		}
		my %row = (id => $id);
		my @fields = ([ 'id', $id ]);
		if (rand() < 0.8) { $row{a} = int(rand(1000)) - 500; push @fields, [ 'a', $row{a} ]; }
		if (rand() < 0.8)
		{
			my $ch = chr(ord('A') + $id % 26);
			$row{b} = "b$id$ch";
			my $lit = rand() < 0.3 ? sprintf('"b%d\\u%04x"', $id, ord($ch)) : qq("b$id$ch");
			push @fields, [ 'b', $lit ];
		}
		if (rand() < 0.7) { $row{c} = sprintf('%.2f', rand(100)); push @fields, [ 'c', $row{c} ]; }
		if (rand() < 0.5)
		{
			my $j = $jsons[ int(rand(@jsons)) ];
			$row{j} = $j->[1];
			push @fields, [ 'j', $j->[0] ];
		}
		push @fields, [ 'extra', '{"a": [1, {"b": "\\u00e9"}]}' ] if rand() < 0.3;
		push @fields, [ 'zz', '"ignored"' ] if rand() < 0.3;
		# shuffle, then add duplicates: the last of a key wins
		for my $i (reverse 1 .. $#fields)
		{
			my $k = int(rand($i + 1));
			@fields[ $i, $k ] = @fields[ $k, $i ];
		}
		if (defined $row{a} && rand() < 0.1)
		{
			$row{a} += 1;
			push @fields, [ 'a', $row{a} ];
		}
		if (rand() < 0.2) { $row{b} = 'q"/'; push @fields, [ 'b', q("q\"\/") ]; }
		if (rand() < 0.1) { delete $row{c}; push @fields, [ 'c', 'null' ]; }
		my $json = '{' . join(', ', map {
			my $name = $_->[0];
			$name = 'i\\u0064' if $name eq 'id' && rand() < 0.1;
			qq("$name": $_->[1])
		} @fields) . '}';
		$json = " $json " if rand() < 0.1;
		push @shape_msgs, $json;
		$want{$id} = join('|', $id, map { $row{$_} // 'N' } qw(a b c j));
	}
	kafka_produce($broker, 'shapes', \@shape_msgs);
	$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('shapes_src', target => 'shapes', topic => 'shapes',
    brokers => '$bs', start => 'earliest')});
	kafka_wait($node,
		q{SELECT (SELECT count(*) FROM shapes)
		       + (SELECT count(*) FROM kappa.errors WHERE source = 'shapes_src')},
		scalar(@shape_msgs), 'JSON shapes: produced = rows + dead letters');
	is($node->safe_psql('postgres',
		q{SELECT count(*) FROM kappa.errors WHERE source = 'shapes_src'}),
		$shape_bad, 'JSON shapes: the bad messages are dead letters');
	is($node->safe_psql('postgres',
		q{SELECT string_agg(concat_ws('|', id, coalesce(a::text, 'N'), coalesce(b, 'N'),
		                              coalesce(c::text, 'N'), coalesce(j::text, 'N')),
		                    E'\n' ORDER BY id) FROM shapes}),
		join("\n", map { $want{$_} } sort { $a <=> $b } keys %want),
		'JSON shapes: every row as expected');
	$node->safe_psql('postgres', q{SELECT kappa.drop_source('shapes_src')});
}

# targets that take the SPI path (partitioned, identity column, row-level
# security): rows routed, identity filled, policies enforced
$node->safe_psql('postgres', qq{
CREATE TABLE pt (id int, name text, seq int GENERATED ALWAYS AS IDENTITY) PARTITION BY RANGE (id);
CREATE TABLE pt_low PARTITION OF pt FOR VALUES FROM (0) TO (50);
CREATE TABLE pt_high PARTITION OF pt FOR VALUES FROM (50) TO (1000);
CREATE TABLE sec (id int, name text);
ALTER TABLE sec ENABLE ROW LEVEL SECURITY;
ALTER TABLE sec FORCE ROW LEVEL SECURITY;
CREATE POLICY small ON sec FOR ALL USING (true) WITH CHECK (id < 90);
CREATE ROLE regress_rls LOGIN;
GRANT SELECT, INSERT ON sec TO regress_rls;
CREATE SERVER basic_kafka FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '$bs');
GRANT USAGE ON FOREIGN SERVER basic_kafka TO regress_rls;
SELECT kappa.create_kafka_source('pt_src', target => 'pt', topic => 'third', brokers => '$bs');
SET ROLE regress_rls;
SELECT kappa.create_kafka_source('sec_src', target => 'sec', topic => 'third', server => 'basic_kafka');
RESET ROLE;
});
kafka_produce($broker, 'third', [ map { qq({"id": $_, "name": "p$_"}) } (1 .. 100) ]);
kafka_wait($node, q{SELECT (SELECT count(*) FROM pt_low), (SELECT count(*) FROM pt_high),
                           (SELECT count(DISTINCT seq) FROM pt)}, '49|51|100',
	'partitioned target: rows routed, identity filled');
kafka_wait($node, q{SELECT (SELECT count(*) FROM sec),
   (SELECT count(*) FROM kappa.errors WHERE source = 'sec_src' AND error ~ 'row-level security')},
	'89|11', 'row-level security enforced (violations are dead letters)');

# dropping a target drops its source
($ret, $out, $err) = $node->psql('postgres', 'DROP TABLE pt');
like($err, qr/drop cascades to kafka source pt_src/, 'dropping the target drops its source');
is($node->safe_psql('postgres', q{SELECT count(*) FROM kappa.sources WHERE source = 'pt_src'}),
	0, 'source gone with its target');

# create-time checks
my $create = sub {
	my ($args) = @_;
	($ret, $out, $err) = $node->psql('postgres',
		"SELECT kappa.create_kafka_source('x', topic => 'other', brokers => '$bs', $args)");
	return $err;
};
like($create->(q{target => 'events', options => '{"no.such.property": 1}'}),
	qr/unknown Kafka property "no.such.property".*\n.*DETAIL:  No such configuration property/s,
	'unknown property refused, with librdkafka\'s text as detail');
like($create->(q{target => 'events', options => '{"fetch.wait.max.ms": "soon"}'}),
	qr/invalid value for Kafka property "fetch.wait.max.ms".*\n.*DETAIL/s,
	'invalid property value refused with librdkafka detail');
like($create->(q{target => 'events', options => '{"sasl.password": 12}', format => 'json'}),
	qr/Kafka property "sasl.password" is a secret and cannot be a source option.*HINT:  Give it in a user mapping/s,
	'a secret is not a source option: it belongs in a user mapping');
unlike($err, qr/\b12\b/, 'secret value not in the error');
like($create->(q{target => 'events', format => 'xml'}), qr/format/, 'unknown format refused');
like($create->(q{target => 'no_such_table'}), qr/does not exist/, 'missing target refused');
like($create->(q{target => 'events', start => 'yesterday-ish'}), qr/invalid input syntax|start/,
	'bad start refused');
like($create->(q{target => 'events', options => '{"batch_size": 0}'}), qr/batch_size/,
	'bad batch_size refused');
like($create->(q{target => 'events', options => '{"enable.auto.commit": true}'}),
	qr/set by pg_kappa/, 'reserved property refused');
like($create->(q{target => 'pg_class'}), qr/system catalog/,
	'catalog target refused');
$node->safe_psql('postgres', q{CREATE TABLE wrongtypes (p point)});
like($create->(q{target => 'wrongtypes', format => 'bytea'}), qr/ERROR/,
	'a column the format cannot fill is refused');
like($create->(q{target => 'events', parallelism => 0}), qr/parallelism/, 'bad parallelism');
$node->safe_psql('postgres', qq{SELECT kappa.create_kafka_source('dup', target => 'events',
	topic => 'other', brokers => '$bs')});
like($node->psql('postgres', qq{SELECT kappa.create_kafka_source('dup', target => 'events',
	topic => 'other', brokers => '$bs')}, stderr => \$err) && $err, qr/already exists/,
	'duplicate name refused');

# pause / resume / drop: a paused source keeps one worker, which reads
# nothing but keeps the lag current
$node->safe_psql('postgres', q{SELECT kappa.pause_source('events_src')});
kafka_wait($node, q{SELECT state, workers, partitions FROM kappa.sources WHERE source = 'events_src'},
	'paused|1|0', 'paused: one worker left, holding no partition');
kafka_produce($broker, 'events',
	[ map { qq(k$_|{"id": $_, "name": "n$_"}) } ($n + 101 .. $n + 150) ], key_delim => '|');
kafka_wait($node, q{SELECT lag FROM kappa.sources WHERE source = 'events_src'}, 50,
	'the lag of a paused source grows with what it does not read');
is($node->safe_psql('postgres', 'SELECT count(*) FROM events WHERE id > 0'), $n - $nbad + 100,
	'nothing consumed while paused');
$node->safe_psql('postgres', q{SELECT kappa.resume_source('events_src')});
kafka_wait($node, 'SELECT count(*) FROM events WHERE id > 0', $n - $nbad + 150, 'resumed where it stopped');

$node->safe_psql('postgres', q{SELECT kappa.drop_source(name) FROM kappa.source_catalog});
kafka_wait($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'},
	0, 'dropped: workers gone');
is($node->safe_psql('postgres',
	'SELECT (SELECT count(*) FROM kappa.source_catalog) + (SELECT count(*) FROM kappa.source_offsets)'),
	0, 'catalog rows gone');

$node->stop;
kafka_stop_broker($broker);
done_testing();
