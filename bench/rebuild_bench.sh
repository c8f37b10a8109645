#!/usr/bin/env bash
# bench/rebuild_bench.sh — rebuilding a continuous view from Kafka while its
# source keeps ingesting, measured against a fresh source reading the same
# topic alone, in the same run (issue 11, point 6).
#
#   bash bench/rebuild_bench.sh [MESSAGES]       (default 1000000)
#
# MESSAGES JSON messages (~110 bytes: id, user_id, url, amount, sent_ms) go
# to a topic of PARTITIONS partitions (default 64) on the dev broker.  Every
# stream has one continuous view,
#   SELECT user_id % 100 AS g, count(*) AS n, sum(id) AS ids,
#          sum(amount) AS total, max(sent_ms) AS last FROM s GROUP BY 1
# A live source reads the whole topic into a stream with the view; then a
# producer keeps producing LIVE_RATE messages/s (default 20000, paced in
# 200 ticks per second) to the same topic; after WARMUP seconds (default
# 5), REBUILDS rounds (default 3) of:
#   fresh       with the producer and the latency poller paused (the live
#               source idle), a new source, parallelism 1, reads the whole
#               topic as it is from 'earliest' into a new non-retained
#               stream with the same view, alone on the machine: the
#               messages the rebuild will replay, but those of the 2 s
#               between the two.  Its time runs from its creation to the
#               commit of its last batch (server clock); its steady rate
#               from its first commit to its last.
#   rebuild     producer and poller resumed, 2 s later kappa.rebuild_view
#               rebuilds the view, which replays the topic up to the
#               offsets the live source had committed then.  Its time runs
#               from the registration (kappa.view_rebuilds.started_at) to
#               the replay's last message (replayed = to_replay) and to the
#               swap (the view is live again); its steady rate from its
#               first replayed batch to its last, from kappa.view_rebuilds
#               sampled every 5 ms by one server-side loop.
# Alternating the two keeps a busy machine's noise out of the ratio (each
# round's pair sees the same neighbours); medians of the rounds are
# reported.  Throughout, the produce-to-visible latency of the live source
# (as in bench/kafka_bench.sh: every message carries its send time, a
# poller reads the view every 5 ms): p50 and p99 of the messages sent
# during the rebuilds and of those sent outside them.
# Prints replay rate / fresh rate (target >= 0.7), the live p99 during the
# rebuilds (target < 500 ms), the live rate the producer achieved; the CPU
# the whole machine used in each phase and the bound it puts on the ratio
# (the fresh source alone keeps both cores of a 2-core machine busy -- its
# worker, librdkafka's fetch thread, the dev broker -- so a replay that
# shares the machine with the live load can go no faster than the cores
# the live load leaves it); where the workers' time went (pg_stat_activity
# sampled every 5 ms: CPU, waits, between batches i.e. reading Kafka).  And
# checks, once the producer stopped and the live source caught up, that the
# rebuilt view equals its query run as plain SQL over every message
# produced, and that messages produced = applied + dead letters.
#
# Not a test: it asserts nothing but the exactness checks (exit 1 if they
# fail).  Starts its own throwaway server and dev broker and removes them at
# the end.  Runs as root (Postgres then runs as an unprivileged user) or as
# a user with sudo.  KAPPA_BENCH_NO_INSTALL=1 uses the installed build as
# is; KAPPA_PG_BIN=DIR builds against and installs into the PostgreSQL whose
# bin directory is DIR (e.g. a private copy) instead of the system's.
# SOURCE_OPTIONS (jsonb, default '{}') are the options of every source
# (the live one's are its replay's too), e.g. librdkafka properties.
# PERF=PREFIX records the first fresh source's worker and the first
# rebuild's worker with `perf record -g` into PREFIX.fresh and
# PREFIX.rebuild.
set -uo pipefail

. "$(dirname "$0")/../test/lib.sh"

MESSAGES=${1:-1000000}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PARTITIONS=${PARTITIONS:-64}
LIVE_RATE=${LIVE_RATE:-20000}
WARMUP=${WARMUP:-5}
REBUILDS=${REBUILDS:-3}
PERF=${PERF:-}
SOURCE_OPTIONS=${SOURCE_OPTIONS:-'{}'}

