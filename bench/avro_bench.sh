#!/usr/bin/env bash
# bench/avro_bench.sh — Avro ingestion against JSON and against COPY, on one
# worker, measured in the same run (issue 10, point 5).
#
#   bash bench/avro_bench.sh [MESSAGES]          (default 1000000)
#
# The same MESSAGES rows (user_id int, url text, amount numeric, ts
# timestamptz) as:
#   json   JSON messages ({"user_id": ..., ...}, ~100 bytes)
#   avro   Avro messages in the Confluent wire format (decimal and
#          timestamp-micros logical types), encoded by Debian's python3-avro,
#          with the writer schema in the dev registry
# each consumed by a source with parallelism 1 into a non-retained stream
# with one continuous view (count, sum, max per user_id % 1000), from
# 'earliest'; and, as the limit, COPY of the same rows (already decoded,
# CSV) into the same kind of stream with the same view: the path without
# Kafka and without decoding.  Each measurement REPEAT times (default 3),
# alternating, medians reported; a source's time runs from its creation to
# the commit of its last batch (server clock), and its steady rate, from its
# first commit to its last (without the start and the first batch), both
# from the times the worker records with each batch it commits.  Prints
# the ratios, end to end and steady: avro / json (target >= 1.2) and avro /
# COPY (target >= 0.8).
#
# Not a test: it asserts nothing.  Starts its own throwaway server, dev
# broker and dev registry, and removes them at the end.  Runs as root
# (Postgres then runs as an unprivileged user) or as a user with sudo.
# KAPPA_BENCH_NO_INSTALL=1 uses the installed build as is.
set -uo pipefail

. "$(dirname "$0")/../test/lib.sh"

MESSAGES=${1:-1000000}
PARTITIONS=${PARTITIONS:-32}
REPEAT=${REPEAT:-3}

if [ -z "${KAPPA_BENCH_NO_INSTALL:-}" ]; then
    kappa_install_deps
    kappa_build >/dev/null || kappa_die "build failed"
    kappa_install >/dev/null || kappa_die "install failed"
fi
[ -n "${KAPPA_BENCH_PG_BIN:-}" ] && export PATH="$KAPPA_BENCH_PG_BIN:$PATH"
kappa_ensure_pg_user
/usr/bin/python3 -c 'import avro.io' 2>/dev/null || kappa_die "python3-avro is missing"

