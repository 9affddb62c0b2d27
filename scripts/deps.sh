#!/bin/sh
# Install qtk's build dependencies (Debian's -dev packages) when one is
# missing. A dependency counts as present only when a tiny program that
# includes its header and calls one of its functions compiles and links with
# the flags the Makefile uses: a header alone is no proof (netlib's
# libblas-dev ships cblas.h, but there is no -lopenblas). Runs apt-get only if
# needed; as root directly, otherwise via sudo. Exits 1 with one line naming
# the packages when they cannot be installed.
CC=${CC:-cc}
MA=$($CC -print-multiarch 2>/dev/null)
[ -n "$MA" ] || MA=x86_64-linux-gnu
INC="-I/usr/include/$MA/openblas-pthread"
TMP=$(mktemp -d 2>/dev/null || echo "/tmp/qtk-deps.$$")
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT

# links HEADER LIB CALL: does "#include <HEADER>" + CALL link with -lLIB?
links() {
	printf '#include <%s>\nint main(void) { %s; return 0; }\n' "$1" "$3" > "$TMP/t.c"
	$CC $INC "$TMP/t.c" -o "$TMP/t" "-l$2" -lpthread -lm >/dev/null 2>&1
}

check() {
	missing=""
	links jansson.h jansson 'json_decref(json_object())'      || missing="$missing libjansson-dev"
	links zstd.h    zstd    '(void)ZSTD_versionNumber()'        || missing="$missing libzstd-dev"
	links zlib.h    z       '(void)crc32(0L, 0, 0)'             || missing="$missing zlib1g-dev"
	links cblas.h   openblas '(void)cblas_sdot(0, 0, 1, 0, 1)'  || missing="$missing libopenblas-dev"
}

check
[ -z "$missing" ] && exit 0
echo "qtk: installing missing packages:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
		echo "qtk: missing packages:$missing (not root and no sudo: install them and run make again)" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing; } >"$TMP/apt.log" 2>&1; then
	echo "qtk: could not install$missing (apt-get failed: $(tail -n 1 "$TMP/apt.log")); install them and run make again" >&2
	exit 1
fi
want=$missing
check
if [ -n "$missing" ]; then
	echo "qtk: installed$want but$missing still does not link; check the compiler and library paths" >&2
	exit 1
fi
exit 0
