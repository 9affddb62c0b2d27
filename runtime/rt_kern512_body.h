/* runtime (private): the AVX-512 kernel bodies, compiled twice by
 * rt_kern_avx512.c: with RT_VNNI 0 (maddubs + madd, AVX-512 BW) and with
 * RT_VNNI 1 (dpbusd, AVX-512 VNNI), under the matching target pragma. NM(x)
 * gives each copy its own names. The arithmetic is rt_kern_ref.c's: the
 * integer lane sums are exact either way, and the f32 steps are the same
 * operations in the same order per lane. One vector holds a pair of blocks
 * (64 positions): its 16 lanes are rt_kern_ref.c's 16 lanes. */

#define INL static inline __attribute__((always_inline))

/* Does this kind add the prepared correction (rt_act.s) to its sums? */
#if RT_VNNI
#define NEEDS_CORR(kind) ((kind) == RK_S4 || (kind) == RK_S8 || (kind) == RK_L4)
#else
#define NEEDS_CORR(kind) ((kind) == RK_S4 || (kind) == RK_A8)
#endif

/* The codes of a pair of blocks (at src) as 64 bytes in position order. */
INL __m512i NM(load_pair)(const int kind, const uint8_t *src)
{
	if (RK_BITS(kind) == 8)
		return _mm512_loadu_si512(src);
	/* 32 bytes twice (a load, no shuffle: gcc does not always fold the
	 * intrinsic's load); the upper copy shifted: low nibbles, then high */
	__m512i v;
	__asm__("vbroadcasti64x4 %1, %0" : "=v"(v) : "m"(*(const rt_b32 *)(const void *)src));
#if RT_GFNI
	/* one affine bit transform per byte: low nibble in the lower half,
	 * high nibble shifted down in the upper half */
	const __m512i m = _mm512_setr_epi64(0x0102040800000000ll, 0x0102040800000000ll,
	                                    0x0102040800000000ll, 0x0102040800000000ll,
	                                    0x1020408000000000ll, 0x1020408000000000ll,
	                                    0x1020408000000000ll, 0x1020408000000000ll);
	return _mm512_gf2p8affine_epi64_epi8(v, m, 0);
#else
	v = _mm512_mask_srli_epi16(v, 0xffff0000u, v, 4);
	return _mm512_and_si512(v, _mm512_set1_epi8(15));
#endif
}

/* Lane sums of the codes w against the activations a, plus init. */
INL __m512i NM(idot)(const int kind, __m512i w, __m512i a, __m512i init, const rt_job *J)
{
#if RT_VNNI
	switch (kind) {
	case RK_S8: /* c + 128 as u8 */
		w = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
		break;
	case RK_L4: /* level + 128 as u8 */
		w = _mm512_shuffle_epi8(
			_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)J->lut_u)), w);
		break;
	default: /* S4, A4, A8: unsigned codes */
		break;
	}
	return _mm512_dpbusd_epi32(init, w, a);
#else
	const __m512i one16 = _mm512_set1_epi16(1);
	__m512i sw;
	switch (kind) {
	case RK_S4:
	case RK_A4: /* u4 x s8: no saturation */
		return _mm512_add_epi32(init, _mm512_madd_epi16(_mm512_maddubs_epi16(w, a), one16));
	case RK_L4:
		sw = _mm512_shuffle_epi8(
			_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)J->lut_s)), w);
		break;
	case RK_A8: /* c - 128 as s8 */
		sw = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
		break;
	default: /* RK_S8 */
		sw = w;
		break;
	}
	/* |w| * (a with w's sign): |w| <= 128, |a| <= 127, pairs fit int16 */
	__m512i as = _mm512_mask_sub_epi8(a, _mm512_movepi8_mask(sw), _mm512_setzero_si512(), a);
	__m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(sw), as), one16);
	return _mm512_add_epi32(init, p);
#endif
}

