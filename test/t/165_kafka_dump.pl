# pg_dump of databases that use Kafka sources (docs/kafka.md, "Dump and
# restore"; docs/security.md for servers and user mappings).
#
# 1. A superuser's pg_dump -Fc, restored with pg_restore into a new database
#    of the same cluster, brings back the kappa_kafka server (its options and
#    USAGE grant), the user mapping of the sources' owner (its options,
#    secret included, as a superuser sees them in pg_user_mappings), the
#    sources (kappa.sources), their committed offsets and dead letters, the
#    target table's rows and the continuous views.  The original database's
#    sources are paused before the restore (both databases read the same
#    topics, each at its own offsets).  The restored sources arrive paused
#    (kappa.resume_source starts them when the restore is complete); then they
#    run as their owner and resume exactly at the dumped offsets: after more messages (and
#    dead letters, so the restored dead_letters_id_seq is used) the restored
#    table and views hold every message exactly once and
#    rows + dead letters = produced = sum of the committed offsets.  The
#    paused original is untouched meanwhile and catches up on its own when
#    resumed.
# 2. The owner of a database (not a superuser) can pg_dump it: it owns a
#    table, a stream, a view and sources (with dead letters), has USAGE on a
#    server and a user mapping of its own; another role has a user mapping
#    with a secret on the same server.  The owner's plain dump succeeds and
#    has the owner's objects but not the other role's secret; a superuser's
#    dump of the same database has it (the grep can find it).

use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

my $t0 = time;
my $broker = kafka_start_broker(dump_orders => 2, dump_clicks => 2, dump_owned => 1);
my $bs = $broker->{bootstrap};
# no statement (a user mapping holds a secret) in the server log
my $node = kafka_node('kafka_dump',
	conf => "log_statement = none\nlog_min_error_statement = panic\n");
my $su = $node->safe_psql('postgres', 'SELECT current_user');
my $dir = PostgreSQL::Test::Utils::tempdir();

