#!/usr/bin/env bash
# bench/kafka_bench.sh — Kafka ingestion throughput and latency, measured
# against the limits of this machine in the same run (issue 3, point 10).
#
#   bash bench/kafka_bench.sh [MESSAGES]        (default 1000000)
#
# Throughput, on MESSAGES JSON messages of ~100 bytes over 32 partitions in
# the dev broker:
#   kcat       kcat consuming the topic to /dev/null (limit: the client)
#   copy       COPY of the same rows, already decoded, into an unlogged
#              table (limit: writing the rows at all)
# (each limit: the median of REPEAT runs)
#   table      a source into an ordinary table
#   view1      a source into a non-retained stream with 1 continuous view
#   view3      the same with 3 views
#   view1_p2   view1 with parallelism => 2
# Each source reads the whole topic from 'earliest', REPEAT times (default 3,
# each into a fresh target; the medians are reported); its time runs from the
# source's creation to the commit of its last batch (server clock).  Each
# source also gets a steady rate: the sum over its workers of each one's
# messages per second from its first batch to the one before its last, without
# the start (worker, metadata, first fetch) and the last batch's wait for
# kappa.max_latency, the fixed costs that weigh on a run of ~1 s.  And the
# CPU time the whole machine used during each run: the 1-view run's CPU
# time spread over all cores is the least time any number of workers can
# take on this machine, which bounds the gain parallelism can show here.
#
# Latency, at a steady LAT_RATE messages/s (default 20000) for LAT_SECONDS
# (default 15): time from handing a message to the producer to seeing it in
# a view (polled every 5 ms), p50 and p99, with default settings and with
# kappa.max_latency = 10ms.
#
# Memory: the peak private memory (RssAnon, sampled every 0.1 s) of the
# worker in each million of MEM_MESSAGES (default 10000000) messages through
# view1, produced in rounds of MESSAGES while consuming (the dev broker keeps
# only ~5 MiB per partition).  MEM_MESSAGES=0 skips it.
#
# Not a test: it asserts nothing.  Starts its own throwaway server and dev
# broker and removes them at the end.  Runs as root (Postgres then runs as
# an unprivileged user) or as a user with sudo, like test/run.sh.
# KAPPA_BENCH_NO_INSTALL=1 uses the installed build as is; KAPPA_BENCH_PG_BIN
# puts another PostgreSQL bin directory first on PATH.
set -uo pipefail

. "$(dirname "$0")/../test/lib.sh"

MESSAGES=${1:-1000000}
PARTITIONS=${PARTITIONS:-32}
LAT_RATE=${LAT_RATE:-20000}
LAT_SECONDS=${LAT_SECONDS:-15}
MEM_MESSAGES=${MEM_MESSAGES:-10000000}
REPEAT=${REPEAT:-3}

if [ -z "${KAPPA_BENCH_NO_INSTALL:-}" ]; then
    kappa_install_deps
    kappa_build >/dev/null || kappa_die "build failed"
    kappa_install >/dev/null || kappa_die "install failed"
fi
[ -n "${KAPPA_BENCH_PG_BIN:-}" ] && export PATH="$KAPPA_BENCH_PG_BIN:$PATH"
kappa_ensure_pg_user

