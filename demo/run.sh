#!/usr/bin/env bash
# pg_kappa demo: card payments flow from Kafka into Postgres, and continuous
# views over them update live in the terminal.
#
#   bash demo/run.sh [--seconds N] [--rate N] [--no-build]
#
#   -s, --seconds N  stop after N seconds (default: until Ctrl-C on a terminal,
#                    10 seconds when stdin is not a terminal; DEMO_SECONDS=N
#                    does the same)
#   -r, --rate N     messages produced to Kafka per second (default 300)
#   --no-build       skip apt-get, build and install (use the installed extension)
#   -h, --help       this text
#
# Works on a fresh Debian 12 machine as root or as a user with sudo: installs
# the dependencies, builds and installs the extension, then starts a throwaway
# Postgres server (as the unprivileged user kappa_test when run as root) on
# 127.0.0.1 and a free port, with its data and socket in a temporary directory
# that is removed on exit, and the dev broker (a Kafka broker on librdkafka's
# mock cluster, test/dev_broker) with a topic `payments` of 4 partitions.
# A generator produces JSON payment events with kcat, about 1% of them bad
# (malformed JSON or an amount that is not a number); a Kafka source consumes
# the topic into the stream `payments`; the screen shows the fraud and
# revenue views and the source's state every second.  Beside it, a compacted
# topic `card_limits` (keyed by card, with tombstones) is a changelog that a
# second source applies to the table `cards` (envelope 'upsert'), and a
# continuous view over that table stays exact as its rows change.  A third
# topic, `refunds`, carries Avro messages (Confluent wire format, encoded by
# Debian's python3-avro through test/avro_tool.py) whose writer schema lives
# in the dev schema registry (test/dev_registry.py); a source with format
# 'avro' reads them into the stream `refunds`.  The stream payments has a
# data contract: an expectation that amounts are positive, whose violations
# are dead letters.  A few seconds in, the view payment_totals gets a new
# definition (kappa.replace_view, one more column): the new version is
# rebuilt from the Kafka log beside the live one while payments keep
# flowing, and swapped in.  At the end it checks that every message produced is
# either counted by the views (or applied to the table) or kept as a dead
# letter in kappa.errors, and that the view over the table equals its query.
# shellcheck disable=SC2317  # cleanup() runs from a trap
set -uo pipefail

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"

usage() { sed -n '2,/^set -uo/{/^# shellcheck/d; /^#/!d; s/^# \{0,1\}//; p}' "$0"; }
is_count() { case "$1" in ''|*[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac; }

DURATION=${DEMO_SECONDS:-}
RATE=300
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        -s|--seconds) [ $# -ge 2 ] || { usage >&2; exit 2; }; DURATION=$2; shift 2 ;;
        --seconds=*)  DURATION=${1#*=}; shift ;;
        -r|--rate)    [ $# -ge 2 ] || { usage >&2; exit 2; }; RATE=$2; shift 2 ;;
        --rate=*)     RATE=${1#*=}; shift ;;
        --no-build)   BUILD=; shift ;;
        -h|--help)    usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [ -n "$DURATION" ] && ! is_count "$DURATION"; then
    echo "--seconds / DEMO_SECONDS must be a positive integer, not '$DURATION'" >&2; exit 2
fi
is_count "$RATE" || { echo "--rate must be a positive integer, not '$RATE'" >&2; exit 2; }
INTERACTIVE=
[ -t 0 ] && INTERACTIVE=1
[ -n "$INTERACTIVE" ] || DURATION=${DURATION:-10}
TTY_OUT=
[ -t 1 ] && TTY_OUT=1

# ---------------------------------------------------------------- build
if [ -n "$BUILD" ]; then
    kappa_install_deps
    kappa_build || kappa_die "build failed"
    kappa_install || kappa_die "make install failed"
fi
command -v initdb >/dev/null || kappa_die "initdb not found in $KAPPA_PG_BIN (run without --no-build)"
kappa_ensure_pg_user

