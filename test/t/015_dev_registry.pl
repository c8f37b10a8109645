# The dev Schema Registry (test/dev_registry.py) on its own, with Perl's
# HTTP::Tiny as the client: the interface docs/dev-registry.md describes
# (REGISTRY line, loopback only, clean exit) and the Confluent wire behaviour
# the Avro tests rely on (ids, versions, error codes, compatibility levels,
# fault injection).  Needs no PostgreSQL.

use strict;
use warnings;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run ();
use JSON::PP;
use Test::More;
use Time::HiRes qw(usleep time);

my $registry = ($ENV{KAPPA_REPO} // '.') . '/test/dev_registry.py';
plan skip_all => 'python3 is not installed'
  unless system('sh', '-c', 'command -v python3 >/dev/null') == 0;

my $tmp = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->canonical;

# start_registry(@args): start it, wait for its REGISTRY line.
sub start_registry
{
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ 'python3', $registry, @_ ],
		'<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while ($out !~ /^REGISTRY (\S+)\n/m)
	{
		die "dev registry did not start: $err" if time > $deadline || !$h->pumpable;
		$h->pump_nb;
		usleep(10_000);
	}
	$out =~ /^REGISTRY (\S+)\n/m;
	return { h => $h, in => \$in, out => \$out, err => \$err, url => $1 };
}

