# test/avro_tool.py, the producer of Avro test messages (Confluent wire
# format, encoded by Debian's python3-avro), against the dev registry and the
# dev broker: every Avro type and logical type, keys with and without a key
# schema, tombstones, and the malformed messages (value_raw_hex, truncate,
# schema_id, no_magic).  Each message is consumed back with kcat and checked
# byte by byte: header (magic byte, schema id), and the datum that
# "avro_tool.py decode" reads back equals the one produced.  A few encodings
# are also checked against bytes worked out by hand, where python3-avro 1.11.1
# needs help (decimals, union branches, local timestamps).  Needs no
# PostgreSQL.

use strict;
use warnings;
use feature "state";
use File::Temp qw(tempdir);
use IPC::Run ();
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

require "./test/t/100_kafka_common.pl";

our $kafka_repo;
my $python = '/usr/bin/python3';
my $tool = "$kafka_repo/test/avro_tool.py";
plan skip_all => "$python has no avro module (Debian's python3-avro)"
  unless system("$python -c 'import avro.io' >/dev/null 2>&1") == 0;
plan skip_all => 'kcat is not installed'
  unless system('kcat -V >/dev/null 2>&1') == 0;
plan skip_all => 'test/dev_broker is not built (make test/dev_broker)'
  unless -x "$kafka_repo/test/dev_broker";

my $tmp = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;

# ---------------------------------------------------------------- servers
my ($rin, $rout, $rerr) = ('', '', '');
my $registry_h = IPC::Run::start([ $python, "$kafka_repo/test/dev_registry.py", '--exit-on-eof' ],
	'<', \$rin, '>', \$rout, '2>', \$rerr);
END { eval { $registry_h->finish if $registry_h; 1 } or eval { $registry_h->kill_kill; 1 } }
my $deadline = time + 20;
while ($rout !~ /^REGISTRY (\S+)\n/m)
{
	die "dev registry did not start: $rerr" if time > $deadline || !$registry_h->pumpable;
	$registry_h->pump_nb;
	usleep(10_000);
}
my ($registry) = $rout =~ /^REGISTRY (\S+)\n/m;

my $broker = kafka_start_broker(avro => 1, keyed => 2);
my $bs = $broker->{bootstrap};

# ---------------------------------------------------------------- helpers
sub write_file
{
	my ($name, $text) = @_;
	open(my $fh, '>:raw', "$tmp/$name") or die "$tmp/$name: $!";
	print $fh $text;
	close $fh;
	return "$tmp/$name";
}

# tool(@args): (exit status, stdout, stderr)
sub tool
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $python, $tool, @_ ], '<', \'', '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# tool_ok(@args): stdout, or a failed test and die
sub tool_ok
{
	my ($rc, $out, $err) = tool(@_);
	die "avro_tool.py $_[0] failed ($rc): $err" if $rc != 0;
	return $out;
}

# consume($topic): every message, in partition and offset order, as
# { p, o, key, value } with undef for a null key or value.  kcat prints the
# lengths first, so any bytes can follow.
sub consume
{
	my ($topic) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kcat', '-C', '-b', $bs, '-t', $topic, '-o', 'beginning', '-e', '-q',
			'-f', '%p %o %K %S\n%k%s\n' ], '<', \'', '>', \$out, '2>', \$err)
	  or die "kcat -C failed: $err";
	my @msgs;
	while (length $out)
	{
		$out =~ s/^(\d+) (\d+) (-?\d+) (-?\d+)\n// or die "bad kcat output: " . substr($out, 0, 60);
		my %m = (p => $1, o => $2);
		my ($kl, $vl) = ($3, $4);
		$m{key} = $kl >= 0 ? substr($out, 0, $kl, '') : undef;
		$m{value} = $vl >= 0 ? substr($out, 0, $vl, '') : undef;
		$out =~ s/^\n// or die 'bad kcat output after a message';
		push @msgs, \%m;
	}
	return sort { $a->{p} <=> $b->{p} || $a->{o} <=> $b->{o} } @msgs;
}

# decode(@messages): the datums "avro_tool.py decode" reads from them
sub decode
{
	my @args = map { ('--hex', unpack('H*', $_)) } @_;
	my $out = tool_ok('decode', '--registry', $registry, @args);
	return map { $json->decode($_) } split /\n/, $out;
}

