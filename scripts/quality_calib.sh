#!/bin/sh
# Regenerate the stories260K table of docs/calibration.md ("Measured:
# stories260K in llama.cpp"; markdown on stdout): int4 g32 written as Q4_0
# GGUF by qtk (round to nearest, --search, statistics of the vocabulary
# alone and of text the model wrote, both with no text given, --calib
# weighted and gptq) and by
# llama-quantize with qtk's imatrix, each judged inside llama.cpp:
# llama-perplexity -c 256 --kl-divergence against the F32 GGUF, on held-out
# text. Calibration text: the first 100,000 bytes of tinystories.txt; held
# out: the rest (issue 19's split).
# Needs llama.cpp's llama-perplexity and llama-quantize (QTK_LLAMA_BIN, or
# PATH, or ../peer/llama.cpp/build/bin); skipped with a message without them.
# Usage: sh scripts/quality_calib.sh [WORKDIR]   (QTK_BIN: the qtk binary)
set -eu
QTK=${QTK_BIN:-build/qtk}
S=tests/data/stories260K
W=${1:-/tmp/qtk-quality-calib}
LB=""
for d in "${QTK_LLAMA_BIN:-}" "$(dirname "$(command -v llama-perplexity 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/llama-perplexity" ] && [ -x "$d/llama-quantize" ]; then
		LB="$d"
		break
	fi
done
if [ -z "$LB" ]; then
	echo "quality_calib: llama-perplexity/llama-quantize not found (set QTK_LLAMA_BIN); skipped"
	exit 0
fi
mkdir -p "$W"
head -c 100000 "$S/tinystories.txt" > "$W/calib.txt"
tail -c +100001 "$S/tinystories.txt" > "$W/eval.txt"
lp() { env LD_LIBRARY_PATH="$LB:${LD_LIBRARY_PATH:-}" "$LB/llama-perplexity" -f "$W/eval.txt" \
	-c 256 -t 2 "$@" 2>&1; }
"$QTK" convert "$S" -o "$W/f32.gguf" -F gguf --scheme f32 -f -q
lp -m "$W/f32.gguf" --kl-divergence-base "$W/f32.kld" > "$W/f32.log"
"$QTK" calibrate "$S" --text "$W/calib.txt" --xtx -o "$W/stats.st" -f -q
"$QTK" calibrate "$S" --text "$W/calib.txt" -o "$W/stats.imatrix.gguf" -f -q

row() { # LABEL FILE
	log="$2.kld.log"
	# llama.cpp logs from a thread that can lose the last lines at exit:
	# run again (up to 3 times) until both figures are there
	for try in 1 2 3; do
		lp -m "$2" --kl-divergence-base "$W/f32.kld" --kl-divergence > "$log" || true
		k=$(sed -n 's/^Mean *KLD: *\([0-9.]*\).*/\1/p' "$log")
		t=$(sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p' "$log")
		[ -z "$k" ] || [ -z "$t" ] || break
	done
	if [ -z "$k" ] || [ -z "$t" ]; then
		echo "quality_calib: llama-perplexity gave no KL divergence for $2 (see $log)" >&2
		exit 1
	fi
	echo "| $1 | $k | $t % |"
}
q4() { # OUT ARGS...
	o=$1
	shift
	"$QTK" convert "$S" -o "$W/$o" -F gguf --scheme int4 --group 32 -f -q "$@" 2> /dev/null
}

echo "qtk $("$QTK" --version | cut -d' ' -f2), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "| int4 g32 as Q4_0 | mean KLD | top-1 |"
echo "|---|---|---|"
q4 rtn.gguf
row "round to nearest (= llama-quantize Q4_0)" "$W/rtn.gguf"
env LD_LIBRARY_PATH="$LB:${LD_LIBRARY_PATH:-}" "$LB/llama-quantize" \
	--imatrix "$W/stats.imatrix.gguf" --token-embedding-type q4_0 \
	--tensor-type ffn_down=f16 "$W/f32.gguf" "$W/lq-im.gguf" Q4_0 > "$W/lq.log" 2>&1
row "llama-quantize Q4_0 with qtk's imatrix (it holds the tied head's inputs)" "$W/lq-im.gguf"
q4 search.gguf --search
row "\`--search\` (data-free)" "$W/search.gguf"
"$QTK" calibrate "$S" --vocab --xtx -o "$W/vocab.st" -f -q
q4 vocab.gguf --calib "$W/vocab.st" --calib-mode gptq --damp 1
row "\`calibrate --vocab\`, then \`--calib-mode gptq --damp 1\` (no text: the vocabulary, each token alone)" "$W/vocab.gguf"
"$QTK" calibrate "$S" --generate 400 --ctx 256 --xtx -j 1 -o "$W/gen.st" -f -q
q4 gen.gguf --calib "$W/gen.st" --calib-mode gptq
row "\`calibrate --generate 400 --ctx 256\`, then \`--calib-mode gptq\` (no text: 400 sequences the model wrote)" "$W/gen.gguf"
q4 weighted.gguf --calib "$W/stats.st"
row "\`--calib\` weighted" "$W/weighted.gguf"
q4 gptq-r0.gguf --calib "$W/stats.st" --calib-mode gptq --no-act-order --refit 0
row "\`--calib-mode gptq --no-act-order --refit 0\` (columns in file order, the sweep's scales)" "$W/gptq-r0.gguf"
q4 gptq-no.gguf --calib "$W/stats.st" --calib-mode gptq --no-act-order
row "\`--calib-mode gptq --no-act-order\` (scales refitted)" "$W/gptq-no.gguf"
q4 gptq-ao-r0.gguf --calib "$W/stats.st" --calib-mode gptq --refit 0
row "\`--calib-mode gptq --refit 0\` (act-order, the sweep's scales)" "$W/gptq-ao-r0.gguf"
q4 gptq.gguf --calib "$W/stats.st" --calib-mode gptq
row "**\`--calib --calib-mode gptq\`** (the default: act-order, scales refitted)" "$W/gptq.gguf"
q4 gptq-sg.gguf --calib "$W/stats.st" --calib-mode gptq --no-act-order --static-groups
row "\`--no-act-order --static-groups\` (scales refitted; act-order implies static groups)" "$W/gptq-sg.gguf"