/* The 16 lane scales of a pair from the row's scales (base: the pair's
 * first group). */
INL __m512 NM(lane_scales)(int gperm, const float *ws, size_t base, __m512i gidx)
{
	if (gperm)
		return _mm512_permutexvar_ps(gidx, _mm512_loadu_ps(ws + base));
	return _mm512_set1_ps(ws[base]);
}

/* ---- integer path -------------------------------------------------- */

/* Pairs k0, k0+2, .. < k1 of rows cp[0..RT_TR) (codes of block k at
 * cp[r] + (k - kofs) * bytes per block) x C vectors bi[0..C), into acc. */
INL void NM(int_tile)(const int kind, const int C, const rt_job *J, const uint8_t *const *cp,
                      size_t kofs, size_t k0, size_t k1, const float *const *ws,
                      const float *const *wb, const size_t *bi, __m512 acc[RT_TR][4])
{
	const rt_act *A = J->act;
	const size_t nbp = A->nbp, bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;
	const int affine = RK_AFFINE(kind);
	const __m512i gidx = _mm512_loadu_si512(J->gidx);
	const int gshift = J->gshift, gperm = J->gperm;
	const size_t pf = RT_TR * J->cb;
	const int8_t *q = A->q;
	const int32_t *cs = A->s;
	const float *ad = A->d, *axs = A->xs;

	for (size_t k = k0; k < k1; k += 2) {
		size_t base = gshift < 0 ? 0 : (k * RT_BLK) >> gshift;
		__m512i w[RT_TR];
		__m512 sw[RT_TR], bw[RT_TR] = { _mm512_setzero_ps() };

#pragma GCC unroll 4
		for (int r = 0; r < RT_TR; r++) {
			/* the same place in the next tile's row: a tile ahead of use, so
			 * that cold weights stream at the memory's pace */
			_mm_prefetch((const char *)(cp[r] + pf + (k - kofs) * bpb), _MM_HINT_T0);
			w[r] = NM(load_pair)(kind, cp[r] + (k - kofs) * bpb);
			sw[r] = NM(lane_scales)(gperm, ws[r], base, gidx);
			if (affine)
				bw[r] = NM(lane_scales)(gperm, wb[r], base, gidx);
		}
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			size_t o = bi[c] * nbp + k;
			__m512i a = _mm512_loadu_si512(q + o * RT_BLK);
			__m512i init = NEEDS_CORR(kind) ? _mm512_loadu_si512(cs + o * 8)
			                                : _mm512_setzero_si512();
			__m512 d = _mm512_loadu_ps(ad + o * 8);
#pragma GCC unroll 4
			for (int r = 0; r < RT_TR; r++) {
				__m512 f = _mm512_cvtepi32_ps(NM(idot)(kind, w[r], a, init, J));
				acc[r][c] = _mm512_fmadd_ps(f, _mm512_mul_ps(sw[r], d), acc[r][c]);
				if (affine)
					acc[r][c] = _mm512_fmadd_ps(_mm512_loadu_ps(axs + o * 8), bw[r],
					                            acc[r][c]);
			}
		}
	}
}

/* ---- float path ------------------------------------------------------- */

/* 128-bit lane i of v (a constant once the callers' loops unroll; a
 * switch so that unoptimized builds still get immediates). */
INL __m128i NM(quarter)(__m512i v, int i)
{
	switch (i) {
	case 0: return _mm512_extracti32x4_epi32(v, 0);
	case 1: return _mm512_extracti32x4_epi32(v, 1);
	case 2: return _mm512_extracti32x4_epi32(v, 2);
	default: return _mm512_extracti32x4_epi32(v, 3);
	}
}

/* Positions 16i..16i+15 of a pair (codes w unpacked) as f32 weights:
 * w = val * scale (+ bias), the values rt_kern_ref.c's float_row
 * multiplies. base: the pair's first group. */
