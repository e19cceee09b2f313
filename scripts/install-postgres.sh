#!/usr/bin/env bash
# Makes sure PostgreSQL 15's server binaries are where the test fixture looks for them
# (/usr/lib/postgresql/15/bin), installing Debian's package if they are missing.
set -euo pipefail
if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
  exit 0
fi
echo "install-postgres: installing postgresql-15" >&2
sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql-15 >&2
# The package starts a cluster of its own; the tests start throwaway ones instead.
$sudo_cmd pg_ctlcluster 15 main stop 2>/dev/null || true