sub header_id
{
	my ($msg) = @_;
	return undef unless defined $msg && length($msg) >= 5 && substr($msg, 0, 1) eq "\0";
	return unpack('N', substr($msg, 1, 4));
}

# ---------------------------------------------------------------- schemas
my $all_schema = write_file('all.avsc', <<'EOF');
{"type": "record", "name": "All", "namespace": "test.avro", "fields": [
  {"name": "n",    "type": "null"},
  {"name": "b",    "type": "boolean"},
  {"name": "i",    "type": "int"},
  {"name": "l",    "type": "long"},
  {"name": "f",    "type": "float"},
  {"name": "d",    "type": "double"},
  {"name": "s",    "type": "string"},
  {"name": "by",   "type": "bytes"},
  {"name": "fx",   "type": {"type": "fixed", "name": "Four", "size": 4}},
  {"name": "dec",  "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
  {"name": "fdec", "type": {"type": "fixed", "name": "Dec8", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 3}},
  {"name": "date", "type": {"type": "int", "logicalType": "date"}},
  {"name": "tms",  "type": {"type": "int", "logicalType": "time-millis"}},
  {"name": "tus",  "type": {"type": "long", "logicalType": "time-micros"}},
  {"name": "tsms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "tsus", "type": {"type": "long", "logicalType": "timestamp-micros"}},
  {"name": "ltms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
  {"name": "ltus", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
  {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
  {"name": "arr",  "type": {"type": "array", "items": "int"}},
  {"name": "map",  "type": {"type": "map", "values": ["null", "double"]}},
  {"name": "addr", "type": {"type": "record", "name": "Addr", "fields": [
      {"name": "zip", "type": "int"}, {"name": "tags", "type": {"type": "array", "items": "string"}},
      {"name": "color", "type": "Color"}]}},
  {"name": "maybe_s", "type": ["null", "string"]},
  {"name": "maybe_addr", "type": ["null", "Addr"]},
  {"name": "choice", "type": ["int", "long", "string", "Addr"]},
  {"name": "with_default", "type": "int", "default": 7}
]}
EOF
my $key_schema = write_file('key.avsc', <<'EOF');
{"type": "record", "name": "Key", "namespace": "test.avro", "fields": [
  {"name": "id", "type": "long"}, {"name": "region", "type": "string"}]}
EOF

# ---------------------------------------------------------------- topic avro
# Each entry: the input line; the datum decode must give back (default: the
# line's value, with_default 7 filled in); and what else to check.
my $m1 = q{{"key": "k1", "value": {"n": null, "b": true, "i": -5, "l": 9007199254740993, "f": 0.1, "d": 0.1, "s": "h\u00e9llo \u263a", "by": "\\\\x000aff", "fx": "\\\\x01020304", "dec": "12.30", "fdec": "-1.500", "date": "2024-02-29", "tms": "12:34:56.789", "tus": "12:34:56.123456", "tsms": "2024-01-02T03:04:05.123+00:00", "tsus": "1969-12-31T23:59:59.999999+00:00", "ltms": "2024-01-02T03:04:05.123", "ltus": "1900-01-01T00:00:00.000001", "uuid": "0e0f3c3a-8f8e-4b6c-9f0e-2c1a2b3c4d5e", "color": "GREEN", "arr": [1, -2, 3], "map": {"a": 1.5, "b": null}, "addr": {"zip": 12345, "tags": ["x", ""], "color": "RED"}, "maybe_s": null, "maybe_addr": {"zip": 1, "tags": [], "color": "BLUE"}, "choice": 5, "with_default": 8}}};
# extremes; choice: a long, then a string
my $m2 = q{{"value": {"n": null, "b": false, "i": -2147483648, "l": -9223372036854775808, "f": "NaN", "d": "-Infinity", "s": "", "by": "\\\\x", "fx": "\\\\x00000000", "dec": "-99999999.99", "fdec": "999999999999999.999", "date": "0001-01-01", "tms": "23:59:59.999", "tus": "00:00:00", "tsms": "9999-12-31T23:59:59.999+00:00", "tsus": "0001-01-01T00:00:00+00:00", "ltms": "0999-01-01T00:00:00", "ltus": "9999-12-31T23:59:59.999999", "uuid": "00000000-0000-0000-0000-000000000000", "color": "BLUE", "arr": [], "map": {}, "addr": {"zip": 2147483647, "tags": [], "color": "GREEN"}, "maybe_s": "", "maybe_addr": null, "choice": 3000000000}}};
my $m3 = q{{"key": "", "value": {"n": null, "b": false, "i": 0, "l": 0, "f": 1e30, "d": 1e300, "s": "x", "by": "\\\\x00", "fx": "\\\\xffffffff", "dec": "0.00", "fdec": "0.000", "date": "1970-01-01", "tms": "00:00:00", "tus": "23:59:59.999999", "tsms": "1970-01-01T00:00:00+00:00", "tsus": "2000-01-01T00:00:00.000001+00:00", "ltms": "1970-01-01T00:00:00", "ltus": "1970-01-01T00:00:00", "uuid": "x", "color": "RED", "arr": [0], "map": {"k": 0.25}, "addr": {"zip": 0, "tags": ["a"], "color": "RED"}, "maybe_s": "s", "maybe_addr": null, "choice": "five"}}};
# inputs in other forms than decode prints them
my $m4 = q{{"value": {"n": null, "b": true, "i": 1, "l": 1, "f": 2, "d": 2.5, "s": "y", "by": "\\\\xABCD", "fx": "\\\\x0A0B0C0D", "dec": 12.3, "fdec": "-0", "date": "2024-01-01", "tms": "01:02:03.100", "tus": "01:02:03.5", "tsms": "2024-01-02T03:04:05+02:00", "tsus": "2024-06-30T23:00:00Z", "ltms": "2024-01-02 03:04:05", "ltus": "2024-01-02T03:04:05.250", "uuid": "x", "color": "RED", "arr": [], "map": {}, "addr": {"zip": 0, "tags": [], "color": "RED"}, "maybe_s": null, "maybe_addr": null, "choice": {"zip": 9, "tags": ["t"], "color": "GREEN"}}}};
my %m4_as = (f => 2.0, by => '\\xabcd', fx => '\\x0a0b0c0d', dec => '12.30', fdec => '0.000',
	tms => '01:02:03.100', tus => '01:02:03.500000', tsms => '2024-01-02T01:04:05+00:00',
	tsus => '2024-06-30T23:00:00+00:00', ltms => '2024-01-02T03:04:05', ltus => '2024-01-02T03:04:05.250000');
my $small = q{{"n": null, "b": false, "i": 42, "l": 0, "f": 0, "d": 0, "s": "", "by": "\\\\x", "fx": "\\\\x00000000", "dec": "1.00", "fdec": "0.000", "date": "1970-01-01", "tms": "00:00:00", "tus": "00:00:00", "tsms": "1970-01-01T00:00:00+00:00", "tsus": "1970-01-01T00:00:00+00:00", "ltms": "1970-01-01T00:00:00", "ltus": "1970-01-01T00:00:00", "uuid": "x", "color": "RED", "arr": [], "map": {}, "addr": {"zip": 0, "tags": [], "color": "RED"}, "maybe_s": null, "maybe_addr": null, "choice": 0}};

my @lines = (
	$m1, $m2, $m3, $m4,
	q{{"key": "gone", "value": null}},                       # 4: tombstone with a key
	q{{"value": null}},                                      # 5: no key, no value
	q{{"key": "raw", "value_raw_hex": "00000000ff01027fff"}}, # 6
	qq{{"value": $small}},                                   # 7: the reference for 8-10
	qq{{"value": $small, "truncate": 3}},                    # 8
	qq{{"value": $small, "schema_id": 4242}},                # 9
	qq{{"value": $small, "no_magic": true}},                 # 10
);
my $input = write_file('avro.jsonl', join('', map { "$_\n" } @lines));
my $summary = $json->decode(tool_ok('produce', '--registry', $registry, '--broker', $bs,
		'--topic', 'avro', '--input', $input, '--value-schema', $all_schema,
		'--value-subject', 'avro-value'));
is_deeply($summary, { messages => scalar @lines, value_schema_id => 1, key_schema_id => undef },
	'produce prints {"messages": N, "value_schema_id": 1, "key_schema_id": null}');
my $vid = $summary->{value_schema_id};

my @got = consume('avro');
is(scalar @got, scalar @lines, 'as many messages in the topic as lines');
is_deeply([ map { $_->{o} } @got ], [ 0 .. $#lines ], '... in order');

# datums produced: the value of each line, as decode prints it
my @want = map { $json->decode($_)->{value} } $m1, $m2, $m3, $m4;
$want[$_]{with_default} //= 7 for 0 .. 3;
@{ $want[3] }{ keys %m4_as } = values %m4_as;
is_deeply([ map { header_id($_->{value}) } @got[0 .. 3] ], [ ($vid) x 4 ],
	'messages 0-3: magic byte 0 and the registered id');
my @dec = decode(map { $_->{value} } @got[0 .. 3]);
is_deeply($dec[$_], $want[$_], "message $_: decode gives back the datum") for 0 .. 3;

is($got[0]{key}, 'k1', 'a string key is its UTF-8 bytes');
is($got[1]{key}, undef, 'no "key": no key');
is($got[2]{key}, undef, 'an empty key: no key');
is_deeply([ $got[4]{key}, $got[4]{value} ], [ 'gone', undef ], 'tombstone with a key: null value');
is_deeply([ $got[5]{key}, $got[5]{value} ], [ undef, undef ], 'tombstone without a key');
is_deeply([ $got[6]{key}, unpack('H*', $got[6]{value}) ], [ 'raw', '00000000ff01027fff' ],
	'value_raw_hex: the bytes as given');

my $ref = $got[7]{value};
is(header_id($ref), $vid, 'message 7 (the reference): header');
my ($ref_datum) = decode($ref);
is($ref_datum->{i}, 42, '... decodes');
is(unpack('H*', $got[8]{value}), unpack('H*', substr($ref, 0, length($ref) - 3)),
	'truncate 3: the same message without its last 3 bytes');
my ($rc, $out, $err) = tool('decode', '--registry', $registry, '--hex', unpack('H*', $got[8]{value}));
like($err, qr/does not decode/, '... which does not decode');
is(unpack('H*', $got[9]{value}),
	unpack('H*', "\0" . pack('N', 4242) . substr($ref, 5)), 'schema_id 4242: only the id differs');
($rc, $out, $err) = tool('decode', '--registry', $registry, '--hex', unpack('H*', $got[9]{value}));
like($err, qr/HTTP 404.*40403/, '... an id the registry does not know');
is(unpack('H*', $got[10]{value}), unpack('H*', substr($ref, 5)), 'no_magic: the body without the header');
is_deeply(
	$json->decode(tool_ok('decode', '--registry', $registry, '--schema-id', $vid,
			'--hex', unpack('H*', $got[10]{value}))),
	$ref_datum, '... which decodes with --schema-id');

# ---------------------------------------------------------------- keyed
# A key schema, --partition on a 2-partition topic, a tombstone with an Avro key.
my $vkey = write_file('keyed.jsonl', <<'EOF');
{"key": {"id": 1, "region": "eu"}, "value": {"n": null, "b": true, "i": 1, "l": 1, "f": 1.5, "d": 1.5, "s": "a", "by": "\\x01", "fx": "\\x01010101", "dec": "0.01", "fdec": "0.001", "date": "2020-01-01", "tms": "00:00:01", "tus": "00:00:00.000001", "tsms": "2020-01-01T00:00:00.001+00:00", "tsus": "2020-01-01T00:00:00.000001+00:00", "ltms": "2020-01-01T00:00:00.001", "ltus": "2020-01-01T00:00:00.000001", "uuid": "x", "color": "BLUE", "arr": [7], "map": {"x": null}, "addr": {"zip": 7, "tags": ["q"], "color": "BLUE"}, "maybe_s": "m", "maybe_addr": null, "choice": -1, "with_default": 1}}
{"key": {"id": 1, "region": "eu"}, "value": null}
{"value": {"n": null, "b": true, "i": 1, "l": 1, "f": 1.5, "d": 1.5, "s": "a", "by": "\\x01", "fx": "\\x01010101", "dec": "0.01", "fdec": "0.001", "date": "2020-01-01", "tms": "00:00:01", "tus": "00:00:00.000001", "tsms": "2020-01-01T00:00:00.001+00:00", "tsus": "2020-01-01T00:00:00.000001+00:00", "ltms": "2020-01-01T00:00:00.001", "ltus": "2020-01-01T00:00:00.000001", "uuid": "x", "color": "BLUE", "arr": [7], "map": {"x": null}, "addr": {"zip": 7, "tags": ["q"], "color": "BLUE"}, "maybe_s": "m", "maybe_addr": null, "choice": -1, "with_default": 1}}
EOF
$summary = $json->decode(tool_ok('produce', '--registry', $registry, '--broker', $bs,
		'--topic', 'keyed', '--input', $vkey, '--value-schema', $all_schema,
		'--key-schema', $key_schema, '--partition', 1));
is_deeply($summary, { messages => 3, value_schema_id => 1, key_schema_id => 2 },
	'keyed: default subjects keyed-value (the same schema: id 1) and keyed-key (id 2)');
is_deeply(
	[ @{ $json->decode(tool_ok('decode', '--registry', $registry, '--schema-id', 2,
		'--hex', '02046575')) }{qw(id region)} ],
	[ 1, 'eu' ], 'decode --schema-id: a bare key body');
@got = consume('keyed');
is_deeply([ map { "$_->{p}/$_->{o}" } @got ], [ '1/0', '1/1', '1/2' ], '--partition 1: all in partition 1');
is_deeply([ map { header_id($_->{key}) } @got ], [ 2, 2, undef ], 'Avro keys: header with the key schema id; none');
is_deeply([ decode($got[0]{key}, $got[1]{key}) ], [ ({ id => 1, region => 'eu' }) x 2 ],
	'... and decode gives back the key');
is($got[1]{value}, undef, 'tombstone with an Avro key');
is_deeply([ map { $_->{with_default} } decode($got[0]{value}, $got[2]{value}) ], [ 1, 1 ],
	'values of the keyed topic decode');

# ---------------------------------------------------------------- exact bytes
# Where python3-avro 1.11.1 alone would go wrong, the bodies worked out by
# hand (zigzag varints, two's complement decimals); and conversion errors.
# Each case: schema, JSON value, body in hex or an error (qr//), name.
my $bdec = '{"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}';
my $opt = '{"type": "record", "name": "O", "fields": [{"name": "a", "type": ["null", "string"]}]}';
my @cases = (
	[ $bdec, '"12.3"', '0404ce', 'decimal "12.3", scale 2: unscaled 1230 (not 123)' ],
	[ $bdec, '12', '0404b0', 'decimal 12 (a JSON number): unscaled 1200' ],
	[ $bdec, '"-0.00"', '0200', 'decimal "-0.00": unscaled 0 (not -2)' ],
	[ $bdec, '"-1.28"', '04ff80', 'decimal "-1.28": unscaled -128' ],
	[ $bdec, '"1.234"', qr/more than 2 digits after the point/, 'decimal beyond the scale: an error' ],
	[ $bdec, '"123456789.00"', qr/more than 10 digits/, 'decimal beyond the precision: an error' ],
	[ '{"type": "fixed", "name": "D", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 3}',
		'"-1.5"', 'fffffa24', 'fixed decimal "-1.5", scale 3: -1500 in 4 bytes' ],
	[ '["int", "long"]', '5', '000a', 'union ["int","long"], 5: branch 0, the first that takes it' ],
	[ '["int", "long"]', '3000000000', '0280f882ad16', '... 3000000000: branch 1' ],
	[ '["null", "long", "double"]', '5', '020a', '["null","long","double"], 5: the long' ],
	[ '["null", "long", "double"]', '5.5', '040000000000001640', '... 5.5: the double' ],
	[ $opt, '{"a": null}', '00', 'field ["null","string"], null: branch 0' ],
	[ $opt, '{"a": "s"}', '020273', '... "s": branch 1' ],
	[ '{"type": "long", "logicalType": "local-timestamp-millis"}', '"1970-01-01T00:00:01"',
		'd00f', 'local-timestamp-millis: the long 1000' ],
	[ '{"type": "long", "logicalType": "local-timestamp-micros"}', '"1969-12-31T23:59:59.999999"',
		'01', 'local-timestamp-micros before 1970: the long -1' ],
	[ '{"type": "long", "logicalType": "timestamp-millis"}', '"1970-01-01T01:00:00+01:00"',
		'00', 'timestamp-millis with an offset: 0' ],
	[ '{"type": "int", "logicalType": "date"}', '"1969-12-31"', '01', 'date 1969-12-31: -1' ],
	[ '{"type": "int", "logicalType": "date"}', '2932897', 'c282e602',
		'date as the raw int (year 10000, beyond Python)' ],
	[ '{"type": "int", "logicalType": "time-millis"}', '"00:00:01.5"', 'b817', 'time-millis: 1500' ],
	[ '"int"', '2147483648', qr/out of range for int/, 'int out of range: an error' ],
	[ '{"type": "enum", "name": "E", "symbols": ["A"]}', '"B"', qr/expected a symbol of enum E/,
		'an unknown enum symbol: an error' ],
	[ '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}', '{}',
		qr/field a is missing/, 'a missing field without a default: an error' ],
);

# encode($schema, @values): the bodies in hex, or the error
sub encode
{
	my ($schema, @values) = @_;
	state $n = 0;
	$n++;
	my $sf = write_file("enc$n.avsc", $schema);
	my $in = write_file("enc$n.jsonl", join('', map { qq{{"value": $_}\n} } @values));
	my ($rc, $out, $err) = tool('encode', '--registry', $registry, '--input', $in,
		'--value-schema', $sf, '--value-subject', "enc-$n");
	return "ERROR: $err" if $rc;
	return map { substr($json->decode($_)->{value}, 10) } split /\n/, $out;
}
# the good cases one encode per schema, the errors one each
my (%good, @schemas);
for my $c (grep { !ref $_->[2] } @cases)
{
	push @schemas, $c->[0] unless $good{ $c->[0] };
	push @{ $good{ $c->[0] } }, $c;
}
for my $schema (@schemas)
{
	my @c = @{ $good{$schema} };
	my @bodies = encode($schema, map { $_->[1] } @c);
	is($bodies[$_], $c[$_][2], $c[$_][3]) for 0 .. $#c;
}
like(join('', encode($_->[0], $_->[1])), $_->[2], $_->[3]) for grep { ref $_->[2] } @cases;

# errors name their cause
my $bad = write_file('bad.jsonl', qq{{"value": {"zip": "x"}}\n});
($rc, $out, $err) = tool('produce', '--registry', $registry, '--broker', $bs, '--topic', 'avro',
	'--input', $bad, '--value-schema', $key_schema);
isnt($rc, 0, 'a value that does not fit its schema: exit status not 0');
like($err, qr/bad\.jsonl line 1: value: record test\.avro\.Key has no field zip/, '... with the line and the reason');
my $incompatible = write_file('incompatible.avsc',
	'{"type": "record", "name": "All", "namespace": "test.avro", "fields": [{"name": "z", "type": "int"}]}');
my $one = write_file('one_line.jsonl', qq{{"value": {"z": 1}}\n});
($rc, $out, $err) = tool('produce', '--registry', $registry, '--broker', $bs, '--topic', 'avro',
	'--input', $one, '--value-schema', $incompatible, '--value-subject', 'avro-value');
like($err, qr/HTTP 409: \{"error_code": 409/, 'a registry error: its status and body');
($rc, $out, $err) = tool('produce', '--registry', $registry, '--broker', $bs, '--topic', 'keyed',
	'--input', $one, '--value-schema', $incompatible, '--value-subject', 'fresh', '--partition', 5);
like($err, qr/kcat failed .*Unknown partition/s, 'a kcat failure: its stderr');
is_deeply($json->decode(tool_ok('register', '--registry', $registry, '--subject', 'reg',
		'--schema', $key_schema)), { id => 2 }, 'register: {"id": N} (the key schema again: id 2)');

done_testing();
