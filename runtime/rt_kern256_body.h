/* runtime (private): the AVX2 kernel bodies, compiled twice by
 * rt_kern_avx2.c: with RT_VNNI 0 (maddubs + madd) and RT_VNNI 1 (AVX-VNNI
 * dpbusd), under the matching target pragma. One block (32 positions) per
 * vector; the 16 lanes of rt_kern_ref.c are two vectors: even blocks in
 * the first, odd blocks in the second. Integer sums are exact; the f32
 * steps are rt_kern_ref.c's, in its order per lane. */

/* Does this kind add the prepared correction (rt_act.s) to its sums? */
#if RT_VNNI
#define NEEDS_CORR(kind) ((kind) == RK_S4 || (kind) == RK_S8 || (kind) == RK_L4)
#else
#define NEEDS_CORR(kind) ((kind) == RK_S4 || (kind) == RK_A8)
#endif

/* ---- integer path -------------------------------------------------- */

static inline __attribute__((always_inline)) __m256i
NM(idot)(const int kind, __m256i w, __m256i a, __m256i init, const rt_job *J)
{
#if RT_VNNI
	switch (kind) {
	case RK_S8:
		w = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
		break;
	case RK_L4:
		w = _mm256_shuffle_epi8(
			_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)J->lut_u)), w);
		break;
	default:
		break;
	}
	return _mm256_dpbusd_avx_epi32(init, w, a);
#else
	const __m256i one16 = _mm256_set1_epi16(1);
	__m256i sw;
	switch (kind) {
	case RK_S4:
	case RK_A4:
		return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), one16));
	case RK_L4:
		sw = _mm256_shuffle_epi8(
			_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)J->lut_s)), w);
		break;
	case RK_A8:
		sw = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
		break;
	default:
		sw = w;
		break;
	}
	__m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(sw), _mm256_sign_epi8(a, sw)),
	                              one16);
	return _mm256_add_epi32(init, p);
#endif
}

/* Codes of the pair at src as two vectors of 32 bytes in position order. */
static inline __attribute__((always_inline)) void
NM(load_pair)(const int kind, const uint8_t *src, __m256i *w0, __m256i *w1)
{
	if (RK_BITS(kind) == 8) {
		*w0 = _mm256_loadu_si256((const __m256i *)(const void *)src);
		*w1 = _mm256_loadu_si256((const __m256i *)(const void *)(src + RT_BLK));
		return;
	}
	__m256i v = _mm256_loadu_si256((const __m256i *)(const void *)src);
	*w0 = _mm256_and_si256(v, _mm256_set1_epi8(15));
	*w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
}

/* Lane scales of block half h (0: the pair's first block) of a pair whose
 * first group is base: perm (a constant), a permutation by idx, else the
 * half's common offset uni. */
static inline __attribute__((always_inline)) __m256
NM(lane_scales)(const int perm, const float *ws, size_t base, int uni, __m256i idx)
{
	if (!perm)
		return _mm256_set1_ps(ws[base + (size_t)uni]);
	return _mm256_permutevar8x32_ps(_mm256_loadu_ps(ws + base), idx);
}

/* Pairs k0, k0+2, .. < k1 of rows cp[0..R) (codes of block k at cp[r] +
 * (k - kofs) * bytes per block) x vectors bi[0..C): acc[r][c][block % 2].
 * Row by row, so that only a row's codes and scales are live besides the
 * accumulators (16 registers). */
static inline __attribute__((always_inline)) void
NM(int_tile)(const int kind, const int R, const int C, const int perm, const rt_job *J,
             const uint8_t *const *cp, size_t kofs, size_t k0, size_t k1,
             const float *const *ws, const float *const *wb, const size_t *bi,
             __m256 acc[RT_TR][2][2])
{
	const rt_act *A = J->act;
	const size_t nbp = A->nbp, bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;
	const int affine = RK_AFFINE(kind), gshift = J->gshift;
	const int8_t *q = A->q;
	const int32_t *cs = A->s;
	const float *ad = A->d, *axs = A->xs;
	__m256i idx[2];
	int uni[2];

	for (int h = 0; h < 2; h++) {
		idx[h] = _mm256_loadu_si256((const __m256i *)(const void *)(J->gidx + 8 * h));
		uni[h] = J->gidx[8 * h];
	}
	for (size_t k = k0; k < k1; k += 2) {
		size_t base = gshift < 0 ? 0 : (k * RT_BLK) >> gshift;
#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				const uint8_t *src = cp[r] + (k - kofs) * bpb;
				__m256i w;
				/* the same place in the next tile's row (see the AVX-512 body) */
				if (!h)
					_mm_prefetch((const char *)(src + RT_TR * J->cb), _MM_HINT_T0);
				if (RK_BITS(kind) == 8) {
					w = _mm256_loadu_si256((const __m256i *)(const void *)(src + RT_BLK * (size_t)h));
				} else {
					w = _mm256_loadu_si256((const __m256i *)(const void *)src);
					if (h)
						w = _mm256_srli_epi16(w, 4);
					w = _mm256_and_si256(w, _mm256_set1_epi8(15));
				}
				__m256 sw = NM(lane_scales)(perm, ws[r], base, uni[h], idx[h]);
#pragma GCC unroll 2
				for (int c = 0; c < C; c++) {
					size_t o = bi[c] * nbp + k + (size_t)h;
					__m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(q + o * RT_BLK));
					__m256i init = NEEDS_CORR(kind)
						? _mm256_loadu_si256((const __m256i *)(const void *)(cs + o * 8))
						: _mm256_setzero_si256();
					__m256 f = _mm256_cvtepi32_ps(NM(idot)(kind, w, a, init, J));
					acc[r][c][h] = _mm256_fmadd_ps(f, _mm256_mul_ps(sw, _mm256_loadu_ps(ad + o * 8)),
					                               acc[r][c][h]);
					if (affine)
						acc[r][c][h] = _mm256_fmadd_ps(_mm256_loadu_ps(axs + o * 8),
						                               NM(lane_scales)(perm, wb[r], base, uni[h], idx[h]),
						                               acc[r][c][h]);
				}
			}
		}
	}
}

