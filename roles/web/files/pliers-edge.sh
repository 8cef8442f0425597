#!/bin/sh
# Managed by pliers.deploy (role web): the nginx edge follows its upstream containers (compose mode).
#
# pliers.deploy.compose_rollout writes one upstream per routed service into $PLIERS_EDGE_SOURCE, naming the
# service's healthy containers. nginx would resolve those names once, when it (re)loads, and keep sending
# requests to an address a restarted container no longer holds. So this script resolves the names itself,
# through Docker's DNS, into $PLIERS_EDGE_RUN (which the edge's configuration includes), and reloads nginx
# gracefully whenever an address changes: a container that crashed, was restarted or recreated by hand is
# served again within a second or two, with no deploy. A name that does not resolve (a stopped container)
# is left out, so no request goes to an address another container may have taken meanwhile.
#
# It also reloads nginx when the edge's own configuration ($PLIERS_EDGE_CONF/*.conf) differs from what nginx
# last loaded, so a configuration written by a deploy that was then killed is not left unloaded.
#
#   pliers-edge.sh start   render, follow in the background, then exec nginx (the container's command)
#   pliers-edge.sh sync    render now and reload nginx if anything changed, start the follower if it does not
#                          run, and say what it did (compose_rollout runs it on every deploy); --force: reload
#   pliers-edge.sh drained N
#                          wait until the workers the last reload retired have finished the requests they hold, at
#                          most N tenths of a second (compose_rollout, before it stops the containers they reach)
#
# POSIX sh with getent, awk, cksum and flock: what the Debian-based official nginx image has (and the lab's).
set -u

CONF=${PLIERS_EDGE_CONF:-/etc/nginx/conf.d}
SOURCE=${PLIERS_EDGE_SOURCE:-$CONF/upstreams}
# Under /tmp: the edge runs unprivileged (the nginx image's contract: /tmp is writable, /run is not).
RUN=${PLIERS_EDGE_RUN:-/tmp/pliers-edge}
INTERVAL=${PLIERS_EDGE_INTERVAL:-1}
PIDFILE="$RUN/follow.pid"
PROC=${PLIERS_EDGE_PROC:-/proc}
# The workers the last reload retired: nginx's old workers finish the requests they hold, then exit. Only a
# container started by this script records them (RECORDS): one started by an older script runs an older follower,
# whose reloads record nothing.
RETIRING="$RUN/retiring"
RECORDS="$RUN/records-retiring"

log() {
    echo "pliers-edge: $*" >&2
}

# The upstream in $1 with each "server <name>:<port> ...;" replaced by one line per address the name resolves
# to, and a placeholder when no server is left (nginx refuses an empty upstream; a down one answers 502).
render() {
    awk '
        function flush_placeholder() { if (in_block && servers == 0) print "    server 127.0.0.1:9 down;" }
        /^[ \t]*upstream[ \t]/ { in_block = 1; servers = 0 }
        in_block && $1 == "server" {
            split($2, target, ":")
            host = target[1]
            if (host ~ /^[0-9.]+$/) { servers++; print; next }
            if (host !~ /^[A-Za-z0-9][A-Za-z0-9_.-]*$/) { print "    # " host ": not a container name, left out"; next }
            rest = ""
            for (i = 3; i <= NF; i++) rest = rest " " $i
            found = 0
            split("", seen)
            # A second try: a lookup that timed out must not take a running container out of the edge.
            for (try = 1; try <= 2 && !found; try++) {
                # The trailing dot: that name alone, never completed with one of the search domains of the host.
                command = "getent ahostsv4 " host "."
                while ((command | getline answer) > 0) {
                    split(answer, field, " ")
                    if (!(field[1] in seen)) {
                        seen[field[1]] = 1
                        print "    server " field[1] ":" target[2] rest "  # " host
                        found++
                    }
                }
                close(command)
            }
            if (!found) print "    # " host ": no address (not running)"
            servers += found
            next
        }
        in_block && /^[ \t]*}/ { flush_placeholder(); in_block = 0 }
        { print }
    ' "$1"
}

