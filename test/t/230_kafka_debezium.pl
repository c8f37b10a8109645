# envelope 'debezium' end to end: 100,000 change events of the shape the
# Debezium PostgreSQL connector documents (snapshot reads, creates, updates
# with and without 'before', updates that move a row to another primary
# key, deletes followed by their tombstones, the unchanged-TOAST
# placeholder; Decimal, Date, MicroTimestamp and ZonedTimestamp values,
# mostly plain JSON and some in the JsonConverter schema wrapper) over
# 1,000 keys and 8 partitions, produced with kcat and consumed while the
# worker is killed with SIGKILL and the postmaster itself is killed.  The
# expected table is computed independently: the same changes applied by
# plain SQL statements to a shadow table.  At the end the table equals the
# shadow, every message was applied once or is a dead letter, and the
# continuous views over the table equal their queries as plain SQL.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use MIME::Base64 qw(encode_base64);

require "./test/t/100_kafka_common.pl";

my $total = $ENV{KAPPA_DBZ_CHANGES} // 100_000;
my $chunks = 10;
my $broker = kafka_start_broker(dbz => 8, dbz_one => 1, dbz_order => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_debezium', conf => "restart_after_crash = on\n");

my $columns = q{id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), born date,
                seen timestamp, zoned timestamptz, bio text};
$node->safe_psql('postgres', qq{
CREATE TABLE customers ($columns);
CREATE TABLE shadow ($columns);
-- continuous views over the table: one whose aggregates retract in place,
-- one whose groups are recomputed (min, max)
SELECT kappa.create_view('by_year', \$\$SELECT extract(year FROM born)::int AS y, count(*) AS n,
    sum(balance) AS total, avg(balance) AS mean FROM customers GROUP BY 1\$\$);
SELECT kappa.create_view('by_digit', \$\$SELECT id % 10 AS g, min(balance) AS lo, max(seen) AS last_seen,
    count(bio) AS with_bio FROM customers GROUP BY 1\$\$);
SELECT kappa.create_kafka_source('dbz_src', target => 'customers', topic => 'dbz',
    brokers => '$bs', envelope => 'debezium', options => '{"batch_size": 2000}');
});

# ------------------------------------------------------------ the changes
# Debezium's PostgreSQL connector (decimal.handling.mode=string without the
# wrapper; precise, i.e. base64 Decimal, with it; time.precision.mode
# adaptive: timestamp -> MicroTimestamp, timestamptz -> ZonedTimestamp,
# date -> Date).
my $source_block = '{"version":"2.1.2.Final","connector":"postgresql","name":"dbserver1",'
  . '"ts_ms":%d,"snapshot":"%s","db":"postgres","schema":"inventory","table":"customers",'
  . '"txId":%d,"lsn":%d}';
my $field_schemas = '[{"type":"int32","optional":false,"field":"id"},'
  . '{"type":"string","optional":false,"field":"name"},'
  . '{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,'
  . '"parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"balance"},'
  . '{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"born"},'
  . '{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"seen"},'
  . '{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"zoned"},'
  . '{"type":"string","optional":true,"field":"bio"}]';
my $value_schema = '{"type":"struct","fields":['
  . qq({"type":"struct","fields":$field_schemas,"optional":true,"name":"dbserver1.inventory.customers.Value","field":"before"},)
  . qq({"type":"struct","fields":$field_schemas,"optional":true,"name":"dbserver1.inventory.customers.Value","field":"after"},)
  . '{"type":"struct","fields":[{"type":"string","optional":false,"field":"connector"},{"type":"int64","optional":true,"field":"lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"},'
  . '{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"}],'
  . '"optional":false,"name":"dbserver1.inventory.customers.Envelope","version":1}';
my $key_schema = '{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],'
  . '"optional":false,"name":"dbserver1.inventory.customers.Key"}';

# a Decimal's unscaled value as base64 big-endian two's complement
sub decimal_base64
{
	my ($cents) = @_;
	my @bytes;
	my $v = $cents;
	do { unshift @bytes, $v & 0xff; $v >>= 8; } while ($v != 0 && $v != -1);
	# keep the sign bit right
	unshift @bytes, ($cents < 0 ? 0xff : 0x00)
	  if (($bytes[0] & 0x80) != 0) != ($cents < 0);
	return encode_base64(pack('C*', @bytes), '');
}

srand(20261126);
my (%rows, @free, @sql, @msgs);
my $next_key = 1;
my ($lsn, $txid) = (24_000_000, 500);
my %stats;

