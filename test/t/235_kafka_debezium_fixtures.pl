# envelope 'debezium' fed with Debezium's own published change events
# (test/fixtures/debezium, see its README.md for every file's source and
# every edit): the PostgreSQL connector documentation's events, the MySQL
# tutorial's recorded topic and the MySQL connector documentation's events,
# Debezium's JSON serde test resources, plus a few fixtures derived from
# them where the documentation describes an event in prose only (README:
# "Derived fixtures").  Each scenario is produced with kcat into a topic of
# one partition, so the order is the documented order; after each step the
# table is compared with an expected table written here as plain SQL from
# the values the documentation states, and produced = applied + dead
# letters is checked.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();

require "./test/t/100_kafka_common.pl";

our $kafka_repo;    # test/t/100_kafka_common.pl
my $fixtures = "$kafka_repo/test/fixtures/debezium";

# the fixture file, on one line: whitespace outside strings removed (not
# decoded and encoded again, so key order and repeated keys -- two
# "name" keys in some documented MySQL events -- stay as published);
# JSON::PP checks that it is valid JSON
sub fixture
{
	my ($name) = @_;
	open(my $fh, '<', "$fixtures/$name") or die "$fixtures/$name: $!";
	local $/;
	my $text = <$fh>;
	close $fh;
	JSON::PP->new->decode($text);    # dies if the file is not JSON
	my ($out, $in_string, $escaped) = ('', 0, 0);
	for my $c (split //, $text)
	{
		if ($in_string)
		{
			$out .= $c;
			if    ($escaped)  { $escaped = 0; }
			elsif ($c eq '\\') { $escaped = 1; }
			elsif ($c eq '"')  { $in_string = 0; }
			next;
		}
		next if $c =~ /\s/;
		$in_string = 1 if $c eq '"';
		$out .= $c;
	}
	die "$name: '|' would split the kcat line" if $out =~ /\|/;
	return $out;
}

# a kcat line "key|value"; undef gives an empty side (a null key or value
# with null_empty)
sub msg
{
	my ($key, $value) = @_;
	return (defined $key ? fixture($key) : '') . '|' . (defined $value ? fixture($value) : '');
}

my $broker = kafka_start_broker(dbz_pg => 1, dbz_mysql => 1, dbz_enc => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_debezium_fixtures');

# the documented tables: postgresql.adoc and mysql.adoc, "Change event keys"
$node->safe_psql('postgres', qq{
CREATE TABLE pg_customers (
  id SERIAL,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL,
  PRIMARY KEY(id)
);
CREATE TABLE mysql_customers (
  id INTEGER NOT NULL PRIMARY KEY,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL UNIQUE
);
-- the encodings (derived fixtures): MySQL DATETIME and TIMESTAMP,
-- PostgreSQL TIMESTAMP, a DATE, a NUMERIC(10,2)
CREATE TABLE encodings (id int PRIMARY KEY, dt timestamp, ts timestamptz, micro timestamp,
                        d date, price numeric(10,2));
CREATE TABLE expected (LIKE pg_customers);
CREATE TABLE expected_enc (LIKE encodings);
SELECT kappa.create_kafka_source('dbz_pg', target => 'pg_customers', topic => 'dbz_pg',
    brokers => '$bs', envelope => 'debezium', key_format => 'json');
SELECT kappa.create_kafka_source('dbz_mysql', target => 'mysql_customers', topic => 'dbz_mysql',
    brokers => '$bs', envelope => 'debezium', key_format => 'json');
SELECT kappa.create_kafka_source('dbz_enc', target => 'encodings', topic => 'dbz_enc',
    brokers => '$bs', envelope => 'debezium', key_format => 'json');
});

my %produced;

# produce the lines (with headers, if any), wait until the source has
# consumed all produced so far, compare with the expected rows
sub step
{
	my (%a) = @_;
	my ($src, $topic, $table, $expected, $what) = @a{qw(src topic table expected what)};
	for my $batch (@{ $a{batches} })
	{
		my ($lines, @headers) = @$batch;
		kafka_produce($broker, $topic, $lines, key_delim => '|', null_empty => 1,
			@headers ? (headers => \@headers) : ());
		$produced{$src} += @$lines;
	}
	kafka_wait($node,
		qq{SELECT messages + dead_letters FROM kappa.sources WHERE source = '$src'},
		$produced{$src}, "$src, $what: produced = applied + dead letters", 30);
	my $exp = $a{exp_table} // 'expected';
	$node->safe_psql('postgres', "TRUNCATE $exp; " . ($expected ? "INSERT INTO $exp VALUES $expected;" : ''));
	my $diff = $node->safe_psql('postgres', qq{
SELECT coalesce(string_agg(d::text, '; '), '') FROM
  ((TABLE $table EXCEPT ALL TABLE $exp) UNION ALL (TABLE $exp EXCEPT ALL TABLE $table)) d});
	is($diff, '', "$src, $what: the table is the expected table");
}

sub dead_letters
{
	my ($src) = @_;
	return $node->safe_psql('postgres', qq{SELECT dead_letters FROM kappa.sources WHERE source = '$src'});
}

# ------------------------------------------------------------ PostgreSQL
# customers rows of the examples (debezium-examples) and of postgresql.adoc
my %pg = (
	1001 => q{(1001, 'Sally', 'Thomas', 'sally.thomas@acme.com')},
	1002 => q{(1002, 'George', 'Bailey', 'gbailey@foobar.com')},
	1003 => q{(1003, 'Edward', 'Walker', 'ed@walker.com')},
	1004 => q{(1004, 'Anne', 'Kretchmar', 'annek@noanswer.org')});
my $pg_snap = join(', ', @pg{ 1001 .. 1004 });

step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'snapshot reads',
	batches => [ [ [ map { msg("derived/pg_snapshot_$_.key.json", "postgresql/snapshot_$_.value.json") } 1001 .. 1004 ] ] ],
	expected => $pg_snap);
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'create',
	batches => [ [ [ msg('postgresql/key.json', 'postgresql/create.value.json') ] ] ],
	expected => "$pg_snap, (1, 'Anne', 'Kretchmar', 'annek\@noanswer.org')");
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'update',
	batches => [ [ [ msg('postgresql/key.json', 'postgresql/update.value.json') ] ] ],
	expected => "$pg_snap, (1, 'Anne Marie', 'Kretchmar', 'annek\@noanswer.org')");
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'update with an unchanged TOAST value',
	batches => [ [ [ msg('postgresql/key.json', 'derived/pg_toast_update.value.json') ] ] ],
	expected => "$pg_snap, (1, 'Anne Marie', 'Kretchmar', 'annek\@noanswer.org')");
