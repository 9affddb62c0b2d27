#!/bin/sh
# Regenerate the stories260K tables of docs/quality.md (markdown on stdout).
#   1. qtk's schemes: every scheme at groups 32 and 64, round-to-nearest and
#      --search, converted from tests/data/stories260K/model.safetensors
#      (every 2-D weight quantized, the tied embedding/output matrix too),
#      each evaluated by `qtk eval --score half --ctx 256` over
#      tinystories.txt against the f32 safetensors: perplexity, mean and p99
#      KL divergence, top-1 agreement, on the int8 activation path (the
#      default, as llama.cpp's) and the KL divergence on the float path.
#   2. with llama.cpp (QTK_LLAMA_BIN, or PATH, or ../peer/llama.cpp/build/bin):
#      F32, Q8_0 and Q4_0 GGUF files made by qtk and by llama-quantize, each
#      measured by llama-perplexity -c 256 (--kl-divergence against F32) and
#      by qtk eval on the same file, side by side.
# Usage: sh scripts/quality.sh [WORKDIR]    (QTK_BIN: the qtk binary,
# QTK_THREADS: threads for both tools, default 1: the model is tiny)
set -eu
QTK=${QTK_BIN:-build/qtk}
J=${QTK_THREADS:-1}
S=tests/data/stories260K
TEXT=$S/tinystories.txt
W=${1:-/tmp/qtk-quality}
mkdir -p "$W"

# a value from qtk's compact JSON
jget() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1"; }

qeval() { # MODEL REF PATH OUT.json
	"$QTK" eval "$1" --text "$TEXT" --ctx 256 --score half --against "$2" --path "$3" \
		-j "$J" -q --json > "$4"
}

row() { # LABEL MODEL
	qeval "$2" "$S/model.safetensors" int8 "$W/i.json"
	qeval "$2" "$S/model.safetensors" float "$W/f.json"
	case "$2" in
	*.qtk) b=$("$QTK" inspect "$2" | sed -n 's/.*(\([0-9.]*\) bits per weight).*/\1/p') ;;
	*) b=32 ;;
	esac
	awk -v l="$1" -v b="$b" -v p="$(jget "$W/i.json" perplexity)" \
	    -v k="$(jget "$W/i.json" kld_mean)" -v q="$(jget "$W/i.json" kld_p99)" \
	    -v t="$(jget "$W/i.json" top1)" -v kf="$(jget "$W/f.json" kld_mean)" \
	    -v tf="$(jget "$W/f.json" top1)" 'BEGIN {
		printf "| %s | %.3f | %.4f | %.6f | %.4f | %.2f %% | %.6f | %.2f %% |\n",
		       l, b, p, k, q, 100 * t, kf, 100 * tf }'
}

echo "qtk $("$QTK" --version | cut -d' ' -f2), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $J thread(s)"
echo
echo "| weights | bits/weight | perplexity | mean KLD | p99 KLD | top-1 | mean KLD (float path) | top-1 (float path) |"
echo "|---|---|---|---|---|---|---|---|"
row "f32 (safetensors)" "$S/model.safetensors"
for s in f16 bf16; do
	"$QTK" convert "$S/model.safetensors" -o "$W/$s.qtk" -s "$s" -f -q
	row "$s" "$W/$s.qtk"
done
for s in int8 int4 int4-affine nf4; do
	for g in 32 64; do
		for m in rtn search; do
			o=""
			[ "$m" = search ] && o=--search
			"$QTK" convert "$S/model.safetensors" -o "$W/$s-$g-$m.qtk" -s "$s" -g "$g" $o -f -q
			row "$s g$g $m" "$W/$s-$g-$m.qtk"
		done
	done
done