sub random_row
{
	my ($id) = @_;
	my @letters = ('a' .. 'z');
	return {
		id => $id,
		name => 'n' . join('', map { $letters[ rand @letters ] } 1 .. 6),
		cents => int(rand(2_000_000)) - 1_000_000,
		days => int(rand(20000)) - 5000,
		micros => (int(rand(2_000_000_000)) - 200_000_000) * 1_000_000 + int(rand(1_000_000)),
		zoned => sprintf('20%02d-%02d-%02dT%02d:%02d:%02d.%06dZ', 10 + int(rand(20)),
			1 + int(rand(12)), 1 + int(rand(28)), int(rand(24)), int(rand(60)), int(rand(60)),
			int(rand(1_000_000))),
		bio => rand() < 0.1 ? undef : 'bio ' . join('', map { $letters[ rand @letters ] } 1 .. 20),
	};
}

sub balance_text { my $c = shift; return sprintf('%s%d.%02d', $c < 0 ? '-' : '', abs($c) / 100, abs($c) % 100); }

# the row as Debezium's JSON ('toast': bio is the unchanged-TOAST placeholder)
sub row_json
{
	my ($r, $wrapped, $toast) = @_;
	my $bio = $toast ? '"__debezium_unavailable_value"'
	  : defined $r->{bio} ? qq("$r->{bio}") : 'null';
	my $balance = $wrapped ? '"' . decimal_base64($r->{cents}) . '"' : '"' . balance_text($r->{cents}) . '"';
	return qq({"id":$r->{id},"name":"$r->{name}","balance":$balance,"born":$r->{days},)
	  . qq("seen":$r->{micros},"zoned":"$r->{zoned}","bio":$bio});
}

sub row_sql
{
	my ($r) = @_;
	my $bio = defined $r->{bio} ? "'$r->{bio}'" : 'NULL';
	return "($r->{id}, '$r->{name}', " . balance_text($r->{cents}) . ", date '1970-01-01' + $r->{days}, "
	  . "timestamp '1970-01-01' + $r->{micros} * interval '1 microsecond', "
	  . "'$r->{zoned}'::timestamptz, $bio)";
}

# a key, in the schema wrapper for every seventh key: always the same bytes
# for one key, since they choose its partition (the key and value
# converters are configured separately, so a wrapped value may come with a
# plain key and vice versa)
sub key_json
{
	my ($id) = @_;
	return $id % 7 == 0 ? qq({"schema":$key_schema,"payload":{"id":$id}}) : qq({"id":$id});
}

