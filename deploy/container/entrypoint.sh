#!/bin/sh
# The container's entrypoint (deploy/container/Containerfile): settle the settings, refuse in one
# line what could never work, then exec the command (gunicorn by default), which becomes PID 1
# and gets the runtime's SIGTERM itself: gunicorn's graceful stop.
#
# The receiver reads its credentials' _FILE forms itself (RECEIVER_BASIC_AUTH_FILE,
# RECEIVER_KEY_AUTH_FILE, RECEIVER_FEED_BASIC_AUTH_FILE). The database URLs hold a password too:
# DATABASE_URL_FILE and RECEIVER_MAINTENANCE_DATABASE_URL_FILE are read here, into the variable.
set -eu

refuse() {
  echo "receiver: $*" >&2
  exit 78 # EX_CONFIG
}

for name in DATABASE_URL RECEIVER_MAINTENANCE_DATABASE_URL; do
  eval "file=\${${name}_FILE:-} value=\${${name}:-}"
  [ -n "$file" ] || continue
  [ -z "$value" ] || refuse "set $name or ${name}_FILE, not both"
  [ -r "$file" ] || refuse "${name}_FILE: cannot read $file"
  [ -n "$(tr -d ' \t\r\n' < "$file")" ] || refuse "${name}_FILE: $file is empty"
  # The receiver reads the file itself (receiver.config.read_url), in every process that needs
  # it: the password never goes into the environment, where /proc/1/environ would show it.
done

# The server needs DATABASE_URL; the other commands take RECEIVER_MAINTENANCE_DATABASE_URL
# instead if set; help, version, registering with Campaign and sending batches need neither.
# Without it the receiver would look for its embedded development database: never here.
needs=none
case "${1:-}" in
  gunicorn | */gunicorn) needs=DATABASE_URL ;;
  receiver | */receiver)
    case "${2:-}" in
      "" | -h | --help | --version | campaign | simulate) ;;
      serve) needs=DATABASE_URL ;;
      *) needs=any ;;
    esac
    ;;
esac # anything else (a shell, python) is run as it is, to look around

database="${DATABASE_URL:-}${DATABASE_URL_FILE:-}"
maintenance="${RECEIVER_MAINTENANCE_DATABASE_URL:-}${RECEIVER_MAINTENANCE_DATABASE_URL_FILE:-}"
if [ -z "$database" ] && { [ "$needs" = DATABASE_URL ] \
  || { [ "$needs" = any ] && [ -z "$maintenance" ]; }; }; then
  refuse "DATABASE_URL is not set (nor DATABASE_URL_FILE): set it to your PostgreSQL;" \
    "this image never starts an embedded database"
fi

case "${1:-}" in
  gunicorn | */gunicorn)
    # gunicorn's master checks the settings too (receiver.web.gunicorn_conf), but after its own
    # "Starting gunicorn" line: checked here first, the refusal is the container's one line.
    python3 -c '
import sys
from receiver.config import NO_CREDENTIALS, ConfigError, load_config
try:
    if not load_config().has_credentials:
        raise ConfigError(NO_CREDENTIALS)
except ConfigError as error:
    sys.exit(f"receiver: {error}")
' || exit 78
    ;;
esac

exec "$@"
