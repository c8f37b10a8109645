#!/usr/bin/env bash
# The whole pg_kappa test suite, from a fresh Debian 12 machine:
#
#   bash test/run.sh                 all suites
#   bash test/run.sh installcheck    only the named suites
#                                    (installcheck isolationcheck prove-check)
#
# Run it as root or as a user with sudo.  It installs the dependencies
# (apt-get), builds with -Werror, installs the extension, and runs the
# pg_regress, isolation and TAP suites, each on throwaway servers it starts
# itself, and checks that calls between source files follow the layers of
# docs/architecture.md (tools/call_edges.pl).  As root, the suites run as the unprivileged user kappa_test (created
# if missing) in a copy of the tree under /tmp, since Postgres refuses to run
# as root.  Ends with one line "N passed, N failed"; exits non-zero if
# anything failed.
#
# Environment: KAPPA_TEST_TIMEOUT  seconds for the whole run (default 840)
#              KAPPA_PROVE_FLAGS   extra flags for prove (e.g. --verbose)
#              KAPPA_KEEP_TMP=1    keep the temporary copy even on success
#              KAPPA_FORCE_APT=1   run apt-get even if everything is installed
set -uo pipefail

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SUITES=(installcheck isolationcheck prove-check)
SUITES=()
for arg in "$@"; do
    case "$arg" in
        installcheck|isolationcheck|prove-check) SUITES+=("$arg") ;;
        -h|--help) sed -n '2,/^set -uo/{/^# shellcheck/d; /^#/!d; s/^# \{0,1\}//; p}' "$0"; exit 0 ;;
        *) echo "usage: $0 [installcheck|isolationcheck|prove-check ...]" >&2; exit 2 ;;
    esac
done
[ ${#SUITES[@]} -gt 0 ] || SUITES=("${ALL_SUITES[@]}")

DEADLINE=$((SECONDS + ${KAPPA_TEST_TIMEOUT:-840}))
PASSED=0
FAILED=0
REPORT=()
RUN_TMP=

finish() {
    echo
    echo "==================== summary ===================="
    local line
    for line in "${REPORT[@]}"; do echo "$line"; done
    if [ -n "$RUN_TMP" ]; then
        if [ "$FAILED" -eq 0 ] && [ -z "${KAPPA_KEEP_TMP:-}" ]; then
            kappa_stop_postmasters "$RUN_TMP"
            rm -rf "$RUN_TMP"
        else
            echo "test tree and logs kept in $RUN_TMP"
        fi
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && exit 0
    exit 1
}

# ---------------------------------------------------------------- build
kappa_install_deps
if ! kappa_build; then
    REPORT+=("build: FAILED (make -j2 KAPPA_WERROR=-Werror)")
    FAILED=$((FAILED + 1))
    finish
fi
if ! kappa_install; then
    REPORT+=("install: FAILED (make install)")
    FAILED=$((FAILED + 1))
    finish
fi

# ---------------------------------------------------------------- test tree
RUN_TMP=$(mktemp -d /tmp/pg_kappa-test.XXXXXX) || kappa_die "mktemp failed"
LOGS=$RUN_TMP/logs
mkdir -p "$LOGS"
if [ "$(id -u)" -eq 0 ]; then
    kappa_ensure_pg_user
    WORK=$RUN_TMP/tree
    mkdir -p "$WORK"
    # The built tree, without .git, owned by the unprivileged user.
    tar -C "$KAPPA_REPO" --exclude=./.git -cf - . | tar -C "$WORK" -xf - \
        || kappa_die "could not copy the tree to $WORK"
    chmod 711 "$RUN_TMP"
    chown -R "$KAPPA_PG_USER": "$WORK"
    kappa_log "running the suites as $KAPPA_PG_USER in $WORK"
else
    WORK=$KAPPA_REPO
    kappa_log "running the suites as $(id -un) in $WORK"
fi
cd "$WORK" || kappa_die "cannot cd to $WORK"

# ---------------------------------------------------------------- suites
# run_suite NAME: make NAME as the Postgres user within the time left, output
# to the terminal and to $LOGS/NAME.log.  Sets SUITE_RC (124: timed out).
run_suite() {
    local name=$1 later=$2 left
    # Leave at least a minute for each later suite.
    left=$((DEADLINE - SECONDS - 60 * later))
    [ "$left" -ge 30 ] || left=30
    kappa_log "make $name (time limit ${left}s)"
    # TAP_TESTS= : PGXS's installcheck would run the TAP tests too; they are
    # the prove-check suite here.
    kappa_as_pg_user timeout -k 15 "$left" \
        env TEMP_CONFIG="$WORK/test/tap.conf" \
        make PG_CONFIG="$KAPPA_PG_BIN/pg_config" TAP_TESTS= \
             PROVE_FLAGS="${KAPPA_PROVE_FLAGS:-}" "$name" \
        </dev/null 2>&1 | tee "$LOGS/$name.log"
    SUITE_RC=${PIPESTATUS[0]}
    kappa_stop_postmasters "$WORK"
}

# Tail of a file, framed, for the CI log.
show() {
    local file=$1 lines=${2:-100}
    [ -s "$file" ] || return 0
    echo "----- ${file#"$WORK"/} (last $lines lines) -----"
    tail -n "$lines" "$file"
}

# Count pg_regress / pg_isolation_regress result lines in $1.
count_regress() {
    local log=$1 ok bad
    ok=$(grep -cE '\.\.\. ok( |$)' "$log")
    bad=$(grep -cE '\.\.\. (FAILED|failed)( |$)|^diff command failed' "$log")
    echo "$ok $bad"
}

record() {
    local name=$1 ok=$2 bad=$3 note=${4:-}
    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + bad))
    REPORT+=("$(printf '%-15s %d passed, %d failed%s' "$name:" "$ok" "$bad" "$note")")
}

