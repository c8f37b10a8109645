# Security: workers run as the source's owner; the owner needs INSERT on the
# target; secrets among the options are shown only to the owner and
# superusers (not in kappa.sources, not in errors, not in the server log);
# other roles cannot pause, resume or drop a source, nor read its dead
# letters or the catalog.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

require "./test/t/100_kafka_common.pl";

my $broker = kafka_start_broker(sec => 2);
my $bs = $broker->{bootstrap};
# The statement creating a source holds its secrets: like any SQL with a
# password in it, it must not be logged (this is the DBA's setting).
my $node = kafka_node('kafka_security',
	conf => "log_statement = none\nlog_min_error_statement = panic\n");

$node->safe_psql('postgres', q{
CREATE ROLE regress_alice LOGIN;
CREATE ROLE regress_bob LOGIN;
CREATE TABLE public.shared (id int NOT NULL);
GRANT INSERT, SELECT ON public.shared TO regress_alice;
CREATE TABLE public.bobs (id int);
ALTER TABLE public.bobs OWNER TO regress_bob;
});

sub as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE $role; $sql");
	return ($ret, $out, $err);
}

my $secret_opts = q('{"sasl.password": "hunter2-pw", "ssl.key.password": "k3y-pw",
  "sasl.oauthbearer.config": "principal=alice secret=oauth-s3cret",
  "ssl.keystore.password": "ks-pw", "sasl.username": "alice-user"}');

# bob cannot write into shared, so he cannot create a source into it
my ($ret, $out, $err) = as('regress_bob', qq{
SELECT kappa.create_kafka_source('bob_src', target => 'public.shared', topic => 'sec',
    brokers => '$bs')});
like($err, qr/permission denied for table shared/, 'no source without INSERT on the target');

($ret, $out, $err) = as('regress_alice', qq{
SELECT kappa.create_kafka_source('alice_src', target => 'public.shared', topic => 'sec',
    brokers => '$bs', options => $secret_opts)});
is($ret, 0, 'alice creates a source into a table she may INSERT into') or diag $err;

kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 1 .. 100 ]);
kafka_produce($broker, 'sec', [ '{"id": null}', 'not json' ]);
kafka_wait($node, 'SELECT count(*) FROM public.shared', 100, 'rows arrive');
kafka_wait($node, 'SELECT count(*) FROM kappa.errors', 2, 'dead letters arrive');

is($node->safe_psql('postgres', q{
SELECT usename FROM pg_stat_activity WHERE backend_type = 'pg_kappa worker'}),
	'regress_alice', 'the worker runs as the owner');

# secrets
my ($r1, $bob_view) = as('regress_bob', 'SELECT s::text FROM kappa.sources s');
unlike($bob_view, qr/hunter2|k3y-pw|oauth-s3cret|ks-pw/, 'secrets hidden from another role');
like($bob_view, qr/alice-user/, 'non-secret options visible');
like($bob_view, qr/\*\*\*\*/, 'secrets masked');
is((as('regress_bob', 'SELECT state, workers FROM kappa.sources'))[1], 'running|1',
	'another role sees the state');
my ($r2, $alice_view) = as('regress_alice', 'SELECT options::text FROM kappa.sources');
like($alice_view, qr/hunter2-pw/, 'the owner sees her secrets');
like($node->safe_psql('postgres', 'SELECT options::text FROM kappa.sources'),
	qr/hunter2-pw/, 'a superuser sees them');
($ret, $out, $err) = as('regress_bob', 'SELECT options FROM kappa.source_catalog');
like($err, qr/permission denied/, 'the catalog is not readable');
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
($ret, $out, $err) = as('regress_alice', qq{
SELECT kappa.create_kafka_source('x', target => 'public.shared', topic => 'sec',
    brokers => '$bs', options => '{"sasl.oauthbearer.method": "hunter3-secret"}')});
unlike($err, qr/hunter3/, 'secret value not in the error message');

# losing the privilege stops the source (nothing applied, nothing lost)
$node->safe_psql('postgres', 'REVOKE INSERT ON public.shared FROM regress_alice');
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 101 .. 110 ]);
kafka_wait($node, q{SELECT last_error ~ 'permission denied' FROM kappa.sources}, 't',
	'privilege loss reported in kappa.sources');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.shared'), 100, 'nothing applied');
$node->safe_psql('postgres', 'GRANT INSERT ON public.shared TO regress_alice');
kafka_wait($node, 'SELECT count(*) FROM public.shared', 110, 'resumes once granted again', 90);
is($node->safe_psql('postgres', 'SELECT count(*) FROM kappa.errors'), 2, 'no message lost to errors');


# row-level security enabled while the source runs applies at once
$node->safe_psql('postgres', q{
ALTER TABLE public.shared ENABLE ROW LEVEL SECURITY;
CREATE POLICY below_200 ON public.shared FOR ALL USING (true) WITH CHECK (id < 200);
});
kafka_produce($broker, 'sec', [ map { qq({"id": $_}) } 195 .. 204 ]);
kafka_wait($node, q{SELECT (SELECT count(*) FROM public.shared WHERE id >= 195),
                           (SELECT count(*) FROM kappa.errors WHERE error ~ 'row-level security')},
	'5|5', 'policies added later are enforced on the worker (violations are dead letters)');

# alice can manage her own source
($ret, $out, $err) = as('regress_alice', "SELECT kappa.pause_source('alice_src')");
is($ret, 0, 'the owner pauses');
($ret, $out, $err) = as('regress_alice', "SELECT kappa.drop_source('alice_src')");
is($ret, 0, 'the owner drops');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/hunter2|k3y-pw|oauth-s3cret|ks-pw|hunter3/, 'no secret in the server log');
kafka_stop_broker($broker);
done_testing();
