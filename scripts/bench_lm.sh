#!/bin/sh
# make bench T=lm: prompt and generation speed of a LLaMA-shaped model,
# qtk next to its own f32 (OpenBLAS) path and next to llama-bench on the
# same GGUF files, in one run.
#
# The model: dim 1024, FFN 4096, 26 layers, 16 heads, vocab 32000, untied
# head (501M parameters; random N(0, 0.02) weights from qtk_gen) with a
# synthetic sentencepiece vocabulary of 32000 pieces written here (256 byte
# pieces, so any prompt encodes by byte fallback: one token per byte). From
# its F16 safetensors: Q4_0 and Q8_0 GGUF (qtk convert, byte-identical to
# llama-quantize's packing), an F32 .qtk (floats through OpenBLAS sgemv/sgemm)
# and .qtk files of the other schemes. Each file runs a prompt of P tokens
# (BOS, 3 byte tokens of the word-start mark, P-4 bytes) in one batched step, then generates G tokens;
# llama-bench runs pp P and tg G on the GGUF files with the same threads.
#   QTK_LLAMA_BIN    directory holding llama-bench (default: PATH, then
#                    ../peer/llama.cpp/build/bin); without it qtk runs alone
#   QTK_BENCH_DIR    where to put the files (default /tmp/qtk-bench)
#   QTK_LM_THREADS   thread counts (default "1 2")
#   QTK_LM_ROUNDS    rounds (default 3); medians are reported
#   QTK_LM_PROMPT    prompt tokens P (default 128)
#   QTK_LM_GEN       generated tokens G (default 64)
#   QTK_LM_SCHEMES   .qtk schemes besides the GGUF ones (default "int4-affine nf4 f16")
set -e
QTK=${QTK_BIN:-build/qtk}
GEN=${QTK_GEN:-build/qtk_gen}
DIR=${QTK_BENCH_DIR:-/tmp/qtk-bench}/lm501
THREADS=${QTK_LM_THREADS:-1 2}
rounds=${QTK_LM_ROUNDS:-3}
P=${QTK_LM_PROMPT:-128}
G=${QTK_LM_GEN:-64}
SCHEMES=${QTK_LM_SCHEMES:-int4-affine nf4 f16}
if ! command -v python3 > /dev/null; then
	echo "lm: python3 not found (it writes the vocabulary and reads the results); skipped"
	exit 0
