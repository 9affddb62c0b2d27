#!/bin/sh
# make bench T=peer-kernels: qtk's matrix-vector kernels next to llama.cpp's
# own on this machine, in one run. llama.cpp: `test-backend-ops perf -o
# MUL_MAT` for q4_0, q8_0 and iq4_nl at m=4096, n=1, k=14336 (its CPU
# backend, as many threads as cores: 2 here); qtk: `qtk bench -s 4096x14336
# -j 2` for int4 g32 (Q4_0's codes and scales), int8 g32 (Q8_0's) and nf4
# g32 (a 16-level table like IQ4_NL), on the int8 activation path. Both are
# compared hot (test-backend-ops runs the same tensors again and again, so
# its weights stay in the caches when they fit); qtk's cold figure (caches
# flushed before each call) and the read bandwidth of the same run are
# printed beside them. Rounds alternate which tool runs first.
#   QTK_LLAMA_BIN     directory holding test-backend-ops (default: PATH, then
#                     ../peer/llama.cpp/build/bin); skipped with a message if absent
#   QTK_PEER_ROUNDS   rounds (default 3); medians are reported
set -e
QTK=${QTK_BIN:-build/qtk}
TBO=""
for d in "$QTK_LLAMA_BIN" "$(dirname "$(command -v test-backend-ops 2>/dev/null || echo /x/x)")" \
	../peer/llama.cpp/build/bin; do
	if [ -n "$d" ] && [ -x "$d/test-backend-ops" ]; then TBO="$d"; break; fi
done
if [ -z "$TBO" ]; then
	echo "peer-kernels: test-backend-ops not found (set QTK_LLAMA_BIN to llama.cpp's build/bin); skipped"
	exit 0
fi
if ! command -v python3 > /dev/null; then
	echo "peer-kernels: python3 not found (it reads the JSON); skipped"
	exit 0
fi
DIR=$(mktemp -d /tmp/qtk-peer-kernels.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
rounds=${QTK_PEER_ROUNDS:-3}

run_llama() { # round
	for t in q4_0 q8_0 iq4_nl; do
		env LD_LIBRARY_PATH="$TBO:$LD_LIBRARY_PATH" "$TBO/test-backend-ops" perf -o MUL_MAT -b CPU \
			-p "type_a=$t,type_b=f32,m=4096,n=1,k=14336," 2>&1 | grep 'MUL_MAT(' |
			sed -n "s/.*type_a=\([a-z0-9_]*\),.* \([0-9.]*\) us\/run.*/\1 \2/p" >> "$DIR/llama.$1"
	done
}
run_qtk() { # round
	"$QTK" bench -s 4096x14336 -S int4,int8,nf4 -j 2 -b 0 -r 10 --json > "$DIR/qtk.$1.json"
}

r=1
while [ "$r" -le "$rounds" ]; do
	if [ $((r % 2)) = 1 ]; then run_llama "$r"; run_qtk "$r"; else run_qtk "$r"; run_llama "$r"; fi
	r=$((r + 1))
done

echo "peer-kernels: GEMV 4096x14336 (m=4096, n=1, k=14336), $(nproc) cores, 2 threads each," \
	"median of $rounds rounds"
python3 - "$DIR" "$rounds" "$TBO" <<'EOF'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
m, k = 4096, 14336
# bytes of the weights: ggml blocks of 32 (q4_0 / iq4_nl: f16 + 16 bytes, q8_0: f16 + 32)
ggml_bytes = {"q4_0": m * k // 32 * 18, "q8_0": m * k // 32 * 34, "iq4_nl": m * k // 32 * 18}
pair = {"q4_0": "int4", "q8_0": "int8", "iq4_nl": "nf4"}
llama = {t: [] for t in pair}
paths = ("int8", "int8-ilv")  # the planes as stored, the interleaved copy
qtk = {(s, c, p): [] for s in pair.values() for c in ("hot", "cold") for p in paths}
bw = []
for r in range(1, rounds + 1):
    for line in open(f"{d}/llama.{r}"):
        t, us = line.split()
        llama[t].append(float(us))
    j = json.load(open(f"{d}/qtk.{r}.json"))
    bw.append(j["read_gbps"])
    for e in j["results"]:
        if e["op"] == "gemv":
            qtk[(e["scheme"], e["cache"], e["path"])].append((e["ms"] * 1e3, e["gbps"], e["weight_bytes"],
                                                             e.get("fraction_of_bandwidth", 0)))
med = statistics.median
print(f"{'llama.cpp':<9} {'us':>8} {'GB/s':>6}   {'qtk':<18} {'us hot':>8} {'GB/s':>6} {'vs llama.cpp':>12}"
      f"   {'us cold':>8} {'GB/s':>6} {'of read bw':>10}")
for t, s in pair.items():
    for p in paths:
        if not llama[t] or not qtk[(s, "hot", p)]:
            print(f"{t} {p}: no result"); continue
        lu = med(llama[t]); lg = ggml_bytes[t] / lu / 1e3
        hu = med(x[0] for x in qtk[(s, "hot", p)]); hg = med(x[1] for x in qtk[(s, "hot", p)])
        cu = med(x[0] for x in qtk[(s, "cold", p)]); cg = med(x[1] for x in qtk[(s, "cold", p)])
        cf = med(x[3] for x in qtk[(s, "cold", p)])
        print(f"{t:<9} {lu:8.0f} {lg:6.1f}   {s + ' g32 ' + p:<18} {hu:8.0f} {hg:6.1f} {hg / lg:11.2f}x"
              f"   {cu:8.0f} {cg:6.1f} {cf:10.2f}")
print(f"read bandwidth from memory (qtk bench's probe at its start, 2 threads): {med(bw):.1f} GB/s; "
      f"'of read bw': the median over rounds of each cold GEMV's GB/s over the flush reads timed "
      f"between its calls (the bound of the same seconds); "
      f"GB/s are weight bytes (qtk's planes, or the interleaved copy for int8-ilv: f32 scales for nf4; "
      f"ggml's blocks: the same bytes for int4/q4_0, int8/q8_0) per call")
EOF
