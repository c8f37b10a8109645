# Helpers for the Kafka TAP tests (test/t/1*_kafka_*.pl): the dev broker,
# producing with kcat, a node with pg_kappa, and waiting for counts.
#
# Load with:  require "./test/t/100_kafka_common.pl";
# Run on its own (prove runs every file) it only checks that the tools exist.

use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our $kafka_repo = $ENV{KAPPA_REPO} // '.';
our $kafka_dev_broker = "$kafka_repo/test/dev_broker";
our @kafka_brokers;    # started by this test, stopped at the end

# kafka_start_broker(topic => partitions, ...): start the dev broker with
# these topics; returns a hash with bootstrap, and the handles.
sub kafka_start_broker
{
	my (%topics) = @_;
	my @args = ($kafka_dev_broker, '--exit-on-eof');
	push @args, '--topic', "$_:$topics{$_}" for sort keys %topics;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(\@args, '<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while ($out !~ /^BOOTSTRAP (\S+)/m)
	{
		die "dev broker did not start: $err" if time > $deadline || !$h->pumpable;
		$h->pump_nb;
		usleep(20_000);
	}
	$out =~ /^BOOTSTRAP (\S+)/m;
	my $broker = { h => $h, in => \$in, out => \$out, err => \$err, bootstrap => $1 };
	note "dev broker at $1";
	push @kafka_brokers, $broker;
	return $broker;
}

# kafka_broker_cmd($broker, "down"): send a control command, wait for its
# OK/ERR line; returns the line.
sub kafka_broker_cmd
{
	my ($broker, $cmd) = @_;
	my $seen = () = ${ $broker->{out} } =~ /^(?:OK|ERR)/mg;
	${ $broker->{in} } .= "$cmd\n";
	my $deadline = time + 20;
	while (1)
	{
		$broker->{h}->pump_nb;
		my @lines = ${ $broker->{out} } =~ /^((?:OK|ERR).*)$/mg;
		return $lines[-1] if @lines > $seen;
		die "dev broker did not answer \"$cmd\"" if time > $deadline;
		usleep(20_000);
	}
}

sub kafka_stop_broker
{
	my ($broker) = @_;
	return if $broker->{stopped};
	$broker->{stopped} = 1;
	${ $broker->{in} } .= "quit\n";
	eval { $broker->{h}->pump_nb; 1 };
	# --exit-on-eof: closing stdin stops it too
	eval { $broker->{h}->finish; 1 } or eval { $broker->{h}->kill_kill(grace => 2); 1 };
}

# a test that dies must not leave its broker behind
END
{
	kafka_stop_broker($_) for @kafka_brokers;
}

# kafka_produce($broker, $topic, \@messages, %opts): produce with kcat.
# Messages are lines (no newline inside); opts: key_delim => '|' (each
# message is "key|value"), partition => N, headers => ['name=value', ...],
# batch => N (at most N messages per record batch), null_empty => 1 (an
# empty key or value is sent as none: "k|" is a tombstone).
sub kafka_produce
{
	my ($broker, $topic, $msgs, %opts) = @_;
	my @cmd = ('kcat', '-P', '-b', $broker->{bootstrap}, '-t', $topic);
	push @cmd, '-K', $opts{key_delim} if defined $opts{key_delim};
	push @cmd, '-p', $opts{partition} if defined $opts{partition};
	push @cmd, map { ('-H', $_) } @{ $opts{headers} // [] };
	push @cmd, '-X', "batch.num.messages=$opts{batch}" if defined $opts{batch};
	push @cmd, '-Z' if $opts{null_empty};
	# spread keyless messages over the partitions one by one (librdkafka's
	# sticky partitioner would fill one partition per batch, and the mock
	# cluster keeps only ~5 MiB per partition)
	push @cmd, '-X', 'sticky.partitioning.linger.ms=0';
	my $input = join('', map { "$_\n" } @$msgs);
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \$input, '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
	return scalar @$msgs;
}

# kafka_start_registry(): the dev schema registry (test/dev_registry.py) on
# loopback, stopped at exit; returns { url => 'http://127.0.0.1:port' }.
my @kafka_registries;

sub kafka_start_registry
{
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ 'python3', "$kafka_repo/test/dev_registry.py", '--exit-on-eof' ],
		'<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time + 30;
	while ($out !~ /^REGISTRY (\S+)\n/m)
	{
		die "dev registry did not start: $err" if time > $deadline || !$h->pumpable;
		$h->pump_nb;
		usleep(10_000);
	}
	my ($url) = $out =~ /^REGISTRY (\S+)\n/m;
	my $registry = { h => $h, url => $url, in => \$in };
	push @kafka_registries, $registry;
	return $registry;
}

END
{
	for my $r (@kafka_registries)
	{
		eval { $r->{h}->finish; 1 } or eval { $r->{h}->kill_kill(grace => 2); 1 };
	}
}

# kafka_produce_avro($registry, $broker, $topic, \@lines, %opts): produce Avro
# messages encoded by Debian's python3-avro (test/avro_tool.py); @lines are
# the tool's input lines (JSON), opts: value_schema, key_schema (JSON text),
# value_subject, key_subject, partition.  Returns the tool's answer (a hash:
# messages, value_schema_id, key_schema_id).
my $kafka_avro_seq = 0;

sub kafka_produce_avro
{
	my ($registry, $broker, $topic, $lines, %opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $n = $kafka_avro_seq++;
	my @cmd = ('/usr/bin/python3', "$kafka_repo/test/avro_tool.py", 'produce',
		'--registry', $registry->{url}, '--broker', $broker->{bootstrap},
		'--topic', $topic, '--input', "$dir/in$n.jsonl");
	for my $part ('value', 'key')
	{
		next unless defined $opts{"${part}_schema"};
		PostgreSQL::Test::Utils::append_to_file("$dir/$part$n.avsc", $opts{"${part}_schema"});
		push @cmd, "--$part-schema", "$dir/$part$n.avsc";
		push @cmd, "--$part-subject", $opts{"${part}_subject"} if defined $opts{"${part}_subject"};
	}
	push @cmd, '--partition', $opts{partition} if defined $opts{partition};
	PostgreSQL::Test::Utils::append_to_file("$dir/in$n.jsonl", join('', map { "$_\n" } @$lines));
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \'', '>', \$out, '2>', \$err)
	  or die "avro_tool.py produce failed: $err";
	my ($answer) = $out =~ /^(\{.*\})\s*$/m;
	die "avro_tool.py gave no answer: $out" unless defined $answer;
	require JSON::PP;
	return JSON::PP::decode_json($answer);
}

# kafka_node($name, %opts): a started node with pg_kappa (preloaded unless
# preload => 0) and the extension created in database postgres.
sub kafka_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $preload = $opts{preload} // 1;
	$node->append_conf('postgresql.conf',
		($preload ? "shared_preload_libraries = 'pg_kappa'\n" : '')
		  . "max_worker_processes = 24\n"
		  . "restart_after_crash = on\n"
		  . "kappa.max_latency = 50ms\n"
		  . ($opts{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_kappa');
	return $node;
}

# kafka_wait($node, $sql, $expected, $what, $timeout, $db): poll until $sql
# returns $expected (in database $db, postgres by default); a failed test
# (with the last value) after the timeout.
sub kafka_wait
{
	my ($node, $sql, $expected, $what, $timeout, $db) = @_;
	$timeout //= 60;
	$db //= 'postgres';
	my $deadline = time + $timeout;
	my $got;
	while (1)
	{
		# the server may be restarting (crash tests): retry until the deadline
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

# kafka_query($node, $sql): like safe_psql, but retries for up to 60 s while
# the server restarts after a crash.
sub kafka_query
{
	my ($node, $sql) = @_;
	my $deadline = time + 60;
	while (1)
	{
		my ($ret, $out, $err) = $node->psql('postgres', $sql);
		return $out if $ret == 0;
		die "query failed: $sql: $err" if time > $deadline;
		usleep(200_000);
	}
}

unless (caller)
{
	ok(-x $kafka_dev_broker, 'dev broker is built');
	ok(system('kcat -V >/dev/null 2>&1') == 0, 'kcat is installed');
	done_testing();
}

1;