fi
LB=""
for d in "$QTK_LLAMA_BIN" "$(dirname "$(command -v llama-bench 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/llama-bench" ]; then LB="$d"; break; fi
done
[ -n "$LB" ] || echo "lm: llama-bench not found (set QTK_LLAMA_BIN to llama.cpp's build/bin); qtk alone"

mkdir -p "$DIR/src"
if [ ! -f "$DIR/src/model.safetensors" ]; then
	echo "generating $DIR/src ..."
	"$GEN" llama-model "$DIR/src" F16 1024 4096 26 32000 16 > /dev/null
fi
if [ ! -f "$DIR/src/tokenizer.model" ]; then
	# A sentencepiece ModelProto (protobuf): field 1 = pieces {1 piece,
	# 2 score, 3 type}, type 2 unknown, 3 control, 6 byte, 1 normal;
	# field 2 = trainer_spec {3 model_type = 2 (BPE), 35 byte_fallback}.
	python3 - "$DIR/src/tokenizer.model" <<'EOF'
import struct, sys
def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def piece(text, score, typ):
    t = text.encode()
    body = b"\x0a" + varint(len(t)) + t + b"\x15" + struct.pack("<f", score) + b"\x18" + varint(typ)
    return b"\x0a" + varint(len(body)) + body
out = piece("<unk>", 0.0, 2) + piece("<s>", 0.0, 3) + piece("</s>", 0.0, 3)
out += b"".join(piece("<0x%02X>" % i, 0.0, 6) for i in range(256))
out += b"".join(piece("\u2581t%d" % i, -float(i), 1) for i in range(32000 - 259))
spec = b"\x18\x02" + varint(35 << 3) + b"\x01"
out += b"\x12" + varint(len(spec)) + spec
open(sys.argv[1], "wb").write(out)
EOF
fi
conv() { # out args...
	o=$1; shift
	[ -f "$DIR/$o" ] || "$QTK" convert "$DIR/src" -o "$DIR/$o" --force --quiet "$@" > /dev/null
}
conv q4_0.gguf -F gguf --scheme int4 --group 32
conv q8_0.gguf -F gguf --scheme int8 --group 32
conv f32.qtk --scheme f32
files="q4_0.gguf q8_0.gguf f32.qtk"
for s in $SCHEMES; do
	conv "$s.qtk" --scheme "$s" --group 32
	files="$files $s.qtk"
done
cp "$DIR/src/tokenizer.model" "$DIR/tokenizer.model"
# BOS, then the vocabulary's word-start piece as 3 byte tokens (U+2581),
# then one token per byte: P tokens in all, as llama-bench's pp P
prompt=$(python3 -c "print('a' * ($P - 4), end='')")
# OpenBLAS 0.3.21 does not know recent CPUs: give its kernels for the ISA
# in effect (as qtk bench does), unless the caller chose
if [ -z "$OPENBLAS_CORETYPE" ]; then
	if grep -q avx512f /proc/cpuinfo && [ "${QTK_ISA:-avx512}" = avx512 ]; then
		export OPENBLAS_CORETYPE=SkylakeX
	else
		export OPENBLAS_CORETYPE=Haswell
	fi
fi
OUT=$(mktemp -d /tmp/qtk-bench-lm.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
cat "$DIR"/*.gguf "$DIR"/*.qtk > /dev/null

run_qtk() { # round threads
	for f in $files; do
		"$QTK" run "$DIR/$f" -p "$prompt" -n "$G" -j "$2" -c $((P + G + 8)) \
			--tokenizer "$DIR/tokenizer.model" 2>&1 > /dev/null |
			sed -n "s/^prompt: \([0-9]*\) tokens in .* (\([0-9.]*\) tokens\/s); generation: \([0-9]*\) tokens in .* (\([0-9.]*\) tokens\/s)/qtk $f $2 \1 \2 \3 \4/p" \
			>> "$OUT/r.$1"
	done
}
run_llama() { # round threads
	[ -n "$LB" ] || return 0
	for f in q4_0.gguf q8_0.gguf; do
		env LD_LIBRARY_PATH="$LB:$LD_LIBRARY_PATH" "$LB/llama-bench" -m "$DIR/$f" -p "$P" \
			-n "$G" -t "$2" -r 1 -o csv 2> /dev/null | python3 -c "
import csv, sys
for r in csv.DictReader(sys.stdin):
    kind = 'pp' if int(r['n_prompt']) > 0 else 'tg'
    print('llama', '$f', '$2', kind, r['avg_ts'])" >> "$OUT/r.$1"
	done
}

r=1
while [ "$r" -le "$rounds" ]; do
	for t in $THREADS; do
		if [ $((r % 2)) = 1 ]; then run_qtk "$r" "$t"; run_llama "$r" "$t"
		else run_llama "$r" "$t"; run_qtk "$r" "$t"; fi
	done
	r=$((r + 1))
done

echo "lm: 501M-parameter LLaMA-shaped model, prompt $P tokens, generation $G tokens," \
	"median of $rounds rounds, $(nproc) cores; qtk kernels: ${QTK_ISA:-best}," \
	"OpenBLAS $OPENBLAS_CORETYPE"
cat "$OUT"/r.* | python3 -c "
import statistics, sys
qtk, llama = {}, {}
for line in sys.stdin:
    w = line.split()
    if w[0] == 'qtk':
        qtk.setdefault((w[1], w[2]), []).append((float(w[4]), float(w[6])))
    else:
        llama.setdefault((w[1], w[2], w[3]), []).append(float(w[4]))
med = statistics.median
print('%-18s %7s %12s %12s %14s %14s' % ('file', 'threads', 'prompt t/s', 'gen t/s',
      'llama pp t/s', 'llama tg t/s'))
for (f, t), v in sorted(qtk.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    pp, tg = med([a for a, _ in v]), med([b for _, b in v])
    lp, lt = llama.get((f, t, 'pp')), llama.get((f, t, 'tg'))
    ls = ('%14.1f %14.1f' % (med(lp), med(lt))) if lp and lt else '%14s %14s' % ('-', '-')
    ratio = ('   qtk/llama: prompt %.2fx, generation %.2fx' % (pp / med(lp), tg / med(lt))) if lp and lt else ''
    print('%-18s %7s %12.1f %12.1f %s%s' % (f, t, pp, tg, ls, ratio))
"
