#!/bin/sh
# A throwaway PostgreSQL 15 server for the tests and the benchmarks: a new
# cluster in DIR/data, listening on a Unix socket in DIR only (no TCP), trust
# authentication for the postgres user. `start` prints nothing and writes the
# libpq connection string to DIR/conninfo; `stop` stops it and deletes DIR;
# `down` stops it and keeps its files, `up` starts it again (a database that
# goes away for a while); `restart` does both at once.
# initdb refuses to run as root: as root, the server runs as the postgres
# user, in a directory of theirs under /tmp (DIR may be somewhere they
# cannot reach, a home directory of mode 700), and DIR holds a link to its
# socket, so that host=DIR still connects.
# Usage: throwaway.sh start|stop|down|up|restart DIR
# Environment: RRD_POSTGRES_BIN (default /usr/lib/postgresql/15/bin).
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 start|stop|down|up|restart DIR" >&2
  exit 2
fi
action=$1 dir=$2
bin=${RRD_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}

as_server() {
  if [ "$(id -u)" = 0 ]; then
    # From /: the postgres user may not be able to enter the current one.
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Where the server keeps its files and its socket: DIR itself, or as root
# the directory DIR/server names.
server_dir() {
  if [ -f "$dir/server" ]; then
    cat "$dir/server"
  else
    printf '%s\n' "$dir"
  fi
}

ctl() {
  srv=$(server_dir)
  as_server "$bin/pg_ctl" -D "$srv/data" -l "$srv/server.log" -w -t 60 "$@"
}

case $action in
  start)
    if [ ! -x "$bin/initdb" ]; then
      echo "throwaway.sh: $bin/initdb not found: install postgresql-15 (scripts/setup.sh does)" >&2
      exit 1
    fi
    if [ -f "$dir/server" ]; then
      rm -rf "$(cat "$dir/server")"
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    srv=$dir
    if [ "$(id -u)" = 0 ]; then
      srv=$(mktemp -d /tmp/rrd-postgres.XXXXXX)
      chown postgres: "$srv"
      printf '%s\n' "$srv" >"$dir/server"
    fi
    # --no-sync: the cluster is thrown away; the server itself still fsyncs
    # (the benchmarks measure real commits).
    as_server "$bin/initdb" -D "$srv/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    ctl -o "-c listen_addresses='' -k $srv -c max_connections=200" start >/dev/null || {
      cat "$srv/server.log" >&2
      exit 1
    }
    if [ "$srv" != "$dir" ]; then
      ln -s "$srv/.s.PGSQL.5432" "$dir/.s.PGSQL.5432"
    fi
    printf 'host=%s dbname=postgres user=postgres\n' "$dir" >"$dir/conninfo"
    ;;
  restart)
    dir=$(cd "$dir" && pwd)
    ctl -m fast restart -o "-c listen_addresses='' -k $(server_dir) -c max_connections=200" \
      >/dev/null
    ;;
  down)
    ctl -m fast stop >/dev/null
    ;;
  up)
    ctl -o "-c listen_addresses='' -k $(server_dir) -c max_connections=200" start >/dev/null
    ;;
  stop)
    srv=$(server_dir)
    if [ -d "$srv/data" ]; then
      ctl -m fast stop >/dev/null || true
    fi
    if [ "$srv" != "$dir" ]; then
      rm -rf "$srv"
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|down|up|restart DIR" >&2
    exit 2
    ;;
esac
