#!/usr/bin/perl
# call_edges.pl: file-level call edges between src/*.c, from the compiler.
#
#   perl tools/call_edges.pl [--list] [--dot] [--root DIR]
#
# Compiles every src/*.c with gcc -fcallgraph-info (GCC's own call graph of
# each translation unit, written as a .ci file), maps each called function to
# the file that defines it and prints the edges "caller.c -> callee.c (fn,
# ...)".  Then it checks the layers declared in docs/architecture.md, in the
# block between "<!-- layers -->" and "<!-- /layers -->": one line per
# layer, top first, "N. name: file.c file.c ...".  A file may call files of
# its own layer or of lower layers, never a higher one; and no call cycle
# between files may exist even inside one layer.  Calls through function
# pointers (callbacks a lower layer is handed, a DestReceiver) are not edges.
# --root checks another tree laid out the same way (test/layers_fixture,
# which must fail: test/run.sh checks that the check can fail).
# Exits 1 if a file is missing from the layer table, an edge points up, or
# files call each other in a cycle; prints why.
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Basename qw(basename dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path($0)) . '/..');
my ($list, $dot) = (0, 0);
while (@ARGV)
{
	my $arg = shift @ARGV;
	if ($arg eq '--list') { $list = 1; }
	elsif ($arg eq '--dot') { $dot = 1; }
	elsif ($arg eq '--root' && @ARGV) { $root = abs_path(shift @ARGV); }
	else { die "usage: $0 [--list] [--dot] [--root DIR]\n"; }
}

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
chomp(my $incserver = `$pg_config --includedir-server`);
chomp(my $inc = `$pg_config --includedir`);
die "pg_config failed\n" unless $incserver;

my @sources = sort glob("$root/src/*.c");
my $tmp = tempdir(CLEANUP => 1);

my %defined_in;    # global function name -> file
my @calls;         # [caller file, callee name or file:static, caller fn]
for my $src (@sources)
{
	my $file = basename($src);
	(my $base = $file) =~ s/\.c$//;
	my @cmd = ('gcc', '-c', '-O0', '-fcallgraph-info', "-I$root/src",
			   "-I$incserver", "-I$inc", '-DKAPPA_EXTENSION_VERSION="0"',
			   '-dumpdir', "$tmp/", '-dumpbase', $base,
			   '-o', "$tmp/$base.o", $src);
	system(@cmd) == 0 or die "gcc failed on $file\n";
	open(my $ci, '<', "$tmp/$base.ci") or die "no call graph for $file: $!\n";
	while (my $line = <$ci>)
	{
		if ($line =~ /^node: \{ title: "([^"]+)" label: "[^\\"]*\\n([^:"]+):\d+/)
		{
			my ($title, $where) = ($1, $2);
			next if $line =~ /shape : ellipse/;    # declared, not defined here
			next unless basename($where) eq $file;
			$defined_in{$title} = $file unless $title =~ /:/;
		}
		elsif ($line =~ /^edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"/)
		{
			push @calls, [$file, $2, $1];
		}
	}
	close($ci);
}

my %edge;    # "a.c b.c" -> { function names }
for my $c (@calls)
{
	my ($file, $callee, $caller) = @$c;
	my $to = $defined_in{$callee} or next;    # Postgres, libc, librdkafka
	next if $to eq $file;
	$edge{"$file $to"}{$callee} = 1;
}

# The layer table from docs/architecture.md.
my (%layer, %layer_name, @layer_order);
open(my $doc, '<', "$root/docs/architecture.md")
  or die "cannot read docs/architecture.md: $!\n";