my $r = start_registry('--exit-on-eof', '--port-file', "$tmp/url");
my $url = $r->{url};
like($url, qr{^http://127\.0\.0\.1:\d+$}, 'first line is REGISTRY http://127.0.0.1:PORT');
open(my $uf, '<', "$tmp/url") or die "no port file: $!";
is(scalar <$uf>, "$url\n", 'the port file holds the same URL');
close $uf;
my ($port) = $url =~ /:(\d+)$/;

my $http = HTTP::Tiny->new(timeout => 10);

# req(METHOD, PATH, BODY-HASH): (status, decoded body, content type).
sub req
{
	my ($method, $path, $body) = @_;
	my $res = $http->request($method, "$url$path",
		defined $body
		? {
			content => $json->encode($body),
			headers => { 'Content-Type' => 'application/vnd.schemaregistry.v1+json' }
		  }
		: {});
	my $data = eval { $json->decode($res->{content}) };
	return ($res->{status}, $data, $res->{headers}{'content-type'});
}

sub record
{
	my ($name, @fields) = @_;
	return $json->encode({ type => 'record', name => $name, fields => [@fields] });
}

sub register
{
	my ($subject, $schema) = @_;
	return req('POST', "/subjects/$subject/versions", { schema => $schema });
}

# err_code(METHOD, PATH, BODY): "status/error_code".
sub err_code
{
	my ($s, $d) = req(@_);
	return "$s/" . ($d->{error_code} // 'none');
}

# ---------------------------------------------------------------- ids, versions
my $v1 = record('Click', { name => 'id', type => 'int' });
my ($s, $d, $ct) = register('clicks-value', $v1);
is($s, 200, 'register a schema');
is($ct, 'application/vnd.schemaregistry.v1+json', '... Confluent content type');
is_deeply($d, { id => 1 }, '... answers {"id": 1}');
my $v1_spaced = $v1;
$v1_spaced =~ s/,/ ,\n  /g;
(undef, $d) = register('clicks-value', $v1_spaced);
is($d->{id}, 1, 'the same schema again (other whitespace): same id');
(undef, $d) = req('GET', '/subjects/clicks-value/versions');
is_deeply($d, [1], '... and no new version');
(undef, $d) = register('other-value', $v1);
is($d->{id}, 1, 'the same schema in another subject: same global id');
(undef, $d) = req('GET', '/subjects/other-value/versions');
is_deeply($d, [1], '... as version 1 of that subject');

my $v2 = record('Click', { name => 'id', type => 'long' },
	{ name => 'page', type => 'string', default => '' });
($s, $d) = register('clicks-value', $v2);
is_deeply([ $s, $d ], [ 200, { id => 2 } ],
	'BACKWARD: int -> long and a new field with a default: accepted, new id');
(undef, $d) = req('GET', '/subjects/clicks-value/versions');
is_deeply($d, [ 1, 2 ], 'two versions');
(undef, $d) = req('GET', '/subjects/clicks-value/versions/latest');
is_deeply([ sort keys %$d ], [qw(id schema subject version)],
	'versions/latest: subject, version, id, schema');
is_deeply([ @$d{qw(subject version id)} ], [ 'clicks-value', 2, 2 ],
	'... of the latest version');
is_deeply($json->decode($d->{schema}), $json->decode($v2), '... the schema text is the registered one');
(undef, $d) = req('GET', '/subjects/clicks-value/versions/1');
is_deeply([ @$d{qw(subject version id)} ], [ 'clicks-value', 1, 1 ], 'versions/1');
(undef, $d) = req('GET', '/subjects/clicks-value/versions/-1');
is($d->{version}, 2, 'versions/-1 is the latest');
(undef, $d) = req('GET', '/schemas/ids/1');
is_deeply($json->decode($d->{schema}), $json->decode($v1), 'schemas/ids/1: its schema');
is_deeply([ keys %$d ], ['schema'], '... and nothing else');
(undef, $d) = req('GET', '/subjects');
is_deeply($d, [ 'clicks-value', 'other-value' ], 'GET /subjects');
(undef, $d) = req('POST', '/subjects/clicks-value', { schema => $v1 });
is_deeply([ @$d{qw(version id)} ], [ 1, 1 ], 'POST /subjects/S looks a schema up');

# ---------------------------------------------------------------- errors
is(err_code('GET', '/schemas/ids/99'), '404/40403', 'unknown id: 404, 40403');
is(err_code('GET', '/subjects/nope/versions'), '404/40401', 'unknown subject: 40401');
is(err_code('GET', '/subjects/nope/versions/latest'), '404/40401', '... versions/latest too');
is(err_code('GET', '/subjects/clicks-value/versions/3'), '404/40402', 'unknown version: 40402');
is(err_code('GET', '/subjects/clicks-value/versions/zz'), '422/42202', 'bad version: 42202');
is(err_code('POST', '/subjects/clicks-value', { schema => record('Click') }),
	'404/40403', 'lookup of a schema not in the subject: 40403');
is(err_code('POST', '/subjects/x/versions', { schema => '{not json' }),
	'422/42201', 'schema that is not JSON: 42201');
is(err_code('POST', '/subjects/x/versions', { schema => '{"type":"record","fields":[]}' }),
	'422/42201', 'record without a name: 42201');
is(err_code('POST', '/subjects/x/versions', { schema => '{"type":"record","name":"R"}' }),
	'422/42201', 'record without fields: 42201');
is(err_code('POST', '/subjects/x/versions', { schema => '"strnig"' }),
	'422/42201', 'unknown type name: 42201');
is(err_code('POST', '/subjects/x/versions', { schema => $v1, schemaType => 'PROTOBUF' }),
	'422/42201', 'schemaType other than AVRO: 42201');
(undef, $d) = register('prim-value', '"string"');
ok($d->{id}, 'a primitive schema is valid');
(undef, $d) = register('prim2-value', '{"type": "string"}');
is($d->{id}, 3, '{"type": "string"} is valid too, and the same schema as "string"');
($s, $d) = req('GET', '/no/such/path');
is_deeply([ $s, $d->{error_code} ], [ 404, 404 ], 'unknown path: 404');

# ---------------------------------------------------------------- config
(undef, $d) = req('GET', '/config');
is_deeply($d, { compatibilityLevel => 'BACKWARD' }, 'default compatibility: BACKWARD');
is(err_code('GET', '/config/clicks-value'), '404/40408', 'no subject-level config: 40408');
(undef, $d) = req('GET', '/config/clicks-value?defaultToGlobal=true');
is($d->{compatibilityLevel}, 'BACKWARD', '... unless defaultToGlobal=true');
is(err_code('PUT', '/config', { compatibility => 'SIDEWAYS' }), '422/42203',
	'invalid compatibility level: 42203');

# BACKWARD (the default): the new schema reads data written with the latest.
my $base = record('Ev', { name => 'a', type => 'int' }, { name => 'b', type => 'string' });
register('bw-value', $base);
is(err_code('POST', '/subjects/bw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'int' }, { name => 'b', type => 'string' },
				{ name => 'c', type => 'int' }) }),
	'409/409', 'BACKWARD: an added field without a default is refused (409)');
(undef, $d) = req('GET', '/subjects/bw-value/versions');
is_deeply($d, [1], '... no version added');
($s) = register('bw-value', record('Ev', { name => 'a', type => 'int' }));
is($s, 200, 'BACKWARD: a removed field is accepted');
is(err_code('POST', '/subjects/bw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'string' }) }),
	'409/409', 'BACKWARD: int -> string refused');
($s) = register('bw-value', record('Ev', { name => 'a', type => [ 'null', 'long' ] }));
is($s, 200, 'BACKWARD: int -> union [null, long] accepted (a union may gain branches)');
is(err_code('POST', '/subjects/bw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'long' }) }),
	'409/409', 'BACKWARD: union [null, long] -> long refused');
is(err_code('POST', '/subjects/bw-value/versions',
		{ schema => record('Other', { name => 'a', type => [ 'null', 'long' ] }) }),
	'409/409', 'BACKWARD: another record name refused');
(undef, $d) = req('POST', '/compatibility/subjects/bw-value/versions/latest',
	{ schema => record('Ev', { name => 'a', type => [ 'null', 'long', 'string' ] }) });
is_deeply($d, { is_compatible => JSON::PP::true }, 'compatibility check endpoint: compatible');
(undef, $d) = req('POST', '/compatibility/subjects/bw-value/versions/latest',
	{ schema => record('Ev', { name => 'a', type => 'int' }) });
is_deeply($d, { is_compatible => JSON::PP::false }, '... and not compatible');

# Nested records compare recursively.
my $nest = sub {
	my ($t) = @_;
	record('Outer', { name => 'in', type => { type => 'record', name => 'Inner',
		fields => [ { name => 'x', type => $t } ] } });
};
register('nest-value', $nest->('int'));
is(err_code('POST', '/subjects/nest-value/versions', { schema => $nest->('boolean') }),
	'409/409', 'nested record: incompatible inner field refused');
($s) = register('nest-value', $nest->('double'));
is($s, 200, 'nested record: int -> double accepted');

# FORWARD: data written with the new schema can be read with the latest.
(undef, $d) = req('PUT', '/config/fw-value', { compatibility => 'FORWARD' });
is_deeply($d, { compatibility => 'FORWARD' }, 'PUT /config/fw-value FORWARD');
(undef, $d) = req('GET', '/config/fw-value');
is($d->{compatibilityLevel}, 'FORWARD', 'GET /config/fw-value');
register('fw-value', $base);
is(err_code('POST', '/subjects/fw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'int' }) }),
	'409/409', 'FORWARD: a removed field (no default in the old schema) refused');
($s) = register('fw-value', record('Ev', { name => 'a', type => 'int' },
		{ name => 'b', type => 'string' }, { name => 'c', type => 'int' }));
is($s, 200, 'FORWARD: an added field without a default accepted');
is(err_code('POST', '/subjects/fw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'long' },
				{ name => 'b', type => 'string' }, { name => 'c', type => 'int' }) }),
	'409/409', 'FORWARD: int -> long refused');

# FULL: both ways.
req('PUT', '/config/full-value', { compatibility => 'FULL' });
register('full-value', $base);
is(err_code('POST', '/subjects/full-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'int' }, { name => 'b', type => 'string' },
				{ name => 'c', type => 'int' }) }),
	'409/409', 'FULL: an added field without a default refused');