TMP=$(mktemp -d /tmp/pg_kappa-kbench.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(kappa_pg_user)" "$TMP"
BROKER_PID=
cleanup() {
    kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# --- dev broker
"$KAPPA_REPO/test/dev_broker" --topic "bench:$PARTITIONS" --topic "mem:$PARTITIONS" \
    --topic lat:4 --topic lat10:4 >"$TMP/broker.out" 2>"$TMP/broker.err" </dev/null &
BROKER_PID=$!
for _ in $(seq 100); do grep -q '^BOOTSTRAP' "$TMP/broker.out" 2>/dev/null && break; sleep 0.1; done
BS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")
[ -n "$BS" ] || kappa_die "dev broker did not start: $(cat "$TMP/broker.err")"

# --- server
kappa_start_server "$TMP" "max_worker_processes = 16"
PORT=$KAPPA_PORT

psql_q() { kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }

COLS='user_id int, url text, amount numeric, ts timestamptz'
ROWSQL="SELECT ((i::bigint * 7919) % 100000)::int AS user_id, 'https://example.com/page/' || (i % 1000) AS url,
               round(((i::bigint * 31) % 100000) / 100.0, 2) AS amount,
               timestamptz '2024-01-01' + i * interval '10 ms' AS ts
          FROM generate_series(1, $MESSAGES) i"

kappa_log "generating $MESSAGES messages"
psql_q >/dev/null <<SQL
CREATE EXTENSION pg_kappa;
COPY ($ROWSQL) TO '$TMP/rows.csv' (FORMAT csv);
SET timezone = 'UTC';
COPY (SELECT format('{"user_id": %s, "url": "%s", "amount": %s, "ts": "%s"}',
                    user_id, url, amount, ts)
        FROM ($ROWSQL) r) TO '$TMP/messages.json';
CREATE UNLOGGED TABLE unlogged ($COLS);
CREATE UNLOGGED TABLE progress (source text, t timestamptz, slot int, n bigint);
SQL
[ -s "$TMP/messages.json" ] || kappa_die "could not generate the messages"
BYTES=$(wc -c <"$TMP/messages.json")
kappa_log "producing $MESSAGES messages ($((BYTES / MESSAGES)) bytes each on average) to $PARTITIONS partitions"
# sticky partitioning off: spread messages evenly (the mock keeps ~5 MiB per partition)
KCAT_P=(-X linger.ms=20 -X batch.num.messages=10000 -X sticky.partitioning.linger.ms=0)
kcat -P -b "$BS" -t bench "${KCAT_P[@]}" <"$TMP/messages.json" \
    || kappa_die "kcat produce failed"

# --- limits
# median of REPEAT runs of a command printing seconds
median_of() { for _ in $(seq "$REPEAT"); do "$@"; done | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"; }

kcat_seconds() {
    local t0 t1 n
    t0=$(date +%s.%N)
    # kcat at its fastest: a fetch that finds no more data waits
    # fetch.wait.max.ms (500 ms by default) on the dev broker before kcat
    # sees the partition's end, and a consumer that fills librdkafka's
    # prefetch limits stops fetching for up to a second (see
    # kw_wake_fetcher in kafka_worker.c); either would make this limit a
    # matter of luck (0.8 to 1.6 s for the same messages)
    n=$(kcat -C -b "$BS" -t bench -o beginning -e -q -f 'x\n' -X fetch.wait.max.ms=10 \
            -X queued.min.messages=10000000 -X queued.max.messages.kbytes=2097151 | wc -l)
    t1=$(date +%s.%N)
    [ "$n" -eq "$MESSAGES" ] || kappa_die "kcat read $n of $MESSAGES messages (the dev broker dropped some: more partitions?)"
    awk "BEGIN{print $t1 - $t0}"
}
kappa_log "limit: kcat consuming the topic ($REPEAT runs)"
T_KCAT=$(median_of kcat_seconds)
[ -n "$T_KCAT" ] || kappa_die "kcat could not read the topic"

copy_seconds() {
    psql_q -c "TRUNCATE unlogged" -c CHECKPOINT >/dev/null
    psql_q -c '\timing on' -c "COPY unlogged FROM '$TMP/rows.csv' (FORMAT csv)" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{print $1 / 1000}'
}
kappa_log "limit: COPY into an unlogged table ($REPEAT runs)"
T_COPY=$(median_of copy_seconds)
[ -n "$T_COPY" ] || kappa_die "COPY failed"

# --- sources
# busy_ticks: the CPU time all processes of the machine have used, in clock
# ticks (/proc/stat: user, nice, system, irq, softirq, steal)
CLK_TCK=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# run_source NAME TARGET PARALLELISM CHECK: prints "END_TO_END STEADY CPU": the
# seconds from the source's creation to the commit of its last batch (server
# clock), and the steady rate: the sum over the source's workers of each
# one's messages per second from its first batch to the one before its last
# (leaving out the start -- worker, metadata, first fetch -- and the last
# batch's wait for kappa.max_latency).  Every worker's committed count is
# sampled every 5 ms by one server-side loop (not by starting a client each
# time, which would take CPU from the workers); CHECK must then count
# MESSAGES.  CPU is the CPU time (seconds) the whole machine used from
# creating the source to its last message: worker, librdkafka's threads,
# the dev broker, the sampling loop.
run_source() {
    local name=$1 target=$2 par=$3 check=$4 got
    # the previous runs' vacuum work now, not by autovacuum during this one
    psql_q -c VACUUM -c CHECKPOINT >/dev/null
    cpu0=$(busy_ticks)
    psql_q -c "SELECT kappa.create_kafka_source('$name', target => '$target', topic => 'bench',
                 brokers => '$BS', parallelism => $par)" >/dev/null || kappa_die "create $name failed"
    psql_q >/dev/null <<SQL
DO \$\$
DECLARE
    sid integer := (SELECT id FROM kappa.source_catalog WHERE name = '$name');
    total bigint;
BEGIN
    FOR i IN 1 .. 120000 LOOP   -- at most 10 minutes
        WITH status AS (SELECT slot, messages FROM kappa.source_status WHERE source_id = sid),
             sample AS (INSERT INTO progress SELECT '$name', clock_timestamp(), slot, messages FROM status)
        SELECT coalesce(sum(messages), 0) INTO total FROM status;
        EXIT WHEN total >= $MESSAGES;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SQL
    cpu1=$(busy_ticks)
    got=$(psql_q -c "$check")
    [ "$got" = "$MESSAGES" ] || kappa_log "$name: $got of $MESSAGES messages after 10 minutes"
    psql_q <<SQL
WITH commits AS (
    SELECT slot, n, min(t) AS t FROM progress WHERE source = '$name' AND n > 0 GROUP BY slot, n),
ranked AS (
    SELECT slot, n, t, row_number() OVER w AS k, count(*) OVER (PARTITION BY slot) AS commits
      FROM commits WINDOW w AS (PARTITION BY slot ORDER BY t)),
per_worker AS (
    SELECT (max(n) FILTER (WHERE k = commits - 1) - max(n) FILTER (WHERE k = 1))
           / extract(epoch FROM max(t) FILTER (WHERE k = commits - 1) - max(t) FILTER (WHERE k = 1)) AS rate
      FROM ranked WHERE commits >= 3 GROUP BY slot)
SELECT extract(epoch FROM (SELECT max(last_batch_at) FROM kappa.source_status s
                            WHERE s.source_id = c.id) - c.created_at)
       || ' ' || coalesce((SELECT round(sum(rate))::text FROM per_worker), 'n/a')
       || ' ' || round(($cpu1 - $cpu0) / $CLK_TCK.0, 2)
  FROM kappa.source_catalog c WHERE name = '$name';
SQL
    psql_q -c "SELECT kappa.drop_source('$name')" >/dev/null
}

VIEW1="SELECT url, count(*) AS n, sum(amount) AS total, avg(amount) AS mean, max(ts) AS last_ts FROM %s GROUP BY url"
VIEW2="SELECT user_id %% 100 AS bucket, count(*) AS n, max(amount) AS top FROM %s GROUP BY 1"
VIEW3="SELECT date_bin('1 minute', ts, timestamptz 'epoch') AS minute, count(*) AS n, sum(amount) AS total FROM %s GROUP BY 1"

new_stream() {
    local s=$1 views=$2
    psql_q >/dev/null <<SQL
SELECT kappa.create_stream('$s', '$COLS');
SELECT kappa.create_view('${s}_v1', format(\$q\$$VIEW1\$q\$, '$s'));
SQL
    if [ "$views" -ge 3 ]; then
        psql_q >/dev/null <<SQL
SELECT kappa.create_view('${s}_v2', format(\$q\$$VIEW2\$q\$, '$s'));
SELECT kappa.create_view('${s}_v3', format(\$q\$$VIEW3\$q\$, '$s'));
SQL
    fi
}

# measure LABEL VIEWS PARALLELISM: REPEAT runs of a source over the whole
# topic into a fresh target each time (VIEWS 0: an ordinary table, else a
# stream with VIEWS views); prints the medians "END_TO_END STEADY CPU"
measure() {
    local label=$1 views=$2 par=$3 i target check
    for i in $(seq "$REPEAT"); do
        target=${label}_$i
        if [ "$views" -eq 0 ]; then
            psql_q -c "CREATE TABLE $target ($COLS)" >/dev/null
            check="SELECT count(*) FROM $target"
        else
            new_stream "$target" "$views"
            check="SELECT coalesce(sum(n), 0) FROM ${target}_v1"
        fi
        run_source "src_$target" "$target" "$par" "$check"
    done >"$TMP/runs_$label.txt"
    for f in 1 2 3; do
        cut -d' ' -f$f "$TMP/runs_$label.txt" | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"
    done | paste -sd' '
}

kappa_log "source into a table ($REPEAT runs)"
read -r T_TABLE S_TABLE C_TABLE < <(measure table 0 1)
kappa_log "source into a stream with 1 view ($REPEAT runs)"
read -r T_VIEW1 S_VIEW1 C_VIEW1 < <(measure view1 1 1)
kappa_log "source into a stream with 3 views ($REPEAT runs)"
read -r T_VIEW3 S_VIEW3 C_VIEW3 < <(measure view3 3 1)
kappa_log "source into a stream with 1 view, parallelism 2 ($REPEAT runs)"
read -r T_VIEW1P2 S_VIEW1P2 C_VIEW1P2 < <(measure view1_p2 1 2)

# --- latency
# latency TOPIC LABEL: produce LAT_RATE/s for LAT_SECONDS, poll the view
# every 5 ms, print "p50 p99" in ms
latency() {
    local topic=$1 stream="lat_$1"
    psql_q >/dev/null <<SQL
SELECT kappa.create_stream('$stream', 'id bigint, sent_ms bigint');
SELECT kappa.create_view('${stream}_v', 'SELECT count(*) AS n, max(sent_ms) AS last FROM $stream');
SELECT kappa.create_kafka_source('src_$stream', target => '$stream', topic => '$topic',
    brokers => '$BS', start => 'latest');
SQL
    sleep 2
    # poller: clock and the newest visible message, every 5 ms
    printf '%s\n' "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ' ' || coalesce(last, 0) FROM ${stream}_v \\watch 0.005" \
        | kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At \
        >"$TMP/poll_$topic.txt" 2>/dev/null &
    local poller=$!
    sleep 0.5
    # producer: LAT_RATE/s in 200 ticks per second, each message carries its time
    perl -MTime::HiRes=time,sleep -e '
        my ($rate, $secs) = @ARGV; $| = 1;
        my $per_tick = int($rate / 200); my $start = time; my $id = 0;
        for my $tick (0 .. $secs * 200 - 1) {
            my $due = $start + $tick / 200; my $now = time;
            sleep($due - $now) if $due > $now;
            my $ms = int(time * 1000);
            print join("", map { $id++; "{\"id\": $id, \"sent_ms\": $ms}\n" } 1 .. $per_tick);
        }' "$LAT_RATE" "$LAT_SECONDS" \
        | kcat -P -b "$BS" -t "$topic" -X linger.ms=1 -X sticky.partitioning.linger.ms=0
    sleep 2
    kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null
    # for every distinct sent time, the first poll that saw it
    kcat -C -b "$BS" -t "$topic" -o beginning -e -q -f '%s\n' \
        | sed -n 's/.*"sent_ms": \([0-9]*\).*/\1/p' | sort -n | uniq -c >"$TMP/sent_$topic.txt"
    perl -e '
        open my $p, "<", $ARGV[0] or die; my @polls;
        while (<$p>) { push @polls, [$1, $2] if /^(\d+) (\d+)$/ }
        open my $s, "<", $ARGV[1] or die; my @lat; my $i = 0;
        while (<$s>) {
            my ($count, $sent) = /(\d+)\s+(\d+)/ or next;
            $i++ while $i < @polls && $polls[$i][1] < $sent;
            last if $i >= @polls;
            push @lat, ($polls[$i][0] - $sent) x $count;
        }
        @lat = sort { $a <=> $b } @lat;
        printf "%d %d %d\n", $lat[int(@lat * 0.50)], $lat[int(@lat * 0.99)], scalar @lat;
    ' "$TMP/poll_$topic.txt" "$TMP/sent_$topic.txt"
    psql_q -c "SELECT kappa.drop_source('src_$stream')" >/dev/null
}

kappa_log "latency at $LAT_RATE messages/s, default settings"
LAT_DEFAULT=$(latency lat)
kappa_log "latency at $LAT_RATE messages/s, kappa.max_latency = 10ms"
psql_q -c "ALTER SYSTEM SET kappa.max_latency = '10ms'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
LAT_10=$(latency lat10)
psql_q -c "ALTER SYSTEM RESET kappa.max_latency" -c "SELECT pg_reload_conf()" >/dev/null

# --- memory over many messages
MEM_REPORT="skipped"
if [ "$MEM_MESSAGES" -gt 0 ]; then
    kappa_log "memory: $MEM_MESSAGES messages through a stream with 1 view"
    new_stream m1 1
    psql_q -c "SELECT kappa.create_kafka_source('src_mem', target => 'm1', topic => 'mem',
                 brokers => '$BS')" >/dev/null
    sleep 1
    WPID=$(psql_q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_kappa source src_mem'")
    rounds=$(( (MEM_MESSAGES + MESSAGES - 1) / MESSAGES ))
    : >"$TMP/rss.txt"
    for r in $(seq "$rounds"); do
        # produce a round while the worker consumes; sample its private
        # memory (RssAnon: RSS also counts the shared buffers it touched)
        # every 0.1 s and keep the round's peak
        kcat -P -b "$BS" -t mem "${KCAT_P[@]}" <"$TMP/messages.json" &
        producer=$!
        peak=0
        for _ in $(seq 6000); do
            rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$WPID/status")
            [ "${rss:-0}" -gt "$peak" ] && peak=$rss
            if ! kill -0 "$producer" 2>/dev/null &&
               [ "$(psql_q -c 'SELECT coalesce(sum(n), 0) FROM m1_v1')" -ge $((r * MESSAGES)) ]; then
                break
            fi
            sleep 0.1
        done
        wait "$producer"
        echo "$((r * MESSAGES)) $peak" >>"$TMP/rss.txt"
    done
    MEM_REPORT=$(awk '{printf "%s%.0fM: %d MB", (NR > 1 ? ", " : ""), $1 / 1000000, $2 / 1024}' "$TMP/rss.txt")
fi

rate() { awk "BEGIN{printf \"%.0f\", $MESSAGES / $1}"; }
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
row() {
    printf '%8.2f %12s %9s %9s %10s %8s %7.2f' "$1" "$2" "$(ratio "$2" "$R_COPY")" "$(ratio "$2" "$R_KCAT")" \
        "$3" "$(ratio "$3" "$R_COPY")" "$4"
}
CORES=$(nproc)
BOUND=$(ratio "$T_VIEW1" "$(awk "BEGIN{print $C_VIEW1 / $CORES}")")
R_KCAT=$(rate "$T_KCAT"); R_COPY=$(rate "$T_COPY"); R_TABLE=$(rate "$T_TABLE")
R_V1=$(rate "$T_VIEW1"); R_V3=$(rate "$T_VIEW3"); R_V1P2=$(rate "$T_VIEW1P2")

cat <<EOF

pg_kappa Kafka benchmark: $MESSAGES JSON messages (~$((BYTES / MESSAGES)) bytes) over $PARTITIONS partitions, $(nproc) cores

                                   seconds   messages/s   vs COPY   vs kcat   steady/s  vs COPY   CPU s
limit: kcat to /dev/null          $(printf '%8.2f %12s' "$T_KCAT" "$R_KCAT")
limit: COPY into unlogged table   $(printf '%8.2f %12s' "$T_COPY" "$R_COPY")
source -> table                   $(row "$T_TABLE" "$R_TABLE" "$S_TABLE" "$C_TABLE")
source -> stream, 1 view          $(row "$T_VIEW1" "$R_V1" "$S_VIEW1" "$C_VIEW1")
source -> stream, 3 views         $(row "$T_VIEW3" "$R_V3" "$S_VIEW3" "$C_VIEW3")
source -> stream, 1 view, p=2     $(row "$T_VIEW1P2" "$R_V1P2" "$S_VIEW1P2" "$C_VIEW1P2")
parallelism 2 / 1 (1 view):       $(ratio "$R_V1P2" "$R_V1") end to end, $(ratio "$S_VIEW1P2" "$S_VIEW1") steady
CPU bound of this machine:        $BOUND (the 1-view run used $C_VIEW1 CPU s in $(printf '%.2f' "$T_VIEW1") s;
                                  on $CORES cores no number of workers does that work in less than $(awk "BEGIN{printf \"%.2f\", $C_VIEW1 / $CORES}") s)
parallelism 2 / 1 vs that bound:  $(ratio "$(ratio "$R_V1P2" "$R_V1")" "$BOUND") end to end

runs (seconds, steady messages/s, CPU s), of which the medians are shown above:
  table: $(paste -sd, "$TMP/runs_table.txt");  1 view: $(paste -sd, "$TMP/runs_view1.txt")
  3 views: $(paste -sd, "$TMP/runs_view3.txt");  1 view, p=2: $(paste -sd, "$TMP/runs_view1_p2.txt")

(seconds: from creating the source to the commit of its last batch, which
includes starting the worker, reading metadata and the wait of the last
batch for kappa.max_latency; steady: the sum over the workers of each
one's messages/s from its first batch to the one before its last; CPU s:
the CPU time the whole machine used meanwhile -- workers, librdkafka's
threads, the dev broker)

latency produce -> visible in a view at $LAT_RATE messages/s for $LAT_SECONDS s (p50 p99 ms, messages):
  default settings (kappa.max_latency = 100ms):  $LAT_DEFAULT
  kappa.max_latency = 10ms:                       $LAT_10

peak private memory (RssAnon) of one worker (stream, 1 view) in the million up to N messages:
  $MEM_REPORT
EOF
