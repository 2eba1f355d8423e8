#!/bin/sh
# After installing or upgrading selfheal's package: its user, the
# ownership of /etc/selfheal, a webhook token when there is none.
set -e

if ! getent passwd selfheal >/dev/null; then
	if command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- --system; then
		adduser --quiet --system --group --no-create-home --home /nonexistent --shell /usr/sbin/nologin selfheal
	else
		groupadd --system selfheal 2>/dev/null || true
		useradd --system --gid selfheal --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin selfheal
	fi
fi
# The Docker socket's group, where Docker is installed (the unit asks for it
# as SupplementaryGroups=docker).
if getent group docker >/dev/null; then
	usermod -a -G docker selfheal
fi

chown root:selfheal /etc/selfheal /etc/selfheal/selfheal.yml
chmod 0750 /etc/selfheal
chmod 0640 /etc/selfheal/selfheal.yml
if [ ! -e /etc/selfheal/token ]; then
	umask 077
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >/etc/selfheal/token
	chown selfheal:selfheal /etc/selfheal/token
	chmod 0600 /etc/selfheal/token
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
cat <<'MSG'
selfheal is installed but not started. Next:
  1. set database_url (or SELFHEAL_DATABASE_URL) in /etc/selfheal/selfheal.yml,
     and give Alertmanager the token in /etc/selfheal/token
  2. selfheal check-config --config.file=/etc/selfheal/selfheal.yml
  3. systemctl enable --now selfheal
MSG