# one event; $after is a row (rendered here, once it is known whether the
# event is wrapped) or 'null'
sub event
{
	my ($op, $key, $before, $after, $snapshot, $toast) = @_;
	my $wrapped = rand() < 0.02;
	$after = row_json($after, $wrapped, $toast) if ref $after;
	$lsn += 1 + int(rand(300));
	$txid++;
	my $source = sprintf($source_block, 1_700_000_000_000 + $txid, $snapshot ? 'true' : 'false', $txid, $lsn);
	my $payload = qq({"before":$before,"after":$after,"source":$source,"op":"$op","ts_ms":)
	  . (1_700_000_000_000 + $txid) . '}';
	my $keyjson = key_json($key);
	if ($wrapped)
	{
		$payload = qq({"schema":$value_schema,"payload":$payload});
		$stats{wrapped}++;
	}
	push @msgs, "$keyjson|$payload";
	$stats{$op}++;
}

# the snapshot: 1,000 rows read
for (1 .. 1000)
{
	my $r = random_row($next_key++);
	$rows{ $r->{id} } = $r;
	event('r', $r->{id}, 'null', $r, 1);
	push @sql, 'INSERT INTO shadow VALUES ' . row_sql($r) . ';';
}
while (@msgs < $total)
{
	my @live = keys %rows;
	my $dice = rand();
	if ($dice < 0.10 && @live > 500)
	{
		# a delete, then its tombstone
		my $id = $live[ rand @live ];
		event('d', $id, qq({"id":$id,"name":null,"balance":null,"born":null,"seen":null,"zoned":null,"bio":null}), 'null');
		push @msgs, key_json($id) . '|';
		$stats{tombstone}++;
		delete $rows{$id};
		push @free, $id;
		push @sql, "DELETE FROM shadow WHERE id = $id;";
	}
	elsif ($dice < 0.13 && @live)
	{
		# the primary key changes: the connector emits a delete (and its
		# tombstone) for the old key and a create for the new one
		my $old = $live[ rand @live ];
		my $r = { %{ $rows{$old} }, id => $next_key++ };
		event('d', $old, qq({"id":$old,"name":null,"balance":null,"born":null,"seen":null,"zoned":null,"bio":null}), 'null');
		push @msgs, key_json($old) . '|';
		$stats{tombstone}++;
		event('c', $r->{id}, 'null', $r);
		delete $rows{$old};
		$rows{ $r->{id} } = $r;
		push @sql, "DELETE FROM shadow WHERE id = $old;", 'INSERT INTO shadow VALUES ' . row_sql($r) . ';';
		$stats{key_change}++;
	}
	elsif ($dice < 0.25 || !@live)
	{
		# a new row, under a key never used or one deleted before
		my $id = @free && rand() < 0.5 ? shift @free : $next_key++;
		my $r = random_row($id);
		$rows{$id} = $r;
		event('c', $id, 'null', $r);
		push @sql, 'INSERT INTO shadow VALUES ' . row_sql($r) . ';';
	}
	else
	{
		# an update: 'before' is null (REPLICA IDENTITY DEFAULT); some
		# leave the TOASTed bio unchanged and send the placeholder
		my $id = $live[ rand @live ];
		my $new = random_row($id);
		my $toast = defined $rows{$id}{bio} && rand() < 0.2;
		$new->{bio} = $rows{$id}{bio} if $toast;
		event('u', $id, 'null', $new, 0, $toast);
		$stats{toast}++ if $toast;
		$rows{$id} = $new;
		push @sql, 'UPDATE shadow SET (name, balance, born, seen, zoned' . ($toast ? '' : ', bio')
		  . ') = (' . join(', ', (split /, /, substr(row_sql($new), 1, -1))[ 1 .. ($toast ? 5 : 6) ])
		  . ") WHERE id = $id;";
	}
}
note join(', ', map { "$_ $stats{$_}" } sort keys %stats);
my $produced = scalar @msgs;

# ------------------------------------------------------------ produce, crash
my $per_chunk = int($produced / $chunks) + 1;
my $kills = 0;
for my $chunk (0 .. $chunks - 1)
{
	my @part = grep { defined } @msgs[ $chunk * $per_chunk .. ($chunk + 1) * $per_chunk - 1 ];
	last unless @part;
	kafka_produce($broker, 'dbz', \@part, key_delim => '|', null_empty => 1);
	usleep(int(rand(100_000)));
	if ($chunk % 3 == 1)
	{
		my $pid = kafka_query($node,
			q{SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_kappa source dbz_src'});
		if ($pid)
		{
			kill 'KILL', $pid;
			$kills++;
			note "chunk $chunk: SIGKILL worker $pid";
		}
	}
	elsif ($chunk == 8)
	{
		note "chunk $chunk: SIGKILL postmaster";
		$node->kill9;
		for my $try (1 .. 50)
		{
			$node->{_pid} = undef;
			last if $node->start(fail_ok => 1);
			usleep(200_000);
		}
	}
	# the mock broker keeps ~5 MiB per partition: let the worker catch up
	kafka_wait($node, q{SELECT sum(next_offset) FROM kappa.source_offsets},
		$chunk * $per_chunk + scalar(@part), "chunk $chunk consumed", 120);
}
cmp_ok($kills, '>=', 2, "killed the worker $kills times");

# ------------------------------------------------------------ compare
my $sqlfile = PostgreSQL::Test::Utils::tempdir() . '/shadow.sql';
open(my $fh, '>', $sqlfile) or die;
print $fh "BEGIN;\n", join("\n", @sql), "\nCOMMIT;\n";
close $fh;
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
	'-f', $sqlfile ], 'the shadow table, by plain SQL');

is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), 0, 'no dead letters')
  or diag $node->safe_psql('postgres', q{
SELECT error || ': ' || convert_from(payload, 'UTF8') FROM kappa.errors ORDER BY "when" LIMIT 3});
is($node->safe_psql('postgres', 'SELECT sum(next_offset) FROM kappa.source_offsets'), $produced,
	'produced = applied + dead letters + gaps');
is($node->safe_psql('postgres', 'SELECT count(*) FROM customers'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM shadow'), 'as many rows as the shadow');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ((TABLE customers EXCEPT ALL TABLE shadow)
                      UNION ALL (TABLE shadow EXCEPT ALL TABLE customers)) d}), 0,
	'the table equals the shadow');
