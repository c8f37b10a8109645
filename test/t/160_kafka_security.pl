# The trust boundary of Kafka sources (docs/security.md):
#
# - Kafka clusters are kappa_kafka servers; USAGE on a server is what lets a
#   role ingest from it; brokers => is for superusers.
# - No path from SQL to the operating system: properties that run programs,
#   load code or name server files are refused to roles without the right,
#   wherever they are given (checked by outcome: marker files, and a
#   superuser doing the same to show the check would see it).
# - Secrets live in user mappings, are never shown to other roles, in
#   kappa.sources, in errors or in the server log.
# - A worker's catalog statements ignore objects planted on its owner's
#   search_path; a target's triggers and defaults and a view's aggregates
#   run as their owners, even when a superuser owns the source.
# - Losing a privilege stops a source (state failed, the reason shown),
#   nothing lost; getting it back resumes it.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(sec => 2, mal => 1, mals => 1, su => 1);
my $bs = $broker->{bootstrap};
# The statement creating a user mapping holds its secrets: like any SQL with
# a password in it, it must not be logged (this is the DBA's setting).
my $node = kafka_node('kafka_security',
	conf => "log_statement = none\nlog_min_error_statement = panic\n");
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($ret, $out, $err);

# A shared library whose only effect, when anything loads it, is a file.
my $plugin = "$dir/evil_plugin.so";
{
	open(my $fh, '>', "$dir/evil_plugin.c") or die;
	print $fh qq{
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void)
{ int fd = open("$dir/plugin_loaded", O_CREAT | O_WRONLY, 0600); if (fd >= 0) close(fd); }
};
	close($fh);
	system('cc', '-shared', '-fPIC', '-o', $plugin, "$dir/evil_plugin.c") == 0
	  or die "could not build the test plugin";
}

$node->safe_psql('postgres', qq{
CREATE ROLE regress_alice LOGIN;
CREATE ROLE regress_bob LOGIN;
CREATE ROLE regress_filer LOGIN IN ROLE pg_read_server_files;
CREATE TABLE public.shared (id int NOT NULL);
GRANT INSERT, SELECT ON public.shared TO regress_alice, regress_filer;
CREATE TABLE public.bobs (id int);
ALTER TABLE public.bobs OWNER TO regress_bob;
CREATE SERVER kafka_main FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '$bs');
GRANT USAGE ON FOREIGN SERVER kafka_main TO regress_alice, regress_filer;
});

sub as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE $role; $sql");
	return ($ret, $out, $err);
}

# the SQLSTATE of an error, with VERBOSITY verbose
sub sqlstate_of
{
	my ($role, $sql) = @_;
	my ($r, $o, $e) = as($role, "\\set VERBOSITY verbose\n$sql");
	return $e =~ /ERROR:  ([0-9A-Z]{5}):/ ? $1 : "none: $e";
}

#
# 1. Who may ingest from where.
#
is(sqlstate_of('regress_alice', qq{SELECT kappa.create_kafka_source('a_brokers',
    target => 'public.shared', topic => 'sec', brokers => '$bs')}),
	'42501', 'a plain role cannot give brokers directly');
is(sqlstate_of('regress_bob', q{SELECT kappa.create_kafka_source('b_nousage',
    target => 'public.bobs', topic => 'sec', server => 'kafka_main')}),
	'42501', 'no source on a server without USAGE on it');
like((as('regress_bob', q{SELECT kappa.create_kafka_source('b_nousage',
    target => 'public.bobs', topic => 'sec', server => 'kafka_main')}))[2],
	qr/permission denied for foreign server kafka_main/, '... named as such');
like((as('regress_alice', q{SELECT kappa.create_kafka_source('a_notarget',
    target => 'public.bobs', topic => 'sec', server => 'kafka_main')}))[2],
	qr/permission denied for table bobs/, 'no source without INSERT on the target');
is(sqlstate_of('regress_alice', q{CREATE SERVER alices_kafka FOREIGN DATA WRAPPER kappa_kafka
    OPTIONS (brokers 'localhost:1')}),
	'42501', 'a plain role cannot create a Kafka server (no USAGE on the wrapper)');