# ---------------------------------------------------------------- server
TMP=
SERVER_UP=
GEN_PID=
BROKER_PID=
REGISTRY_PID=
STOP=
cleanup() {
    trap - EXIT
    trap "" INT TERM
    if [ -n "$GEN_PID" ]; then
        touch "$TMP/stop" 2>/dev/null
        # Let the generator finish its batch, then make sure it is gone.
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$GEN_PID" 2>/dev/null || break; sleep 0.5; done
        kill "$GEN_PID" 2>/dev/null
        wait "$GEN_PID" 2>/dev/null
    fi
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    if [ -n "$REGISTRY_PID" ]; then
        kill "$REGISTRY_PID" 2>/dev/null
        wait "$REGISTRY_PID" 2>/dev/null
    fi
    if [ -n "$SERVER_UP" ]; then
        kappa_as_pg_user pg_ctl -D "$TMP/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || kappa_as_pg_user pg_ctl -D "$TMP/data" -m immediate stop >/dev/null 2>&1
    fi
    if [ -n "$TMP" ]; then
        kappa_stop_postmasters "$TMP"
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'STOP=1' INT TERM

TMP=$(mktemp -d /tmp/pg_kappa-demo.XXXXXX) || kappa_die "mktemp failed"
[ "$(id -u)" -eq 0 ] && chown "$KAPPA_PG_USER": "$TMP"

kappa_log "initdb in $TMP/data (as $(kappa_pg_user))"
kappa_as_pg_user initdb -D "$TMP/data" -U postgres -A trust -E UTF8 --no-instructions \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; kappa_die "initdb failed"; }
cat >>"$TMP/data/postgresql.conf" <<EOF

# pg_kappa demo
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
shared_preload_libraries = 'pg_kappa'
fsync = off
EOF

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=
for _ in 1 2 3 4 5 6 7 8 9 10; do
    p=$((20000 + RANDOM % 20000))
    port_free "$p" || continue
    : >"$TMP/server.log"
    [ "$(id -u)" -eq 0 ] && chown "$KAPPA_PG_USER": "$TMP/server.log"
    if kappa_as_pg_user pg_ctl -D "$TMP/data" -l "$TMP/server.log" -o "-p $p" -w -t 30 start \
        >/dev/null 2>&1; then
        PORT=$p
        SERVER_UP=1
        break
    fi
    grep -q 'could not bind\|Address already in use' "$TMP/server.log" || break
done
if [ -z "$PORT" ]; then
    tail -n 20 "$TMP/server.log" >&2
    kappa_die "could not start the demo server"
fi
kappa_log "Postgres running on 127.0.0.1:$PORT (psql -h 127.0.0.1 -p $PORT -U postgres)"

PSQL=(psql -X -q -P pager=off -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)

# ---------------------------------------------------------------- broker
[ -x "$KAPPA_REPO/test/dev_broker" ] || kappa_die "test/dev_broker is not built (run without --no-build)"
"$KAPPA_REPO/test/dev_broker" --topic payments:4 --topic card_limits:2 --topic refunds:2 \
    >"$TMP/broker.out" 2>"$TMP/broker.err" </dev/null &
BROKER_PID=$!
BOOTSTRAP=
for _ in $(seq 1 100); do
    BOOTSTRAP=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out" 2>/dev/null)
    [ -n "$BOOTSTRAP" ] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$BOOTSTRAP" ] || { cat "$TMP/broker.err" >&2; kappa_die "the dev broker did not start"; }
kappa_log "dev broker (Kafka protocol) at $BOOTSTRAP, topics payments (4 partitions), card_limits (2), refunds (2)"

# ---------------------------------------------------------------- schema registry
/usr/bin/python3 -c 'import avro.io' 2>/dev/null \
    || kappa_die "python3-avro is missing (run without --no-build to install it)"
python3 "$KAPPA_REPO/test/dev_registry.py" --port-file "$TMP/registry.url" \
    >"$TMP/registry.out" 2>"$TMP/registry.err" </dev/null &
