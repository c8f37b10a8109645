#!/usr/bin/env bash
# bench/cdc_bench.sh — change data capture: keyed changes from Kafka into a
# table, and continuous views over a table that is updated, measured against
# the limits of this machine in the same run (the CDC issue's performance
# points).
#
#   bash bench/cdc_bench.sh [CHANGES [KEYS [TABLE_ROWS]]]
#        (defaults 1000000 changes over 100000 keys; a 1000000-row table)
#
# 1. Upsert ingest.  CHANGES changes over KEYS keys (key {"id": N}, a JSON
#    value of five columns; every 50th change a tombstone), produced keyed
#    (kcat -K, so each key's changes are in one partition, in order) to
#    PARTITIONS partitions of the dev broker, read by
#    kappa.create_kafka_source(..., envelope => 'upsert') into a table with
#    a primary key.  Against:
#      copy     COPY of the final rows (each key's last change, tombstoned
#               keys left out) into the same fresh table (the limit)
#      client   what JDBC sink connectors do: a client (psql, from SQL
#               generated beforehand) sending the same changes in order, 500
#               per transaction as one INSERT ... ON CONFLICT (id) DO UPDATE
#               SET ... and one DELETE of the batch's tombstoned keys (a
#               statement cannot update a row twice: within a batch each key's
#               last change counts, as the connectors' reduction buffers do).
#               The whole client time, reading no Kafka at all.
#    Targets: the source's changes/s >= 0.5x COPY's rows/s; the source >= 2x
#    as fast as the client.
#
# 2. Views over a table of TABLE_ROWS rows (1,000 groups, an index on the
#    group key) with one continuous view:
#      inv      SELECT g, count(*), sum(x bigint), avg(y numeric) ... GROUP BY g
#               (every aggregate retracts in place)
#      minmax   SELECT g, count(*), min(x), max(y) ... GROUP BY g
#               (a group a row leaves is recomputed from the table)
#    (a) UPDATES single-row UPDATE transactions (pgbench, 1 client; default
#        20000) with each view vs the same without a view: target <= 1.5x
#        the cost (tps without / tps with), with the server's default
#        settings (fsync on) and again with synchronous_commit = off, where
#        the commit's flush no longer hides the work per statement;
#    (b) one UPDATE of TABLE_ROWS/10 rows (UPDATE_ROWS=n for another size)
#        with the view vs REFRESH MATERIALIZED VIEW of the same query:
#        target >= 5x as fast.  Also printed: the UPDATE without a view, and
#        the view's own time (the difference) vs REFRESH.
#    minmax is reported beside inv; the targets are inv's.
#
# Every time is the median of REPEAT runs (default 3; each source run and
# COPY into a fresh table).  The tables the source and the client fill are
# checked against the final rows, and each view against its query as plain
# SQL (a view that differs stops the run).  Not a test: it asserts nothing.
#
# Starts its own throwaway server (default settings, loopback only) and dev
# broker and removes them at the end.  Runs as root (Postgres then runs as an
# unprivileged user) or as a user with sudo, like test/run.sh.  Builds and
# installs with PG_CONFIG (default: pg_config on PATH) and runs that
# installation's server; KAPPA_BENCH_NO_INSTALL=1 uses the installed build.
set -uo pipefail

. "$(dirname "$0")/../test/lib.sh"

CHANGES=${1:-1000000}
KEYS=${2:-100000}
TABLE_ROWS=${3:-1000000}
PARTITIONS=${PARTITIONS:-32}
UPDATES=${UPDATES:-20000}
REPEAT=${REPEAT:-3}
BATCH=500
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_BIN=$("$PG_CONFIG" --bindir) || kappa_die "no pg_config: $PG_CONFIG"
export PATH="$PG_BIN:$PATH"

if [ -z "${KAPPA_BENCH_NO_INSTALL:-}" ]; then
    kappa_install_deps
    kappa_log "building and installing with $PG_CONFIG"
    make -C "$KAPPA_REPO" -s -j2 KAPPA_WERROR=-Werror PG_CONFIG="$PG_CONFIG" >/dev/null \
        || kappa_die "build failed"
    kappa_as_root make -C "$KAPPA_REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null \
        || kappa_die "install failed"