#
# 2. No path to the operating system, by outcome.
#
my %program = ('security.protocol' => 'sasl_plaintext', 'sasl.mechanisms' => 'GSSAPI',
	'sasl.kerberos.kinit.cmd' => "touch $dir/kinit_ran");
my $program_json = '{' . join(', ', map { qq("$_": "$program{$_}") } sort keys %program) . '}';
my $program_opts = join(', ', map { qq("$_" '$program{$_}') } sort keys %program);

is(sqlstate_of('regress_alice', qq{SELECT kappa.create_kafka_source('a_kinit',
    target => 'public.shared', topic => 'sec', server => 'kafka_main',
    options => '$program_json')}),
	'42501', 'a program to run, as a source option: refused');
is(sqlstate_of('regress_alice', qq{CREATE USER MAPPING FOR regress_alice SERVER kafka_main
    OPTIONS ($program_opts)}),
	'42501', '... as a user mapping option: refused');
is(sqlstate_of('regress_alice', qq{SELECT kappa.create_kafka_source('a_plugin',
    target => 'public.shared', topic => 'sec', server => 'kafka_main',
    options => '{"plugin.library.paths": "$plugin"}')}),
	'42501', 'a library to load, as a source option: refused');
is(sqlstate_of('regress_alice', qq{CREATE USER MAPPING FOR regress_alice SERVER kafka_main
    OPTIONS ("plugin.library.paths" '$plugin')}),
	'42501', '... as a user mapping option: refused');
is(sqlstate_of('regress_alice', q{SELECT kappa.create_kafka_source('a_file',
    target => 'public.shared', topic => 'sec', server => 'kafka_main',
    options => '{"ssl.ca.location": "/etc/passwd"}')}),
	'42501', 'a server file: refused to a plain role');
is(sqlstate_of('regress_alice', q{SELECT kappa.create_kafka_source('a_net',
    target => 'public.shared', topic => 'sec', server => 'kafka_main',
    options => '{"sasl.oauthbearer.token.endpoint.url": "http://169.254.169.254/"}')}),
	'HV00D', 'where to connect: only a server option');
ok(!-e "$dir/plugin_loaded", 'no library was loaded');

# members of pg_read_server_files may name files
my ($r1, $o1, $e1) = as('regress_filer', q{SELECT kappa.create_kafka_source('f_file',
    target => 'public.shared', topic => 'sec', server => 'kafka_main',
    options => '{"ssl.ca.location": "/etc/ssl/certs"}')});
is($r1, 0, 'a member of pg_read_server_files may name a server file') or diag $e1;
$node->safe_psql('postgres', q{SELECT kappa.drop_source('f_file')});

# the model, not a list: every property of the installed librdkafka has a
# class, and whatever names a file, a program or code is not 'safe'
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM kappa.kafka_properties()}),
	'>', 100, 'kappa.kafka_properties() lists librdkafka\'s properties');
is($node->safe_psql('postgres', q{
SELECT string_agg(property, ', ') FROM kappa.kafka_properties()
 WHERE property ~ '(location|path|cmd|keytab|library|engine|provider|plugin|stores)'
   AND class NOT IN ('file', 'program', 'superuser', 'reserved')}), '',
	'nothing that names a file, a program or code is settable by everyone');
is($node->safe_psql('postgres', q{
SELECT string_agg(property || '=' || class, ', ' ORDER BY property) FROM kappa.kafka_properties()
 WHERE property IN ('sasl.kerberos.kinit.cmd', 'plugin.library.paths', 'ssl.key.location',
                    'sasl.password', 'bootstrap.servers', 'fetch.max.bytes')}),
	'bootstrap.servers=reserved, fetch.max.bytes=safe, plugin.library.paths=superuser, '
	  . 'sasl.kerberos.kinit.cmd=program, sasl.password=secret, ssl.key.location=file',
	'classes of a few properties');

# a superuser may, and then the program runs and the library loads: the
# checks above would have seen it
$node->safe_psql('postgres', qq{SELECT kappa.create_kafka_source('su_kinit',
    target => 'public.shared', topic => 'su', brokers => '$bs', options => '$program_json')});