REGISTRY_PID=$!
REGISTRY=
for _ in $(seq 1 100); do
    REGISTRY=$(cat "$TMP/registry.url" 2>/dev/null)
    [ -n "$REGISTRY" ] && break
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$REGISTRY" ] || { cat "$TMP/registry.err" >&2; kappa_die "the dev schema registry did not start"; }
kappa_log "dev schema registry at $REGISTRY"
cat >"$TMP/refund.avsc" <<'AVSC'
{"type": "record", "name": "Refund", "namespace": "demo",
 "fields": [{"name": "merchant", "type": "string"},
            {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "reason", "type": {"type": "enum", "name": "Reason", "symbols": ["damaged", "late", "fraud", "other"]}},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
AVSC

# ---------------------------------------------------------------- schema
kappa_log "creating the stream payments and its continuous views"
if ! "${PSQL[@]}" >"$TMP/setup.log" 2>&1 <<'SQL'
CREATE EXTENSION pg_kappa;

SELECT kappa.create_stream('payments',
         'card text, merchant text, amount numeric, country text, ts timestamptz');

SELECT kappa.create_view('revenue_per_minute',
  $$SELECT merchant, date_bin('1 minute', ts, timestamptz 'epoch') AS minute,
           count(*) AS payments, sum(amount) AS revenue
      FROM payments
     GROUP BY merchant, minute$$);

SELECT kappa.create_view('suspicious_cards',
  $$SELECT card, count(*) AS n, sum(amount) AS total, max(amount) AS biggest
      FROM payments
     WHERE amount > 900
     GROUP BY card$$);

SELECT kappa.create_view('payment_totals',
  $$SELECT count(*) AS payments, sum(amount) AS volume, max(ts) AS last_payment
      FROM payments$$);

-- a data contract: a payment's amount is positive, else a dead letter
SELECT kappa.add_expectation('payments', 'positive_amount', 'amount > 0',
                             on_violation => 'dead_letter');

-- refunds arrive as Avro (topic refunds), into their own stream
SELECT kappa.create_stream('refunds', 'merchant text, amount numeric, reason text, ts timestamptz');
SELECT kappa.create_view('refunds_per_merchant',
  $$SELECT merchant, reason, count(*) AS refunds, sum(amount) AS refunded
      FROM refunds
     GROUP BY merchant, reason$$);

-- a table kept by a changelog (the card_limits topic), and a view over it
CREATE TABLE cards (card text PRIMARY KEY, credit_limit numeric NOT NULL, status text NOT NULL);
SELECT kappa.create_view('cards_by_status',
  $$SELECT status, count(*) AS cards, sum(credit_limit) AS total_limit
      FROM cards
     GROUP BY status$$);
SQL
then
    cat "$TMP/setup.log" >&2
    kappa_die "could not create the stream and views (is the engine built?)"
fi
kappa_log "creating the Kafka server kafka_dev and the source payments_src: topic payments -> stream payments"
"${PSQL[@]}" -c "CREATE SERVER kafka_dev FOREIGN DATA WRAPPER kappa_kafka
                   OPTIONS (brokers '$BOOTSTRAP', schema_registry '$REGISTRY')" \
             -c "SELECT kappa.create_kafka_source('payments_src',
                   target => 'payments', topic => 'payments', server => 'kafka_dev',
                   format => 'json', start => 'earliest')" \
             -c "SELECT kappa.create_kafka_source('cards_src',
                   target => 'cards', topic => 'card_limits', server => 'kafka_dev',
                   envelope => 'upsert', key_format => 'text')" \
             -c "SELECT kappa.create_kafka_source('refunds_src',
                   target => 'refunds', topic => 'refunds', server => 'kafka_dev',
                   format => 'avro')" >>"$TMP/setup.log" 2>&1 \
    || { cat "$TMP/setup.log" >&2; kappa_die "could not create the Kafka sources"; }
kappa_log "source cards_src: topic card_limits (keyed by card) -> table cards, envelope 'upsert'"
kappa_log "source refunds_src: topic refunds (Avro, schema registry) -> stream refunds"

# ---------------------------------------------------------------- generator
# One batch of $RATE JSON payment events per second, produced to the topic by
# kcat, an independent Kafka client.  Amounts are mostly small; about 3% are
# above 900.  Every 100th message is bad: malformed JSON or an amount that is
# not a number.  $TMP/generated holds the number of messages produced so far.
produce_batch() {
    awk -v n="$RATE" -v seed="$((RANDOM * 32768 + RANDOM))" -v ts="$(date -u '+%Y-%m-%dT%H:%M:%SZ')" \
        -v first="$1" 'BEGIN {
        srand(seed)
        split("Acme Books,Blue Bottle,City Cabs,Daily Grocer,Echo Electronics,Fjord Travel,Green Garden,Harbor Hotel", m, ",")
        split("DE,FR,US,GB,NL,ES,IT,JP", c, ",")
        for (i = 0; i < n; i++) {
            card = sprintf("card-%04d", 1 + int(rand() * 400))
            if ((first + i) % 200 == 99)
                printf "{\"card\": \"%s\", \"amount\": 12.5\n", card
            else if ((first + i) % 200 == 199)
                printf "{\"card\": \"%s\", \"merchant\": \"%s\", \"amount\": \"a lot\", \"ts\": \"%s\"}\n", card, m[1], ts
            else {
                a = rand(); a = a * a * a * a * 1000
                printf "{\"card\": \"%s\", \"merchant\": \"%s\", \"amount\": %.2f, \"country\": \"%s\", \"ts\": \"%s\"}\n", \
                    card, m[1 + int(rand() * 8)], a, c[1 + int(rand() * 8)], ts
            }
        }
    }' | kcat -P -b "$BOOTSTRAP" -t payments -X sticky.partitioning.linger.ms=0
}

# And one batch of $CARD_RATE card changes per second to card_limits, keyed
# by card ("card|value"): a new limit and status, or (one in ten) a
# tombstone that deletes the card; one in a hundred is bad (no status).
# $TMP/card_changes holds the number produced so far.
CARD_RATE=$(( RATE / 10 > 0 ? RATE / 10 : 1 ))
produce_card_batch() {
    awk -v n="$CARD_RATE" -v seed="$((RANDOM * 32768 + RANDOM))" -v first="$1" 'BEGIN {
        srand(seed)
        split("active,active,active,frozen,blocked", st, ",")
        for (i = 0; i < n; i++) {
            card = sprintf("card-%04d", 1 + int(rand() * 400))
            if ((first + i) % 100 == 42)
                printf "%s|{\"credit_limit\": 500}\n", card
            else if (rand() < 0.1)
                printf "%s|\n", card
            else
                printf "%s|{\"credit_limit\": %d, \"status\": \"%s\"}\n", card, 500 * (1 + int(rand() * 20)), st[1 + int(rand() * 5)]
        }
    }' | kcat -P -b "$BOOTSTRAP" -t card_limits -K '|' -Z
}