my $in = 0;
while (<$doc>)
{
	$in = 1, next if /<!-- layers -->/;
	last if /<!-- \/layers -->/;
	next unless $in;
	next unless /^\s*(\d+)\.\s+([^:]+):\s*(.*?)\s*$/;
	my ($n, $name, $files) = ($1, $2, $3);
	push @layer_order, $n;
	$layer_name{$n} = $name;
	for my $f (split /[\s,`]+/, $files)
	{
		next unless $f =~ /\.c$/;
		$layer{$f} = $n;
	}
}
close($doc);
my @problems;
push @problems, "no layer table between <!-- layers --> and <!-- /layers --> in docs/architecture.md"
  unless @layer_order;

for my $src (@sources)
{
	my $f = basename($src);
	push @problems, "$f is not in the layer table of docs/architecture.md"
	  unless defined $layer{$f};
}
for my $f (sort keys %layer)
{
	push @problems, "docs/architecture.md names $f, which is not in src/"
	  unless -e "$root/src/$f";
}

# Layers are numbered top (1) to bottom: an edge may go to the same or a
# larger number.
for my $e (sort keys %edge)
{
	my ($from, $to) = split / /, $e;
	next unless defined $layer{$from} && defined $layer{$to};
	if ($layer{$to} < $layer{$from})
	{
		push @problems,
		  sprintf("%s (layer %d, %s) calls up into %s (layer %d, %s): %s",
				  $from, $layer{$from}, $layer_name{$layer{$from}},
				  $to, $layer{$to}, $layer_name{$layer{$to}},
				  join(', ', sort keys %{ $edge{$e} }));
	}
}

# Cycles: Tarjan's strongly connected components over the file graph.
my %succ;
for my $e (keys %edge)
{
	my ($from, $to) = split / /, $e;
	push @{ $succ{$from} }, $to;
}
my ($index, @stack, %onstack, %idx, %low) = (0);
my @components;
my $strongconnect;
$strongconnect = sub {
	my $v = shift;
	$idx{$v} = $low{$v} = $index++;
	push @stack, $v;
	$onstack{$v} = 1;
	for my $w (sort @{ $succ{$v} // [] })
	{
		if (!defined $idx{$w})
		{
			$strongconnect->($w);
			$low{$v} = $low{$w} if $low{$w} < $low{$v};
		}
		elsif ($onstack{$w})
		{
			$low{$v} = $idx{$w} if $idx{$w} < $low{$v};
		}
	}
	if ($low{$v} == $idx{$v})
	{
		my @comp;
		my $w;
		do
		{
			$w = pop @stack;
			$onstack{$w} = 0;
			push @comp, $w;
		} while ($w ne $v);
		push @components, [sort @comp] if @comp > 1;
	}
};
for my $src (@sources)
{
	my $f = basename($src);
	$strongconnect->($f) unless defined $idx{$f};
}
for my $comp (@components)
{
	my %in = map { $_ => 1 } @$comp;
	my @inner = grep { my ($a, $b) = split / /; $in{$a} && $in{$b} } sort keys %edge;
	push @problems, "call cycle between " . join(', ', @$comp) . ": "
	  . join('; ', map { my ($a, $b) = split / /; "$a -> $b ("
		  . join(', ', sort keys %{ $edge{$_} }) . ")" } @inner);
}

if ($dot)
{
	print "digraph pg_kappa {\n  rankdir=TB;\n";
	for my $n (@layer_order)
	{
		my @files = sort grep { $layer{$_} == $n } keys %layer;
		print "  { rank=same; ", join(' ', map { "\"$_\";" } @files), " }\n";
	}
	for my $e (sort keys %edge)
	{
		my ($from, $to) = split / /, $e;
		print "  \"$from\" -> \"$to\";\n";
	}
	print "}\n";
}
elsif ($list)
{
	for my $e (sort keys %edge)
	{
		my ($from, $to) = split / /, $e;
		printf "%s -> %s (%s)\n", $from, $to, join(', ', sort keys %{ $edge{$e} });
	}
}

if (@problems)
{
	print STDERR "call_edges: $_\n" for @problems;
	printf STDERR "call_edges: %d problem(s) in %d file(s), %d file-level edges\n",
	  scalar(@problems), scalar(@sources), scalar(keys %edge);
	exit 1;
}
printf "call_edges: %d files, %d file-level edges, all pointing down the %d layers of docs/architecture.md, no cycle\n",
  scalar(@sources), scalar(keys %edge), scalar(@layer_order);
exit 0;
