#!/usr/bin/env bash
# bench/stream_bench.sh — throughput of streams and continuous views, measured
# against the limits of this machine in the same run (issue 2, point 8).
#
#   bash bench/stream_bench.sh [ROWS]          (default 1000000 rows)
#
# Loads ROWS rows of (user_id int, url text, amount numeric, ts timestamptz)
# with 1,000 distinct urls by COPY into:
#   unlogged   an unlogged table: the cost of writing the rows at all (limit)
#   stream0    a stream with no view: parsing only (the ceiling)
#   stream1    a stream with one continuous view
#                SELECT url, count(*), sum(amount), avg(amount), max(ts)
#                  FROM s GROUP BY url
#   stream3x   the stream with the view and three expectations (data
#              contracts: amount >= 0, url IS NOT NULL, user_id >= 0;
#              every row passes, so every row pays for three checks)
#   trigger    a plain table with a statement-level AFTER INSERT trigger that
#              upserts the same summary (what people hand-write today)
# and 10,000 single-row INSERT statements, each its own transaction (pgbench),
# into a plain table and into the stream with the view.  Each COPY runs
# $RUNS times; the best time counts.  Prints rows/s and the ratios the issue
# sets targets for.  Not a test: it asserts nothing and exits 0.
#
# Starts its own throwaway server (default settings, loopback only) and
# removes it at the end.  Runs as root (Postgres then runs as an unprivileged
# user) or as a user with sudo, like test/run.sh.
set -uo pipefail

. "$(dirname "$0")/../test/lib.sh"

ROWS=${1:-1000000}
RUNS=${RUNS:-3}
INSERTS=${INSERTS:-10000}

kappa_install_deps
kappa_build >/dev/null || kappa_die "build failed"
kappa_install >/dev/null || kappa_die "install failed"
kappa_ensure_pg_user