# And one batch of $REFUND_RATE refunds per second to refunds, in Avro,
# encoded by python3-avro (test/avro_tool.py registers the schema and
# produces with kcat); one in fifty is not Avro at all.  $TMP/refunds holds
# the number produced so far.
REFUND_RATE=$(( RATE / 20 > 0 ? RATE / 20 : 1 ))
produce_refund_batch() {
    awk -v n="$REFUND_RATE" -v seed="$((RANDOM * 32768 + RANDOM))" -v first="$1" \
        -v ts="$(date -u '+%Y-%m-%dT%H:%M:%S.000Z')" 'BEGIN {
        srand(seed)
        split("Acme Books,Blue Bottle,City Cabs,Daily Grocer,Echo Electronics,Fjord Travel,Green Garden,Harbor Hotel", m, ",")
        split("damaged,late,fraud,other", r, ",")
        for (i = 0; i < n; i++) {
            if ((first + i) % 50 == 7)
                printf "{\"value_raw_hex\": \"6e6f7420617672\"}\n"
            else
                printf "{\"value\": {\"merchant\": \"%s\", \"amount\": \"%.2f\", \"reason\": \"%s\", \"ts\": \"%s\"}}\n", \
                    m[1 + int(rand() * 8)], 1 + rand() * 200, r[1 + int(rand() * 4)], ts
        }
    }' >"$TMP/refunds.jsonl"
    /usr/bin/python3 "$KAPPA_REPO/test/avro_tool.py" produce --registry "$REGISTRY" \
        --broker "$BOOTSTRAP" --topic refunds --input "$TMP/refunds.jsonl" \
        --value-schema "$TMP/refund.avsc" --value-subject refunds-value >/dev/null
}

generator() {
    trap - INT TERM EXIT
    local total=0 cards=0 refunds=0
    while [ ! -e "$TMP/stop" ]; do
        if produce_batch "$total" >>"$TMP/generator.log" 2>&1; then
            total=$((total + RATE))
            echo "$total" >"$TMP/generated.new" && mv "$TMP/generated.new" "$TMP/generated"
        fi
        if produce_card_batch "$cards" >>"$TMP/generator.log" 2>&1; then
            cards=$((cards + CARD_RATE))
            echo "$cards" >"$TMP/card_changes.new" && mv "$TMP/card_changes.new" "$TMP/card_changes"
        fi
        if produce_refund_batch "$refunds" >>"$TMP/generator.log" 2>&1; then
            refunds=$((refunds + REFUND_RATE))
            echo "$refunds" >"$TMP/refunds.new" && mv "$TMP/refunds.new" "$TMP/refunds"
        fi
        sleep 1
    done
}
echo 0 >"$TMP/generated"
echo 0 >"$TMP/card_changes"
echo 0 >"$TMP/refunds"
generator &
GEN_PID=$!