# primary key update: DELETE of the old key (header __debezium.newkey),
# its tombstone, CREATE of the new key (header __debezium.oldkey)
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'primary key update',
	batches => [
		[ [ msg('postgresql/key.json', 'postgresql/delete.value.json') ],
		  '__debezium.newkey=' . fixture('derived/pg_pk_new.key.json') ],
		[ [ msg('postgresql/key.json', undef) ] ],
		[ [ msg('derived/pg_pk_new.key.json', 'derived/pg_pk_create.value.json') ],
		  '__debezium.oldkey=' . fixture('postgresql/key.json') ] ],
	expected => "$pg_snap, (2, 'Anne Marie', 'Kretchmar', 'annek\@noanswer.org')");
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'truncate',
	batches => [ [ [ msg(undef, 'postgresql/truncate.value.json') ] ] ],
	expected => '');
is(dead_letters('dbz_pg'), 0, 'dbz_pg: no dead letter so far');
# a logical decoding message (op "m") is no change of a table: a dead letter
step(src => 'dbz_pg', topic => 'dbz_pg', table => 'pg_customers', what => 'message event',
	batches => [ [ [ msg('derived/pg_message.key.json', 'postgresql/message.value.json') ] ] ],
	expected => '');
is(dead_letters('dbz_pg'), 1, 'dbz_pg: the message event is the one dead letter');
note 'message event: ' . $node->safe_psql('postgres', q{SELECT error FROM kappa.errors WHERE source = 'dbz_pg'});

# ------------------------------------------------------------ MySQL
my %my = (%pg,
	1005 => q{(1005, 'Sarah', 'Thompson', 'kitt@acme.com')},
	1006 => q{(1006, 'Kenneth', 'Anderson', 'kander@acme.com')});
my $my3 = join(', ', @my{ 1001 .. 1003 });
my @mystep = (src => 'dbz_mysql', topic => 'dbz_mysql', table => 'mysql_customers');

# the tutorial's topic, message by message as the tutorial shows it
step(@mystep, what => 'tutorial snapshot',
	batches => [ [ [ map { msg("mysql/tutorial_snapshot_$_.key.json", "mysql/tutorial_snapshot_$_.value.json") } 1001 .. 1004 ] ] ],
	expected => join(', ', @my{ 1001 .. 1004 }));