fi
kappa_ensure_pg_user

TMP=$(mktemp -d /tmp/pg_kappa-cdcbench.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(kappa_pg_user)" "$TMP"
BROKER_PID=
cleanup() {
    kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

"$KAPPA_REPO/test/dev_broker" --topic "cdc:$PARTITIONS" \
    >"$TMP/broker.out" 2>"$TMP/broker.err" </dev/null &
BROKER_PID=$!
for _ in $(seq 100); do grep -q '^BOOTSTRAP' "$TMP/broker.out" 2>/dev/null && break; sleep 0.1; done
BS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")
[ -n "$BS" ] || kappa_die "dev broker did not start: $(cat "$TMP/broker.err")"

kappa_start_server "$TMP" "max_worker_processes = 16"
PORT=$KAPPA_PORT

psql_q() { kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# seconds SQL...: the time of the last statement, by psql's \timing
seconds() {
    psql_q -c '\timing on' "$@" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1 | awk '{print $1 / 1000}'
}
median() { sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }

COLS='id int PRIMARY KEY, name text, amount numeric, qty int, updated_at timestamp'

# --- 1. upsert ingest
kappa_log "generating $CHANGES changes over $KEYS keys"
psql_q >/dev/null <<SQL || kappa_die "could not generate the changes"
CREATE EXTENSION pg_kappa;
CREATE UNLOGGED TABLE changes AS
SELECT i, 1 + (hashint4(i) & 2147483647) % $KEYS AS id, i % 50 = 0 AS tomb,
       'customer-' || (i % 9973) AS name, round((i % 100000) / 100.0, 2) AS amount,
       i % 1000 AS qty, timestamp '2024-01-01' + i * interval '10 ms' AS updated_at
  FROM generate_series(1, $CHANGES) i;
-- kcat -K '|' -Z: key|value, an empty value is a tombstone
COPY (SELECT format('{"id": %s}|', id) ||
             CASE WHEN tomb THEN '' ELSE
             format('{"id": %s, "name": "%s", "amount": %s, "qty": %s, "updated_at": "%s"}',
                    id, name, amount, qty, updated_at) END
        FROM changes ORDER BY i) TO '$TMP/changes.txt';
CREATE TABLE final_rows ($COLS);
INSERT INTO final_rows
SELECT id, name, amount, qty, updated_at
  FROM (SELECT DISTINCT ON (id) * FROM changes ORDER BY id, i DESC) last WHERE NOT tomb;
COPY final_rows TO '$TMP/final.csv' (FORMAT csv);
-- the client: per batch of $BATCH changes, each key's last change
COPY (SELECT 'BEGIN; ' ||
             coalesce('INSERT INTO client_target VALUES ' ||
                      string_agg(format('(%s, %L, %s, %s, %L)', id, name, amount, qty, updated_at), ', ')
                          FILTER (WHERE NOT tomb) ||
                      ' ON CONFLICT (id) DO UPDATE SET name = excluded.name, amount = excluded.amount,'
                      ' qty = excluded.qty, updated_at = excluded.updated_at; ', '') ||
             coalesce('DELETE FROM client_target WHERE id IN (' ||
                      string_agg(id::text, ', ') FILTER (WHERE tomb) || '); ', '') ||
             'COMMIT;'
        FROM (SELECT DISTINCT ON ((i - 1) / $BATCH, id) (i - 1) / $BATCH AS batch, *
                FROM changes ORDER BY (i - 1) / $BATCH, id, i DESC) last
       GROUP BY batch ORDER BY batch) TO '$TMP/client.sql';
SQL
FINAL=$(psql_q -c "SELECT count(*) FROM final_rows")
BYTES=$(wc -c <"$TMP/changes.txt")
kappa_log "producing $CHANGES keyed changes ($((BYTES / CHANGES)) bytes each with the key) to $PARTITIONS partitions"
kcat -P -b "$BS" -t cdc -K '|' -Z -X linger.ms=20 -X batch.num.messages=10000 <"$TMP/changes.txt" \
    || kappa_die "kcat produce failed"
n=$(kcat -C -b "$BS" -t cdc -o beginning -e -q -f 'x\n' -X fetch.wait.max.ms=10 | wc -l)
[ "$n" -eq "$CHANGES" ] || kappa_die "the topic holds $n of $CHANGES changes (the dev broker dropped some: more PARTITIONS?)"

# same_as_final TABLE: the number of rows that differ from the final rows
same_as_final() {
    psql_q -c "SELECT count(*) FROM ((TABLE $1 EXCEPT ALL TABLE final_rows)
                                     UNION ALL (TABLE final_rows EXCEPT ALL TABLE $1)) d"
}

kappa_log "limit: COPY of the $FINAL final rows into a fresh table ($REPEAT runs)"
for r in $(seq "$REPEAT"); do
    psql_q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS copy_target" -c "CREATE TABLE copy_target ($COLS)" -c CHECKPOINT >/dev/null
    seconds -c "COPY copy_target FROM '$TMP/final.csv' (FORMAT csv)" >>"$TMP/copy_runs.txt"
done
T_COPY=$(median <"$TMP/copy_runs.txt")

kappa_log "client: batched INSERT ... ON CONFLICT of $BATCH changes per transaction ($REPEAT runs)"
chmod 644 "$TMP/client.sql"
for r in $(seq "$REPEAT"); do
    psql_q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS client_target" -c "CREATE TABLE client_target ($COLS)" -c CHECKPOINT >/dev/null
    t0=$(date +%s.%N)
    psql_q -f "$TMP/client.sql" >/dev/null || kappa_die "the client failed"
    t1=$(date +%s.%N)
    d=$(same_as_final client_target)
    [ "$d" = 0 ] || kappa_die "the client's table differs from the final rows in $d rows"
    awk "BEGIN{print $t1 - $t0}" >>"$TMP/client_runs.txt"
done
T_CLIENT=$(median <"$TMP/client_runs.txt")

# the source: from its creation to the commit of its last batch (server clock)
kappa_log "source with envelope 'upsert' into a fresh table ($REPEAT runs)"
for r in $(seq "$REPEAT"); do
    psql_q -c "CREATE TABLE src_target_$r ($COLS)" -c VACUUM -c CHECKPOINT >/dev/null
    psql_q -c "SELECT kappa.create_kafka_source('cdc_$r', target => 'src_target_$r', topic => 'cdc',
                 brokers => '$BS', envelope => 'upsert', key_format => 'json')" >/dev/null \
        || kappa_die "create_kafka_source failed"
    psql_q >/dev/null <<SQL
DO \$\$
BEGIN
    FOR i IN 1 .. 60000 LOOP   -- at most 10 minutes
        EXIT WHEN (SELECT coalesce(sum(messages), 0) FROM kappa.source_status s
                     JOIN kappa.source_catalog c ON c.id = s.source_id WHERE c.name = 'cdc_$r') >= $CHANGES;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
\$\$;
SQL
    psql_q -c "SELECT extract(epoch FROM (SELECT max(last_batch_at) FROM kappa.source_status s
                                          WHERE s.source_id = c.id) - c.created_at)
                 FROM kappa.source_catalog c WHERE name = 'cdc_$r'" >>"$TMP/source_runs.txt"
    psql_q -c "SELECT kappa.drop_source('cdc_$r')" >/dev/null
    d=$(same_as_final "src_target_$r")
    [ "$d" = 0 ] || kappa_die "the source's table differs from the final rows in $d rows"
    psql_q -c "DROP TABLE src_target_$r" >/dev/null
