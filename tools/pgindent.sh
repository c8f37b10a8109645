#!/usr/bin/env bash
# tools/pgindent.sh — lay out pg_kappa's C sources the way PostgreSQL's
# pgindent does: Debian's pg_bsd_indent with pgindent's options, then
# pgindent's fix-up of function return types ("Type *" alone on a line).
#
#   bash tools/pgindent.sh [FILES...]      (default: src/*.c src/*.h test/*.c)
#
# tools/typedefs.list comes from tools/typedefs.py (PostgreSQL's server
# headers, librdkafka's headers and our sources).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pg_bsd_indent >/dev/null || { echo "apt-get install pg-bsd-indent" >&2; exit 1; }
[ $# -gt 0 ] || set -- src/*.c src/*.h test/*.c
for f in "$@"; do
    pg_bsd_indent -bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79 \
        -lp -lpl -nip -npro -sac -tpg -ts4 -Utools/typedefs.list "$f" "$f.indent.tmp"
    sed -i -E 's/^([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_])[ \t]+\*$/\1 */' "$f.indent.tmp"
    if ! cmp -s "$f" "$f.indent.tmp"; then
        mv "$f.indent.tmp" "$f"
        echo "reindented $f"
    else
        rm -f "$f.indent.tmp"
    fi
done