step(@mystep, what => 'tutorial update',
	batches => [ [ [ msg('mysql/tutorial_update_1004.key.json', 'mysql/tutorial_update_1004.value.json') ] ] ],
	expected => "$my3, (1004, 'Anne Marie', 'Kretchmar', 'annek\@noanswer.org')");
step(@mystep, what => 'tutorial delete and tombstone',
	batches => [ [ [ msg('mysql/tutorial_delete_1004.key.json', 'mysql/tutorial_delete_1004.value.json'),
					 msg('mysql/tutorial_tombstone_1004.key.json', undef) ] ] ],
	expected => $my3);
step(@mystep, what => 'tutorial creates',
	batches => [ [ [ map { msg("mysql/tutorial_create_$_.key.json", "mysql/tutorial_create_$_.value.json") } 1005, 1006 ] ] ],
	expected => "$my3, $my{1005}, $my{1006}");
# mysql.adoc's create, update, delete (+ tombstone) of 1004 (keyed with the
# tutorial's key of 1004), then its truncate
step(@mystep, what => 'documented create',
	batches => [ [ [ msg('mysql/tutorial_snapshot_1004.key.json', 'mysql/create.value.json') ] ] ],
	expected => "$my3, $my{1005}, $my{1006}, (1004, 'Anne', 'Kretchmar', 'annek\@noanswer.org')");
step(@mystep, what => 'documented update',
	batches => [ [ [ msg('mysql/tutorial_snapshot_1004.key.json', 'mysql/update.value.json') ] ] ],
	expected => "$my3, $my{1005}, $my{1006}, (1004, 'Anne Marie', 'Kretchmar', 'annek\@noanswer.org')");
step(@mystep, what => 'documented delete and tombstone',
	batches => [ [ [ msg('mysql/tutorial_snapshot_1004.key.json', 'mysql/delete.value.json'),
					 msg('mysql/tutorial_snapshot_1004.key.json', undef) ] ] ],
	expected => "$my3, $my{1005}, $my{1006}");
step(@mystep, what => 'documented truncate',
	batches => [ [ [ msg(undef, 'mysql/truncate.value.json') ] ] ],
	expected => '');
# Debezium's serde test resources: events without the schema wrapper
step(@mystep, what => 'test resources without schema',
	batches => [ [ [ msg('mysql/tutorial_snapshot_1004.key.json', 'mysql/serde-without-schema.value.json'),
					 msg('mysql/tutorial_snapshot_1004.key.json', 'mysql/serde-update.value.json') ] ] ],
	expected => "(1004, 'Anne', 'Kretchmar', 'annek\@noanswer.org')");
is(dead_letters('dbz_mysql'), 0, 'dbz_mysql: no dead letters');

# ------------------------------------------------------------ encodings
# values the documentation states: mysql.adoc "DATETIME with a value of
# 2018-06-20 06:37:03 becomes 1529476623000", "TIMESTAMP with a value of
# 2018-06-20 06:37:03 becomes 2018-06-20T13:37:03Z" (server in
# America/Los_Angeles); postgresql.adoc "2018-06-20 15:13:16.945104" is
# MicroTimestamp 1529507596945104; Kafka's JsonConverterTest: Date 10000
# (days), Decimal "AJw=" with scale 2 is 1.56
step(src => 'dbz_enc', topic => 'dbz_enc', table => 'encodings', exp_table => 'expected_enc',
	what => 'documented encodings',
	batches => [ [ [ msg('derived/encodings_1.key.json', 'derived/encodings_wrapped.value.json'),
					 msg('derived/encodings_2.key.json', 'derived/encodings_plain.value.json') ] ] ],
	expected => q{(1, timestamp '2018-06-20 06:37:03', timestamptz '2018-06-20 13:37:03+00',
	               timestamp '2018-06-20 15:13:16.945104', date '1970-01-01' + 10000, 1.56),
	              (2, NULL, timestamptz '2018-06-20 13:37:03+00',
	               timestamp '2018-06-20 15:13:16.945104', date '1970-01-01' + 10000, 1.56)});
is(dead_letters('dbz_enc'), 0, 'dbz_enc: no dead letters');

diag $node->safe_psql('postgres', q{SELECT source, "offset", error FROM kappa.errors ORDER BY source, "offset"})
  if dead_letters('dbz_mysql') + dead_letters('dbz_enc') > 0 || dead_letters('dbz_pg') != 1;

$node->stop;
done_testing();