# ---- llama.cpp on the same GGUF files ----
LB=""
for d in "${QTK_LLAMA_BIN:-}" "$(dirname "$(command -v llama-perplexity 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/llama-perplexity" ] && [ -x "$d/llama-quantize" ]; then LB="$d"; break; fi
done
echo
if [ -z "$LB" ]; then
	echo "llama.cpp not found (set QTK_LLAMA_BIN to its build/bin): side-by-side table skipped"
	exit 0
fi
G="$W/gguf"
mkdir -p "$G"
"$QTK" convert "$S/model.safetensors" -o "$G/f32.gguf" -F gguf -s f32 -f -q
for t in Q8_0:int8 Q4_0:int4; do
	"$QTK" convert "$S/model.safetensors" -o "$G/qtk-${t%%:*}.gguf" -F gguf -s "${t#*:}" -g 32 -f -q
	# ffn_down's 172 columns are no multiple of 32: F16, as qtk does
	lt=$(echo "${t%%:*}" | tr 'A-Z' 'a-z')
	"$LB/llama-quantize" --token-embedding-type "$lt" --tensor-type ffn_down=f16 \
		"$G/f32.gguf" "$G/lq-${t%%:*}.gguf" "${t%%:*}" > "$G/lq-${t%%:*}.quantize.log" 2>&1
done
"$LB/llama-perplexity" -m "$G/f32.gguf" -f "$TEXT" -c 256 -t "$J" \
	--kl-divergence-base "$G/f32.kld" > "$G/f32.log" 2>&1
lpf=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$G/f32.log")
"$QTK" eval "$G/f32.gguf" --text "$TEXT" --ctx 256 --score half -j "$J" -q --json > "$W/q.json"
echo "llama.cpp: $LB; llama-perplexity -c 256 -t $J [--kl-divergence-base f32.kld --kl-divergence]"
echo "against qtk eval --ctx 256 --score half --against f32.gguf (int8 path) on the same files"
echo
echo "| file | PPL llama.cpp | PPL qtk | diff | mean KLD llama.cpp | mean KLD qtk | diff | p99 KLD llama.cpp / qtk | same top llama.cpp / qtk |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -v a="$lpf" -v b="$(jget "$W/q.json" perplexity)" 'BEGIN {
	printf "| f32.gguf | %.4f | %.4f | %+.3f %% | | | | | |\n", a, b, 100 * (b - a) / a }'
for f in qtk-Q8_0 lq-Q8_0 qtk-Q4_0 lq-Q4_0; do
	# llama.cpp logs from a thread that can lose the last lines at exit
	for try in 1 2 3; do
		"$LB/llama-perplexity" -m "$G/$f.gguf" -f "$TEXT" -c 256 -t "$J" \
			--kl-divergence-base "$G/f32.kld" --kl-divergence > "$G/$f.log" 2>&1
		grep -q '^Same top p' "$G/$f.log" && break
	done
	"$QTK" eval "$G/$f.gguf" --text "$TEXT" --ctx 256 --score half --against "$G/f32.gguf" \
		-j "$J" -q --json > "$W/q.json"
	lp=$(sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p' "$G/$f.log")
	lk=$(sed -n 's/^Mean *KLD: *\([0-9.]*\).*/\1/p' "$G/$f.log")
	l99=$(sed -n 's/^99.0% *KLD: *\([0-9.]*\).*/\1/p' "$G/$f.log")
	lt=$(sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p' "$G/$f.log")
	awk -v f="$f" -v lp="$lp" -v lk="$lk" -v l99="$l99" -v lt="$lt" \
	    -v qp="$(jget "$W/q.json" perplexity)" -v qk="$(jget "$W/q.json" kld_mean)" \
	    -v q99="$(jget "$W/q.json" kld_p99)" -v qt="$(jget "$W/q.json" top1)" 'BEGIN {
		printf "| %s.gguf | %.4f | %.4f | %+.3f %% | %.6f | %.6f | %+.2f %% | %.4f / %.4f | %.2f / %.2f %% |\n",
		       f, lp, qp, 100 * (qp - lp) / lp, lk, qk, 100 * (qk - lk) / lk, l99, q99, lt, 100 * qt }'
done
