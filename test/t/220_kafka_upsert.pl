# envelope 'upsert': a compacted "latest value per key" topic into a table
# with a primary key.  Keys in JSON (one and two columns) and text; values
# replace the row, tombstones delete it; bad messages are dead letters and
# nothing else stops; the same messages applied twice (a replay) leave the
# table as it was; a table with statement triggers takes the planned path
# and ends the same.  The expected table is computed here, in Perl, by
# applying the messages one by one in each key's order (a key's messages
# are in one partition, so they arrive in order).
#
# produced = applied + dead letters, exactly.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(kv => 3, kv2 => 1, kvtext => 1);
my $bs = $broker->{bootstrap};
my $node = kafka_node('kafka_upsert');

$node->safe_psql('postgres', q{
CREATE TABLE kv (id int PRIMARY KEY, name text NOT NULL, amount numeric CHECK (amount >= 0),
                 tags jsonb, kafka_offset bigint);
-- the same, with a statement trigger: written by planned statements
CREATE TABLE kv_planned (LIKE kv INCLUDING ALL);
CREATE TABLE kv_statements (n int);
-- (a target's triggers run as its owner with search_path pg_catalog, pg_temp)
CREATE FUNCTION count_statements() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.kv_statements VALUES (1); RETURN NULL; END$$;
CREATE TRIGGER counted AFTER INSERT OR UPDATE OR DELETE ON kv_planned
  FOR EACH STATEMENT EXECUTE FUNCTION count_statements();

-- trojans on the search_path of the source's owner (which the workers
-- connect as): an = for the key's type and an unnest; neither may run
CREATE TABLE trojan_log (who text, what text);
CREATE FUNCTION public.trojan_eq(int, int) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.trojan_log VALUES (current_user, '='); RETURN $1 OPERATOR(pg_catalog.=) $2; END$$;
CREATE OPERATOR public.= (leftarg = int, rightarg = int, function = public.trojan_eq);
CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.trojan_log VALUES (current_user, 'unnest');
          RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END$$;
ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;
});

# 3000 changes over 300 keys: values (some with absent columns), tombstones,
# and 2% bad messages of every kind
srand(20261126);
my (@msgs, %want, %want_planned);
my ($n, $nbad) = (3000, 0);
for my $i (1 .. $n)
{
	my $id = 1 + int(rand(300));
	my $key = qq({"id": $id});
	if ($i % 50 == 17)
	{
		my $kind = int($i / 50) % 5;
		$nbad++;
		if    ($kind == 0) { push @msgs, qq($key|{"name": "x", "amount": ); }        # malformed
		elsif ($kind == 1) { push @msgs, qq($key|{"name": "x", "amount": "lots"}); } # wrong type
		elsif ($kind == 2) { push @msgs, qq($key|{"amount": 1}); }                  # NOT NULL
		elsif ($kind == 3) { push @msgs, qq($key|{"name": "x", "amount": -1}); }     # CHECK
		else               { push @msgs, qq({"other": 1}|{"name": "x"}); }          # key without id
		next;
	}
	if (rand() < 0.15)
	{
		push @msgs, "$key|";    # tombstone
		delete $want{$id};
		next;
	}
	my $amount = sprintf('%.2f', rand(1000));
	my %row = (name => "n$i");
	my @fields = (qq("name": "n$i"));
	if (rand() < 0.8) { $row{amount} = $amount; push @fields, qq("amount": $amount); }
	if (rand() < 0.3) { $row{tags} = qq({"i": $i}); push @fields, qq("tags": {"i": $i}); }
	push @fields, qq("id": $id) if rand() < 0.5;    # the key's own column, in the value too
	push @msgs, "$key|{" . join(', ', @fields) . "}";
	$want{$id} = \%row;
}
kafka_produce($broker, 'kv', \@msgs, key_delim => '|', null_empty => 1);

$node->safe_psql('postgres', qq{
SELECT kappa.create_kafka_source('kv_src', target => 'kv', topic => 'kv', brokers => '$bs',
    envelope => 'upsert', key_format => 'json', options => '{"batch_size": 400}');
SELECT kappa.create_kafka_source('kv_planned_src', target => 'kv_planned', topic => 'kv',
    brokers => '$bs', envelope => 'upsert', options => '{"batch_size": 400}');
});

sub expected_rows
{
	my ($w) = @_;
	return join("\n", map {
		my $r = $w->{$_};
		join('|', $_, $r->{name}, $r->{amount} // '', $r->{tags} // '')
	} sort { $a <=> $b } keys %$w);
}
my $rows_sql = q{SELECT id, name, amount, tags FROM %s ORDER BY id};

for my $src ('kv_src', 'kv_planned_src')
{
	kafka_wait($node,
		qq{SELECT messages + dead_letters FROM kappa.sources WHERE source = '$src'},
		$n, "$src: produced = applied + dead letters");
	is($node->safe_psql('postgres',
		qq{SELECT dead_letters FROM kappa.sources WHERE source = '$src'}), $nbad,
		"$src: every bad message is a dead letter");
}
is($node->safe_psql('postgres', sprintf($rows_sql, 'kv')), expected_rows(\%want),
	'simple path: the table is the last change of every key');
is($node->safe_psql('postgres', sprintf($rows_sql, 'kv_planned')), expected_rows(\%want),
	'planned path: the same table');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM kv_statements'), '<', $n / 10,
	'planned path: statements per batch, not per message');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM kv WHERE kafka_offset IS NULL}), 0, 'metadata columns filled');
is($node->safe_psql('postgres', q{SELECT count(*) FROM trojan_log}), 0,
	'no trojan operator or function on the owner\'s search_path ran');