my $deadline = time + 60;
sleep 0.1 while !-e "$dir/kinit_ran" && time < $deadline;
ok(-e "$dir/kinit_ran", 'a superuser\'s kinit command runs (the worker creating its consumer)');
$node->safe_psql('postgres', q{SELECT kappa.drop_source('su_kinit')});
$node->psql('postgres', qq{SELECT kappa.create_kafka_source('su_plugin',
    target => 'public.shared', topic => 'su', brokers => '$bs',
    options => '{"plugin.library.paths": "$plugin"}')});
ok(-e "$dir/plugin_loaded", 'a superuser\'s plugin library loads');

#
# 3. Secrets live in user mappings, and nowhere else.
#
like($node->psql('postgres', q{ALTER SERVER kafka_main OPTIONS (ADD "sasl.password" 'x')},
		stderr => \$err) && $err,
	qr/is a secret and cannot be a server option.*HINT:  Give it in a user mapping/s,
	'a secret is not a server option (server options are readable by everyone)');
($ret, $out, $err) = as('regress_alice', q{CREATE USER MAPPING FOR regress_alice SERVER kafka_main
    OPTIONS ("sasl.username" 'alice-user', "sasl.password" 'hunter2-pw',
             "ssl.key.password" 'k3y-pw', "sasl.oauthbearer.config" 'principal=alice oauth-s3cret')});
is($ret, 0, 'alice keeps her secrets in a user mapping') or diag $err;
($ret, $out, $err) = as('regress_alice', q{
SELECT kappa.create_kafka_source('alice_src', target => 'public.shared', topic => 'sec',
    server => 'kafka_main', options => '{"fetch.wait.max.ms": 10}')});
is($ret, 0, 'alice creates a source on the server she may use') or diag $err;

kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 1 .. 100 ]);
kafka_produce($broker, 'sec', [ '{"id": null}', 'not json' ]);
kafka_wait($node, 'SELECT count(*) FROM public.shared', 100, 'rows arrive');
kafka_wait($node, 'SELECT count(*) FROM kappa.errors', 2, 'dead letters arrive');
is($node->safe_psql('postgres', q{
SELECT usename FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'}),
	'regress_alice', 'the worker runs as the owner');

my ($r2, $bob_view) = as('regress_bob', 'SELECT s::text FROM kappa.sources s');
unlike($bob_view, qr/hunter2|k3y-pw|oauth-s3cret/, 'no secret in kappa.sources');
like($bob_view, qr/kafka_main/, 'another role sees the source and its server');
my ($r3, $bob_maps) = as('regress_bob', q{SELECT coalesce(umoptions::text, 'hidden')
    FROM pg_user_mappings WHERE usename = 'regress_alice'});
is($bob_maps, 'hidden', 'another role does not see alice\'s user mapping options');
is((as('regress_bob', 'SELECT state, workers FROM kappa.sources'))[1], 'running|1',
	'another role sees the state');
($ret, $out, $err) = as('regress_bob', 'SELECT options FROM kappa.source_catalog');
like($err, qr/permission denied/, 'the catalog is not readable by other roles');
($ret, $out, $err) = as('regress_bob', 'UPDATE kappa.source_offsets SET next_offset = 0');
like($err, qr/permission denied/, 'offsets are not writable');

# dead letters only for the owner
is((as('regress_bob', 'SELECT count(*) FROM kappa.errors'))[1], 0,
	'another role sees no dead letters');
is((as('regress_alice', 'SELECT count(*) FROM kappa.errors'))[1], 2,
	'the owner sees hers');

# another role cannot change the source
for my $f (qw(pause_source resume_source drop_source))
{
	($ret, $out, $err) = as('regress_bob', "SELECT kappa.$f('alice_src')");
	like($err, qr/must be owner of kafka source "alice_src"/, "bob cannot $f");
}

# an invalid secret value is refused without showing it
($ret, $out, $err) = as('regress_alice', q{ALTER USER MAPPING FOR regress_alice SERVER kafka_main
    OPTIONS (SET "sasl.oauthbearer.config" 'hunter3-secret', SET "sasl.username" 'x',
             ADD "sasl.oauthbearer.method" 'no-such-method')});
like($err, qr/invalid value for Kafka property "sasl.oauthbearer.method"/, 'bad value refused');
unlike($err, qr/hunter3/, 'no secret in the error message');

#
# 4. Losing a privilege stops the source, nothing lost; getting it back
# resumes it.
#
$node->safe_psql('postgres', 'REVOKE USAGE ON FOREIGN SERVER kafka_main FROM regress_alice');
kafka_wait($node, q{SELECT state, last_error ~ 'permission denied for foreign server kafka_main'
    FROM kappa.sources WHERE source = 'alice_src'}, 'failed|t',
	'USAGE on the server revoked: failed, and why');
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 101 .. 110 ]);
kafka_wait($node, q{SELECT lag FROM kappa.sources WHERE source = 'alice_src'}, 10,
	'the lag shows what waits');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.shared'), 100,
	'nothing applied without USAGE');
