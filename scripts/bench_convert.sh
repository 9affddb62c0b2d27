#!/bin/sh
# make bench (convert part): generate a >= 2 GB bf16 LLaMA-shaped checkpoint
# (4096x4096 and 11008x4096 matrices), then in one run measure `qtk convert`
# for int8, int4 and nf4 at group 64, round-to-nearest and --search, and
# int4 g32 as .qtk and as GGUF Q4_0, each right after a `cat` of the source
# (page cache warm): GB/s of source, ratio to that cat, peak RSS.
#   QTK_BENCH_DIR   where to put the files (default /tmp/qtk-bench)
#   QTK_BENCH_BYTES checkpoint size (default 2200000000)
#   QTK_BENCH_THREADS  -j for qtk convert (default 2)
#   QTK_BENCH_ISAS  qtk's SIMD levels, each configuration once per level in a
#                   row, e.g. "avx2 avx512" (default: the one in effect)
#   QTK_BENCH_REPEAT   runs per configuration and level (default 3): the
#                   medians and the range of the ratio to cat
#   QTK_BENCH_SCHEMES  the schemes of the group-64 rows (default int8 int4 nf4)
set -e
QTK=${QTK_BIN:-build/qtk}
GEN=${QTK_GEN:-build/qtk_gen}
DIR=${QTK_BENCH_DIR:-/tmp/qtk-bench}
BYTES=${QTK_BENCH_BYTES:-2200000000}
J=${QTK_BENCH_THREADS:-2}
SCHEMES=${QTK_BENCH_SCHEMES:-"int8 int4 nf4"}
mkdir -p "$DIR"
SRC="$DIR/llama-bf16-$BYTES.safetensors"
if [ ! -f "$SRC" ]; then
	echo "generating $SRC ..."
	"$GEN" llama "$SRC" "$BYTES" BF16 4096 11008 >/dev/null
fi
# GGUF output of a LLaMA checkpoint takes its hyper-parameters from config.json
if [ ! -f "$DIR/config.json" ]; then
	layers=$("$QTK" inspect "$SRC" | grep -c 'self_attn.q_proj')
	printf '{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": %d, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0}\n' "$layers" > "$DIR/config.json"
fi
size=$(stat -c %s "$SRC")
now() { date +%s.%N; }
ISAS=${QTK_BENCH_ISAS:-$("$GEN" isa)}
for t in $ISAS; do
	if [ "$(QTK_ISA=$t "$GEN" isa)" != "$t" ]; then
		echo "convert: this CPU cannot run qtk at $t (QTK_BENCH_ISAS)"
		exit 1
	fi
done
# seconds of one `cat` of the source (page cache warm)
cat_time() {
	sync
	t0=$(now); cat "$SRC" > /dev/null; t1=$(now)
	echo "$t1 $t0" | awk '{print $1 - $2}'
}
cat "$SRC" > /dev/null
cat_s=$(cat_time)
echo "source: $SRC ($size bytes), $(nproc) cores, -j $J; qtk isa: $ISAS" \
	"(CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
echo "vs cat: against a cat of the source just before each run; ${QTK_BENCH_REPEAT:-3} runs a row," \
	"medians and the range of the ratio"
printf '%-8s %-5s %-7s %-5s %-6s %9s %9s %9s %11s %11s\n' scheme group mode out isa seconds "GB/s" \
	"vs cat" "range" "peak RSS"
printf '%-8s %-5s %-7s %-5s %-6s %9.2f %9s %9s %11s %11s\n' cat - - - - "$cat_s" \
	"$(echo "$size $cat_s" | awk '{printf "%.2f", $1 / $2 / 1e9}')" 1.00 - -
# one configuration: scheme group mode(rtn|search) format(qtk|gguf), REPS
# times per isa, each right after a cat; the row: medians of the seconds
# and of the ratios, and the ratios' range
REPS=${QTK_BENCH_REPEAT:-3}
med() { sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m}'; }
run() {
	scheme=$1; group=$2; mode=$3; fmt=$4
	flag=""; [ $mode = search ] && flag="--search"
	out="$DIR/out.$fmt"
	log="$DIR/time.log"
	for isa in $ISAS; do
		: > "$DIR/reps"
		rss_max=0
		r=0
		while [ $r -lt "$REPS" ]; do
			r=$((r + 1))
			rm -f "$out"
			c=$(cat_time) # also: the previous run's writeback does not overlap this one
			if [ -x /usr/bin/time ]; then
				/usr/bin/time -v env QTK_ISA=$isa "$QTK" convert "$SRC" -o "$out" -F $fmt \
					--scheme $scheme --group $group $flag -j "$J" --force --quiet --json \
					> "$DIR/report.json" 2> "$log"
				rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
			else
				QTK_ISA=$isa "$QTK" convert "$SRC" -o "$out" -F $fmt --scheme $scheme \
					--group $group $flag -j "$J" --force --quiet --json > "$DIR/report.json"
				rss_kb=$(sed -n 's/.*"peak_rss_bytes": \([0-9]*\).*/\1/p' "$DIR/report.json" | awk '{print int($1/1024)}')
			fi
			secs=$(sed -n 's/.*"seconds": \([0-9.e+-]*\).*/\1/p' "$DIR/report.json" | head -1)
			echo "$secs $c" | awk '{printf "%.4f %.4f\n", $1, $2 / $1}' >> "$DIR/reps"
			[ "$rss_kb" -gt "$rss_max" ] && rss_max=$rss_kb
		done
		secs=$(cut -d' ' -f1 "$DIR/reps" | med)
		ratio=$(cut -d' ' -f2 "$DIR/reps" | med)
		range=$(cut -d' ' -f2 "$DIR/reps" | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f-%.2f", lo, hi}')
		gbs=$(echo "$size $secs" | awk '{printf "%.2f", $1 / $2 / 1e9}')
		printf '%-8s %-5s %-7s %-5s %-6s %9.2f %9s %9.2f %11s %8.0f MB\n' $scheme $group $mode \
			$fmt $isa "$secs" "$gbs" "$ratio" "$range" "$(echo "$rss_max" | awk '{print $1 / 1024}')"
	done
	rm -f "$out" "$DIR/reps"
}
for scheme in $SCHEMES; do
	for mode in rtn search; do
		run $scheme 64 $mode qtk
	done
done
# GGUF Q4_0 next to the same scheme and group in .qtk
run int4 32 rtn qtk
run int4 32 rtn gguf