if [ -z "${KAPPA_BENCH_NO_INSTALL:-}" ]; then
    kappa_install_deps
    kappa_build >/dev/null || kappa_die "build failed"
    kappa_install >/dev/null || kappa_die "install failed"
fi
[ -n "${KAPPA_BENCH_PG_BIN:-}" ] && export PATH="$KAPPA_BENCH_PG_BIN:$PATH"
kappa_ensure_pg_user

TMP=$(mktemp -d /tmp/pg_kappa-rbench.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(kappa_pg_user)" "$TMP"
BROKER_PID=
POLLER=
PRODUCER=
PERF_PID=
# descendants PID: the processes below PID
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
cleanup() {
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null
    [ -n "$PRODUCER" ] && kill "$PRODUCER" 2>/dev/null
    if [ -n "$POLLER" ]; then
        # (it may be stopped for a fresh source's run)
        for p in $(descendants "$POLLER") "$POLLER"; do kill "$p" 2>/dev/null; kill -CONT "$p" 2>/dev/null; done
    fi
    kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# --- dev broker (it keeps ~5 MiB per partition: the topic must hold the
# history and everything the live producer adds, see docs/dev-broker.md)
"$KAPPA_REPO/test/dev_broker" --topic "rb:$PARTITIONS" \
    >"$TMP/broker.out" 2>"$TMP/broker.err" </dev/null &
BROKER_PID=$!
for _ in $(seq 100); do grep -q '^BOOTSTRAP' "$TMP/broker.out" 2>/dev/null && break; sleep 0.1; done
BS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")
[ -n "$BS" ] || kappa_die "dev broker did not start: $(cat "$TMP/broker.err")"

# --- server
kappa_start_server "$TMP" "max_worker_processes = 16"
PORT=$KAPPA_PORT
psql_q() { kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }

COLS='id bigint, user_id int, url text, amount numeric, sent_ms bigint'
VIEW='SELECT user_id %% 100 AS g, count(*) AS n, sum(id) AS ids, sum(amount) AS total, max(sent_ms) AS last FROM %s GROUP BY 1'

kappa_log "generating $MESSAGES messages"
psql_q >/dev/null <<SQL
CREATE EXTENSION pg_kappa;
COPY (SELECT format('{"id": %s, "user_id": %s, "url": "https://example.com/page/%s", "amount": %s, "sent_ms": 0}',
                    i, (i * 7919) % 100000, i % 1000, round(((i * 31) % 100000) / 100.0, 2))
        FROM generate_series(1::bigint, $MESSAGES) i) TO '$TMP/history.json';
CREATE UNLOGGED TABLE progress (t timestamptz, n bigint, w text);
CREATE UNLOGGED TABLE fresh_waits (run int, w text);
CREATE UNLOGGED TABLE rebuild_progress (k int, t timestamptz, state text, replayed bigint, to_replay bigint,
    started_at timestamptz, pid int, dead_letters bigint, gaps bigint, last_error text,
    worker_wait text, live_wait text);
SQL
[ -s "$TMP/history.json" ] || kappa_die "could not generate the messages"
BYTES=$(wc -c <"$TMP/history.json")
kappa_log "producing $MESSAGES messages ($((BYTES / MESSAGES)) bytes each on average) to $PARTITIONS partitions"
# sticky partitioning off: spread messages evenly (the mock keeps ~5 MiB per partition)
kcat -P -b "$BS" -t rb -X linger.ms=20 -X batch.num.messages=10000 \
    -X sticky.partitioning.linger.ms=0 <"$TMP/history.json" || kappa_die "kcat produce failed"

# busy_ticks: the CPU time all processes of the machine have used, in clock
# ticks (/proc/stat: user, nice, system, irq, softirq, steal)
CLK_TCK=$(getconf CLK_TCK)
CORES=$(nproc)
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

new_stream() {
    psql_q >/dev/null <<SQL
SELECT kappa.create_stream('$1', '$COLS');
SELECT kappa.create_view('${1}_v', format(\$q\$$VIEW\$q\$, '$1'));
SQL
}

# wait_source NAME COUNT: samples the source's committed count and its
# worker's state every 5 ms (one server-side loop) until it reaches COUNT
wait_source() {
    psql_q -c "TRUNCATE progress" >/dev/null
    psql_q >/dev/null <<SQL
DO \$\$
DECLARE
    sid integer := (SELECT id FROM kappa.source_catalog WHERE name = '$1');
    total bigint;
BEGIN
    FOR i IN 1 .. 60000 LOOP   -- at most 5 minutes
        SELECT coalesce(sum(messages), 0) INTO total FROM kappa.source_status WHERE source_id = sid;
        PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity as of now
        INSERT INTO progress VALUES (clock_timestamp(), total,
            (SELECT CASE WHEN a.state = 'active' THEN coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU')
                         ELSE 'between batches' END FROM pg_stat_activity a
              WHERE a.application_name = 'pg_kappa source $1'));
        EXIT WHEN total >= $2;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SQL
}

# fresh_source I N: a new source over the whole topic (N messages) into a
# new stream; prints "N END_TO_END_SECONDS STEADY_RATE CPU_SECONDS COMMITS"
# (COMMITS: the batches the samples saw)
fresh_source() {
    local name="fresh_$1" n=$2 got
    new_stream "s_$1"
    psql_q -c VACUUM -c CHECKPOINT >/dev/null
    local cpu0 cpu1
    cpu0=$(busy_ticks)
    psql_q -c "SELECT kappa.create_kafka_source('$name', target => 's_$1', topic => 'rb',
                 brokers => '$BS', options => '$SOURCE_OPTIONS')" >/dev/null || kappa_die "create $name failed"
    wait_source "$name" "$n"
    cpu1=$(busy_ticks)
    got=$(psql_q -c "SELECT coalesce(sum(n), 0) FROM s_${1}_v")
    [ "$got" = "$n" ] || kappa_log "$name: $got of $n messages in its view"
    psql_q -c "WITH first AS (SELECT min(t) AS t FROM progress WHERE n > 0),
                    f AS (SELECT p.n, p.t FROM progress p, first WHERE p.t = first.t),
                    last AS (SELECT min(t) AS t FROM progress WHERE n >= $n)
               SELECT $n || ' ' || extract(epoch FROM (SELECT max(last_batch_at) FROM kappa.source_status s
                                            WHERE s.source_id = c.id) - c.created_at)
                      || ' ' || coalesce(round(($n - f.n) / nullif(extract(epoch FROM last.t - f.t), 0))::text, 'n/a')
                      || ' ' || round(($cpu1 - $cpu0) / $CLK_TCK.0, 2)
                      || ' ' || (SELECT count(DISTINCT n) FROM progress WHERE n > 0)
                 FROM kappa.source_catalog c, f, last WHERE name = '$name'"
    psql_q -c "INSERT INTO fresh_waits SELECT $1, w FROM progress WHERE w IS NOT NULL AND n < $n"
    psql_q -c "SELECT kappa.drop_source('$name')" -c "SELECT kappa.drop_stream('s_$1', cascade => true)" >/dev/null 2>&1
}

# perf_attach APPLICATION_NAME FILE: in the background, attaches `perf
# record -g` to the backend of that application_name as soon as it exists;
# perf ends with it
perf_attach() {
    (
        for _ in $(seq 2000); do
            pid=$(psql_q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'")
            [ -n "$pid" ] && exec perf record -g -o "$2" -p "$pid" >"$2.out" 2>&1
            sleep 0.05
        done
    ) &
    PERF_PID=$!
}


# --- the live case
kappa_log "live source over the topic"
new_stream live
psql_q -c "SELECT kappa.create_kafka_source('src_live', target => 'live', topic => 'rb',
             brokers => '$BS', options => '$SOURCE_OPTIONS')" >/dev/null || kappa_die "create src_live failed"
wait_source src_live "$MESSAGES"
MAT_BEFORE=$(psql_q -c "SELECT materialization FROM kappa.views WHERE view_name = 'live_v'")
psql_q -c VACUUM -c CHECKPOINT >/dev/null

# poller: clock and the newest visible message, every 5 ms
printf '%s\n' "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ' ' || coalesce(max(last), 0) FROM live_v \\watch 0.005" \
    | kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At \
    >"$TMP/poll.txt" 2>"$TMP/poll.err" &
POLLER=$!

# producer: LIVE_RATE/s in 200 ticks per second until $TMP/stop exists,
# paused while $TMP/pause exists; ids go on from MESSAGES + 1, every message carries its
# send time and is also written to live.json; at the end "COUNT SECONDS"
# (not counting the pauses) in live.json.done.  kcat sends every 1 ms (linger.ms, as in
# kafka_bench.sh's latency runs) to one partition for 10 ms at a time
# (librdkafka's sticky partitioner, its default): record batches of ~20
# messages.  Not one partition per message: the dev broker answers a fetch
# with one record batch per partition (librdkafka 2.0.2's mock cluster), so
# a replay of single-message batches would measure the mock, not pg_kappa
# (~12,000 messages/s over 64 partitions).
kappa_log "producing $LIVE_RATE messages/s to the topic"
perl -MTime::HiRes=time,sleep -e '
    my ($rate, $first, $stop, $pause, $log) = @ARGV; $| = 1;
    open my $out, ">", $log or die "$log: $!";
    my $per_tick = int($rate / 200); my $start = time; my $id = $first - 1; my $tick = 0;
    my $paused = 0;
    while (1) {
        if (-e $pause) { $paused = time unless $paused; sleep 0.01; next }
        if ($paused) { $start += time - $paused; $paused = 0 }
        my $due = $start + $tick / 200; my $now = time;
        sleep($due - $now) if $due > $now;
        last if -e $stop || time - $start > 600;
        my $ms = int(time * 1000);
        my $chunk = join("", map { $id++;
            sprintf("{\"id\": %d, \"user_id\": %d, \"url\": \"https://example.com/page/%d\", \"amount\": %.2f, \"sent_ms\": %d}\n",
                    $id, ($id * 7919) % 100000, $id % 1000, (($id * 31) % 100000) / 100, $ms) } 1 .. $per_tick);
        print $chunk; print $out $chunk; $tick++;
    }
    close $out;
    open my $done, ">", "$log.done" or die; printf $done "%d %.3f\n", $id - $first + 1, time - $start; close $done;
    ' "$LIVE_RATE" "$((MESSAGES + 1))" "$TMP/stop" "$TMP/pause" "$TMP/live.json" \
    | kcat -P -b "$BS" -t rb -X linger.ms=1 -X sticky.partitioning.linger.ms=10 &
PRODUCER=$!
# the CPU the live load alone takes (live source, producer, poller, dev
# broker), from the warm-up's second second on
sleep 1
W0=$(busy_ticks); WT0=$(date +%s.%N)
sleep "$((WARMUP - 1))"
W1=$(busy_ticks); WT1=$(date +%s.%N)
LIVE_CORES=$(awk "BEGIN{printf \"%.2f\", ($W1 - $W0) / $CLK_TCK / ($WT1 - $WT0)}")

# rebuild K: kappa.rebuild_view, then kappa.view_rebuilds sampled every 5 ms
# (one server-side loop, a transaction a sample) until the view is live again; prints "TO_REPLAY
# SECONDS_TO_LAST_REPLAYED SECONDS_TO_LIVE STEADY_RATE CPU_SECONDS
# DEAD_LETTERS GAPS REGISTERED_MS LIVE_MS COMMITS" (REGISTERED_MS, LIVE_MS:
# epoch ms; COMMITS: the replay's batches the samples saw)
rebuild() {
    local k=$1 cpu0 cpu1 state
    cpu0=$(busy_ticks)
    psql_q >/dev/null <<SQL || kappa_die "rebuild_view failed"
SELECT kappa.rebuild_view('live_v');
DO \$\$
DECLARE
    r record;
    live_pid integer := (SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_kappa source src_live');
BEGIN
    FOR i IN 1 .. 60000 LOOP   -- at most 5 minutes
        SELECT * INTO r FROM kappa.view_rebuilds WHERE view = 'live_v'::regclass;
        PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity as of now
        INSERT INTO rebuild_progress VALUES ($k, clock_timestamp(), coalesce(r.state, 'live'), r.replayed,
            r.to_replay, r.started_at, r.pid, r.dead_letters, r.gaps, r.last_error,
            (SELECT CASE WHEN a.state = 'active' THEN coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU')
                         ELSE 'between batches' END FROM pg_stat_activity a
              WHERE a.application_name = 'pg_kappa rebuild of live_v: replay of src_live'),
            (SELECT CASE WHEN a.state = 'active' THEN coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU')
                         ELSE 'between batches' END FROM pg_stat_activity a WHERE a.pid = live_pid));
        EXIT WHEN r.id IS NULL OR r.state = 'failed';
        -- a sample a transaction: a snapshot held for the whole loop would
        -- hold up the swap, which waits for older snapshots
        COMMIT;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SQL
    cpu1=$(busy_ticks)
    state=$(psql_q -c "SELECT state || coalesce(': ' || last_error, '') FROM rebuild_progress
                        WHERE k = $k ORDER BY t DESC LIMIT 1")
    if [ "$state" != live ]; then
        # the first offset the dev broker still holds, by partition
        local q=() p
        for p in $(seq 0 $((PARTITIONS - 1))); do q+=(-t "rb:$p:-2"); done
        kcat -Q -b "$BS" "${q[@]}" \
            | sed -n 's/^rb \[\([0-9]*\)\] offset \([0-9]*\)/\1:\2/p' | paste -sd' ' >&2
        kappa_die "rebuild $k did not end: $state"
    fi
    psql_q -F ' ' <<SQL
WITH p AS (SELECT * FROM rebuild_progress WHERE k = $k),
     reg AS (SELECT max(started_at) AS t0, max(to_replay) AS total, max(dead_letters) AS dead,
                    max(gaps) AS gaps FROM p),
     done AS (SELECT min(p.t) AS t FROM p, reg WHERE p.replayed >= reg.total),
     live AS (SELECT min(t) AS t FROM p WHERE state = 'live'),
     first AS (SELECT p.t, p.replayed FROM p WHERE p.replayed > 0 ORDER BY p.t LIMIT 1)
SELECT reg.total,
       round(extract(epoch FROM done.t - reg.t0), 3),
       round(extract(epoch FROM live.t - reg.t0), 3),
       coalesce(round((reg.total - first.replayed) / nullif(extract(epoch FROM done.t - first.t), 0))::text, 'n/a'),
       round(($cpu1 - $cpu0) / $CLK_TCK.0, 2),
       reg.dead, reg.gaps,
       (extract(epoch FROM reg.t0) * 1000)::bigint,
       (extract(epoch FROM live.t) * 1000)::bigint,
       (SELECT count(DISTINCT replayed) FROM p WHERE replayed > 0)
  FROM reg, done, live, first;
SQL
}

# topic_size: the messages in the topic (the sum of its partitions' ends)
topic_size() {
    local q=() p
    for p in $(seq 0 $((PARTITIONS - 1))); do q+=(-t "rb:$p:-1"); done
    kcat -Q -b "$BS" "${q[@]}" \
        | awk '/^rb \[/ {n += $4} END {print n}'
}

: >"$TMP/fresh.txt"
: >"$TMP/rebuilds.txt"
for k in $(seq "$REBUILDS"); do
    # the fresh source, alone: producer and poller paused, the live source
    # idle; it reads the whole topic as it is, the messages the rebuild
    # will replay but those of its last 2 s
    # (the poller stops once every message sent is visible, and goes on
    # before the producer does: no message's latency counts the pause)
    touch "$TMP/pause"
    sleep 1
    POLLER_PIDS=$(descendants "$POLLER")
    kill -STOP $POLLER_PIDS 2>/dev/null
    N=$(topic_size)
    [ -n "$PERF" ] && [ "$k" = 1 ] && perf_attach 'pg_kappa source fresh_1' "$PERF.fresh"
    kappa_log "round $k of $REBUILDS: a fresh source over the topic ($N messages), alone"
    fresh_source "$k" "$N" >>"$TMP/fresh.txt"
    [ -n "$PERF_PID" ] && { wait "$PERF_PID" 2>/dev/null; PERF_PID=; }
    kill -CONT $POLLER_PIDS 2>/dev/null
    rm -f "$TMP/pause"
    sleep 2
    [ -n "$PERF" ] && [ "$k" = 1 ] && perf_attach 'pg_kappa rebuild of live_v: replay of src_live' "$PERF.rebuild"
    kappa_log "round $k of $REBUILDS: kappa.rebuild_view under the live load"
    rebuild "$k" >>"$TMP/rebuilds.txt"
    [ -n "$PERF_PID" ] && { wait "$PERF_PID" 2>/dev/null; PERF_PID=; }
done
sleep 2     # the live source goes on into the new version
touch "$TMP/stop"
wait "$PRODUCER"; PRODUCER=
read -r LIVE_COUNT LIVE_SECONDS <"$TMP/live.json.done"
PRODUCED=$((MESSAGES + LIVE_COUNT))

kappa_log "waiting for the live source to apply all $PRODUCED messages"
psql_q >/dev/null <<SQL
DO \$\$
BEGIN
    FOR i IN 1 .. 6000 LOOP   -- at most 60 s
        EXIT WHEN (SELECT coalesce(sum(messages), 0) FROM kappa.source_status s JOIN kappa.source_catalog c
                     ON c.id = s.source_id WHERE c.name = 'src_live') >= $PRODUCED;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
\$\$;
SQL
sleep 0.5
for p in $(descendants "$POLLER") "$POLLER"; do kill "$p" 2>/dev/null; done
wait "$POLLER" 2>/dev/null; POLLER=

# --- figures: rates per round, then medians
awk '{printf "%.0f %.0f %s\n", $1 / $2, $1 / $3, $4}' "$TMP/rebuilds.txt" >"$TMP/rates.txt"
awk '{printf "%.0f\n", $1 / $2}' "$TMP/fresh.txt" >"$TMP/fresh_rates.txt"
# per round: replay / fresh, end to end and steady
paste -d' ' "$TMP/rates.txt" "$TMP/fresh_rates.txt" "$TMP/fresh.txt" \
    | awk '{printf "%.2f %.2f\n", $1 / $4, ($3 == "n/a" || $7 == "n/a") ? 0 : $3 / $7}' >"$TMP/ratios.txt"
med() { awk -v f="$2" '{print $f}' "$1" | sort -g | sed -n "$(( ($3 + 1) / 2 ))p"; }
T_FRESH=$(med "$TMP/fresh.txt" 2 "$REBUILDS")
S_FRESH=$(med "$TMP/fresh.txt" 3 "$REBUILDS")
C_FRESH=$(med "$TMP/fresh.txt" 4 "$REBUILDS")
B_FRESH=$(med "$TMP/fresh.txt" 5 "$REBUILDS")
N_FRESH=$(med "$TMP/fresh.txt" 1 "$REBUILDS")
R_FRESH=$(med "$TMP/fresh_rates.txt" 1 "$REBUILDS")
Q_END=$(med "$TMP/ratios.txt" 1 "$REBUILDS")
Q_STEADY=$(med "$TMP/ratios.txt" 2 "$REBUILDS")
R_REPLAY=$(med "$TMP/rates.txt" 1 "$REBUILDS")
R_REPLAY_LIVE=$(med "$TMP/rates.txt" 2 "$REBUILDS")
S_REPLAY=$(med "$TMP/rates.txt" 3 "$REBUILDS")
T_REPLAYED=$(med "$TMP/rebuilds.txt" 2 "$REBUILDS")
T_LIVE=$(med "$TMP/rebuilds.txt" 3 "$REBUILDS")
C_REBUILD=$(med "$TMP/rebuilds.txt" 5 "$REBUILDS")
TO_REPLAY=$(med "$TMP/rebuilds.txt" 1 "$REBUILDS")
B_REPLAY=$(med "$TMP/rebuilds.txt" 10 "$REBUILDS")
R_DEAD=$(awk '{s += $6} END {print s}' "$TMP/rebuilds.txt")
R_GAPS=$(awk '{s += $7} END {print s}' "$TMP/rebuilds.txt")
# the rebuilds' windows [registered, live again), one per line
awk '{print $8, $9}' "$TMP/rebuilds.txt" >"$TMP/windows.txt"

# where the replay worker's time went while it replayed, and the live
# worker's during the rebuilds: shares of the 5 ms samples of
# pg_stat_activity (CPU: active and not waiting)
waits() {
    psql_q -c "SELECT string_agg(w || ' ' || pct || '%', ', ' ORDER BY n DESC)
                 FROM (SELECT $1 AS w, count(*) AS n,
                              round(100.0 * count(*) / sum(count(*)) OVER ()) AS pct
                         FROM rebuild_progress WHERE $2 AND $1 IS NOT NULL GROUP BY 1) s WHERE pct >= 1"
}
WAITS_REBUILD=$(waits worker_wait "state = 'building'")
WAITS_FRESH=$(psql_q -c "SELECT string_agg(w || ' ' || pct || '%', ', ' ORDER BY n DESC)
                           FROM (SELECT w, count(*) AS n, round(100.0 * count(*) / sum(count(*)) OVER ()) AS pct
                                   FROM fresh_waits GROUP BY 1) s WHERE pct >= 1")
WAITS_LIVE=$(waits live_wait "state <> 'live'")

# --- latency: for every send time, the first poll that saw it; p50, p99,
# max and count of the messages sent inside the rebuilds' windows ("in") or
# outside them ("out"), the first second of production left out
sed -n 's/.*"sent_ms": \([0-9]*\).*/\1/p' "$TMP/live.json" | sort -n | uniq -c >"$TMP/sent.txt"
latency() {
    perl -e '
        my ($which) = $ARGV[3];
        open my $w, "<", $ARGV[2] or die; my @win;
        while (<$w>) { push @win, [$1, $2] if /^(\d+) (\d+)$/ }
        open my $p, "<", $ARGV[0] or die; my @polls;
        while (<$p>) { push @polls, [$1, $2] if /^(\d+) (\d+)$/ }
        open my $s, "<", $ARGV[1] or die; my @lat; my $i = 0; my $start;
        while (<$s>) {
            my ($count, $sent) = /(\d+)\s+(\d+)/ or next;
            $start //= $sent;
            next if $sent < $start + 1000;
            my $in = grep { $sent >= $_->[0] && $sent < $_->[1] } @win;
            next if ($which eq "in") != ($in > 0);
            $i++ while $i < @polls && $polls[$i][1] < $sent;
            last if $i >= @polls;
            push @lat, ($polls[$i][0] - $sent) x $count;
        }
        @lat = sort { $a <=> $b } @lat;
        if (@lat) { printf "%d %d %d %d\n", $lat[int(@lat * 0.50)], $lat[int(@lat * 0.99)], $lat[-1], scalar @lat }
        else { print "n/a n/a n/a 0\n" }
    ' "$TMP/poll.txt" "$TMP/sent.txt" "$TMP/windows.txt" "$1"
}
read -r L50_OUT L99_OUT LMAX_OUT LN_OUT < <(latency out)
read -r L50_IN L99_IN LMAX_IN LN_IN < <(latency in)

# --- exactness: the rebuilt view against its query over every message produced
kappa_log "checking the rebuilt view against plain SQL over the $PRODUCED messages produced"
CHECK=$(psql_q <<SQL
CREATE UNLOGGED TABLE produced (j jsonb);
COPY produced FROM '$TMP/history.json';
COPY produced FROM '$TMP/live.json';
CREATE TEMP VIEW expected AS
  SELECT (j->>'user_id')::int % 100 AS g, count(*) AS n, sum((j->>'id')::bigint) AS ids,
         sum((j->>'amount')::numeric) AS total, max((j->>'sent_ms')::bigint) AS last
    FROM produced GROUP BY 1;
SELECT (SELECT count(*) FROM produced)
       || ' ' || (SELECT coalesce(sum(n), 0) FROM live_v)
       || ' ' || (SELECT coalesce(sum(messages) FILTER (WHERE kind = 'dead_letter'), 0) FROM kappa.errors WHERE source = 'src_live')
       || ' ' || (SELECT coalesce(sum(messages) FILTER (WHERE kind = 'gap'), 0) FROM kappa.errors WHERE source = 'src_live')
       || ' ' || (SELECT count(*) FROM ((TABLE live_v EXCEPT ALL TABLE expected)
                                        UNION ALL (TABLE expected EXCEPT ALL TABLE live_v)) d)
       || ' ' || (SELECT (materialization::text <> '$MAT_BEFORE')::text FROM kappa.views WHERE view_name = 'live_v');
SQL
)
read -r N_PRODUCED N_APPLIED N_DEAD N_GAPS N_DIFF REBUILT <<<"$CHECK"
EXACT=yes
[ "$N_PRODUCED" = "$PRODUCED" ] || EXACT=no
[ "$N_PRODUCED" = "$((N_APPLIED + N_DEAD))" ] && [ "$N_GAPS" = 0 ] || EXACT=no
[ "$N_DIFF" = 0 ] && [ "$REBUILT" = true ] && [ "$R_GAPS" = 0 ] || EXACT=no

ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
share() { awk "BEGIN{printf \"%.0f%%\", 100 * $1 / ($2 * $CORES)}"; }
cat <<REPORT

pg_kappa rebuild benchmark: $MESSAGES JSON messages (~$((BYTES / MESSAGES)) bytes) over $PARTITIONS partitions, $CORES cores$([ "$SOURCE_OPTIONS" != '{}' ] && echo ", sources with options $SOURCE_OPTIONS")
(load average at the start: $LOAD_BEFORE; at the end: $(cut -d' ' -f1-3 /proc/loadavg))

                                         seconds   messages/s   steady/s   CPU s (share of the machine)
fresh source, alone (median of $REBUILDS)     $(printf '%8.2f %12s %10s %7s (%s)' "$T_FRESH" "$R_FRESH" "$S_FRESH" "$C_FRESH" "$(share "$C_FRESH" "$T_FRESH")")
rebuild, replay (median of $REBUILDS)          $(printf '%8.2f %12s %10s' "$T_REPLAYED" "$R_REPLAY" "$S_REPLAY")
rebuild, to live again (median of $REBUILDS)   $(printf '%8.2f %12s %10s %7s (%s)' "$T_LIVE" "$R_REPLAY_LIVE" "" "$C_REBUILD" "$(share "$C_REBUILD" "$T_LIVE")")
  fresh runs (messages, s, steady/s, CPU s, commits): $(paste -sd, "$TMP/fresh.txt")
  rebuilds (messages, s to the last replayed, s to live, steady/s, CPU s): $(cut -d' ' -f1-5 "$TMP/rebuilds.txt" | paste -sd,)

replay / fresh source:            $Q_END end to end, $Q_STEADY steady (target >= 0.7; medians of the rounds': $(paste -sd, "$TMP/ratios.txt"))
to live again / fresh source:     $(ratio "$R_REPLAY_LIVE" "$R_FRESH") (medians)
CPU bound of this machine:        $(awk "BEGIN{b = ($CORES - $LIVE_CORES) / ($C_FRESH / $T_FRESH); printf \"%.2f\", (b > 1 ? 1 : b)}") (the live load alone takes $LIVE_CORES of the $CORES cores, the fresh source took $(awk "BEGIN{printf \"%.2f\", $C_FRESH / $T_FRESH}"))
batches (as the samples saw them): fresh source $B_FRESH (~$(awk "BEGIN{printf \"%.0f\", $N_FRESH / $B_FRESH}") messages each), replay $B_REPLAY (~$(awk "BEGIN{printf \"%.0f\", $TO_REPLAY / $B_REPLAY}") each) (medians)
fresh source's worker:            $WAITS_FRESH
replay worker while replaying:    $WAITS_REBUILD
live worker during the rebuilds:  $WAITS_LIVE
live producer:                    $LIVE_COUNT messages in $LIVE_SECONDS s = $(awk "BEGIN{printf \"%.0f\", $LIVE_COUNT / $LIVE_SECONDS}") messages/s (asked for $LIVE_RATE)
live latency produce -> visible in the view (p50 p99 max ms, messages):
  outside the rebuilds:           $L50_OUT $L99_OUT $LMAX_OUT $LN_OUT
  during the rebuilds:            $L50_IN $L99_IN $LMAX_IN $LN_IN   (target p99 < 500)
  p99 during / outside:           $(ratio "$L99_IN" "$L99_OUT")

exactness: produced $N_PRODUCED = applied $N_APPLIED + dead letters $N_DEAD (gaps $N_GAPS);
  the rebuilt view (new materialization: $REBUILT) against its query over the
  produced messages: $N_DIFF rows differ; the replays' dead letters $R_DEAD, gaps $R_GAPS: $EXACT

(fresh: from creating the source to the commit of its last batch; steady:
from its first commit to its last.  replay: from the registration to the
replay's last message, steady from its first replayed batch; to live
again: to the swap.  CPU s: the CPU time the whole machine used -- the
workers, librdkafka's threads, the dev broker, and during a rebuild the
live source, the producer and the poller too -- and its share of the
$CORES cores over that time)
REPORT
[ "$EXACT" = yes ]