# ---------------------------------------------------------------- display
view_count() {
    "${PSQL[@]}" -At -c "SELECT coalesce(sum(payments), 0) FROM payment_totals" 2>/dev/null || echo '?'
}
dead_count() {
    "${PSQL[@]}" -At -c "SELECT coalesce(sum(messages), 0) FROM kappa.errors WHERE source = 'payments_src'" 2>/dev/null || echo '?'
}
# refunds counted by the view, plus dead letters
refund_count() {
    "${PSQL[@]}" -At -c "SELECT (SELECT coalesce(sum(refunds), 0) FROM refunds_per_merchant)
                              + (SELECT count(*) FROM kappa.errors WHERE source = 'refunds_src')" 2>/dev/null || echo '?'
}
# card changes applied to the table, plus dead letters
card_count() {
    "${PSQL[@]}" -At -c "SELECT messages + dead_letters FROM kappa.sources WHERE source = 'cards_src'" 2>/dev/null || echo '?'
}
snapshot() {
    "${PSQL[@]}" -P footer=off \
        -c '\echo Totals (view payment_totals; state: live, or building while kappa.replace_view rebuilds it)' \
        -c "SELECT t.*, v.state, v.replayed, v.to_replay FROM payment_totals t, kappa.views v WHERE v.view_name = 'payment_totals'" \
        -c '\echo Revenue per merchant and minute, latest minutes first (view revenue_per_minute)' \
        -c "SELECT * FROM revenue_per_minute ORDER BY minute DESC, revenue DESC LIMIT 8" \
        -c '\echo Cards with payments above 900 (view suspicious_cards)' \
        -c "SELECT * FROM suspicious_cards ORDER BY total DESC, card LIMIT 6" \
        -c '\echo Cards by status (view cards_by_status over the table cards, kept by the changelog card_limits)' \
        -c "SELECT * FROM cards_by_status ORDER BY status" \
        -c '\echo Refunds per merchant, from Avro messages (view refunds_per_merchant), the biggest' \
        -c "SELECT * FROM refunds_per_merchant ORDER BY refunded DESC LIMIT 4" \
        -c '\echo Data contract of payments (kappa.expectations)' \
        -c "SELECT relation, name, rule, action, rows_checked, rows_violating FROM kappa.expectations" \
        -c '\echo Kafka sources (kappa.sources) and their dead letters (kappa.errors)' \
        -c "SELECT source, state, format, envelope, partitions || '/' || partitions_in_topic AS partitions, messages, lag, round(messages_per_sec) AS msgs_per_s, dead_letters, recorded_gaps AS gaps, schema_ids FROM kappa.sources ORDER BY source" \
        -c "SELECT \"offset\", partition, left(convert_from(payload, 'UTF8'), 40) AS payload, left(error, 50) AS error FROM kappa.errors ORDER BY \"when\" DESC LIMIT 3" 2>&1
}

# Kappa reprocessing: a new definition of payment_totals, rebuilt from the
# topic while the source keeps consuming (docs/reprocessing.md)
REBUILD_AT=3
[ -n "$DURATION" ] && [ "$DURATION" -lt 6 ] && REBUILD_AT=1
REBUILT=
replace_totals() {
    kappa_log "kappa.replace_view('payment_totals', ...): a new column, the view rebuilt from the Kafka log while payments flow"
    "${PSQL[@]}" -c "SELECT kappa.replace_view('payment_totals',
      \$\$SELECT count(*) AS payments, sum(amount) AS volume, max(ts) AS last_payment,
                min(amount) AS smallest
           FROM payments\$\$)" >"$TMP/replace.log" 2>&1 \
        || { cat "$TMP/replace.log" >&2; kappa_die "kappa.replace_view failed"; }
    REBUILT=1
}
totals_state() {
    "${PSQL[@]}" -At -c "SELECT state FROM kappa.views WHERE view_name = 'payment_totals'" 2>/dev/null || echo '?'
}

START=$SECONDS
if [ -n "$DURATION" ]; then
    kappa_log "feeding $RATE rows/s for $DURATION s"
else
    kappa_log "feeding $RATE rows/s; Ctrl-C to stop"