done
T_SOURCE=$(median <"$TMP/source_runs.txt")

# --- 2. views over a table
kappa_log "views over a table of $TABLE_ROWS rows"
INV_Q='SELECT g, count(*) AS n, sum(x) AS sx, avg(y) AS ay FROM tv GROUP BY g'
MM_Q='SELECT g, count(*) AS n, min(x) AS lo, max(y) AS hi FROM tv GROUP BY g'
psql_q >/dev/null <<SQL || kappa_die "setup of the table failed"
CREATE TABLE tv (id int PRIMARY KEY, g int NOT NULL, x bigint NOT NULL, y numeric NOT NULL);
INSERT INTO tv SELECT i, i % 1000, i, round(i / 100.0, 2) FROM generate_series(1, $TABLE_ROWS) i;
CREATE INDEX ON tv (g);
-- once before the measured runs, so that every run finds the same pages (with
-- room for HOT updates after a VACUUM), not the first one a full table
UPDATE tv SET x = x + 1, y = y + 0.01 WHERE id <= $TABLE_ROWS / 10;
CREATE MATERIALIZED VIEW mv_inv AS $INV_Q;
CREATE MATERIALIZED VIEW mv_mm AS $MM_Q;
VACUUM ANALYZE;
SQL
BIG=${UPDATE_ROWS:-$((TABLE_ROWS / 10))}
cat >"$TMP/update.sql" <<EOF
\set id random(1, $TABLE_ROWS)
UPDATE tv SET x = x + 1, y = y + 0.01 WHERE id = :id;
EOF
chmod 644 "$TMP/update.sql"
# tps [PGOPTIONS]: pgbench's tps of UPDATES single-row UPDATE transactions
tps() {
    kappa_as_pg_user env PGOPTIONS="${1:-}" pgbench -h "$TMP" -p "$PORT" -U postgres -n -t "$UPDATES" \
        -f "$TMP/update.sql" postgres 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
# check_view NAME QUERY: the view equals its query as plain SQL
check_view() {
    local d
    d=$(psql_q -c "SELECT count(*) FROM ((TABLE $1 EXCEPT ALL ($2)) UNION ALL (($2) EXCEPT ALL TABLE $1)) d")
    [ "$d" = 0 ] || kappa_die "view $1 differs from its query in $d rows"
}

# the variants alternate in each round, so that a slow spell of the machine
# weighs on all of them
for r in $(seq "$REPEAT"); do
    for v in plain inv mm; do
        case $v in
            inv) psql_q -c "SELECT kappa.create_view('v_inv', \$q\$$INV_Q\$q\$)" >/dev/null ;;
            mm) psql_q -c "SELECT kappa.create_view('v_mm', \$q\$$MM_Q\$q\$)" >/dev/null ;;
        esac
        psql_q -c VACUUM -c CHECKPOINT >/dev/null
        tps >>"$TMP/tps_$v.txt"
        tps "-c synchronous_commit=off" >>"$TMP/tps_async_$v.txt"
        psql_q -c VACUUM -c CHECKPOINT >/dev/null
        seconds -c "UPDATE tv SET x = x + 1, y = y + 0.01 WHERE id <= $BIG" >>"$TMP/big_$v.txt"
        case $v in
            inv) check_view v_inv "$INV_Q"; psql_q -c "SELECT kappa.drop_view('v_inv')" >/dev/null ;;
            mm) check_view v_mm "$MM_Q"; psql_q -c "SELECT kappa.drop_view('v_mm')" >/dev/null ;;
        esac
    done
    for m in inv mm; do
        psql_q -c CHECKPOINT >/dev/null
        seconds -c "REFRESH MATERIALIZED VIEW mv_$m" >>"$TMP/refresh_$m.txt"
    done