is(err_code('POST', '/subjects/full-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'int' }) }),
	'409/409', 'FULL: a removed field without a default refused');
($s) = register('full-value', record('Ev', { name => 'a', type => 'int' },
		{ name => 'b', type => 'string' }, { name => 'c', type => 'int', default => 0 }));
is($s, 200, 'FULL: an added field with a default accepted');
is(err_code('POST', '/subjects/full-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'long' }, { name => 'b', type => 'string' },
				{ name => 'c', type => 'int', default => 0 }) }),
	'409/409', 'FULL: int -> long refused');
($s) = register('full-value', record('Ev', { name => 'a', type => 'int' },
		{ name => 'b', type => 'bytes' }, { name => 'c', type => 'int', default => 0 }));
is($s, 200, 'FULL: string -> bytes accepted');

# NONE, set globally: anything goes.
(undef, $d) = req('PUT', '/config', { compatibility => 'NONE' });
is_deeply($d, { compatibility => 'NONE' }, 'PUT /config NONE');
($s, $d) = register('bw-value', record('Ev', { name => 'z', type => 'boolean' }));
is($s, 200, 'NONE: an incompatible change accepted');
is(err_code('POST', '/subjects/fw-value/versions',
		{ schema => record('Ev', { name => 'a', type => 'int' }) }),
	'409/409', '... but a subject-level FORWARD still applies');

