#!/bin/sh
# make bench (peer part): qtk against llama.cpp's llama-quantize on the same
# file, in one run. A 483M-parameter LLaMA-shaped model (dim 1024, ffn 4096,
# 25 layers, vocab 32000; random N(0, 0.02) weights) is generated once as F16
# safetensors and turned into a 970 MB F16 GGUF by qtk; then, page cache
# warm, `llama-quantize --pure IN Q4_0 2` and
# `qtk convert IN --format gguf --scheme int4 --group 32 -j 2` each convert it,
# and their Q4_0 tensors are compared byte for byte.
#   QTK_LLAMA_BIN   directory holding llama-quantize (default: PATH, then
#                   ../peer/llama.cpp/build/bin); skipped with a message if absent
#   QTK_BENCH_DIR   where to put the files (default /tmp/qtk-bench)
#   QTK_PEER_ROUNDS rounds (default 6)
#   QTK_PEER_ISAS   qtk's SIMD levels to run in every round, e.g. "avx2 avx512"
#                   (default: the one in effect, $QTK_ISA or the CPU's best)
set -e
QTK=${QTK_BIN:-build/qtk}
GEN=${QTK_GEN:-build/qtk_gen}
DIR=${QTK_BENCH_DIR:-/tmp/qtk-bench}
LQ=""
for d in "$QTK_LLAMA_BIN" "$(dirname "$(command -v llama-quantize 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/llama-quantize" ]; then LQ="$d"; break; fi
done
if [ -z "$LQ" ]; then
	echo "peer: llama-quantize not found (set QTK_LLAMA_BIN to llama.cpp's build/bin); skipped"
	exit 0
fi
mkdir -p "$DIR/m483"
IN="$DIR/m483-f16.gguf"
if [ ! -f "$IN" ]; then
	echo "generating $IN ..."
	"$GEN" llama-model "$DIR/m483" F16 1024 4096 25 32000 16 >/dev/null
	"$QTK" convert "$DIR/m483" -o "$IN" -F gguf --scheme f16 --force --quiet >/dev/null
	rm -f "$DIR/m483/model.safetensors"
fi
size=$(stat -c %s "$IN")
cat "$IN" > /dev/null
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1" | awk '{printf "%.0f", $1 / 1024}'; }
wall() { sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1" | awk -F: '{print $(NF-1) * 60 + $NF}'; }
# qtk runs at each SIMD level in QTK_PEER_ISAS (e.g. "avx2 avx512": both
# in every round, side by side), else at the one in effect ($QTK_ISA or the
# best the CPU has)
ISAS=${QTK_PEER_ISAS:-$("$GEN" isa)}
for t in $ISAS; do
	if [ "$(QTK_ISA=$t "$GEN" isa)" != "$t" ]; then
		echo "peer: this CPU cannot run qtk at $t (QTK_PEER_ISAS)"
		exit 1
	fi
done
echo "peer: $IN ($size bytes), $(nproc) cores, 2 threads each, Q4_0; qtk isa: $ISAS" \
	"(CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
printf '%-40s %9s %9s %11s\n' tool seconds "GB/s" "peak RSS"
run_lq() {
	sync # the other tool's writeback does not run during this one
	cat "$IN" > /dev/null # warm again: the guest's reclaim may have dropped pages
	/usr/bin/time -v env LD_LIBRARY_PATH="$LQ:$LD_LIBRARY_PATH" "$LQ/llama-quantize" --pure \
		"$IN" "$DIR/lq-q4_0.gguf" Q4_0 2 > "$DIR/lq.log" 2> "$DIR/lq.time"
}
run_qtk() { # $1: isa
	rm -f "$DIR/qtk-$1.gguf" # a new file, as llama-quantize writes
	sync
	cat "$IN" > /dev/null
	/usr/bin/time -v env QTK_ISA="$1" "$QTK" convert "$IN" -o "$DIR/qtk-$1.gguf" -F gguf \
		--scheme int4 --group 32 -j 2 --force --quiet > "$DIR/qtk.log" 2> "$DIR/qtk-$1.time"
}
# QTK_PEER_ROUNDS rounds (default 6), the order rotating (llama-quantize,
# then qtk at each isa): on this shared VM whichever runs after another is
# often slowed by what that one left behind
rounds=${QTK_PEER_ROUNDS:-6}
tools="lq $ISAS"
ntools=$(echo $tools | wc -w)
for t in $ISAS; do : > "$DIR/peer-$t.txt"; done
round=1
while [ "$round" -le "$rounds" ]; do
	rm -f "$DIR/lq-q4_0.gguf"
	# this round's order: the tool list rotated by round - 1
	k=$(( (round - 1) % ntools )); order=""; i=0
	for t in $tools $tools; do
		[ $i -ge $k ] && [ $i -lt $((k + ntools)) ] && order="$order $t"
		i=$((i + 1))
	done
	for t in $order; do
		if [ "$t" = lq ]; then run_lq; else run_qtk "$t"; fi
	done
	ls=$(wall "$DIR/lq.time")
	printf '%-40s %9.2f %9.2f %8s MB\n' "llama-quantize --pure (round $round)" "$ls" \
		"$(echo "$size $ls" | awk '{print $1 / $2 / 1e9}')" "$(rss "$DIR/lq.time")"
	for t in $ISAS; do
		qs=$(wall "$DIR/qtk-$t.time")
		printf '%-40s %9.2f %9.2f %8s MB\n' "qtk convert -F gguf $t (round $round)" "$qs" \
			"$(echo "$size $qs" | awk '{print $1 / $2 / 1e9}')" "$(rss "$DIR/qtk-$t.time")"
		r=$(echo "$ls $qs" | awk '{printf "%.2f", $1 / $2}')
		echo "speed-up $t: ${r}x"
		echo "$ls $qs $r" >> "$DIR/peer-$t.txt"
	done
	round=$((round + 1))
done
# the summary per isa: per-round speed-ups (min, median, max), each tool's
# median and best
sorted() { echo "$1" | tr ' ' '\n' | grep . | sort -n; }
med() { sorted "$1" | awk '{v[NR] = $1}
	END {printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for t in $ISAS; do
	lq_all=$(awk '{print $1}' "$DIR/peer-$t.txt"); qtk_all=$(awk '{print $2}' "$DIR/peer-$t.txt")
	ratios=$(awk '{print $3}' "$DIR/peer-$t.txt")
	echo "qtk isa $t, speed-up over $rounds rounds: min $(sorted "$ratios" | head -1)x," \
		"median $(med "$ratios")x, max $(sorted "$ratios" | tail -1)x"
	best_lq=$(sorted "$lq_all" | head -1)
	best_qtk=$(sorted "$qtk_all" | head -1)
	med_lq=$(med "$lq_all"); med_qtk=$(med "$qtk_all")
	echo "qtk isa $t, median against median: llama-quantize ${med_lq} s, qtk ${med_qtk} s: $(echo "$med_lq $med_qtk" | awk '{printf "%.2f", $1 / $2}')x"
	echo "qtk isa $t, best against best: llama-quantize ${best_lq} s, qtk ${best_qtk} s: $(echo "$best_lq $best_qtk" | awk '{printf "%.2f", $1 / $2}')x"
	printf 'qtk isa %s, tensors vs llama-quantize --pure: ' "$t"
	"$GEN" gguf-cmp "$DIR/qtk-$t.gguf" "$DIR/lq-q4_0.gguf" | tail -1
	rm -f "$DIR/qtk-$t.gguf" "$DIR/peer-$t.txt"
done
rm -f "$DIR/lq-q4_0.gguf"