done
for f in "$TMP"/tps_*.txt "$TMP"/big_*.txt "$TMP"/refresh_*.txt; do
    k=$(basename "$f" .txt)
    printf -v "M_$k" '%s' "$(median <"$f")"
done

rate() { awk "BEGIN{printf \"%.0f\", $1 / $2}"; }
R_COPY=$(rate "$FINAL" "$T_COPY")
R_SOURCE=$(rate "$CHANGES" "$T_SOURCE")
R_CLIENT=$(rate "$CHANGES" "$T_CLIENT")
runs() { paste -sd, "$1"; }

cat <<EOF

pg_kappa CDC benchmark: $(nproc) cores, medians of $REPEAT runs

1. upsert ingest: $CHANGES changes over $KEYS keys (~$((BYTES / CHANGES)) bytes with the key, 2% tombstones),
   $PARTITIONS partitions, ending in $FINAL rows
                                              seconds       rows/s or changes/s
  limit: COPY of the $FINAL final rows      $(printf '%8.2f %14s' "$T_COPY" "$R_COPY") rows/s
  client: INSERT ... ON CONFLICT, $BATCH/txn  $(printf '%8.2f %14s' "$T_CLIENT" "$R_CLIENT") changes/s
  source, envelope 'upsert'                 $(printf '%8.2f %14s' "$T_SOURCE" "$R_SOURCE") changes/s

  ratios (higher is better)                                measured  target
  source changes/s vs COPY rows/s                          $(ratio "$R_SOURCE" "$R_COPY")x     >= 0.50x
  source vs batched-upsert client (same changes)           $(ratio "$T_CLIENT" "$T_SOURCE")x     >= 2.00x
  (source's time to the final table vs COPY's: $(ratio "$T_COPY" "$T_SOURCE")x; COPY writes
   $FINAL rows once, the source reads and applies $CHANGES changes)

