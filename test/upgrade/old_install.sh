#!/usr/bin/env bash
# test/upgrade/old_install.sh DIR
#
# Builds, in DIR, a PostgreSQL 15 installation where pg_kappa is the released
# version 0.1, for the upgrade test (test/t/210_upgrade.pl): a relocated copy
# of this machine's PostgreSQL 15 (Debian's /usr/lib/postgresql/15 and
# /usr/share/postgresql/15, which PostgreSQL finds relative to its binaries)
# with pg_kappa 0.1 built from test/upgrade/pg_kappa-0.1.tar.gz (git archive
# of the 0.1 release, commit 3a07e24) in place of the installed version.
#
# DIR/pg/lib/postgresql/15 is then an install_path for
# PostgreSQL::Test::Cluster.  Needs no root: everything is written in DIR.
set -euo pipefail

dir=$1
here=$(cd "$(dirname "$0")" && pwd)
pgbin=/usr/lib/postgresql/15/bin
root=$dir/pg
mkdir -p "$root/lib/postgresql/15" "$root/share/postgresql"

# the server, relocated (copies, not links: PostgreSQL resolves symlinks to
# find its own directory); JIT bitcode is not needed
cp -rL /usr/lib/postgresql/15/bin "$root/lib/postgresql/15/bin"
mkdir -p "$root/lib/postgresql/15/lib"
find /usr/lib/postgresql/15/lib -maxdepth 1 -type f -exec cp {} "$root/lib/postgresql/15/lib/" \;
cp -rL /usr/share/postgresql/15 "$root/share/postgresql/15"
rm -f "$root"/share/postgresql/15/extension/pg_kappa*

# pg_kappa 0.1
tar -xzf "$here/pg_kappa-0.1.tar.gz" -C "$dir"
make -s -C "$dir/pg_kappa-0.1" PG_CONFIG=$pgbin/pg_config pg_kappa.so pg_kappa--0.1.sql >/dev/null
cp "$dir/pg_kappa-0.1/pg_kappa.so" "$root/lib/postgresql/15/lib/pg_kappa.so"
cp "$dir/pg_kappa-0.1/pg_kappa.control" "$dir/pg_kappa-0.1/pg_kappa--0.1.sql" \
   "$root/share/postgresql/15/extension/"
echo "$root/lib/postgresql/15"