for my $view ([ 'by_year', q{SELECT extract(year FROM born)::int AS y, count(*) AS n,
    sum(balance) AS total, avg(balance) AS mean FROM customers GROUP BY 1} ],
	[ 'by_digit', q{SELECT id % 10 AS g, min(balance) AS lo, max(seen) AS last_seen,
    count(bio) AS with_bio FROM customers GROUP BY 1} ])
{
	my ($name, $q) = @$view;
	is($node->safe_psql('postgres', qq{
SELECT count(*) FROM ((TABLE $name EXCEPT ALL ($q)) UNION ALL (($q) EXCEPT ALL TABLE $name)) d}),
		0, "view $name equals its query as plain SQL");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM customers WHERE bio IS NOT NULL}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM shadow WHERE bio IS NOT NULL}),
	'TOAST placeholders kept the values');

# ------------------------------------------------------------ truncate
# (one partition: a truncate has no key, so only within one partition does
# it have an order relative to the other changes)
$node->safe_psql('postgres', qq{
CREATE TABLE one ($columns);
SELECT kappa.create_kafka_source('dbz_one', target => 'one', topic => 'dbz_one',
    brokers => '$bs', envelope => 'debezium');
});
@msgs = ();
my ($r1, $r2, $r3) = map { random_row($_) } 1 .. 3;
event('c', 1, 'null', $r1);
event('c', 2, 'null', $r2);
push @msgs, '|' . sprintf('{"before":null,"after":null,"source":%s,"op":"t","ts_ms":1}',
	sprintf($source_block, 1, 'false', 1, 1));
event('c', 3, 'null', $r3);
kafka_produce($broker, 'dbz_one', \@msgs, key_delim => '|', null_empty => 1);
kafka_wait($node, q{SELECT sum(next_offset) FROM kappa.source_offsets o JOIN kappa.source_catalog c
                     ON c.id = o.source_id WHERE c.name = 'dbz_one'}, 4, 'truncate consumed');
is($node->safe_psql('postgres', 'SELECT id FROM one'), '3', 'a truncate deletes the rows before it');

# ------------------------------------------------------------ ordering guard
# order_by => 'source.lsn': a change older than the one applied last for its
# key is dropped and counted, within a batch and across batches (batches
# of 2 here), also after a delete
$node->safe_psql('postgres', qq{
CREATE TABLE ordered ($columns);
SELECT kappa.create_kafka_source('dbz_order', target => 'ordered', topic => 'dbz_order',
    brokers => '$bs', envelope => 'debezium', order_by => 'source.lsn',
    options => '{"batch_size": 2}');
});
@msgs = ();
my %at;
my @script = ([ 'c', 1, 10 ], [ 'u', 1, 30 ], [ 'u', 1, 20 ], [ 'd', 1, 15 ], [ 'u', 1, 40 ],
	[ 'c', 2, 50 ], [ 'd', 2, 60 ], [ 'c', 2, 55 ], [ 'u', 3, 7 ], [ 'u', 3, 7 ]);
for my $step (@script)
{
	my ($op, $id, $at) = @$step;
	$lsn = $at - 1;    # event() adds 1 .. 300: set it exactly below
	my $r = random_row($id);
	$r->{name} = "at$at";
	my $before = $op eq 'd' ? qq({"id":$id}) : 'null';
	my $source = sprintf($source_block, 1, 'false', 1, $at);
	push @msgs, key_json($id) . qq(|{"before":$before,"after":) . ($op eq 'd' ? 'null' : row_json($r, 0, 0))
	  . qq(,"source":$source,"op":"$op","ts_ms":1});
}
kafka_produce($broker, 'dbz_order', \@msgs, key_delim => '|');
kafka_wait($node, q{SELECT messages FROM kappa.sources WHERE source = 'dbz_order'},
	scalar(@script), 'ordering guard: every change consumed')
  or diag $node->safe_psql('postgres', q{SELECT * FROM kappa.sources WHERE source = 'dbz_order'});
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || name, ',' ORDER BY id) FROM ordered}),
	'1=at40,3=at7', 'older changes dropped, equal positions applied again, a delete not undone');
is($node->safe_psql('postgres', q{SELECT out_of_order FROM kappa.sources WHERE source = 'dbz_order'}),
	3, 'dropped changes counted in kappa.sources');
is($node->safe_psql('postgres', q{
SELECT string_agg(key || '@' || position, ',' ORDER BY key) FROM kappa.source_key_positions}),
	'["1"]@40,["2"]@60,["3"]@7', 'the positions applied last, per key');

$node->stop;
done_testing();