INL __m512 NM(dec16)(const int kind, const rt_job *J, __m512i w, int i, size_t base,
                     const float *ws, const float *wb, __m512 lut, __m512i off)
{
	const int affine = RK_AFFINE(kind);
	__m128i c8 = NM(quarter)(w, i);
	__m512i c32 = kind == RK_S8 ? _mm512_cvtepi8_epi32(c8) : _mm512_cvtepu8_epi32(c8);
	__m512 v, s, b = _mm512_setzero_ps();

	switch (kind) {
	case RK_L4: v = _mm512_permutexvar_ps(c32, lut); break;
	case RK_S4: v = _mm512_cvtepi32_ps(_mm512_sub_epi32(c32, off)); break;
	default: v = _mm512_cvtepi32_ps(c32); break;
	}
	if (J->funi[i] >= 0) {
		s = _mm512_set1_ps(ws[base + (size_t)J->funi[i]]);
		if (affine)
			b = _mm512_set1_ps(wb[base + (size_t)J->funi[i]]);
	} else {
		__m512i fi = _mm512_loadu_si512(J->fidx[i]);
		s = _mm512_permutexvar_ps(fi, _mm512_loadu_ps(ws + base));
		if (affine)
			b = _mm512_permutexvar_ps(fi, _mm512_loadu_ps(wb + base));
	}
	v = _mm512_mul_ps(v, s);
	return affine ? _mm512_add_ps(v, b) : v;
}

/* Decode one row into out[nbp*32] f32 in position order. */
INL void NM(decode_row)(const int kind, const rt_job *J, const uint8_t *codes, size_t kfull,
                        const uint8_t *tail, const float *ws, const float *wb, float *out)
{
	const rt_act *A = J->act;
	const size_t bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;
	const __m512 lut = _mm512_loadu_ps(J->lut_f);
	const __m512i off = _mm512_set1_epi32(J->off);

	for (size_t k = 0; k < A->nbp; k += 2) {
		const uint8_t *src = k < kfull ? codes + k * bpb : tail + (k - kfull) * bpb;
		size_t base = J->gshift < 0 ? 0 : (k * RT_BLK) >> J->gshift;
		__m512i w = NM(load_pair)(kind, src);
#pragma GCC unroll 4
		for (int i = 0; i < 4; i++)
			_mm512_storeu_ps(out + (k * RT_BLK + 16 * (size_t)i),
			                 NM(dec16)(kind, J, w, i, base, ws, wb, lut, off));
	}
}

/* One vector on the float path: each row's weights decoded and multiplied
 * at once (the same operations as decode_row + float_tile, without the
 * round trip through memory). Pairs k0 .. k1 of rows cp (see int_tile). */
INL void NM(float_gemv)(const int kind, const rt_job *J, const uint8_t *const *cp, size_t kofs,
                        size_t k0, size_t k1, const float *const *ws, const float *const *wb,
                        const float *x, __m512 acc[RT_TR][4])
{
	const size_t bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;
	const __m512 lut = _mm512_loadu_ps(J->lut_f);
	const __m512i off = _mm512_set1_epi32(J->off);

	for (size_t k = k0; k < k1; k += 2) {
		size_t base = J->gshift < 0 ? 0 : (k * RT_BLK) >> J->gshift;
#pragma GCC unroll 4
		for (int r = 0; r < RT_TR; r++) {
			_mm_prefetch((const char *)(cp[r] + RT_TR * J->cb + (k - kofs) * bpb), _MM_HINT_T0);
			__m512i w = NM(load_pair)(kind, cp[r] + (k - kofs) * bpb);
#pragma GCC unroll 4
			for (int i = 0; i < 4; i++)
				acc[r][0] = _mm512_fmadd_ps(NM(dec16)(kind, J, w, i, base, ws[r], wb[r], lut, off),
				                            _mm512_loadu_ps(x + k * RT_BLK + 16 * (size_t)i),
				                            acc[r][0]);
		}
	}
}