# ---------------------------------------------------------------- fault injection
(undef, my $before) = req('GET', '/_dev/requests');
(undef, $d) = req('POST', '/_dev/fail', { status => 503, count => 2 });
is_deeply($d, { status => 503, count => 2 }, 'POST /_dev/fail');
($s, $d) = req('GET', '/schemas/ids/1');
is_deeply([ $s, $d->{error_code} ], [ 503, 503 ], 'the next request fails with 503');
is(err_code('GET', '/_dev/requests'), '200/none', '... /_dev requests do not count');
($s) = req('GET', '/subjects');
is($s, 503, 'the second one too');
($s, $d) = req('GET', '/schemas/ids/1');
is($s, 200, 'the third one succeeds');
(undef, $d) = req('GET', '/_dev/requests');
is($d->{'GET /schemas/ids/{id}'} - $before->{'GET /schemas/ids/{id}'}, 2,
	'/_dev/requests counts requests per endpoint (failed ones included)');
is($d->{'GET /subjects'} - $before->{'GET /subjects'}, 1, '... GET /subjects once');

# ---------------------------------------------------------------- loopback only
my $other = IO::Socket::INET->new(PeerAddr => '127.0.0.2', PeerPort => $port,
	Proto => 'tcp', Timeout => 5);
ok(!$other, 'not listening on 127.0.0.2 (bound to 127.0.0.1 only)');
my @addrs = grep { $_ ne '127.0.0.1' }
  map { /inet (\d+\.\d+\.\d+\.\d+)/ ? $1 : () } `ip -4 addr 2>/dev/null`;
SKIP:
{
	skip 'no other IPv4 address (ip not found)', 1 unless @addrs;
	my $ext = IO::Socket::INET->new(PeerAddr => $addrs[0], PeerPort => $port,
		Proto => 'tcp', Timeout => 5);
	ok(!$ext, "not listening on $addrs[0]");
}

# ---------------------------------------------------------------- fixed port, exit
my ($ok2, $out2, $err2) = ('', '', '');
$ok2 = IPC::Run::run([ 'python3', $registry, '--port', $port, '--exit-on-eof' ],
	'<', \'', '>', \$out2, '2>', \$err2, IPC::Run::timeout(20));
ok(!$ok2, 'a second registry on the same port fails');
like($err2, qr/could not bind 127\.0\.0\.1:$port: Address already in use/,
	'... with a clear message');

my $t0 = time;
$r->{h}->finish;
is($r->{h}->result(0), 0, '--exit-on-eof: exits with status 0 when stdin closes');
ok(!-e "$tmp/url", '... the port file is removed');

my $r2 = start_registry('--port', $port);
is($r2->{url}, "http://127.0.0.1:$port", "--port $port: listens there at once");
$t0 = time;
$r2->{h}->signal('TERM');
$r2->{h}->finish;
is($r2->{h}->result(0), 0, 'SIGTERM: exit status 0');
ok(time - $t0 < 5, 'SIGTERM: exits at once');

done_testing();