like($node->safe_psql('postgres', q{
SELECT string_agg(DISTINCT error, ' | ') FROM kappa.errors
 WHERE source = 'kv_src' AND convert_from(key, 'UTF8') = '{"other": 1}'}),
	qr/id/, 'a key without its column: the dead letter names it');

# a replay: the same messages again leave the table as it was
kafka_produce($broker, 'kv', \@msgs, key_delim => '|', null_empty => 1);
for my $src ('kv_src', 'kv_planned_src')
{
	kafka_wait($node,
		qq{SELECT messages + dead_letters FROM kappa.sources WHERE source = '$src'},
		2 * $n, "$src: the replay consumed");
}
is($node->safe_psql('postgres', sprintf($rows_sql, 'kv')), expected_rows(\%want),
	'after the replay: unchanged');
is($node->safe_psql('postgres', sprintf($rows_sql, 'kv_planned')), expected_rows(\%want),
	'after the replay: unchanged (planned path)');

# a two-column key (in any field order: one partition, so the order of the
# messages does not depend on the key's bytes), and a crash of the worker
$node->safe_psql('postgres', qq{
CREATE TABLE kv2 (tenant text, id bigint, v int, PRIMARY KEY (tenant, id));
SELECT kappa.create_kafka_source('kv2_src', target => 'kv2', topic => 'kv2', brokers => '$bs',
    envelope => 'upsert', options => '{"batch_size": 100}');
});
my (@msgs2, %want2);
for my $i (1 .. 2000)
{
	my ($t, $id) = ('t' . ($i % 3), $i % 170);
	if ($i % 9 == 0) { push @msgs2, qq({"tenant": "$t", "id": $id}|); delete $want2{"$t|$id"}; next; }
	push @msgs2, qq({"id": $id, "tenant": "$t"}|{"v": $i});
	$want2{"$t|$id"} = $i;
}
kafka_produce($broker, 'kv2', [ @msgs2[ 0 .. 999 ] ], key_delim => '|', null_empty => 1);
kafka_wait($node, q{SELECT messages > 0 FROM kappa.sources WHERE source = 'kv2_src'}, 't',
	'kv2: consuming');
my $pid = $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_kappa source kv2_src'});
kill 'KILL', $pid if $pid;
kafka_produce($broker, 'kv2', [ @msgs2[ 1000 .. 1999 ] ], key_delim => '|', null_empty => 1);
kafka_wait($node, q{SELECT messages + dead_letters FROM kappa.sources WHERE source = 'kv2_src'},
	2000, 'kv2: every message, through a crash');
is($node->safe_psql('postgres', q{SELECT tenant || '|' || id || '=' || v FROM kv2 ORDER BY 1}),
	join("\n", sort map { "$_=$want2{$_}" } keys %want2), 'kv2: two-column keys');

# text keys
$node->safe_psql('postgres', qq{
CREATE TABLE kvtext (code text PRIMARY KEY, v int);
SELECT kappa.create_kafka_source('kvtext_src', target => 'kvtext', topic => 'kvtext',
    brokers => '$bs', envelope => 'upsert', key_format => 'text');
});
kafka_produce($broker, 'kvtext', [ 'a|{"v": 1}', 'b|{"v": 2}', 'a|{"v": 3}', 'b|', 'c|{"v": 4}' ],
	key_delim => '|', null_empty => 1);
kafka_wait($node, q{SELECT string_agg(code || '=' || v, ',' ORDER BY code) FROM kvtext},
	'a=3,c=4', 'text keys');

# what create_kafka_source refuses
my ($ret, $out, $err);
$node->safe_psql('postgres', q{
CREATE TABLE nokey (id int, v int);
SELECT kappa.create_stream('st', 'id int, v int');
CREATE ROLE regress_ins LOGIN;
GRANT INSERT ON kv TO regress_ins;
});
($ret, $out, $err) = $node->psql('postgres', qq{
SELECT kappa.create_kafka_source('x', target => 'nokey', topic => 'kv', brokers => '$bs',
    envelope => 'upsert')});
like($err, qr/table "nokey" has no primary key/, 'a table without primary key is refused');
($ret, $out, $err) = $node->psql('postgres', qq{
SELECT kappa.create_kafka_source('x', target => 'st', topic => 'kv', brokers => '$bs',
    envelope => 'upsert')});
like($err, qr/needs a table, but "st" is a stream/, 'a stream is refused');
($ret, $out, $err) = $node->psql('postgres', qq{
SELECT kappa.create_kafka_source('x', target => 'kv', topic => 'kv', brokers => '$bs',
    envelope => 'replace')});
like($err, qr/envelope/, 'an unknown envelope is refused');
($ret, $out, $err) = $node->psql('postgres', qq{
SET ROLE regress_ins;
SELECT kappa.create_kafka_source('x', target => 'kv', topic => 'kv', server => 'none',
    envelope => 'upsert')});
like($err, qr/permission denied|does not exist/, 'a role without USAGE or UPDATE is refused');
$node->safe_psql('postgres', q{
CREATE SERVER k FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '127.0.0.1:1');
GRANT USAGE ON FOREIGN SERVER k TO regress_ins;
});
($ret, $out, $err) = $node->psql('postgres', q{
SET ROLE regress_ins;
SELECT kappa.create_kafka_source('x', target => 'kv', topic => 'kv', server => 'k',
    envelope => 'upsert')});
like($err, qr/permission denied for table kv/,
	'a role that may INSERT but not UPDATE and DELETE is refused');
is($node->safe_psql('postgres', q{SELECT envelope, key_format FROM kappa.sources WHERE source = 'kvtext_src'}),
	'upsert|text', 'kappa.sources shows the envelope');

$node->stop;
done_testing();
