#!/bin/sh
# PostgreSQL refuses a server key that others can read; a bind mount keeps the host's owner and
# mode. Copy the files where only the postgres user reads the key, then start as the image does.
set -eu
install -d -m 0700 -o postgres -g postgres /var/lib/postgresql/tls
install -m 0600 -o postgres -g postgres /run/sendvault-certs/database.key /var/lib/postgresql/tls/server.key
install -m 0644 -o postgres -g postgres /run/sendvault-certs/database.pem /var/lib/postgresql/tls/server.pem
install -m 0644 -o postgres -g postgres /run/sendvault-certs/ca.pem /var/lib/postgresql/tls/ca.pem
exec docker-entrypoint.sh "$@"
