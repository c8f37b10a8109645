# Upgrading from pg_kappa 0.1: the released 0.1 library runs a database with
# streams, continuous views, Kafka sources (one owned by a non-superuser,
# one with a secret among its options) and dead letters; then the current
# library replaces it (a restart), and ALTER EXTENSION pg_kappa UPDATE
# brings the catalog to the current version through every upgrade script
# (0.1 -> 0.2 -> 0.3 ...).  Everything is kept and keeps updating,
# exactly: views equal plain SQL over their rows, and every message produced
# before, during and after the upgrade is applied once or is a dead letter.
# The upgraded extension is the same as a fresh install of the current
# version (its objects, their definitions, columns, constraints and
# privileges).
#
# The 0.1 library comes from test/upgrade/pg_kappa-0.1.tar.gz, built into a
# relocated copy of this machine's PostgreSQL by test/upgrade/old_install.sh.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

# the version this tree installs
my ($current) = slurp_file('pg_kappa.control') =~ /default_version = '([^']+)'/;

my $dir = PostgreSQL::Test::Utils::tempdir();
my ($stdout, $stderr);
my $built = IPC::Run::run([ 'bash', 'test/upgrade/old_install.sh', $dir ],
	'>', \$stdout, '2>', \$stderr);
ok($built, 'pg_kappa 0.1 built into a relocated PostgreSQL') or diag $stderr;
my ($old_path) = $stdout =~ /(\S+)\s*$/;

my $broker = kafka_start_broker(up_t => 2, up_r => 2);
my $bs = $broker->{bootstrap};

my $node = PostgreSQL::Test::Cluster->new('upgrade', install_path => $old_path);
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_kappa'
max_worker_processes = 24
kappa.max_latency = 50ms
});
$node->start;

# ---------------------------------------------------------------- 0.1
$node->safe_psql('postgres', qq{
CREATE EXTENSION pg_kappa;
CREATE ROLE regress_owner LOGIN;
GRANT CREATE ON SCHEMA public TO regress_owner;
CREATE TABLE dim (m int PRIMARY KEY, label text);
INSERT INTO dim VALUES (0, 'zero'), (1, 'one'), (2, 'two');
GRANT SELECT ON dim TO regress_owner;

-- a stream fed by SQL, its shadow, and views (rows pushed; a join)
SELECT kappa.create_stream('s', 'k int, x numeric');
CREATE TABLE s_shadow (k int, x numeric);
SELECT kappa.create_view('v_push', 'SELECT k % 5 AS g, count(*) AS n, sum(x) AS sx FROM s GROUP BY 1');
SELECT kappa.create_view('v_join', 'SELECT d.label, count(*) AS n, max(s.x) AS mx FROM s JOIN dim d ON d.m = s.k % 3 GROUP BY d.label');
INSERT INTO s SELECT i, i * 1.5 FROM generate_series(1, 1000) i;
INSERT INTO s_shadow SELECT i, i * 1.5 FROM generate_series(1, 1000) i;

-- a table fed by a superuser's source with a secret among its options
CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL);
SELECT kappa.create_kafka_source('src_t', target => 't', topic => 'up_t', brokers => '$bs',
    options => '{"batch_size": 100, "sasl.password": "old-s3cret", "fetch.wait.max.ms": 10}');

-- a retained stream fed by a non-superuser's source, with a view
SELECT kappa.create_stream('r', 'id int, v int', retain => 'infinity');
ALTER FOREIGN TABLE r OWNER TO regress_owner;
SET ROLE regress_owner;
SELECT kappa.create_view('v_r', 'SELECT v % 7 AS g, count(*) AS n, sum(id) AS s FROM r GROUP BY 1');
SELECT kappa.create_kafka_source('src_r', target => 'r', topic => 'up_r', brokers => '$bs');
RESET ROLE;
});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_kappa'}),
	'0.1', 'version 0.1 installed');

