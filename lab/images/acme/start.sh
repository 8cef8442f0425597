#!/bin/sh
# pebble checks HTTP-01 challenges on port 80 of the name's address: every name is the edge host's
# (PLIERS_ACME_EDGE), which is where the deployed edge answers.
set -eu
pebble-challtestsrv -defaultIPv4 "$PLIERS_ACME_EDGE" -defaultIPv6 "" -dns01 127.0.0.1:8053 \
    -http01 "" -https01 "" -tlsalpn01 "" -doh "" -management 127.0.0.1:8055 &
exec pebble -config /etc/pebble/config.json -dnsserver 127.0.0.1:8053
