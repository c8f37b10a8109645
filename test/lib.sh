# shellcheck shell=bash
# Shared helpers for test/run.sh and demo/run.sh.  Source it; do not run it.
#
# Works on Debian 12 as root or as a user with sudo:
#   kappa_install_deps   apt-get the build and test dependencies (skipped when
#                        all are installed already)
#   kappa_build          make -j2 KAPPA_WERROR=-Werror in the repo
#   kappa_install        make install (as root, via sudo when needed)
#   kappa_pg_user        the user that runs Postgres: the invoking user, or the
#                        unprivileged $KAPPA_PG_USER (created) when root
#   kappa_as_pg_user     run a command as that user
#   kappa_stop_postmasters DIR   stop any postmaster whose data dir is under DIR
#   kappa_start_server DIR [CONF]  initdb DIR/data and start a loopback server
#                        with pg_kappa preloaded (socket in DIR, port in
#                        $KAPPA_PORT, extra postgresql.conf lines in CONF)

KAPPA_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAPPA_PG_BIN=${KAPPA_PG_BIN:-/usr/lib/postgresql/15/bin}
KAPPA_PG_USER=${KAPPA_PG_USER:-kappa_test}
KAPPA_DEPS=(build-essential postgresql-15 postgresql-server-dev-15 librdkafka-dev
            kcat libipc-run-perl postgresql-15-hll python3
            libavro-dev libcurl4-openssl-dev python3-avro)

export PATH="$KAPPA_PG_BIN:$PATH"
export DEBIAN_FRONTEND=noninteractive
# A locale that exists on every Debian system: initdb and perl need a valid one.
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGPASSWORD

kappa_log() { printf '==> %s\n' "$*" >&2; }
kappa_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when root, else with sudo.
kappa_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -E "$@"
    else
        kappa_die "need root for: $* (run as root, or install sudo and use a sudo user)"
    fi
}

kappa_install_deps() {
    local missing=() p
    for p in "${KAPPA_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ] && [ -z "${KAPPA_FORCE_APT:-}" ]; then
        kappa_log "dependencies already installed: ${KAPPA_DEPS[*]}"
        return 0
    fi
    kappa_log "installing dependencies: ${missing[*]:-${KAPPA_DEPS[*]}}"
    kappa_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
        || kappa_die "apt-get update failed"
    kappa_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${KAPPA_DEPS[@]}" </dev/null \
        || kappa_die "apt-get install failed"
}

kappa_make() {
    make -C "$KAPPA_REPO" PG_CONFIG="$KAPPA_PG_BIN/pg_config" "$@"
}

kappa_build() {
    kappa_log "building (make -j2 KAPPA_WERROR=-Werror)"
    kappa_make -j2 KAPPA_WERROR=-Werror
}

kappa_install() {
    kappa_log "installing the extension (make install)"
    kappa_as_root make -C "$KAPPA_REPO" PG_CONFIG="$KAPPA_PG_BIN/pg_config" install
}

# The user that runs Postgres (Postgres refuses to run as root).
kappa_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        echo "$KAPPA_PG_USER"
    else
        id -un
    fi
}

kappa_ensure_pg_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    if ! id -u "$KAPPA_PG_USER" >/dev/null 2>&1; then
        kappa_log "creating unprivileged user $KAPPA_PG_USER to run Postgres"
        useradd --create-home --shell /bin/bash "$KAPPA_PG_USER" \
            || kappa_die "could not create user $KAPPA_PG_USER"
    fi
}

# Run a command as the Postgres user, with our PATH and locale.
kappa_as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$KAPPA_PG_USER" -- env PATH="$PATH" LANG="$LANG" LC_ALL="$LC_ALL" \
            HOME="$(getent passwd "$KAPPA_PG_USER" | cut -d: -f6)" "$@"
    else
        "$@"
    fi
}

# Stop every postmaster whose data directory is below $1 (ours: a throwaway
# tree), e.g. servers left behind by a test run that was interrupted.
kappa_stop_postmasters() {
    local dir=$1 pidfile pid
    [ -d "$dir" ] || return 0
    while IFS= read -r pidfile; do
        pid=$(head -n 1 "$pidfile" 2>/dev/null)
        case "$pid" in ''|*[!0-9]*) continue ;; esac
        if kill -0 "$pid" 2>/dev/null; then
            kappa_log "stopping leftover postmaster $pid ($(dirname "$pidfile"))"
            kill -QUIT "$pid" 2>/dev/null || true
        fi
    done < <(find "$dir" -name postmaster.pid -type f 2>/dev/null)
}

# Start a throwaway server for benchmarks: data in $1/data, socket in $1,
# 127.0.0.1 on a random port (set in KAPPA_PORT), pg_kappa preloaded,
# default settings otherwise plus the lines in $2.
kappa_start_server() {
    local dir=$1 extra=${2:-}
    KAPPA_PORT=$((20000 + RANDOM % 20000))
    kappa_as_pg_user initdb -D "$dir/data" -U postgres -A trust -E UTF8 --no-instructions >/dev/null \
        || kappa_die "initdb failed"
    cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $KAPPA_PORT
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_kappa'
max_wal_size = '4GB'
$extra
EOF
    kappa_as_pg_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null \
        || { tail "$dir/server.log"; kappa_die "server did not start"; }
}