suite_installcheck() {
    if ! compgen -G 'sql/*.sql' >/dev/null; then
        REPORT+=("installcheck:   skipped (no tests in sql/)")
        return
    fi
    run_suite installcheck "$1"
    local ok bad ran note=""
    read -r ok bad < <(count_regress "$LOGS/installcheck.log")
    ran=$((ok + bad))
    [ "$SUITE_RC" -eq 124 ] && note=" (TIMED OUT)"
    if [ "$SUITE_RC" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    record installcheck "$ok" "$bad" "$note"
    if [ "$SUITE_RC" -ne 0 ]; then
        show regression.diffs 300
        if [ "$ran" -eq 0 ]; then       # the server did not start?
            local f
            for f in log/*.log; do show "$f" 40; done
        fi
    fi
}

suite_isolationcheck() {
    if ! compgen -G 'test/isolation/specs/*.spec' >/dev/null; then
        REPORT+=("isolationcheck: skipped (no specs in test/isolation/specs/)")
        return
    fi
    run_suite isolationcheck "$1"
    local ok bad ran note=""
    read -r ok bad < <(count_regress "$LOGS/isolationcheck.log")
    ran=$((ok + bad))
    [ "$SUITE_RC" -eq 124 ] && note=" (TIMED OUT)"
    if [ "$SUITE_RC" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    record isolationcheck "$ok" "$bad" "$note"
    if [ "$SUITE_RC" -ne 0 ]; then
        show output_iso/regression.diffs 300
        if [ "$ran" -eq 0 ]; then
            local f
            for f in output_iso/log/*.log; do show "$f" 40; done
        fi
    fi
}

suite_prove_check() {
    if ! compgen -G 'test/t/*.pl' >/dev/null; then
        REPORT+=("prove-check:    skipped (no tests in test/t/)")
        return
    fi
    run_suite prove-check "$1"
    local log=$LOGS/prove-check.log total ok bad=0 note="" line n files=()
    # "Files=3, Tests=45, ..." then, on failure, one summary line per bad file:
    # "test/t/002_x.pl (Wstat: 256 (exited 1) Tests: 3 Failed: 1)"
    total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log" | tail -n 1)
    total=${total:-0}
    while IFS= read -r line; do
        n=$(sed -n 's/.*Tests: [0-9]* Failed: \([0-9]*\)).*/\1/p' <<<"$line")
        files+=("${line%%.pl *}.pl")
        if [ "${n:-0}" -gt 0 ]; then
            bad=$((bad + n))
        else
            bad=$((bad + 1)); total=$((total + 1))   # died, bad plan, ...
        fi
    done < <(grep -E '^[^ ].*\.pl +\(Wstat: ' "$log")
    ok=$((total - bad))
    [ "$ok" -ge 0 ] || ok=0
    [ "$SUITE_RC" -eq 124 ] && note=" (TIMED OUT)"
    if [ "$SUITE_RC" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    record prove-check "$ok" "$bad" "$note"
    if [ "$SUITE_RC" -ne 0 ]; then
        local f base
        if [ ${#files[@]} -eq 0 ]; then
            for f in tmp_check/log/*; do [ -f "$f" ] && show "$f" 60; done
        fi
        for f in "${files[@]}"; do
            base=$(basename "$f" .pl)
            show "tmp_check/log/regress_log_$base" 80
            for n in tmp_check/log/"$base"_*.log; do show "$n" 40; done
        done
    fi
}

# No error any test provokes may be an internal one (SQLSTATE XX000): every
# server logs its errors' SQLSTATEs (test/regress.conf, test/tap.conf).  Nor
# may any server process crash: tests kill processes only with SIGKILL
# (signal 9), so any other signal in a log is a crash, even if the test
# that met it passed after the restart.
check_internal_errors() {
    local found crashed
    found=$(grep -rh --include='*.log' -e ' XX000 ' log output_iso/log tmp_check/log 2>/dev/null)
    if [ -n "$found" ]; then
        record "no XX000" 0 1
        echo "----- internal errors (XX000) in the servers' logs -----"
        printf '%s\n' "$found" | head -n 50
    else
        record "no XX000" 1 0
    fi
    crashed=$(grep -rH --include='*.log' -E 'terminated by signal [0-9]+' log output_iso/log tmp_check/log 2>/dev/null |
        grep -v 'terminated by signal 9: Killed')
    if [ -n "$crashed" ]; then
        record "no crash" 0 1
        echo "----- server processes that crashed -----"
        printf '%s\n' "$crashed" | head -n 50
    else
        record "no crash" 1 0
    fi
}

# Calls between source files go one way, down the layers of
# docs/architecture.md (tools/call_edges.pl, from gcc's own call graph).
# The check must also fail where it should: test/layers_fixture calls up.
check_layers() {
    if perl tools/call_edges.pl >"$LOGS/layers.log" 2>&1; then
        record "layers" 1 0
    else
        record "layers" 0 1
        show "$LOGS/layers.log" 40
    fi
    if ! perl tools/call_edges.pl --root test/layers_fixture \
            >"$LOGS/layers_fixture.log" 2>&1 &&
        grep -q 'low.c (layer 2, bottom) calls up into high.c' "$LOGS/layers_fixture.log" &&
        grep -q 'call cycle between high.c, low.c' "$LOGS/layers_fixture.log"; then
        record "layers fixture" 1 0
    else
        record "layers fixture" 0 1
        show "$LOGS/layers_fixture.log" 20
    fi
}

check_layers
i=${#SUITES[@]}
for s in "${SUITES[@]}"; do
    i=$((i - 1))
    echo
    case "$s" in
        installcheck)   suite_installcheck "$i" ;;
        isolationcheck) suite_isolationcheck "$i" ;;
        prove-check)    suite_prove_check "$i" ;;
    esac
done
check_internal_errors

finish