2. views over a table of $TABLE_ROWS rows, 1,000 groups
  $UPDATES single-row UPDATE transactions (pgbench)   tps       cost   target
  no view                                     $(printf '%10.0f' "$M_tps_plain")
  view inv (count, sum, avg: retract)         $(printf '%10.0f' "$M_tps_inv")    $(ratio "$M_tps_plain" "$M_tps_inv")x   <= 1.50x
  view minmax (count, min, max: recompute)    $(printf '%10.0f' "$M_tps_mm")    $(ratio "$M_tps_plain" "$M_tps_mm")x
  the same, synchronous_commit = off
  no view                                     $(printf '%10.0f' "$M_tps_async_plain")
  view inv                                    $(printf '%10.0f' "$M_tps_async_inv")    $(ratio "$M_tps_async_plain" "$M_tps_async_inv")x
  view minmax                                 $(printf '%10.0f' "$M_tps_async_mm")    $(ratio "$M_tps_async_plain" "$M_tps_async_mm")x

  one UPDATE of $BIG rows                     seconds   vs REFRESH  target
  no view                                     $(printf '%8.3f' "$M_big_plain")
  view inv                                    $(printf '%8.3f' "$M_big_inv")    $(ratio "$M_refresh_inv" "$M_big_inv")x     >= 5.00x
  view minmax                                 $(printf '%8.3f' "$M_big_mm")    $(ratio "$M_refresh_mm" "$M_big_mm")x
  the views' own time (with - without) vs REFRESH: inv $(ratio "$M_refresh_inv" "$(awk "BEGIN{print $M_big_inv - $M_big_plain}")")x, minmax $(ratio "$M_refresh_mm" "$(awk "BEGIN{print $M_big_mm - $M_big_plain}")")x
  REFRESH MATERIALIZED VIEW (inv's query)     $(printf '%8.3f' "$M_refresh_inv")
  REFRESH MATERIALIZED VIEW (minmax's query)  $(printf '%8.3f' "$M_refresh_mm")

runs (of which the medians are shown above):
  copy $(runs "$TMP/copy_runs.txt"); client $(runs "$TMP/client_runs.txt"); source $(runs "$TMP/source_runs.txt")
  tps no view $(runs "$TMP/tps_plain.txt"); inv $(runs "$TMP/tps_inv.txt"); minmax $(runs "$TMP/tps_mm.txt")
  tps async no view $(runs "$TMP/tps_async_plain.txt"); inv $(runs "$TMP/tps_async_inv.txt"); minmax $(runs "$TMP/tps_async_mm.txt")
  update no view $(runs "$TMP/big_plain.txt"); inv $(runs "$TMP/big_inv.txt"); minmax $(runs "$TMP/big_mm.txt")
  refresh inv $(runs "$TMP/refresh_inv.txt"); minmax $(runs "$TMP/refresh_mm.txt")
EOF
