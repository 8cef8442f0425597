#!/bin/sh
# The official redis image's entrypoint contract: options or a .conf file as
# first argument mean redis-server; it drops to the redis user. Like the
# official build, protected mode is off when no configuration file is given
# (with one, the file decides; redis wants it as the first argument).
set -e
case "$1" in
	-*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi
if [ "$1" = 'redis-server' ]; then
	case "$2" in
		*.conf) ;;
		*) shift; set -- redis-server --protected-mode no "$@" ;;
	esac
fi
exec "$@"
