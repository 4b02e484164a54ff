#!/usr/bin/env bash
# pytest-postgresql runs pg_ctl as the current user, and PostgreSQL refuses to run as root (CI
# containers often are). As root, this runs pg_ctl as the `postgres` user, with the data directory
# and server log moved from pytest's private temp folder (0700, re-tightened by every pytest run)
# to a folder of its own under /tmp (a symlink left where the plugin looks), removed again when
# the server is stopped — unless QP_PG_KEEP_DATA is set (a test stopping the server to start it
# again: tests/store/fleet_processes.py).
set -euo pipefail
PG_CTL="${QP_PG_CTL:-pg_ctl}"
if [ "$(id -u)" != 0 ]; then
  exec "$PG_CTL" "$@"
fi
args=("$@")
datadir=""
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  case "${args[i]}" in -D|--pgdata) datadir="${args[i + 1]}" ;; esac
done
if [ -z "$datadir" ]; then
  exec runuser -u postgres -- "$PG_CTL" "${args[@]}"
fi
home="/tmp/qp-pgtest-$(printf %s "$datadir" | md5sum | cut -c1-16)"
install -d -m 700 -o postgres "$home"
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  case "${args[i]}" in
    -D|--pgdata) args[i + 1]="$home/data" ;;
    -l) args[i + 1]="$home/server.log" ;;
  esac
done
status=0
runuser -u postgres -- "$PG_CTL" "${args[@]}" || status=$?
if [ "${args[0]}" = stop ] && [ "$status" = 0 ] && [ -z "${QP_PG_KEEP_DATA:-}" ]; then
  rm -rf "$home"
  [ -L "$datadir" ] && rm -f "$datadir"
elif [ -d "$home/data" ] && [ ! -e "$datadir" ]; then
  ln -s "$home/data" "$datadir"   # the plugin looks for its data directory where it put it
fi
exit "$status"