my $produced_t = 0;
my $produced_r = 0;
my $bad_t = 0;
sub produce
{
	my ($from, $to, $bad) = @_;
	my @t = map { qq({"id": $_, "name": "n$_"}) } $from .. $to;
	push @t, '{"id": ' . ($to + 1000000) . ', "name": ' for 1 .. $bad;    # malformed
	kafka_produce($broker, 'up_t', \@t);
	kafka_produce($broker, 'up_r', [ map { qq({"id": $_, "v": @{[$_ * 3]}}) } $from .. $to ]);
	$produced_t += @t;
	$produced_r += $to - $from + 1;
	$bad_t += $bad;
}

# the invariant and the views, whatever version runs
sub check_exact
{
	my ($when, $timeout) = @_;
	kafka_wait($node, q{SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM kappa.errors)},
		$produced_t, "$when: table: produced = rows + dead letters", $timeout);
	is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), $bad_t,
		"$when: the malformed messages are the dead letters");
	kafka_wait($node, 'SELECT count(*), count(DISTINCT id) FROM r', "$produced_r|$produced_r",
		"$when: retained stream: every message once", $timeout);
	is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  (SELECT g, n, s FROM v_r EXCEPT ALL SELECT v % 7, count(*), sum(id) FROM r GROUP BY 1)
  UNION ALL
  (SELECT v % 7, count(*), sum(id) FROM r GROUP BY 1 EXCEPT ALL SELECT g, n, s FROM v_r)) d}),
		0, "$when: v_r equals its query over the stream's rows");
	is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM (
          (SELECT g, n, sx FROM v_push EXCEPT ALL SELECT k % 5, count(*), sum(x) FROM s_shadow GROUP BY 1)
          UNION ALL
          (SELECT k % 5, count(*), sum(x) FROM s_shadow GROUP BY 1 EXCEPT ALL SELECT g, n, sx FROM v_push)) d)
     + (SELECT count(*) FROM (
          (SELECT label, n, mx FROM v_join
           EXCEPT ALL SELECT d.label, count(*), max(x) FROM s_shadow JOIN dim d ON d.m = k % 3 GROUP BY 1)
          UNION ALL
          (SELECT d.label, count(*), max(x) FROM s_shadow JOIN dim d ON d.m = k % 3 GROUP BY 1
           EXCEPT ALL SELECT label, n, mx FROM v_join)) d)}),
		0, "$when: v_push and v_join equal their queries over the shadow");
}

produce(1, 300, 3);
check_exact('0.1', 60);

# ---------------------------------------------------------------- current library
$node->stop;
$node->{_install_path} = undef;    # this machine's PostgreSQL, with the current pg_kappa
my $log_offset = -s $node->logfile;
$node->start;
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_kappa'}),
	'0.1', 'the current library runs a 0.1 extension');

# streams and views work before the update
$node->safe_psql('postgres', q{
INSERT INTO s SELECT i, i * 2 FROM generate_series(1001, 1200) i;
INSERT INTO s_shadow SELECT i, i * 2 FROM generate_series(1001, 1200) i;
});
# sources wait for the update, and nothing is lost meanwhile
produce(301, 400, 1);
ok($node->wait_for_log(qr/waits for ALTER EXTENSION pg_kappa UPDATE/, $log_offset),
	'the Kafka workers wait for ALTER EXTENSION pg_kappa UPDATE');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'), 300,
	'nothing consumed before the update');

# ---------------------------------------------------------------- update
$node->safe_psql('postgres', 'ALTER EXTENSION pg_kappa UPDATE');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_kappa'}),
	$current, "updated to $current");
check_exact('after the update', 90);
produce(401, 600, 2);
$node->safe_psql('postgres', q{
INSERT INTO s SELECT i, i FROM generate_series(1201, 1300) i;
INSERT INTO s_shadow SELECT i, i FROM generate_series(1201, 1300) i;
});
check_exact("$current, later messages", 60);

# each source now has a server of its own; secrets moved to a user mapping
is($node->safe_psql('postgres', q{
SELECT string_agg(source || ':' || coalesce(server, '-') || ':' || coalesce(brokers, '-') || ':'
                  || on_data_loss || ':' || state, ', ' ORDER BY source)
  FROM kappa.sources}),
	'src_r:kappa_source_src_r:-:fail:running, src_t:kappa_source_src_t:-:fail:running',
	'sources read from servers, on_data_loss fail, running');
