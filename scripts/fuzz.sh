#!/bin/sh
# Build and run every libFuzzer target tests/fuzz/fuzz_<name>.c for
# ${1:-60} seconds each (make fuzz FUZZ_SECONDS=N). Each target is built
# with clang -fsanitize=fuzzer,address,undefined against the library
# sources, seeded from tests/fuzz/seeds/<name>/ (read-only); new corpus
# entries go to build/fuzz/corpus/<name>/, crashes to build/fuzz/crash/<name>/.
# Add a target by adding tests/fuzz/fuzz_<name>.c defining
# fuzz_<name>_one() and, under QTK_LIBFUZZER, LLVMFuzzerTestOneInput.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -eu
secs=${1:-60}
[ $# -gt 0 ] && shift
CLANG=${CLANG:-clang}
out=build/fuzz
mkdir -p "$out"
command -v "$CLANG" >/dev/null || { echo "fuzz: $CLANG not found" >&2; exit 1; }
flags="-g -O1 -std=c11 -D_GNU_SOURCE -DQTK_LIBFUZZER -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iquant -Iformats -Iruntime -Iconvert -I/usr/include/x86_64-linux-gnu/openblas-pthread"
libs="-ljansson -lzstd -lz -lopenblas -lpthread -lm"
lib_src=$(ls quant/*.c formats/*.c runtime/*.c 2>/dev/null || true)
# the library once, as objects without the fuzzer main
mkdir -p "$out/obj"
objs=""
for s in $lib_src; do
	o="$out/obj/$(echo "$s" | tr / _).o"
	if [ ! -f "$o" ] || [ "$s" -nt "$o" ]; then
		$CLANG $(echo "$flags" | sed 's/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,/') -c "$s" -o "$o"
	fi
	objs="$objs $o"
done
targets="$*"
[ -n "$targets" ] || targets=$(ls tests/fuzz/fuzz_*.c | sed 's|tests/fuzz/fuzz_||; s|\.c$||')
status=0
for t in $targets; do
	echo "== fuzz $t: ${secs}s"
	$CLANG $flags -o "$out/fuzz_$t" "tests/fuzz/fuzz_$t.c" $objs $libs
	mkdir -p "$out/corpus/$t" "$out/crash/$t"
	seeds="tests/fuzz/seeds/$t"
	[ -d "$seeds" ] || seeds=""
	if ! "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix="$out/crash/$t/" "$out/corpus/$t" $seeds; then
		echo "fuzz $t: FAILED; crash inputs in $out/crash/$t/ (add them to $seeds)" >&2
		status=1
	fi
done
exit $status