# sql($db, $sql [, $user]): safe_psql in a database, as a login role
sub sql
{
	my ($db, $sql, $user) = @_;
	return $node->safe_psql($db, $sql, extra_params => [ '-U', $user // $su ]);
}

# wait_db($db, $sql, $expected, $what, $timeout): poll one database until
# $sql returns $expected (kafka_wait polls database postgres only)
sub wait_db
{
	my ($db, $sql, $expected, $what, $timeout) = @_;
	my $deadline = time + ($timeout // 90);
	my $got;
	while (1)
	{
		my ($ret, $out, $err) = $node->psql($db, $sql);
		$got = $ret == 0 ? $out : "ERROR: $err";
		return is($got, $expected, $what) if $got eq $expected;
		if (time > $deadline)
		{
			note "last value: $got";
			return is($got, $expected, "$what (timed out)");
		}
		usleep(100_000);
	}
}

# run_tool(@cmd): run pg_dump/pg_restore against the node; (exit, stdout, stderr)
sub run_tool
{
	my @cmd = @_;
	$cmd[0] = $node->installed_command($cmd[0]);
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

sub slurp { my ($f) = @_; return PostgreSQL::Test::Utils::slurp_file($f); }

sub msgs { my ($from, $to) = @_; return [ map { qq({"id": $_, "amount": $_.5}) } $from .. $to ]; }

############################################################################
# 1. A superuser's dump and restore
############################################################################

$node->safe_psql('postgres', q{
CREATE ROLE regress_ingest LOGIN;
CREATE DATABASE orig;
});
sql('orig', qq{
CREATE EXTENSION pg_kappa;
CREATE SERVER kafka_dev FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '$bs');
GRANT USAGE ON FOREIGN SERVER kafka_dev TO regress_ingest;
CREATE USER MAPPING FOR regress_ingest SERVER kafka_dev
  OPTIONS ("sasl.username" 'ingest-user', "sasl.password" 'ingest-s3cret');
GRANT CREATE ON SCHEMA public TO regress_ingest;
});
sql('orig', q{
CREATE TABLE orders (id int, amount numeric, kafka_partition int, kafka_offset bigint);
SELECT kappa.create_stream('clicks', 'id int, amount numeric', retain => NULL);
SELECT kappa.create_view('clicks_total',
  $$SELECT count(*) AS n, sum(id) AS ids, sum(amount) AS total FROM clicks$$);
SELECT kappa.create_view('clicks_by_mod',
  $$SELECT id % 3 AS m, count(*) AS n, sum(id) AS ids FROM clicks GROUP BY 1$$);
SELECT kappa.create_kafka_source('orders_src', target => 'orders', topic => 'dump_orders',
    server => 'kafka_dev', format => 'json', options => '{"fetch.wait.max.ms": 10}');
SELECT kappa.create_kafka_source('clicks_src', target => 'clicks', topic => 'dump_clicks',
    server => 'kafka_dev', format => 'json');
}, 'regress_ingest');

# 200 good and 2 malformed messages per topic
my @bad_a = ('not json {', '{"id": "abc", "amount": 1}');
for my $t (qw(dump_orders dump_clicks))
{
	kafka_produce($broker, $t, msgs(1, 200));
	kafka_produce($broker, $t, \@bad_a);
}

my $progress_sql = q{
SELECT source, (SELECT sum(o) FROM unnest(committed_offsets) o), dead_letters
  FROM kappa.sources ORDER BY source};
wait_db('orig', $progress_sql, "clicks_src|202|2\norders_src|202|2",
	'orig: both sources consumed 202 messages, 2 of them dead letters');
is(sql('orig', q{SELECT count(*), count(DISTINCT id) FROM orders;
                 SELECT n, ids FROM clicks_total}),
	"200|200\n200|20100", 'orig: 200 rows in the table and the views');

# What must come back, as text.
my %q = (
	server => q{SELECT srvname, pg_get_userbyid(srvowner),
	                   (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(srvoptions) o),
	                   array_to_string(srvacl, ',')
	              FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
	             WHERE w.fdwname = 'kappa_kafka'},
	# (pg_dump writes options in name order)
	mappings => q{SELECT usename, srvname, (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(umoptions) o)
	                FROM pg_user_mappings WHERE srvname = 'kafka_dev' ORDER BY 1},
	sources => q{SELECT source, owner, target, topic, server, brokers, format, start,
	                    on_data_loss, parallelism, options
	               FROM kappa.sources ORDER BY source},
	offsets => q{SELECT source, partition, committed_offset
	               FROM kappa.source_partitions ORDER BY 1, 2},
	dead_letters => q{SELECT id, source, kind, topic, partition, "offset",
	                         encode(payload, 'escape'), error, sqlstate, "when"
	                    FROM kappa.errors ORDER BY id},
	rows => q{SELECT count(*), md5(string_agg(o::text, ',' ORDER BY kafka_partition, kafka_offset))
	            FROM orders o},
	views => q{SELECT 'total', n, ids, total FROM clicks_total
	           UNION ALL
	           (SELECT 'mod ' || m, n, ids, NULL FROM clicks_by_mod ORDER BY m)},
);
my %before = map { $_ => sql('orig', $q{$_}) } keys %q;
note "orig $_:\n$before{$_}" for qw(server mappings sources offsets dead_letters);
like($before{mappings}, qr/^regress_ingest\|kafka_dev\|.*sasl\.password=ingest-s3cret/,
	'orig: the mapping holds the secret (as a superuser sees it)');

my $dump = "$dir/orig.dump";
my ($rc, $out, $err) = run_tool('pg_dump', '-Fc', '-h', $node->host, '-p', $node->port,
	'-U', $su, '-d', 'orig', '-f', $dump);
is("exit $rc\n$err", "exit 0\n", 'pg_dump -Fc by the superuser: exit 0, no message');
($rc, $out, $err) = run_tool('pg_restore', '-l', $dump);
note "data in the dump, in restore order:\n" . join("\n", grep { /DATA/ } split /\n/, $out);

# the original stops consuming: both databases read the same topics
sql('orig', q{SELECT kappa.pause_source('orders_src'); SELECT kappa.pause_source('clicks_src')},
	'regress_ingest');
wait_db('orig', q{SELECT string_agg(state, ',' ORDER BY source) FROM kappa.sources},
	'paused,paused', 'orig: both sources paused');

$node->safe_psql('postgres', 'CREATE DATABASE restored');
($rc, $out, $err) = run_tool('pg_restore', '-h', $node->host, '-p', $node->port,
	'-U', $su, '-d', 'restored', $dump);
is("exit $rc\n$err", "exit 0\n", 'pg_restore into a new database: exit 0, no message');

# the catalog state is back exactly, before anything new is produced
for my $k (qw(server mappings sources offsets dead_letters rows views))
{
	is(sql('restored', $q{$k}), $before{$k}, "restored: the same $k as in orig at the dump");
}
is(sql('restored', q{SELECT has_server_privilege('regress_ingest', 'kafka_dev', 'USAGE')}),
	't', 'restored: the owner may use the server');

# restored sources arrive paused (a restore loads the catalog, offsets and
# rows in separate transactions; a copy should not read its original's
# topics by itself): nothing moves until they are resumed
wait_db('restored', q{SELECT string_agg(format('%s %s', source, state), ',' ORDER BY source)
                        FROM kappa.sources},
	'clicks_src paused,orders_src paused', 'restored: both sources arrive paused');
is(sql('restored', $q{offsets}), $before{offsets},
	'restored: paused, they stored no offsets of their own');
sql('restored', q{SELECT kappa.resume_source('orders_src'); SELECT kappa.resume_source('clicks_src')},
	'regress_ingest');

# resumed, they start (nothing to read yet) as their owner, at the dumped
# offsets
wait_db('restored', q{SELECT string_agg(format('%s %s %s', source, state, workers), ',' ORDER BY source)
                        FROM kappa.sources},
	'clicks_src running 1,orders_src running 1', 'restored: both sources running, one worker each');
is(sql('restored', q{SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity
                      WHERE backend_type = 'pg_kappa worker' AND datname = 'restored'}),
	'regress_ingest', 'restored: the workers run as the sources\' owner');
is(sql('restored', $q{offsets}), $before{offsets},
	'restored: the started workers kept the dumped offsets');

# 200 more and 2 more malformed per topic, read only by the restored database
my @bad_b = ('{"id": 1', '{"id": 5, "amount": "lots"}');
for my $t (qw(dump_orders dump_clicks))
{
	kafka_produce($broker, $t, msgs(201, 400));
	kafka_produce($broker, $t, \@bad_b);
}
wait_db('restored', $progress_sql, "clicks_src|404|4\norders_src|404|4",
	'restored: both sources resumed: 404 messages, 4 dead letters each');
is(sql('restored', q{
SELECT count(*), count(DISTINCT id), min(id), max(id), sum(id),
       count(DISTINCT (kafka_partition, kafka_offset)) FROM orders}),
	'400|400|1|400|80200|400', 'restored: every message once in the table (ids 1..400)');
is(sql('restored', q{SELECT n, ids, total FROM clicks_total;
                     SELECT string_agg(format('%s:%s:%s', m, n, ids), ' ' ORDER BY m) FROM clicks_by_mod}),
	"400|80200|80400.0\n0:133:26733 1:134:26867 2:133:26600",
	'restored: every message once in the views');
is(sql('restored', q{
SELECT source, (SELECT sum(o) FROM unnest(s.committed_offsets) o),
       (SELECT count(*) FROM orders) + s.dead_letters,
       (SELECT n FROM clicks_total) + s.dead_letters
  FROM kappa.sources s ORDER BY source}),
	"clicks_src|404|404|404\norders_src|404|404|404",
	'restored: rows + dead letters = produced = sum of the committed offsets');
is(sql('restored', q{
SELECT count(*), count(DISTINCT id), count(DISTINCT (source, partition, "offset")),
       string_agg(DISTINCT encode(payload, 'escape'), ' / ' ORDER BY encode(payload, 'escape'))
  FROM kappa.errors}),
	'8|8|8|not json { / {"id": "abc", "amount": 1} / {"id": 1 / {"id": 5, "amount": "lots"}',
	'restored: the dumped dead letters and the new ones, each once, with new ids');
is(sql('restored', q{SELECT count(*) FROM kappa.sources WHERE last_error IS NOT NULL}), '0',
	'restored: no source error');

# the paused original did not move, and catches up on its own
is(sql('orig', $q{offsets}), $before{offsets}, 'orig: the paused sources did not move');
is(sql('orig', $q{rows}), $before{rows}, 'orig: its table did not change');
sql('orig', q{SELECT kappa.resume_source('orders_src'); SELECT kappa.resume_source('clicks_src')},
	'regress_ingest');
wait_db('orig', $progress_sql, "clicks_src|404|4\norders_src|404|4",
	'orig: resumed, it reads the new messages at its own offsets');
is(sql('orig', q{SELECT count(*), count(DISTINCT id), sum(id) FROM orders;
                 SELECT n, ids FROM clicks_total}),
	"400|400|80200\n400|80200", 'orig: every message once too');

# both stop reading: part 2 uses another topic
sql($_, q{SELECT kappa.pause_source('orders_src'); SELECT kappa.pause_source('clicks_src')})
  for qw(orig restored);

############################################################################
# 2. pg_dump by the database owner, not a superuser
############################################################################

$node->safe_psql('postgres', q{
CREATE ROLE regress_dbowner LOGIN;
CREATE ROLE regress_other LOGIN;
CREATE DATABASE ownerdb OWNER regress_dbowner;
});
sql('ownerdb', qq{
CREATE EXTENSION pg_kappa;
CREATE SERVER kafka_own FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '$bs');
GRANT USAGE ON FOREIGN SERVER kafka_own TO regress_dbowner, regress_other;
CREATE USER MAPPING FOR regress_other SERVER kafka_own
  OPTIONS ("sasl.username" 'other-user', "sasl.password" 'other-s3cret');
});
sql('ownerdb', q{
CREATE USER MAPPING FOR regress_dbowner SERVER kafka_own
  OPTIONS ("sasl.username" 'dbowner-user', "sasl.password" 'dbowner-s3cret');
CREATE TABLE owner_orders (id int, amount numeric);
SELECT kappa.create_stream('owner_events', 'id int, amount numeric', retain => 'infinity');
SELECT kappa.create_view('owner_totals',
  $$SELECT count(*) AS n, sum(amount) AS total FROM owner_events$$);
SELECT kappa.create_kafka_source('owner_table_src', target => 'owner_orders',
    topic => 'dump_owned', server => 'kafka_own');
SELECT kappa.create_kafka_source('owner_stream_src', target => 'owner_events',
    topic => 'dump_owned', server => 'kafka_own');
}, 'regress_dbowner');
kafka_produce($broker, 'dump_owned', [ @{ msgs(1, 20) }, 'owner: not json' ]);
wait_db('ownerdb', q{
SELECT (SELECT count(*) FROM owner_orders), (SELECT n FROM owner_totals),
       (SELECT count(*) FROM kappa.errors)},
	'20|20|2', 'ownerdb: the owner\'s sources consumed 20 rows and 2 dead letters');

my $owner_sql = "$dir/ownerdb_by_owner.sql";
($rc, $out, $err) = run_tool('pg_dump', '-h', $node->host, '-p', $node->port,
	'-U', 'regress_dbowner', '-d', 'ownerdb', '-f', $owner_sql);
is("exit $rc\n$err", "exit 0\n", 'pg_dump by the database owner (not a superuser): exit 0, no message');
my $text = -e $owner_sql ? slurp($owner_sql) : '';

like($text, qr/^CREATE TABLE public\.owner_orders /m, 'owner\'s dump: its table');
like($text, qr/^COPY public\.owner_orders .*\n(?:.*\n){20}\\\.$/m, '... with its 20 rows');
like($text, qr/^CREATE FOREIGN TABLE public\.owner_events /m, '... its stream');
like($text, qr/^CREATE VIEW public\.owner_totals /m, '... its view');
like($text, qr/^COPY kappa\.source_catalog .*\n(?:.*\n)*?\d+\towner_table_src\tregress_dbowner\t/m,
	'... its sources');
like($text, qr/^COPY kappa\.dead_letters .*\n(?:.*\n)*?\d+\t\d+\tdead_letter\tdump_owned\t/m,
	'... their dead letters');
like($text, qr/^SELECT pg_catalog\.setval\('kappa\.dead_letters_id_seq', 2, true\);/m,
	'... the dead letters\' sequence');
like($text, qr/^CREATE SERVER kafka_own FOREIGN DATA WRAPPER kappa_kafka OPTIONS \(\n?\s*brokers '\Q$bs\E'\n?\);/m,
	'... the server');
like($text, qr/^CREATE USER MAPPING FOR regress_dbowner SERVER kafka_own OPTIONS \(.*dbowner-s3cret/ms,
	'... its own user mapping, with its own secret');
unlike($text, qr/other-s3cret/, 'no other role\'s secret in the owner\'s dump');
unlike($text, qr/other-user/, '... nor its user name');

my $su_sql = "$dir/ownerdb_by_su.sql";
($rc, $out, $err) = run_tool('pg_dump', '-h', $node->host, '-p', $node->port,
	'-U', $su, '-d', 'ownerdb', '-f', $su_sql);
is("exit $rc\n$err", "exit 0\n", 'pg_dump of the same database by a superuser');
my $su_text = -e $su_sql ? slurp($su_sql) : '';
like($su_text,
	qr/^CREATE USER MAPPING FOR regress_other SERVER kafka_own OPTIONS \(.*other-s3cret/ms,
	'the superuser\'s dump has the other role\'s secret (the grep finds it when it is there)');

$node->stop;
diag sprintf('165_kafka_dump: %.1fs', time - $t0);
done_testing();