TMP=$(mktemp -d /tmp/pg_kappa-abench.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(kappa_pg_user)" "$TMP"
BROKER_PID=
REGISTRY_PID=
cleanup() {
    kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
    [ -n "$REGISTRY_PID" ] && kill "$REGISTRY_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# --- dev broker and registry
"$KAPPA_REPO/test/dev_broker" --topic "json:$PARTITIONS" --topic "avro:$PARTITIONS" \
    >"$TMP/broker.out" 2>"$TMP/broker.err" </dev/null &
BROKER_PID=$!
python3 "$KAPPA_REPO/test/dev_registry.py" --port-file "$TMP/registry.url" \
    >"$TMP/registry.out" 2>"$TMP/registry.err" </dev/null &
REGISTRY_PID=$!
for _ in $(seq 100); do
    grep -q '^BOOTSTRAP' "$TMP/broker.out" 2>/dev/null && [ -s "$TMP/registry.url" ] && break
    sleep 0.1
done
BS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")
REG=$(cat "$TMP/registry.url" 2>/dev/null)
[ -n "$BS" ] || kappa_die "dev broker did not start: $(cat "$TMP/broker.err")"
[ -n "$REG" ] || kappa_die "dev registry did not start: $(cat "$TMP/registry.err")"

# --- server
kappa_start_server "$TMP" "max_worker_processes = 16"
PORT=$KAPPA_PORT
psql_q() { kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }

ROWSQL="SELECT ((i::bigint * 7919) % 100000)::int AS user_id, 'https://example.com/page/' || (i % 1000) AS url,
               round(((i::bigint * 31) % 100000) / 100.0, 2) AS amount,
               timestamptz '2024-01-01' + i * interval '10 ms' AS ts
          FROM generate_series(1, $MESSAGES) i"
kappa_log "generating $MESSAGES rows"
psql_q >/dev/null <<SQL
CREATE EXTENSION pg_kappa;
SET timezone = 'UTC';
COPY ($ROWSQL) TO '$TMP/rows.csv' (FORMAT csv);
COPY (SELECT format('{"user_id": %s, "url": "%s", "amount": %s, "ts": "%s"}', user_id, url, amount, ts)
        FROM ($ROWSQL) r) TO '$TMP/messages.json';
CREATE SERVER reg FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers '$BS', schema_registry '$REG');
CREATE UNLOGGED TABLE progress (t timestamptz, n bigint);
SQL

# --- messages
KCAT_P=(-X linger.ms=20 -X batch.num.messages=10000 -X sticky.partitioning.linger.ms=0)
kappa_log "producing $MESSAGES JSON messages"
kcat -P -b "$BS" -t json "${KCAT_P[@]}" <"$TMP/messages.json" || kappa_die "kcat produce failed"

kappa_log "encoding $MESSAGES Avro messages with python3-avro"
/usr/bin/python3 - "$REG" "$TMP/rows.csv" "$TMP/messages.avro" "$TMP/delim" <<'PY' || kappa_die "Avro encoding failed"
import csv, datetime, decimal, io, json, os, struct, sys, urllib.request
import avro.io, avro.schema
reg, rows, out, delim_file = sys.argv[1:5]
schema = {"type": "record", "name": "Click", "fields": [
    {"name": "user_id", "type": "int"},
    {"name": "url", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}
req = urllib.request.Request(reg + "/subjects/avro-value/versions",
                             data=json.dumps({"schema": json.dumps(schema)}).encode(),
                             headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
sid = json.load(urllib.request.urlopen(req))["id"]
writer = avro.io.DatumWriter(avro.schema.parse(json.dumps(schema)))
header = b"\x00" + struct.pack(">I", sid)
msgs = []
for user_id, url, amount, ts in csv.reader(open(rows)):
    buf = io.BytesIO()
    when = datetime.datetime.fromisoformat(ts.replace(" ", "T").replace("+00", "+00:00"))
    writer.write({"user_id": int(user_id), "url": url,
                  "amount": decimal.Decimal(amount).quantize(decimal.Decimal("0.01")),
                  "ts": when}, avro.io.BinaryEncoder(buf))
    msgs.append(header + buf.getvalue())
while True:
    delim = b"#%" + os.urandom(12).hex().encode() + b"%#"
    if not any(delim in m for m in msgs):
        break
open(out, "wb").write(delim.join(msgs))
open(delim_file, "wb").write(delim)
PY
kcat -P -b "$BS" -t avro "${KCAT_P[@]}" -D "$(cat "$TMP/delim")" <"$TMP/messages.avro" \
    || kappa_die "kcat produce failed"
AVRO_BYTES=$(( $(wc -c <"$TMP/messages.avro") / MESSAGES ))
JSON_BYTES=$(( $(wc -c <"$TMP/messages.json") / MESSAGES ))

# --- runs
# a fresh stream with one view; prints nothing
make_stream() {
    psql_q >/dev/null <<SQL
SELECT kappa.drop_stream('$1', cascade => true) FROM kappa.streams WHERE stream_name = '$1';
SELECT kappa.create_stream('$1', 'user_id int, url text, amount numeric, ts timestamptz');
SELECT kappa.create_view('$1_v', \$\$SELECT user_id % 1000 AS g, count(*) AS n, sum(amount) AS total,
                                          max(ts) AS last FROM $1 GROUP BY 1\$\$);
SQL
}

# run_source FORMAT N: prints "END_TO_END STEADY": the seconds from creating
# the source to its last commit, and the steady rate: messages per second
# from its first commit to its last (leaving out the start -- worker,
# metadata, first fetch -- and the first batch).  Both come from what the
# worker writes to kappa.source_status in each batch's transaction: its
# message count and the time of the batch (last_batch_at).  One server-side
# loop reads them every 5 ms until the first batch has committed, then only
# every 100 ms until the last has: a reader every 5 ms throughout took CPU
# from the worker on 2 cores, which COPY, measured alone, did not pay for.
run_source() {
    local fmt=$1 n=$2 name="s_$1_$2"
    make_stream "st_$fmt"
    psql_q -c CHECKPOINT -c "TRUNCATE progress" >/dev/null
    psql_q -c "SELECT kappa.create_kafka_source('$name', target => 'st_$fmt', topic => '$fmt',
                 server => 'reg', format => '$fmt')" >/dev/null || kappa_die "create $name failed"
    psql_q >/dev/null <<SQL
DO \$\$
DECLARE
    sid integer := (SELECT id FROM kappa.source_catalog WHERE name = '$name');
    total bigint := 0;
    at timestamptz;
BEGIN
    -- the first commit: its count and time (one worker: one row)
    FOR i IN 1 .. 60000 LOOP   -- at most 5 minutes
        SELECT coalesce(sum(messages), 0), max(last_batch_at) INTO total, at
          FROM kappa.source_status WHERE source_id = sid;
        EXIT WHEN total > 0;
        PERFORM pg_sleep(0.005);
    END LOOP;
    INSERT INTO progress VALUES (at, total);
    -- the last commit
    FOR i IN 1 .. 6000 LOOP     -- at most 10 minutes
        SELECT coalesce(sum(messages), 0), max(last_batch_at) INTO total, at
          FROM kappa.source_status WHERE source_id = sid;
        EXIT WHEN total >= $MESSAGES;
        PERFORM pg_sleep(0.1);
    END LOOP;
    INSERT INTO progress VALUES (at, total);
END
\$\$;
SQL
    psql_q -c "WITH f AS (SELECT t, n FROM progress ORDER BY n LIMIT 1),
                    l AS (SELECT t, n FROM progress ORDER BY n DESC LIMIT 1)
               SELECT extract(epoch FROM l.t - c.created_at)
                      || ' ' || round(($MESSAGES - f.n) / nullif(extract(epoch FROM l.t - f.t), 0))
                 FROM kappa.source_catalog c, f, l WHERE name = '$name'"
    local got dead
    got=$(psql_q -c "SELECT coalesce(sum(n), 0) FROM st_${fmt}_v")
    dead=$(psql_q -c "SELECT count(*) FROM kappa.errors WHERE source = '$name'")
    [ "$got" = "$MESSAGES" ] && [ "$dead" = 0 ] || kappa_log "$name: $got rows, $dead dead letters of $MESSAGES"
    psql_q -c "SELECT kappa.drop_source('$name')" >/dev/null
}

copy_seconds() {
    make_stream st_copy
    psql_q -c CHECKPOINT >/dev/null
    psql_q -c '\timing on' -c "COPY st_copy FROM '$TMP/rows.csv' (FORMAT csv)" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{print $1 / 1000}'
}

: >"$TMP/json.t"; : >"$TMP/avro.t"; : >"$TMP/copy.t"
for r in $(seq "$REPEAT"); do
    kappa_log "round $r of $REPEAT"
    run_source json "$r" >>"$TMP/json.t"
    run_source avro "$r" >>"$TMP/avro.t"
    copy_seconds >>"$TMP/copy.t"
done
# median FILE [FIELD]
median() { awk -v f="${2:-1}" '{print $f}' "$1" | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
T_JSON=$(median "$TMP/json.t"); T_AVRO=$(median "$TMP/avro.t"); T_COPY=$(median "$TMP/copy.t")
R_JSON=$(median "$TMP/json.t" 2); R_AVRO=$(median "$TMP/avro.t" 2)

echo
echo "Avro ingestion, $MESSAGES messages, 1 worker, a stream with 1 view (medians of $REPEAT runs)"
printf '  %-34s %8.2f s  %9.0f rows/s end to end, %9.0f steady  (%s bytes/message)\n' "JSON messages" "$T_JSON" "$(awk "BEGIN{print $MESSAGES / $T_JSON}")" "$R_JSON" "$JSON_BYTES"
printf '  %-34s %8.2f s  %9.0f rows/s end to end, %9.0f steady  (%s bytes/message)\n' "Avro messages" "$T_AVRO" "$(awk "BEGIN{print $MESSAGES / $T_AVRO}")" "$R_AVRO" "$AVRO_BYTES"
printf '  %-34s %8.2f s  %9.0f rows/s\n' "limit: COPY into the same stream" "$T_COPY" "$(awk "BEGIN{print $MESSAGES / $T_COPY}")"
echo "  runs (s, rows/s): json $(tr '\n' ' ' <"$TMP/json.t")| avro $(tr '\n' ' ' <"$TMP/avro.t")| copy $(tr '\n' ' ' <"$TMP/copy.t")"
awk -v j="$T_JSON" -v a="$T_AVRO" -v c="$T_COPY" -v rj="$R_JSON" -v ra="$R_AVRO" -v m="$MESSAGES" 'BEGIN {
    printf "  avro / json, end to end: %.2fx; steady: %.2fx (target >= 1.2)\n", j / a, ra / rj
    printf "  avro / COPY, end to end: %.2fx; steady: %.2fx (target >= 0.8)\n", c / a, ra / (m / c) }'