$node->safe_psql('postgres', 'GRANT USAGE ON FOREIGN SERVER kafka_main TO regress_alice');
kafka_wait($node, 'SELECT count(*) FROM public.shared', 110, 'resumes once granted again');

$node->safe_psql('postgres', 'REVOKE INSERT ON public.shared FROM regress_alice');
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 111 .. 120 ]);
kafka_wait($node, q{SELECT last_error ~ 'permission denied for table shared' FROM kappa.sources
    WHERE source = 'alice_src'}, 't', 'INSERT revoked: reported in kappa.sources');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.shared'), 110, 'nothing applied');
$node->safe_psql('postgres', 'GRANT INSERT ON public.shared TO regress_alice');
kafka_wait($node, 'SELECT count(*) FROM public.shared', 120, 'resumes once granted again', 90);
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), 2, 'no message lost to errors');

# row-level security enabled while the source runs applies at once, with
# the source owner's policies
$node->safe_psql('postgres', q{
ALTER TABLE public.shared ENABLE ROW LEVEL SECURITY;
CREATE POLICY below_200 ON public.shared FOR ALL USING (true) WITH CHECK (id < 200);
});
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 195 .. 204 ]);
kafka_wait($node, q{SELECT (SELECT count(*) FROM public.shared WHERE id >= 195),
                           (SELECT count(*) FROM kappa.errors WHERE error ~ 'row-level security')},
	'5|5', 'policies added later are enforced on the worker (violations are dead letters)');

