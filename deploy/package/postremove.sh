#!/bin/sh
# After removing selfheal's package. Purging (dpkg -P) also deletes the
# token the package made; the selfheal user stays, as Debian's policy
# asks, in case files still belong to it.
set -e
if [ "$1" = purge ]; then
	rm -f /etc/selfheal/token
	rmdir /etc/selfheal 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
