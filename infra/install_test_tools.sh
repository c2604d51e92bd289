#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python venv, idempotently, on a fresh Debian machine:
# a PostgreSQL server (the SQL connector is tested against a real one), and the deploy-check tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL server (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server missing and cannot be installed here: its tests will skip" >&2
  fi
fi

if [ -f infra/deploy_tools.sh ]; then
  bash infra/deploy_tools.sh
fi
