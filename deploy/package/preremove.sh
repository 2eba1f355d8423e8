#!/bin/sh
# Before removing selfheal's package (not before an upgrade): stop it.
set -e
case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now selfheal.service selfheal-exporter.service >/dev/null 2>&1 || true
	fi
	;;
esac