/* Decoded rows wr[0..RT_TR) x C vectors bi[0..C). */
INL void NM(float_tile)(const int C, const rt_job *J, const float *const *wr, const size_t *bi,
                        __m512 acc[RT_TR][4])
{
	const rt_act *A = J->act;
	size_t n = A->nbp * RT_BLK;
	const float *x[4];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		x[c] = A->xf + bi[c] * n;
	for (size_t p = 0; p < n; p += 16) {
		__m512 w[RT_TR];
#pragma GCC unroll 4
		for (int r = 0; r < RT_TR; r++)
			w[r] = _mm512_loadu_ps(wr[r] + p);
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			__m512 xv = _mm512_loadu_ps(x[c] + p);
#pragma GCC unroll 4
			for (int r = 0; r < RT_TR; r++)
				acc[r][c] = _mm512_fmadd_ps(w[r], xv, acc[r][c]);
		}
	}
}

/* ---- driver ------------------------------------------------------------- */

/* The sum of a vector's 16 lanes by rt_fold16's tree. */
INL float NM(fold)(__m512 v)
{
	__m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
	__m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	b = _mm_add_ps(b, _mm_movehl_ps(b, b));
	b = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
	return _mm_cvtss_f32(b);
}

/* One tile of C vectors: the pairs inside the rows, the tail pair, then
 * rows rt .. (at most r1) of y. */
INL void NM(tile)(const int kind, const int C, const rt_job *J, const uint8_t *const *cp,
                  const uint8_t *const *tail, size_t kfull, const float *const *ws,
                  const float *const *wb, const float *const *wr, const size_t *bi,
                  size_t rt, size_t r1)
{
	__m512 acc[RT_TR][4];

#pragma GCC unroll 4
	for (int r = 0; r < RT_TR; r++)
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	if (J->path == QTK_RT_FLOAT && C == 1 && !wr[0]) {
		const float *x = J->act->xf + bi[0] * J->act->nbp * RT_BLK;
		NM(float_gemv)(kind, J, cp, 0, 0, kfull, ws, wb, x, acc);
		NM(float_gemv)(kind, J, tail, kfull, kfull, J->act->nbp, ws, wb, x, acc);
	} else if (J->path == QTK_RT_FLOAT) {
		NM(float_tile)(C, J, wr, bi, acc);
	} else {
		NM(int_tile)(kind, C, J, cp, 0, 0, kfull, ws, wb, bi, acc);
		NM(int_tile)(kind, C, J, tail, kfull, kfull, J->act->nbp, ws, wb, bi, acc);
	}
#pragma GCC unroll 4
	for (int i = 0; i < RT_TR; i++)
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			if (rt + (size_t)i < r1)
				J->y[bi[c] * J->rows + rt + (size_t)i] = NM(fold)(acc[i][c]);
}

/* Ask for the scales (and biases) of the tile after this one: they are a
 * separate stream the hardware prefetcher starts late on. */
INL void NM(prefetch_scales)(const rt_job *J, size_t r, size_t r1)
{
	size_t n, es = J->dq ? 1 : qtk_dtype_size(J->sdt);

	if (r >= r1)
		return;
	n = ((r1 - r < RT_TR ? r1 - r : RT_TR) * J->gpr) * es;
	for (size_t o = 0; o < n; o += 64) {
		_mm_prefetch((const char *)(J->scales + r * J->gpr * es + o), _MM_HINT_T0);
		if (J->biases)
			_mm_prefetch((const char *)(J->biases + r * J->gpr * es + o), _MM_HINT_T0);
	}
}

