#!/bin/sh
# The official image's start-up, reduced to what the tests use: a cluster is made on the first
# start of an empty volume, owned by POSTGRES_USER with POSTGRES_PASSWORD (scram-sha-256 over
# TCP), POSTGRES_DB created; later starts reuse it.
set -eu
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    # UTF8 as in the official image (initdb under the C locale would make SQL_ASCII).
    as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
        as_postgres psql -q -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
        as_postgres pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    fi
fi
shift
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c listen_addresses='*' "$@"