fi
while [ -z "$STOP" ]; do
    elapsed=$((SECONDS - START))
    [ -n "$DURATION" ] && [ "$elapsed" -ge "$DURATION" ] && break
    [ -z "$REBUILT" ] && [ "$elapsed" -ge "$REBUILD_AT" ] && replace_totals
    generated=$(cat "$TMP/generated" 2>/dev/null)
    if [ -n "$TTY_OUT" ] && [ -n "$INTERACTIVE" ]; then
        screen=$(
            echo "pg_kappa demo: Kafka topic payments -> stream payments -> continuous views, $RATE messages/s.  Ctrl-C to stop."
            echo "server 127.0.0.1:$PORT   broker $BOOTSTRAP   elapsed ${elapsed}s   messages produced: ${generated:-0}"
            echo "try: psql -h 127.0.0.1 -p $PORT -U postgres -c 'SELECT * FROM kappa.views'"
            echo
            snapshot
            tail -n 3 "$TMP/generator.log" 2>/dev/null | sed 's/^/generator: /'
        )
        printf '\033[H\033[2J%s\n' "$screen"
    else
        echo "[${elapsed}s] messages produced: ${generated:-0}, payments in view payment_totals: $(view_count), dead letters: $(dead_count)"
    fi
    sleep 1
done

# ---------------------------------------------------------------- wrap up
touch "$TMP/stop"
for _ in $(seq 1 20); do kill -0 "$GEN_PID" 2>/dev/null || break; sleep 0.5; done
kill "$GEN_PID" 2>/dev/null
wait "$GEN_PID" 2>/dev/null
GEN_PID=
generated=$(cat "$TMP/generated")
card_changes=$(cat "$TMP/card_changes")
refunds=$(cat "$TMP/refunds")
[ -z "$REBUILT" ] && replace_totals
# the sources catch up within their batch latency, and the rebuilt
# payment_totals is swapped in; give them a few seconds
for _ in $(seq 1 120); do
    counted=$(view_count)
    dead=$(dead_count)
    cards_done=$(card_count)
    refunds_done=$(refund_count)
    [ "$counted" != '?' ] && [ "$dead" != '?' ] && [ $((counted + dead)) -ge "$generated" ] \
        && [ "$cards_done" != '?' ] && [ -n "$cards_done" ] && [ "$cards_done" -ge "$card_changes" ] \
        && [ "$refunds_done" != '?' ] && [ -n "$refunds_done" ] && [ "$refunds_done" -ge "$refunds" ] \
        && [ "$(totals_state)" = live ] && break
    sleep 0.5
done
# the view over the table against its query as plain SQL
cards_diff=$("${PSQL[@]}" -At -c "SELECT count(*) FROM ((TABLE cards_by_status EXCEPT ALL
    SELECT status, count(*), sum(credit_limit) FROM cards GROUP BY status)
  UNION ALL (SELECT status, count(*), sum(credit_limit) FROM cards GROUP BY status
    EXCEPT ALL TABLE cards_by_status)) d" 2>/dev/null || echo '?')
echo
snapshot
echo
if [ -s "$TMP/generator.log" ]; then
    echo "generator messages (last 5):"
    tail -n 5 "$TMP/generator.log"
fi
totals=$(totals_state)
echo "view payment_totals, replaced while payments flowed and rebuilt from the Kafka log: state $totals"
echo "messages produced: $generated = payments counted by the rebuilt view payment_totals: $counted + dead letters and lost messages: $dead"
echo "card changes produced: $card_changes = applied to the table cards or kept as dead letters: $cards_done; view cards_by_status rows differing from its query: $cards_diff"
echo "Avro refunds produced: $refunds = counted by the view refunds_per_merchant or kept as dead letters: $refunds_done"
status=0
if [ "$totals" != live ]; then
    echo "MISMATCH: the rebuilt payment_totals was not swapped in" >&2
    status=1
fi
if [ "$refunds_done" != "$refunds" ]; then
    echo "MISMATCH: Avro refunds neither counted nor kept as dead letters" >&2
    status=1
fi
if [ "$cards_done" != "$card_changes" ] || [ "$cards_diff" != 0 ]; then
    echo "MISMATCH: card changes not all applied, or the view over the table differs from its query" >&2
    status=1
fi
if [ "$counted" = '?' ] || [ "$dead" = '?' ] || [ $((counted + dead)) -ne "$generated" ]; then
    echo "MISMATCH: produced messages are neither counted nor kept as dead letters" >&2
    status=1
elif [ "$generated" -eq 0 ]; then
    echo "no messages could be produced" >&2
    status=1
fi
exit "$status"
