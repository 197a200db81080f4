#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a database
# "test" that the storage tests can use (trust auth on loopback). Installs and
# starts Debian's postgresql when it is not there. Idempotent.
set -euo pipefail

HOST=127.0.0.1 PORT=5432 DB=test

ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "postgres.sh: installing postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! ready; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "postgres.sh: starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
ready || { echo "postgres.sh: PostgreSQL is not answering on $HOST:$PORT" >&2; exit 1; }

# A fresh Debian install asks for passwords on TCP; the tests use trust on
# loopback, as on the CI machines. Only touch a cluster we cannot log into.
if ! psql -h "$HOST" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    echo "postgres.sh: allowing trust auth on 127.0.0.1 in $hba" >&2
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi

psql_as() { if [ "$(id -u)" = 0 ]; then su postgres -c "psql -qAt $*"; else psql -qAt -h "$HOST" -U postgres "$@"; fi; }
if ! psql -h "$HOST" -U postgres -d "$DB" -qAtc 'select 1' >/dev/null 2>&1; then
    echo "postgres.sh: creating database $DB" >&2
    psql_as "-c 'CREATE DATABASE $DB'"
fi
psql -h "$HOST" -U postgres -d "$DB" -qAtc 'select 1' >/dev/null
echo "postgres.sh: PostgreSQL ready on $HOST:$PORT, database $DB" >&2
