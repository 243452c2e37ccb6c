#!/bin/sh
# A throwaway PostgreSQL 15 server for the tests and the benchmarks: a new
# cluster in DIR/data, listening on a Unix socket in DIR only (no TCP), trust
# authentication for the postgres user. `start` prints nothing and writes the
# libpq connection string to DIR/conninfo; `stop` stops it and deletes DIR.
# initdb refuses to run as root: as root, the server runs as the postgres
# user (DIR is made theirs).
# Usage: throwaway.sh start|stop|restart DIR
# Environment: RRD_POSTGRES_BIN (default /usr/lib/postgresql/15/bin).
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 start|stop|restart DIR" >&2
  exit 2
fi
action=$1 dir=$2
bin=${RRD_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}

as_server() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ctl() {
  as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@"
}

case $action in
  start)
    if [ ! -x "$bin/initdb" ]; then
      echo "throwaway.sh: $bin/initdb not found: install postgresql-15 (scripts/setup.sh does)" >&2
      exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    # --no-sync: the cluster is thrown away; the server itself still fsyncs
    # (the benchmarks measure real commits).
    as_server "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    ctl -o "-c listen_addresses='' -k $dir -c max_connections=200" start >/dev/null || {
      cat "$dir/server.log" >&2
      exit 1
    }
    printf 'host=%s dbname=postgres user=postgres\n' "$dir" >"$dir/conninfo"
    ;;
  restart)
    dir=$(cd "$dir" && pwd)
    ctl -m fast restart -o "-c listen_addresses='' -k $dir -c max_connections=200" >/dev/null
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      ctl -m fast stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|restart DIR" >&2
    exit 2
    ;;
esac
