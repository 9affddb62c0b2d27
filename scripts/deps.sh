#!/bin/sh
# Install qtk's build dependencies (Debian's -dev packages) when a header is
# missing. Runs apt-get only if needed; as root directly, otherwise via sudo.
missing=""
have() { printf '#include <%s>\n' "$1" | ${CC:-cc} -E -I/usr/include/x86_64-linux-gnu/openblas-pthread - >/dev/null 2>&1; }
have jansson.h || missing="$missing libjansson-dev"
have zstd.h    || missing="$missing libzstd-dev"
have zlib.h    || missing="$missing zlib1g-dev"
have cblas.h   || missing="$missing libopenblas-dev"
[ -z "$missing" ] && exit 0
echo "qtk: installing missing packages:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null || {
	echo "qtk: could not install$missing; install them and run make again" >&2
	exit 1
}
