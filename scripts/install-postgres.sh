#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres, pg_ctl) can be found by the test
# fixture (clustera_outbox::testing::pg_bin), looking where it looks: CLUSTERA_PG_BIN,
# `pg_config --bindir`, initdb on PATH, Debian's and Ubuntu's /usr/lib/postgresql/*/bin.
# Installs the distribution's package where it can (apt, as root or with sudo; Homebrew) and
# says what to install where it cannot. Prints the directory found.
set -euo pipefail

find_bindir() {
  if [ -n "${CLUSTERA_PG_BIN:-}" ]; then
    [ -x "$CLUSTERA_PG_BIN/initdb" ] && { echo "$CLUSTERA_PG_BIN"; return 0; }
    echo "install-postgres: CLUSTERA_PG_BIN=$CLUSTERA_PG_BIN has no initdb" >&2
    return 1
  fi
  local dir
  if command -v pg_config >/dev/null; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  fi
  if command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

if find_bindir; then
  exit 0
fi
[ -n "${CLUSTERA_PG_BIN:-}" ] && exit 1

if command -v apt-get >/dev/null; then
  echo "install-postgres: installing the distribution's postgresql package" >&2
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
      echo "install-postgres: not root and no sudo: run 'apt-get install postgresql' as root" >&2
      exit 1
    }
    sudo_cmd="sudo"
  fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >&2
  # The package starts a cluster of its own; the tests start throwaway ones instead.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r version name _; do
      $sudo_cmd pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
    done
  fi
elif command -v brew >/dev/null; then
  echo "install-postgres: installing postgresql@16 with Homebrew" >&2
  brew install postgresql@16 >&2
  export PATH="$(brew --prefix postgresql@16)/bin:$PATH"
else
  cat >&2 <<'HELP'
install-postgres: PostgreSQL's server binaries were not found. Install them, then run again:
  Debian, Ubuntu: sudo apt-get install postgresql
  macOS:          brew install postgresql@16   (and put its bin directory on PATH)
  elsewhere:      set CLUSTERA_PG_BIN to the directory holding initdb, postgres and pg_ctl
HELP
  exit 1
fi
find_bindir || {
  echo "install-postgres: installed, but initdb is still not found" >&2
  exit 1
}
