# The dev broker (test/dev_broker) on its own, with kcat as the client: the
# interface the Kafka tests rely on (BOOTSTRAP line, port file, fixed port,
# control commands on stdin and on a FIFO, clean exit) and the behaviour of
# librdkafka 2.0.2's mock cluster that docs/dev-broker.md describes (auto
# topic creation, ~5 MiB kept per partition, offsets for times = -1).
# Needs no PostgreSQL.

use strict;
use warnings;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IPC::Run ();
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep time);

my $broker_bin = ($ENV{KAPPA_REPO} // '.') . '/test/dev_broker';
plan skip_all => 'test/dev_broker is not built' unless -x $broker_bin;
plan skip_all => 'kcat is not installed'
  unless system('sh', '-c', 'command -v kcat >/dev/null') == 0;

my $tmp = tempdir(CLEANUP => 1);

# start_broker(@args): start the broker, wait for its BOOTSTRAP line.
sub start_broker
{
	my @args = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ $broker_bin, @args ],
		'<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while ($out !~ /^BOOTSTRAP (\S+)\n/m)
	{
		die "dev broker did not start: $err" if time > $deadline || !$h->pumpable;
		$h->pump_nb;
		usleep(10_000);
	}
	$out =~ /^BOOTSTRAP (\S+)\n/m;
	return { h => $h, in => \$in, out => \$out, err => \$err, bootstrap => $1 };
}

# cmd($broker, $line): send a command on stdin, return its answer line.
sub cmd
{
	my ($b, $line) = @_;
	my $seen = () = ${ $b->{out} } =~ /^(?:OK|ERR)/mg;
	${ $b->{in} } .= "$line\n";
	my $deadline = time + 20;
	while (1)
	{
		$b->{h}->pump_nb;
		my @answers = ${ $b->{out} } =~ /^((?:OK|ERR).*)$/mg;
		return $answers[-1] if @answers > $seen;
		die "no answer to \"$line\"" if time > $deadline;
		usleep(10_000);
	}
}

