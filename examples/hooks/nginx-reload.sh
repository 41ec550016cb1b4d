#!/bin/sh
# certman hook: check nginx's configuration, then reload nginx so it serves
# the renewed certificate. nginx re-reads certificate files on reload only.
#
#   As a deploy hook (once per renewed certificate):
#     certman renew --deploy-hook /etc/certman/hooks/nginx-reload.sh
#   As a post hook (once per run, if anything was renewed; better for many
#   certificates on one nginx):
#     certman renew --post-hook /etc/certman/hooks/nginx-reload.sh
#
# certman sets CERTMAN_NAME, CERTMAN_LIVE_DIR, CERTMAN_FULLCHAIN,
# CERTMAN_PRIVKEY, CERTMAN_DOMAINS for deploy hooks (none for post hooks).
# Optional overrides: NGINX (the nginx binary), RELOAD_COMMAND (how to
# reload; default: systemctl reload nginx under systemd, else nginx -s reload).
#
# Exit status: 0 reloaded; 1 not reloaded (nginx keeps serving the previous
# certificate, certman reports the hook as failed).
set -eu

NGINX=${NGINX:-nginx}

if [ -n "${CERTMAN_NAME:-}" ]; then
    for file in "$CERTMAN_FULLCHAIN" "$CERTMAN_PRIVKEY"; do
        if [ ! -r "$file" ]; then
            echo "nginx-reload: cannot read $file for $CERTMAN_NAME" >&2
            exit 1
        fi
    done
fi

# A configuration nginx would reject must not be reloaded: a failed reload
# can leave workers down on some setups; a refused one changes nothing.
if ! $NGINX -t -q; then
    echo "nginx-reload: 'nginx -t' failed; not reloading" >&2
    exit 1
fi

if [ -n "${RELOAD_COMMAND:-}" ]; then
    $RELOAD_COMMAND
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl reload nginx
else
    $NGINX -s reload
fi

echo "nginx-reload: reloaded${CERTMAN_NAME:+ for $CERTMAN_NAME (${CERTMAN_DOMAINS:-})}"