INL void NM(rows_kind)(const int kind, const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	const rt_act *A = J->act;
	const size_t nbp = A->nbp, B = A->batch;
	const size_t sstride = J->gpr + RT_SPAD;
	/* pairs whose codes lie inside the row; the rest come from a zeroed copy */
	const size_t pb = RK_BITS(kind) == 8 ? 2 * RT_BLK : RT_BLK;
	size_t kfull = J->cb / pb * 2;
	float *wsb = scratch, *wbb = wsb + RT_TR * sstride;
	uint8_t *tailb = (uint8_t *)(wbb + RT_TR * sstride);
	float *dec = (float *)(void *)(tailb + RT_TR * 64);

	if (kfull > nbp)
		kfull = nbp;
	for (size_t cc = 0; cc < B; cc += J->tile_cols) {
		size_t ce = cc + J->tile_cols < B ? cc + J->tile_cols : B;
		for (size_t rt = r0; rt < r1; rt += RT_TR) {
			const uint8_t *cp[RT_TR], *tail[RT_TR];
			const float *ws[RT_TR], *wb[RT_TR], *wr[RT_TR];

			NM(prefetch_scales)(J, rt + RT_TR, r1);

			for (int i = 0; i < RT_TR; i++) {
				/* a short last tile repeats its last row; the copy is not stored */
				size_t rr = rt + (size_t)i < r1 ? rt + (size_t)i : r1 - 1;
				uint8_t *t = tailb + 64 * i;
				cp[i] = J->codes + rr * J->cb;
				ws[i] = wsb + (size_t)i * sstride;
				wb[i] = wbb + (size_t)i * sstride;
				row_scales_512(J, kind, rr, wsb + (size_t)i * sstride, wbb + (size_t)i * sstride);
				memset(t, 0, 64);
				if (kfull < nbp)
					memcpy(t, cp[i] + kfull / 2 * pb, J->cb - kfull / 2 * pb);
				tail[i] = t;
				wr[i] = NULL;
				/* a batch decodes the rows once for all its vectors */
				if (J->path == QTK_RT_FLOAT && B > 1) {
					float *o = dec + (size_t)i * nbp * RT_BLK;
					NM(decode_row)(kind, J, cp[i], kfull, t, ws[i], wb[i], o);
					wr[i] = o;
				}
			}
			for (size_t b0 = cc; b0 < ce;) {
				size_t left = ce - b0, bi[4];
				int C = left >= 4 ? 4 : left >= 2 ? 2 : 1;

				for (int c = 0; c < 4; c++)
					bi[c] = b0 + (size_t)(c < C ? c : C - 1);
				if (C == 4)
					NM(tile)(kind, 4, J, cp, tail, kfull, ws, wb, wr, bi, rt, r1);
				else if (C == 2)
					NM(tile)(kind, 2, J, cp, tail, kfull, ws, wb, wr, bi, rt, r1);
				else
					NM(tile)(kind, 1, J, cp, tail, kfull, ws, wb, wr, bi, rt, r1);
				b0 += (size_t)C;
			}
		}
	}
}

static void NM(rows_s8)(const rt_job *J, size_t r0, size_t r1, void *s) { NM(rows_kind)(RK_S8, J, r0, r1, s); }
static void NM(rows_a8)(const rt_job *J, size_t r0, size_t r1, void *s) { NM(rows_kind)(RK_A8, J, r0, r1, s); }
static void NM(rows_s4)(const rt_job *J, size_t r0, size_t r1, void *s) { NM(rows_kind)(RK_S4, J, r0, r1, s); }
static void NM(rows_a4)(const rt_job *J, size_t r0, size_t r1, void *s) { NM(rows_kind)(RK_A4, J, r0, r1, s); }
static void NM(rows_l4)(const rt_job *J, size_t r0, size_t r1, void *s) { NM(rows_kind)(RK_L4, J, r0, r1, s); }

static const rt_rows_fn NM(table)[RK_COUNT] = {
	[RK_S8] = NM(rows_s8), [RK_A8] = NM(rows_a8), [RK_S4] = NM(rows_s4),
	[RK_A4] = NM(rows_a4), [RK_L4] = NM(rows_l4),
};

#undef INL
#undef NEEDS_CORR