# Render every upstream into $RUN; exit 0 when a rendered file changed (the previous ones are kept in
# $RUN/previous, to be put back if nginx refuses the new ones).
render_all() {
    mkdir -p "$RUN/next" "$RUN/previous"
    rm -f "$RUN"/next/*.conf "$RUN"/previous/*.conf
    changed=1
    for source in "$SOURCE"/*.conf; do
        [ -e "$source" ] || continue
        name=$(basename "$source")
        render "$source" > "$RUN/next/$name" || return 2
        cmp -s "$RUN/next/$name" "$RUN/$name" || changed=0
    done
    for rendered in "$RUN"/*.conf; do
        [ -e "$rendered" ] || continue
        [ -e "$RUN/next/$(basename "$rendered")" ] || changed=0
    done
    [ "$changed" = 0 ] || return 1
    # Each file replaced by a rename: nothing reading $RUN ever finds one missing or half written.
    for rendered in "$RUN"/*.conf; do
        [ -e "$rendered" ] && cp -p "$rendered" "$RUN/previous/"
    done
    for next in "$RUN"/next/*.conf; do
        [ -e "$next" ] && mv "$next" "$RUN/"
    done
    for rendered in "$RUN"/*.conf; do
        [ -e "$rendered" ] && [ ! -e "$SOURCE/$(basename "$rendered")" ] && rm -f "$rendered"
    done
    return 0
}

# What nginx would load now: its configuration and the rendered upstreams.
config_sum() {
    cat "$CONF"/*.conf "$RUN"/*.conf 2>/dev/null | cksum
}

restore_previous() {
    for rendered in "$RUN"/*.conf; do
        [ -e "$rendered" ] && [ ! -e "$RUN/previous/$(basename "$rendered")" ] && rm -f "$rendered"
    done
    for previous in "$RUN"/previous/*.conf; do
        [ -e "$previous" ] && mv "$previous" "$RUN/"
    done
}

# Logged once per distinct error: the follower tries again every second.
complain() {
    if [ "$*" != "$(cat "$RUN/last-error" 2>/dev/null)" ]; then
        log "$*"
        echo "$*" > "$RUN/last-error"
    fi
}

reload() {
    if ! output=$(nginx -t -q 2>&1); then
        complain "nginx refused its configuration, keeping the previous upstreams: $output"
        restore_previous
        return 1
    fi
    # Every worker that runs, the earlier reloads' retired ones still finishing included, is retired by this one.
    workers > "$RETIRING.next"
    if ! output=$(nginx -s reload 2>&1); then
        # nginx not started yet (no pid): the next round tries again. No worker was retired.
        rm -f "$RETIRING.next"
        restore_previous
        complain "reload failed: $output"
        return 1
    fi
    config_sum > "$RUN/loaded"
    mv "$RETIRING.next" "$RETIRING"
    rm -f "$RUN/last-error"
    log "reloaded: $(cat "$RUN"/*.conf | awk '$1 == "server" { printf "%s ", $2 }')"
    return 0
}

# Whether pid $1 is one of nginx's workers (its title: "nginx: worker process", "... is shutting down" once
# retired).
is_worker() {
    grep -qs '^nginx: worker process' "$PROC/$1/cmdline"
}

# The pids of nginx's workers.
workers() {
    for process in "$PROC"/[0-9]*; do
        pid=${process##*/}
        if is_worker "$pid"; then echo "$pid"; fi
    done
}

# Whether a worker a reload retired still runs (until nginx handles the reload, it still has a worker's title).
retiring() {
    [ -s "$RETIRING" ] || return 1
    while read -r pid; do
        is_worker "$pid" && return 0
    done < "$RETIRING"
    return 1
}

# Exit 0 once the workers the last reload retired are gone ("drained"), or after limit tenths of a second ("still
# draining"); exit 1 when this container's reloads are not recorded (the caller then waits its whole drain).
drained() {
    limit=$1
    case $limit in
        '' | *[!0-9]* | ?????*) echo "usage: $0 drained <tenths of a second, 0 to 9999>" >&2; exit 2 ;;
    esac
    if [ ! -e "$RECORDS" ]; then
        echo "not recorded: this edge was started by an older pliers-edge.sh"
        exit 1
    fi
    # A round that is reloading now has recorded what it retires once it lets go of the lock.
    (flock -w 30 9) 9> "$RUN/lock"
    waited=0
    while retiring; do
        if [ "$waited" -ge "$limit" ]; then
            echo "still draining"
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo drained
}

# One round, under a lock shared with sync runs (compose_rollout) so two renders never interleave.
round() {
    force=${1:-}
    (
        flock -w 30 9 || { log "could not take $RUN/lock"; exit 1; }
        render_all
        case $? in
            0) reload ;;
            1)
                if [ -n "$force" ] || [ "$(config_sum)" != "$(cat "$RUN/loaded" 2>/dev/null)" ]; then
                    reload
                else
                    exit 3
                fi
                ;;
            *) log "rendering failed"; exit 1 ;;
        esac
    ) 9> "$RUN/lock"
}

# The follower holds $RUN/follow.lock for as long as it runs: a lock nobody holds means no follower (a pid
# file could name a pid another process has taken since).
follower_alive() {
    ! (flock -n 8) 8> "$RUN/follow.lock"
}

follow() {
    exec 8> "$RUN/follow.lock"
    flock -n 8 || exit 0 # another follower runs
    echo $$ > "$PIDFILE"
    while sleep "$INTERVAL"; do
        round
    done
}

# Detached from the caller. Started by sync (through docker exec), it logs to the container's output, which is
# PID 1's (nginx's) standard error.
start_follower() {
    if [ "${1:-}" = inherit ]; then
        setsid sh "$0" follow < /dev/null &
    elif [ -w /proc/1/fd/2 ]; then
        setsid sh "$0" follow < /dev/null > /proc/1/fd/2 2>&1 &
    else
        setsid sh "$0" follow < /dev/null > /dev/null 2>&1 &
    fi
}

mkdir -p "$RUN"
case ${1:-} in
    start)
        : > "$RECORDS"
        (
            flock -w 30 9
            render_all
            # What nginx loads as it starts.
            config_sum > "$RUN/loaded"
        ) 9> "$RUN/lock"
        start_follower inherit
        exec nginx -g 'daemon off;'
        ;;
    follow)
        follow
        ;;
    sync)
        round "${2:-}"
        status=$?
        case $status in
            0) echo reloaded ;;
            3) echo unchanged; status=0 ;;
        esac
        if ! follower_alive; then
            start_follower
            echo "follower started"
        fi
        exit "$status"
        ;;
    drained)
        drained "${2:-}"
        ;;
    *)
        echo "usage: $0 start | sync [--force] | drained <tenths of a second>" >&2
        exit 2
        ;;
esac