/* ---- float path ------------------------------------------------------- */

/* Positions 8i..8i+7 of block k (its codes w, unpacked) as f32 weights:
 * w = val * scale (+ bias), the values rt_kern_ref.c's float_row
 * multiplies. */
static inline __attribute__((always_inline)) __m256
NM(dec8)(const int kind, const rt_job *J, __m256i w, int i, size_t k, const float *ws,
         const float *wb)
{
	const __m256i seven = _mm256_set1_epi32(7);
	__m128i h = (i >> 1) ? _mm256_extracti128_si256(w, 1) : _mm256_castsi256_si128(w);
	__m128i c8 = (i & 1) ? _mm_srli_si128(h, 8) : h;
	__m256i c32 = kind == RK_S8 ? _mm256_cvtepi8_epi32(c8) : _mm256_cvtepu8_epi32(c8);
	__m256 v;

	switch (kind) {
	case RK_L4:
		v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(J->lut_f), c32),
		                     _mm256_permutevar8x32_ps(_mm256_loadu_ps(J->lut_f + 8), c32),
		                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(c32, seven)));
		break;
	case RK_S4: v = _mm256_cvtepi32_ps(_mm256_sub_epi32(c32, _mm256_set1_epi32(J->off))); break;
	default: v = _mm256_cvtepi32_ps(c32); break;
	}
	/* 8 positions lie in one group */
	size_t g = rt_group(J, rt_elem(J->act->order, k, 8u * (unsigned)i));
	v = _mm256_mul_ps(v, _mm256_set1_ps(ws[g]));
	return RK_AFFINE(kind) ? _mm256_add_ps(v, _mm256_set1_ps(wb[g])) : v;
}

static inline __attribute__((always_inline)) void
NM(decode_row)(const int kind, const rt_job *J, const uint8_t *codes, size_t kfull,
               const uint8_t *tail, const float *ws, const float *wb, float *out)
{
	const size_t bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;

	for (size_t k = 0; k < J->act->nbp; k += 2) {
		__m256i wp[2];
		NM(load_pair)(kind, k < kfull ? codes + k * bpb : tail + (k - kfull) * bpb, &wp[0],
		              &wp[1]);
#pragma GCC unroll 2
		for (int hb = 0; hb < 2; hb++)
#pragma GCC unroll 4
			for (int i = 0; i < 4; i++)
				_mm256_storeu_ps(out + ((k + (size_t)hb) * RT_BLK + 8 * (size_t)i),
				                 NM(dec8)(kind, J, wp[hb], i, k + (size_t)hb, ws, wb));
	}
}

/* One vector on the float path, decoded and multiplied at once (the
 * operations of decode_row + float_tile; position P into bank (P / 8) % 2).
 * Pairs k0 .. k1 of rows cp[0..R) (see int_tile). */
static inline __attribute__((always_inline)) void
NM(float_gemv)(const int kind, const int R, const rt_job *J, const uint8_t *const *cp,
               size_t kofs, size_t k0, size_t k1, const float *const *ws,
               const float *const *wb, const float *x, __m256 acc[RT_TR][2][2])
{
	const size_t bpb = RK_BITS(kind) == 8 ? RT_BLK : RT_BLK / 2;

	for (size_t k = k0; k < k1; k += 2)
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			__m256i wp[2];
			_mm_prefetch((const char *)(cp[r] + RT_TR * J->cb + (k - kofs) * bpb), _MM_HINT_T0);
			NM(load_pair)(kind, cp[r] + (k - kofs) * bpb, &wp[0], &wp[1]);
#pragma GCC unroll 2
			for (int hb = 0; hb < 2; hb++)
#pragma GCC unroll 4
				for (int i = 0; i < 4; i++)
					acc[r][0][i & 1] = _mm256_fmadd_ps(
						NM(dec8)(kind, J, wp[hb], i, k + (size_t)hb, ws[r], wb[r]),
						_mm256_loadu_ps(x + (k + (size_t)hb) * RT_BLK + 8 * (size_t)i),
						acc[r][0][i & 1]);
		}
}