TMP=$(mktemp -d /tmp/pg_kappa-bench.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(kappa_pg_user)" "$TMP"
cleanup() {
    kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

kappa_start_server "$TMP"
PORT=$KAPPA_PORT

psql_q() { kappa_as_pg_user psql -h "$TMP" -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

kappa_log "generating $ROWS rows"
psql_q >/dev/null <<SQL
CREATE EXTENSION pg_kappa;
COPY (SELECT (random() * 100000)::int,
             'https://example.com/page/' || (i % 1000),
             round((random() * 1000)::numeric, 2),
             timestamptz '2024-01-01' + i * interval '10 ms'
        FROM generate_series(1, $ROWS) i)
  TO '$TMP/rows.csv' (FORMAT csv);
CREATE UNLOGGED TABLE unlogged (user_id int, url text, amount numeric, ts timestamptz);
SELECT kappa.create_stream('stream0', 'user_id int, url text, amount numeric, ts timestamptz');
SELECT kappa.create_stream('stream1', 'user_id int, url text, amount numeric, ts timestamptz');
SELECT kappa.create_stream('stream3x', 'user_id int, url text, amount numeric, ts timestamptz');
SELECT kappa.add_expectation('stream3x', 'non_negative', 'amount >= 0', 'dead_letter');
SELECT kappa.add_expectation('stream3x', 'has_url', 'url IS NOT NULL', 'warn');
SELECT kappa.add_expectation('stream3x', 'known_user', 'user_id >= 0', 'fail');
CREATE TABLE trigger_rows (user_id int, url text, amount numeric, ts timestamptz);
CREATE TABLE trigger_summary (url text PRIMARY KEY, n bigint, total numeric, last_ts timestamptz);
CREATE FUNCTION trigger_upsert() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO trigger_summary AS s
    SELECT url, count(*), sum(amount), max(ts) FROM new_rows GROUP BY url
    ON CONFLICT (url) DO UPDATE
       SET n = s.n + excluded.n, total = s.total + excluded.total,
           last_ts = greatest(s.last_ts, excluded.last_ts);
    RETURN NULL;
END \$\$;
CREATE TRIGGER trigger_upsert AFTER INSERT ON trigger_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION trigger_upsert();
CREATE TABLE plain_rows (user_id int, url text, amount numeric, ts timestamptz);
SQL
[ $? -eq 0 ] || kappa_die "setup failed"

VIEW_SQL="SELECT url, count(*) AS n, sum(amount) AS total, avg(amount) AS mean, max(ts) AS last_ts FROM stream1 GROUP BY url"

# Best of $RUNS COPY timings in ms; $2 is SQL run before each COPY (reset).
best_copy_ms() {
    local target=$1 reset=$2 best="" ms i
    for i in $(seq "$RUNS"); do
        psql_q -c "$reset" >/dev/null || kappa_die "reset of $target failed"
        psql_q -c "CHECKPOINT" >/dev/null
        ms=$(psql_q -c '\timing on' -c "COPY $target FROM '$TMP/rows.csv' (FORMAT csv)" \
             | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        [ -n "$ms" ] || kappa_die "COPY into $target failed"
        if [ -z "$best" ] || awk "BEGIN{exit !($ms < $best)}"; then best=$ms; fi
    done
    echo "$best"
}

kappa_log "COPY $ROWS rows, best of $RUNS"
T_UNLOGGED=$(best_copy_ms unlogged "TRUNCATE unlogged")
T_STREAM0=$(best_copy_ms stream0 "SELECT 1")
T_STREAM1=$(best_copy_ms stream1 "SELECT kappa.drop_view('v1') FROM kappa.views WHERE view_name = 'v1'; SELECT kappa.create_view('v1', \$q\$$VIEW_SQL\$q\$)")
VIEW3X_SQL=$(echo "$VIEW_SQL" | sed 's/FROM stream1/FROM stream3x/')
T_STREAM3X=$(best_copy_ms stream3x "SELECT kappa.drop_view('v3x') FROM kappa.views WHERE view_name = 'v3x'; SELECT kappa.create_view('v3x', \$q\$$VIEW3X_SQL\$q\$)")
T_TRIGGER=$(best_copy_ms trigger_rows "TRUNCATE trigger_rows, trigger_summary")

# The view must equal the same query as plain SQL over the same rows.
psql_q <<SQL || kappa_die "the view does not match plain SQL"
CREATE TEMP TABLE check_rows (user_id int, url text, amount numeric, ts timestamptz);
COPY check_rows FROM '$TMP/rows.csv' (FORMAT csv);
DO \$\$
DECLARE d bigint;
BEGIN
    SELECT count(*) INTO d FROM (
      (TABLE v1 EXCEPT ALL SELECT url, count(*), sum(amount), avg(amount), max(ts) FROM check_rows GROUP BY url)
      UNION ALL
      (SELECT url, count(*), sum(amount), avg(amount), max(ts) FROM check_rows GROUP BY url EXCEPT ALL TABLE v1)) x;
    IF d <> 0 THEN RAISE EXCEPTION 'view differs from plain SQL in % rows', d; END IF;
END \$\$;
SQL

kappa_log "$INSERTS single-row INSERT transactions (pgbench, 1 client)"
cat > "$TMP/ins_plain.sql" <<'EOF'
\set u random(1, 100000)
\set p random(1, 1000)
INSERT INTO plain_rows VALUES (:u, 'https://example.com/page/' || :p, :u / 100.0, now());
EOF
sed 's/plain_rows/stream1/' "$TMP/ins_plain.sql" > "$TMP/ins_stream.sql"
chmod 644 "$TMP"/*.sql
tps() {
    kappa_as_pg_user pgbench -h "$TMP" -p "$PORT" -U postgres -n -t "$INSERTS" -f "$1" postgres 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
TPS_PLAIN=$(tps "$TMP/ins_plain.sql")
TPS_STREAM=$(tps "$TMP/ins_stream.sql")

rate() { awk "BEGIN{printf \"%.0f\", $ROWS / ($1 / 1000)}"; }
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }

cat <<EOF

pg_kappa stream benchmark: $ROWS rows, 1,000 urls, $(nproc) cores, best of $RUNS
  COPY into                         ms        rows/s
  unlogged table (limit)     $(printf '%9.0f %12s' "$T_UNLOGGED" "$(rate "$T_UNLOGGED")")
  stream, no view (ceiling)  $(printf '%9.0f %12s' "$T_STREAM0" "$(rate "$T_STREAM0")")
  stream, one view           $(printf '%9.0f %12s' "$T_STREAM1" "$(rate "$T_STREAM1")")
  stream, view, 3 expect.    $(printf '%9.0f %12s' "$T_STREAM3X" "$(rate "$T_STREAM3X")")
  table + summary trigger    $(printf '%9.0f %12s' "$T_TRIGGER" "$(rate "$T_TRIGGER")")

  ratios (higher is better)                              measured  target
  stream+view vs unlogged COPY                           $(ratio "$T_UNLOGGED" "$T_STREAM1")x     >= 1.00x
  stream+view vs hand-written trigger                    $(ratio "$T_TRIGGER" "$T_STREAM1")x     >= 1.50x
  stream+view vs no-view ceiling                         $(ratio "$T_STREAM0" "$T_STREAM1")x     >= 0.80x
  stream+view+3 expectations vs stream+view              $(ratio "$T_STREAM1" "$T_STREAM3X")x     >= 0.85x

  $INSERTS single-row INSERT transactions        tps
  plain table                                $(printf '%10.0f' "$TPS_PLAIN")
  stream with the view                       $(printf '%10.0f' "$TPS_STREAM")
  cost of a stream insert vs a table insert  $(ratio "$TPS_PLAIN" "$TPS_STREAM")x     <= 1.50x
EOF
