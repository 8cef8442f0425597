#!/usr/bin/env bash
# A Patroni member in a container. Patroni reads no *_FILE variable: the passwords are read from their files
# here, for Patroni and for patronictl alike (`docker exec <member> patroni-entrypoint.sh patronictl list`).
# A task's address changes each time it starts: unless given, a member's address is the one it reaches the first
# etcd host from (the network it shares with its peers and the DCS), and PostgreSQL listens there and on the
# loopback only. Then the command, as PID 1 for Patroni.
set -Eeuo pipefail

# from_file NAME: export NAME from the file NAME_FILE names, when NAME_FILE is set.
from_file() {
	local file_variable="$1_FILE"
	if [ -n "${!file_variable:-}" ]; then
		export "$1"="$(< "${!file_variable}")"
		unset "$file_variable"
	fi
}
for name in SUPERUSER REPLICATION REWIND RESTAPI; do
	from_file "PATRONI_${name}_PASSWORD"
done

if [ "${1:-}" = patroni ] && { [ -z "${PATRONI_POSTGRESQL_CONNECT_ADDRESS:-}" ] || [ -z "${PATRONI_RESTAPI_CONNECT_ADDRESS:-}" ]; }; then
	# PATRONI_ETCD3_HOSTS: host:port items, comma-separated, each maybe quoted.
	first="${PATRONI_ETCD3_HOSTS:-${PATRONI_ETCD3_HOST:-}}"
	first="${first%%,*}"
	first="${first//[\'\"[:space:]]/}"
	dcs_host="${first%:*}"
	if [ -z "$dcs_host" ]; then
		echo >&2 "error: set PATRONI_ETCD3_HOSTS, or both PATRONI_POSTGRESQL_CONNECT_ADDRESS and PATRONI_RESTAPI_CONNECT_ADDRESS"
		exit 1
	fi
	# The DCS may start after this member: wait until its name resolves.
	until dcs_address="$(getent ahostsv4 "$dcs_host" | awk 'NR == 1 { print $1 }')" && [ -n "$dcs_address" ]; do
		echo >&2 "waiting for $dcs_host to resolve"
		sleep 1
	done
	address="$(ip -4 route get "$dcs_address" | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
	export PATRONI_POSTGRESQL_CONNECT_ADDRESS="${PATRONI_POSTGRESQL_CONNECT_ADDRESS:-$address:5432}"
	# PostgreSQL on that address and the loopback only: not on the member's other networks.
	export PATRONI_POSTGRESQL_LISTEN="${PATRONI_POSTGRESQL_LISTEN:-127.0.0.1,$address:5432}"
	export PATRONI_RESTAPI_CONNECT_ADDRESS="${PATRONI_RESTAPI_CONNECT_ADDRESS:-$address:8008}"
fi

exec "$@"