static inline __attribute__((always_inline)) void
NM(float_tile)(const int R, const int C, const rt_job *J, const float *const *wr,
               const size_t *bi, __m256 acc[RT_TR][2][2])
{
	const rt_act *A = J->act;
	size_t n = A->nbp * RT_BLK;
	const float *x[2];

#pragma GCC unroll 2
	for (int c = 0; c < C; c++)
		x[c] = A->xf + bi[c] * n;
	for (size_t p = 0; p < n; p += 16) {
#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
			__m256 w[RT_TR];
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				w[r] = _mm256_loadu_ps(wr[r] + p + 8 * (size_t)h);
#pragma GCC unroll 2
			for (int c = 0; c < C; c++) {
				__m256 xv = _mm256_loadu_ps(x[c] + p + 8 * (size_t)h);
#pragma GCC unroll 4
				for (int r = 0; r < R; r++)
					acc[r][c][h] = _mm256_fmadd_ps(w[r], xv, acc[r][c][h]);
			}
		}
	}
}

/* ---- driver ------------------------------------------------------------- */

static inline __attribute__((always_inline)) float NM(fold)(__m256 lo, __m256 hi)
{
	__m256 a = _mm256_add_ps(lo, hi);
	__m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	b = _mm_add_ps(b, _mm_movehl_ps(b, b));
	b = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
	return _mm_cvtss_f32(b);
}

/* Do both blocks of a pair read one group each (every lane of a block the
 * same)? Then their lane scales are broadcasts, else permutations. */
static inline int NM(uniform_halves)(const rt_job *J)
{
	for (int l = 0; l < 16; l++)
		if (J->gidx[l] != J->gidx[l & 8])
			return 0;
	return 1;
}

/* One tile of R rows (rt .. at most r1) x C vectors: the pairs inside the
 * rows, the tail pair, then the folded sums into y. */
static inline __attribute__((always_inline)) void
NM(tile)(const int kind, const int R, const int C, const rt_job *J, const uint8_t *const *cp,
         const uint8_t *const *tail, size_t kfull, const float *const *ws,
         const float *const *wb, const float *const *wr, const size_t *bi, size_t rt,
         size_t r1)
{
	__m256 acc[RT_TR][2][2];

#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int c = 0; c < C; c++)
			acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
	if (J->path == QTK_RT_FLOAT && C == 1 && !wr[0]) {
		const float *x = J->act->xf + bi[0] * J->act->nbp * RT_BLK;
		NM(float_gemv)(kind, R, J, cp, 0, 0, kfull, ws, wb, x, acc);
		NM(float_gemv)(kind, R, J, tail, kfull, kfull, J->act->nbp, ws, wb, x, acc);
	} else if (J->path == QTK_RT_FLOAT) {
		NM(float_tile)(R, C, J, wr, bi, acc);
	} else if (NM(uniform_halves)(J)) {
		NM(int_tile)(kind, R, C, 0, J, cp, 0, 0, kfull, ws, wb, bi, acc);
		NM(int_tile)(kind, R, C, 0, J, tail, kfull, kfull, J->act->nbp, ws, wb, bi, acc);
	} else {
		NM(int_tile)(kind, R, C, 1, J, cp, 0, 0, kfull, ws, wb, bi, acc);
		NM(int_tile)(kind, R, C, 1, J, tail, kfull, kfull, J->act->nbp, ws, wb, bi, acc);
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int c = 0; c < C; c++)
			if (rt + (size_t)r < r1)
				J->y[bi[c] * J->rows + rt + (size_t)r] = NM(fold)(acc[r][c][0], acc[r][c][1]);
}

static inline __attribute__((always_inline)) void
NM(rows_kind)(const int kind, const rt_job *J, size_t r0, size_t r1, void *scratch)
{
	const rt_act *A = J->act;
	const size_t nbp = A->nbp, B = A->batch;
	const size_t sstride = J->gpr + RT_SPAD;
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

			for (int i = 0; i < RT_TR; i++) {
				size_t rr = rt + (size_t)i < r1 ? rt + (size_t)i : r1 - 1;
				uint8_t *t = tailb + 64 * i;
				cp[i] = J->codes + rr * J->cb;
				ws[i] = wsb + (size_t)i * sstride;
				wb[i] = wbb + (size_t)i * sstride;
				row_scales_256(J, kind, rr, wsb + (size_t)i * sstride, wbb + (size_t)i * sstride);
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
				int C = ce - b0 >= 2 ? 2 : 1;
				size_t bi[2] = { b0, b0 + (size_t)C - 1 };

				/* two rows at a time: 16 registers hold 2 x 2 x 2 accumulators */
				for (int h = 0; h < RT_TR; h += 2) {
					if (C == 1)
						NM(tile)(kind, 2, 1, J, cp + h, tail + h, kfull, ws + h, wb + h,
						         wr + h, bi, rt + (size_t)h, r1);
					else
						NM(tile)(kind, 2, 2, J, cp + h, tail + h, kfull, ws + h, wb + h,
						         wr + h, bi, rt + (size_t)h, r1);
				}
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

#undef NEEDS_CORR