unlike($node->safe_psql('postgres', q{SELECT string_agg(options::text, ' ') FROM kappa.source_catalog}),
	qr/s3cret/, 'no secret left in the source catalog');
like($node->safe_psql('postgres', q{SELECT string_agg(options::text, ' ') FROM kappa.source_catalog}),
	qr/fetch.wait.max.ms/, 'other options kept');
is($node->safe_psql('postgres', q{
SELECT usename = current_user, srvname, array_to_string(umoptions, ',') FROM pg_user_mappings}),
	't|kappa_source_src_t|sasl.password=old-s3cret',
	'the secret is in a user mapping of the source\'s owner');
is($node->safe_psql('postgres', q{
SELECT has_server_privilege('regress_owner', 'kappa_source_src_r', 'USAGE'),
       (SELECT count(*) FROM pg_depend d JOIN pg_foreign_server f ON f.oid = d.objid
         WHERE d.deptype = 'e' AND f.srvname LIKE 'kappa_source_%')}),
	't|0', 'the non-superuser owner may use its server, which is the database\'s, not the extension\'s');

# the materializations made by 0.1 are protected now
my ($ret, $out, $err) = $node->psql('postgres', q{
UPDATE kappa_data.v_push_mat_1 SET c_2 = 0});
like($err, qr/cannot change the materialization of continuous view public.v_push/,
	'a 0.1 materialization can no longer be changed directly');

# ---------------------------------------------------------------- same as fresh
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_kappa');
my %describe = (
	members => q{
SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_kappa') ORDER BY 1},
	functions => q{
SELECT p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || ' ' || coalesce(p.proacl::text, '')
  FROM pg_proc p WHERE p.pronamespace = 'kappa'::regnamespace AND p.prokind <> 'a' ORDER BY 1},
	relations => q{
SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
       || coalesce(pg_get_viewdef(c.oid), '')
  FROM pg_class c WHERE c.relnamespace = 'kappa'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY 1},
	columns => q{
SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'kappa'::regnamespace AND c.relkind IN ('r', 'v') ORDER BY 1},
	constraints => q{
SELECT conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE connamespace = 'kappa'::regnamespace ORDER BY 1},
	indexes => q{
SELECT regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \S+ ON', 'INDEX ON')
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'kappa'::regnamespace ORDER BY 1},
	event_triggers => q{
SELECT evtname || ' ' || evtevent || ' ' || evtfoid::regproc || ' ' || coalesce(evttags::text, '')
  FROM pg_event_trigger ORDER BY 1},
	wrappers => q{
SELECT fdwname || ' ' || fdwvalidator::regproc || ' ' || fdwhandler::regproc
  FROM pg_foreign_data_wrapper ORDER BY 1},
	schemas => q{
SELECT nspname || ' ' || coalesce(nspacl::text, '') FROM pg_namespace
 WHERE nspname IN ('kappa', 'kappa_data') ORDER BY 1},
);
for my $what (sort keys %describe)
{
	my $upgraded = $node->safe_psql('postgres', $describe{$what});
	my $fresh = $node->safe_psql('fresh', $describe{$what});
	is($upgraded, $fresh, "upgraded extension = fresh install: $what");
}

# and it still does what 0.1 did: pause, resume, drop
$node->safe_psql('postgres', q{SELECT kappa.pause_source('src_t')});
kafka_wait($node, q{SELECT state FROM kappa.sources WHERE source = 'src_t'}, 'paused', 'pause');
produce(601, 650, 0);
$node->safe_psql('postgres', q{SELECT kappa.resume_source('src_t')});
check_exact('after pause and resume', 60);
$node->safe_psql('postgres', q{SELECT kappa.drop_source('src_t'); SELECT kappa.drop_source('src_r')});
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.sources'), 0, 'sources dropped');

$node->stop;
kafka_stop_broker($broker);
done_testing();