# kcat(@args, { in => $stdin }): run kcat, return (ok, stdout, stderr).
sub kcat
{
	my $opts = ref $_[-1] eq 'HASH' ? pop : {};
	my ($in, $out, $err) = ($opts->{in} // '', '', '');
	my $ok = IPC::Run::run([ 'kcat', @_ ], '<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout(30));
	return ($ok, $out, $err);
}

# watermarks($bootstrap, $topic, $partition): (low, high).
sub watermarks
{
	my ($bs, $topic, $p) = @_;
	my (undef, $lo) = kcat('-Q', '-b', $bs, '-t', "$topic:$p:-2");
	my (undef, $hi) = kcat('-Q', '-b', $bs, '-t', "$topic:$p:-1");
	return (($lo =~ /offset (-?\d+)/)[0], ($hi =~ /offset (-?\d+)/)[0]);
}

# partitions($bootstrap, $topic): partition count in metadata, or the error.
sub partitions
{
	my ($bs, $topic) = @_;
	my ($ok, $out, $err) = kcat('-L', '-b', $bs, '-t', $topic);
	return $1 if $out =~ /topic "\Q$topic\E" with (\d+) partitions:\s*$/m;
	return "error: $1" if $out =~ /topic "\Q$topic\E" with \d+ partitions: (.*)$/m;
	return "failed: $err";
}

# ---------------------------------------------------------------- start
my $port_file = "$tmp/port";
my $b = start_broker('--topic', 'clicks:4', '--topic', 'one:1',
	'--port-file', $port_file);
my $bs = $b->{bootstrap};
like($bs, qr/^127\.0\.0\.1:\d+$/, 'first line is BOOTSTRAP 127.0.0.1:PORT');
open(my $pf, '<', $port_file) or die "no port file: $!";
my $from_file = <$pf>;
close $pf;
is($from_file, "$bs\n", 'the port file holds the same address');
is(partitions($bs, 'clicks'), 4, 'topics from the command line exist at start');

# ---------------------------------------------------------------- produce, consume
for my $p (0 .. 3)
{
	my ($ok, undef, $err) = kcat('-P', '-b', $bs, '-t', 'clicks', '-p', $p,
		'-K', '|', '-H', 'trace=t' . $p, { in => "k$p|m$p-a\nk$p|m$p-b\n" });
	ok($ok, "produce to partition $p") or diag $err;
}
my ($ok, $out, $err) = kcat('-C', '-b', $bs, '-t', 'clicks', '-o', 'beginning',
	'-e', '-q', '-f', '%p %o %k %h %s\n');
my @got = sort split /\n/, $out;
is_deeply(
	\@got,
	[ map { ("$_ 0 k$_ trace=t$_ m$_-a", "$_ 1 k$_ trace=t$_ m$_-b") } 0 .. 3 ],
	'consume: every message with its partition, offset, key and header');
($ok, $out) = kcat('-C', '-b', $bs, '-t', 'clicks', '-p', 0, '-o', 'beginning',
	'-e', '-q', '-f', '%T\n');
my ($ts) = split /\n/, $out;
ok($ts > 1_500_000_000_000, 'message timestamps are kept (CreateTime in ms)');

# ---------------------------------------------------------------- commands
is(cmd($b, 'create later 3'), 'OK create later 3', 'create a topic later');
is(partitions($bs, 'later'), 3, '... it has its partitions');
like(cmd($b, 'create later 5'), qr/^ERR create later: TOPIC_ALREADY_EXISTS/,
	'create an existing topic: ERR');
like(cmd($b, 'add-partitions later 5'), qr/^ERR add-partitions: .*cannot add partitions/,
	'add-partitions: not supported by the mock, says ERR');
like(cmd($b, 'frobnicate'), qr/^ERR unknown command "frobnicate"/, 'unknown command: ERR');
like(cmd($b, 'error Fetch NO_SUCH_ERROR'), qr/^ERR unknown error code/, 'unknown error code: ERR');
like(cmd($b, 'create x 0'), qr/^ERR usage: create TOPIC PARTITIONS/, 'bad partition count: ERR');
is(cmd($b, 'bootstrap'), "OK $bs", 'bootstrap command');

# Auto creation: asking for a missing topic creates it with 4 partitions.
($ok, undef, $err) = kcat('-P', '-b', $bs, '-t', 'auto', { in => "x\n" });
ok($ok, 'produce to a topic that does not exist') or diag $err;
is(partitions($bs, 'auto'), 4, '... creates it with 4 partitions');
kcat('-C', '-b', $bs, '-t', 'ghost', '-X', 'allow.auto.create.topics=false',
	'-o', 'beginning', '-e', '-q');
is(partitions($bs, 'ghost'), 4,
	'a consumer with allow.auto.create.topics=false creates it too');

# A missing topic that appears later: create it hidden behind a topic error.
is(cmd($b, 'create late 8'), 'OK create late 8', 'create late 8');
is(cmd($b, 'topic-error late UNKNOWN_TOPIC_OR_PART'),
	'OK topic-error late UNKNOWN_TOPIC_OR_PART', 'hide it');
like(partitions($bs, 'late'), qr/^error: Broker: Unknown topic or partition/,
	'... clients see it as missing');
is(cmd($b, 'topic-error late NO_ERROR'), 'OK topic-error late NO_ERROR', 'show it');
is(partitions($bs, 'late'), 8, '... clients see it with its partitions');

# Request errors: the next Fetch requests fail, the client retries.
is(cmd($b, 'error Fetch UNKNOWN_TOPIC_OR_PART 2'), 'OK error 1 UNKNOWN_TOPIC_OR_PART 2',
	'inject 2 Fetch errors');
($ok, $out, $err) = kcat('-C', '-b', $bs, '-t', 'clicks', '-p', 1, '-o', 'beginning',
	'-e', '-q', '-d', 'fetch', '-f', '%s\n');
is($out, "m1-a\nm1-b\n", '... the consumer still gets everything');
my $backoffs = () = $err =~ /Fetch backoff .*Unknown topic or partition/g;
is($backoffs, 2, '... after backing off twice on the injected error');

# ListOffsets and Produce honour injected errors too.
is(cmd($b, 'error ListOffsets NOT_LEADER_FOR_PARTITION 1'),
	'OK error 2 NOT_LEADER_FOR_PARTITION 1', 'inject a ListOffsets error');
($ok, $out, $err) = kcat('-Q', '-b', $bs, '-t', 'clicks:0:-1');
like($out . $err, qr/Not leader for partition/i, '... the next offsets query fails with it');
($ok, $out) = kcat('-Q', '-b', $bs, '-t', 'clicks:0:-1');
like($out, qr/clicks \[0\] offset 2/, '... the one after succeeds');
is(cmd($b, 'error Produce NOT_LEADER_FOR_PARTITION 2'),
	'OK error 0 NOT_LEADER_FOR_PARTITION 2', 'inject 2 Produce errors');
($ok, undef, $err) = kcat('-P', '-b', $bs, '-t', 'clicks', '-p', 3, { in => "m3-c\n" });
ok($ok, '... the producer retries and succeeds') or diag $err;
is((watermarks($bs, 'clicks', 3))[1], 3, '... the message is stored once');

# Offsets for times: always -1 from the mock.
($ok, $out) = kcat('-Q', '-b', $bs, '-t', 'clicks:0:1000');
like($out, qr/clicks \[0\] offset -1/, 'offsets for times answers -1');

# Down and up: connections refused while down, same port and data after.
is(cmd($b, 'down'), 'OK down 1', 'broker down');
($ok, $out, $err) = kcat('-L', '-b', $bs, '-m', '2');
ok(!$ok || $out !~ /topic "clicks"/, '... metadata cannot be fetched');
is(cmd($b, 'up'), 'OK up 1', 'broker up');
($ok, $out) = kcat('-C', '-b', $bs, '-t', 'clicks', '-p', 2, '-o', 'beginning',
	'-e', '-q', '-f', '%s\n');
is($out, "m2-a\nm2-b\n", '... same address, data still there');

# The mock keeps about 5 MiB per partition and drops older messages.
my $big = join('', map { sprintf("%08d%s\n", $_, 'x' x 92) } 1 .. 80_000);
($ok, undef, $err) = kcat('-P', '-b', $bs, '-t', 'one', '-p', 0, { in => $big });
ok($ok, 'produce 8 MB into one partition') or diag $err;
my ($lo, $hi) = watermarks($bs, 'one', 0);
is($hi, 80_000, '... high watermark counts every message');
my $kept = $hi - $lo;
ok($lo > 0 && $kept > 30_000 && $kept < 5 * 1024 * 1024 / 100,
	"... but only the last $kept (about 5 MiB) are kept");

# ---------------------------------------------------------------- control FIFO
my $fifo = "$tmp/control";
my $b2 = start_broker('--control', $fifo);
ok(-p $fifo, 'the control FIFO is created');
open(my $fh, '>', $fifo) or die "cannot open $fifo: $!";
$fh->autoflush(1);
print $fh "create viafifo 2\n";
close $fh;
my $deadline = time + 20;
while (${ $b2->{out} } !~ /^OK create viafifo 2$/m && time < $deadline)
{
	$b2->{h}->pump_nb;
	usleep(10_000);
}
like(${ $b2->{out} }, qr/^OK create viafifo 2$/m, 'a command through the FIFO is answered on stdout');
is(partitions($b2->{bootstrap}, 'viafifo'), 2, '... and done');

# SIGTERM: clean exit, FIFO removed.
my $t0 = time;
$b2->{h}->signal('TERM');
$b2->{h}->finish;
is($b2->{h}->result(0), 0, 'SIGTERM: exit status 0');
ok(time - $t0 < 5, 'SIGTERM: exits at once');
ok(!-e $fifo, 'SIGTERM: the FIFO it created is removed');

# ---------------------------------------------------------------- fixed port
my $probe = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0)
  or die "probe: $!";
my $port = $probe->sockport;
close $probe;
my $b3 = start_broker('--port', $port, '--topic', 'fixed:2');
is($b3->{bootstrap}, "127.0.0.1:$port", "--port $port: listens there");
my ($ok3, $out3, $err3) = ('', '', '');
$ok3 = IPC::Run::run([ $broker_bin, '--port', $port, '--exit-on-eof' ],
	'<', \'', '>', \$out3, '2>', \$err3, IPC::Run::timeout(20));
ok(!$ok3, 'a second broker on the same port fails');
like($err3, qr/could not bind 127\.0\.0\.1:$port: Address already in use/,
	'... with a clear message');
is(cmd($b3, 'quit'), 'OK quit', 'quit');
$b3->{h}->finish;
is($b3->{h}->result(0), 0, 'quit: exit status 0');
my $b4 = start_broker('--port', $port);
is($b4->{bootstrap}, "127.0.0.1:$port", 'the port can be reused at once');
cmd($b4, 'quit');
$b4->{h}->finish;

# ---------------------------------------------------------------- stdin EOF
my $out5 = '';
IPC::Run::run([ $broker_bin, '--exit-on-eof' ], '<', \"bootstrap\n", '>', \$out5,
	'2>', \my $err5, IPC::Run::timeout(20));
like($out5, qr/^BOOTSTRAP (\S+)\nOK \1\n\z/, '--exit-on-eof: stops at end of stdin');

# Stop the first broker last, with quit; the port file goes with it.
is(cmd($b, 'quit'), 'OK quit', 'quit the first broker');
$b->{h}->finish;
ok(!-e $port_file, 'the port file is removed at exit');

done_testing();