#
# 5. Whose code runs as whom.  A superuser's source writes into mallory's
# table and stream; mallory's triggers, defaults and aggregates run as
# mallory; objects mallory planted on the superuser's search_path are not
# picked up by the worker's own statements.
#
$node->safe_psql('postgres', q{
CREATE ROLE regress_mallory LOGIN;
CREATE ROLE regress_su LOGIN SUPERUSER;
CREATE SCHEMA regress_evil AUTHORIZATION regress_mallory;
GRANT USAGE ON SCHEMA regress_evil TO PUBLIC;
GRANT CREATE ON SCHEMA public TO regress_mallory;
ALTER ROLE regress_su SET search_path = regress_evil, pg_catalog, public;
ALTER ROLE regress_alice SET search_path = regress_evil, pg_catalog, public;
SET ROLE regress_mallory;
CREATE TABLE regress_evil.hits (who name, what text);
GRANT INSERT, SELECT ON regress_evil.hits TO PUBLIC;
CREATE FUNCTION regress_evil.pwn(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_evil.hits VALUES (current_user, what);
    BEGIN
        EXECUTE 'ALTER ROLE regress_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $$;
CREATE FUNCTION regress_evil.eq_int(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('= (integer, integer)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_evil.eq_int);
CREATE FUNCTION regress_evil.eq_bigint(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('= (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.eq_bigint);
CREATE FUNCTION regress_evil.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('= (text, text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.eq_text);
CREATE FUNCTION regress_evil.eq_regclass(regclass, oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('= (regclass, oid)'); RETURN $1::oid OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = regress_evil.eq_regclass);
-- mallory's table: a default and a trigger that record who runs them
CREATE FUNCTION public.mal_default() RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('default'); RETURN 'd'; END $$;
CREATE TABLE public.mal_target (id int, d text DEFAULT public.mal_default());
CREATE FUNCTION public.mal_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('trigger'); RETURN NEW; END $$;
CREATE TRIGGER spy BEFORE INSERT ON public.mal_target FOR EACH ROW
  EXECUTE FUNCTION public.mal_trigger();
-- mallory's stream and view, with an aggregate of hers
CREATE FUNCTION public.mal_step(bigint, int) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.pwn('aggregate'); RETURN coalesce($1, 0) + $2; END $$;
CREATE FUNCTION public.mal_combine(bigint, bigint) RETURNS bigint LANGUAGE sql AS
  'SELECT coalesce($1, 0) + coalesce($2, 0)';
CREATE AGGREGATE public.mal_sum(int) (SFUNC = public.mal_step, STYPE = bigint,
                                      COMBINEFUNC = public.mal_combine);
SELECT kappa.create_stream('public.mal_stream', 'id int');
SELECT kappa.create_view('public.mal_view',
  'SELECT id % 2 AS odd, public.mal_sum(id) AS s, count(*) AS n FROM public.mal_stream GROUP BY 1');
RESET ROLE;
});
$node->safe_psql('postgres', 'TRUNCATE regress_evil.hits');
$node->safe_psql('postgres', qq{
SET ROLE regress_su;
SELECT kappa.create_kafka_source('su_table', target => 'public.mal_target', topic => 'mal',
    brokers => '$bs');
SELECT kappa.create_kafka_source('su_stream', target => 'public.mal_stream', topic => 'mals',
    brokers => '$bs');
});
kafka_produce($broker, 'mal', [ map { qq({"id": $_}) } 1 .. 20 ]);
kafka_produce($broker, 'mals', [ map { qq({"id": $_}) } 1 .. 20 ]);
# alice's worker, restarted with the planted search_path, reads on too
$node->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE application_name = 'pg_kappa source alice_src'});
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 121 .. 130 ]);
kafka_wait($node, q{SELECT (SELECT count(*) FROM public.mal_target WHERE d = 'd'),
                           (SELECT sum(n) FROM public.mal_view),
                           (SELECT count(*) FROM public.shared WHERE id BETWEEN 121 AND 130)},
	'20|20|10', 'the superuser\'s sources and alice\'s applied every message');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT who || ': ' || what, ', ' ORDER BY who || ': ' || what)
    FROM regress_evil.hits}),
	'regress_mallory: aggregate, regress_mallory: default, regress_mallory: trigger',
	'mallory\'s code ran as mallory; no planted operator ran');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory'}),
	'f', 'mallory did not become a superuser');
is($node->safe_psql('postgres', q{SELECT odd, s, n FROM public.mal_view ORDER BY 1}),
	"0|110|10\n1|100|10", 'the view is exact (plain SQL: sums 110 and 100 over 10 rows each)');

# a server in use stays
$node->psql('postgres', 'DROP SERVER kafka_main CASCADE', stderr => \$err);
like($err, qr/cannot drop server kafka_main because kafka source alice_src uses it/,
	'a server a source uses cannot be dropped');
$node->psql('postgres', 'ALTER SERVER kafka_main RENAME TO kafka_other', stderr => \$err);
like($err, qr/cannot rename server kafka_main because kafka source alice_src uses it/,
	'... nor renamed');

# alice can manage her own source
($ret, $out, $err) = as('regress_alice', "SELECT kappa.pause_source('alice_src')");
is($ret, 0, 'the owner pauses');
($ret, $out, $err) = as('regress_alice', "SELECT kappa.drop_source('alice_src')");
is($ret, 0, 'the owner drops');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/hunter2|k3y-pw|oauth-s3cret|hunter3/, 'no secret in the server log');
kafka_stop_broker($broker);
done_testing();
