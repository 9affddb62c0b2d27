#!/bin/sh
# qtk's statistics in llama.cpp's own quantizer, judged by llama.cpp: the
# held-out KL divergence of stories260K Q4_0 GGUF files made by
# llama-quantize with no imatrix, with llama-imatrix's, and with qtk
# calibrate's (with and without the tied head's statistics on
# token_embd.weight). Calibration text: the first 100,000 bytes of
# tinystories.txt; evaluation: the rest, llama-perplexity -c 256
# --kl-divergence against the F32 GGUF (issue 19's setup: token embedding
# Q4_0, ffn_down F16). Markdown rows on stdout.
# Usage: sh scripts/calibrate_imatrix.sh [WORKDIR]   (QTK_BIN: the qtk
# binary; QTK_LLAMA_BIN, PATH or ../peer/llama.cpp/build/bin: llama.cpp;
# QTK_THREADS: threads, default 1)
set -eu
QTK=${QTK_BIN:-build/qtk}
J=${QTK_THREADS:-1}
S=tests/data/stories260K
W=${1:-/tmp/qtk-calib-imatrix}
LB=""
for d in "${QTK_LLAMA_BIN:-}" "$(dirname "$(command -v llama-quantize 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/llama-perplexity" ] && [ -x "$d/llama-quantize" ] &&
	   [ -x "$d/llama-imatrix" ]; then LB="$d"; break; fi
done
if [ -z "$LB" ]; then
	echo "llama.cpp not found (set QTK_LLAMA_BIN to its build/bin)" >&2
	exit 1
fi
export LD_LIBRARY_PATH="$LB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$W"
head -c 100000 "$S/tinystories.txt" > "$W/calib.txt"
tail -c +100001 "$S/tinystories.txt" > "$W/eval.txt"
"$QTK" convert "$S/model.safetensors" -F gguf -s f32 -q -f -o "$W/f32.gguf"
"$QTK" calibrate "$W/f32.gguf" --text "$W/calib.txt" --ctx 256 -j "$J" -q -f -o "$W/qtk.imatrix.gguf"
"$LB/llama-imatrix" -m "$W/f32.gguf" -f "$W/calib.txt" -c 256 -t "$J" \
	-o "$W/llama.imatrix.gguf" > "$W/imatrix.log" 2>&1
"$LB/llama-perplexity" -m "$W/f32.gguf" -f "$W/eval.txt" -c 256 -t "$J" \
	--kl-divergence-base "$W/base.kld" > "$W/base.log" 2>&1

row() { # LABEL NAME [llama-quantize imatrix options]
	l=$1 n=$2
	shift 2
	"$LB/llama-quantize" "$@" --tensor-type ffn_down=f16 --token-embedding-type q4_0 \
		"$W/f32.gguf" "$W/$n.gguf" Q4_0 > "$W/$n.quantize.log" 2>&1
	"$LB/llama-perplexity" -m "$W/$n.gguf" -f "$W/eval.txt" -c 256 -t "$J" \
		--kl-divergence-base "$W/base.kld" --kl-divergence > "$W/$n.log" 2>&1
	k=$(sed -n 's/^Mean *KLD: *\([0-9.]*\).*/\1/p' "$W/$n.log")
	t=$(sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p' "$W/$n.log")
	echo "| $l | $k | $t % |"
}

echo "| Q4_0 by llama-quantize | mean KLD | top-1 |"
echo "|---|---|---|"
row "no imatrix" none
row "llama-imatrix's imatrix" llama --imatrix "$W/llama.imatrix.gguf"
row "qtk calibrate's, without token_embd.weight" qtk-noembd --imatrix "$W/qtk.imatrix.gguf" \
	--exclude-weights token_embd.weight
row "qtk calibrate's (token_embd.weight from the tied head's inputs)" qtk \
	--imatrix "$W/qtk.imatrix.gguf"
