#!/usr/bin/env bash
# Make sure the Debian packages certman's tests and demo need are present:
# pebble (Let's Encrypt's ACME test server) and postgresql (cluster store tests).
# As root, installs what is missing with apt-get; otherwise prints the exact command.
set -euo pipefail

missing=()
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v pebble-challtestsrv >/dev/null 2>&1 || { [[ " ${missing[*]} " == *" pebble "* ]] || missing+=(pebble); }
if [[ "${1:-}" != "--no-postgres" ]]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  echo "certman setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "certman setup: missing Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
