#!/bin/sh
# nginx for the reference web frontend. On SIGTERM or SIGQUIT, keep serving DRAIN_SECONDS (load
# balancers resolving the service by DNS may still send requests), then stop gracefully (SIGQUIT).
set -u
nginx -g 'daemon off;' &
pid=$!
drain() {
    echo "pliers-web: stopping, serving ${DRAIN_SECONDS:-0}s more" >&2
    sleep "${DRAIN_SECONDS:-0}"
    kill -QUIT "$pid"
}
trap drain TERM QUIT INT
wait "$pid"
# A trapped signal ends the first wait early; the second waits for nginx to finish its requests.
wait "$pid"
