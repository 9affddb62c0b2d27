/* runtime (private): the AVX-512 kernels on interleaved weights, compiled
 * twice by rt_ilv_avx512.c: RT_VNNI 0 (maddubs + madd, AVX-512 BW) and
 * RT_VNNI 1 (dpbusd). A vector's 16 lanes are the 16 rows of a group; lane
 * l of a code vector holds 4 positions of row l, and the activations' 4
 * bytes of the same positions are broadcast to every lane. Per block and
 * row: an exact integer sum, then rt_ilv.c's f32 steps (cvt, ws * d, fma). */

#define INL static inline __attribute__((always_inline))
#define RT_PFD 16 /* blocks ahead */
#define RT_ILV_STREAMS512 4

/* Position groups j = 0..7 (positions 4j..4j+3) of a block as the dot
 * products read them: VNNI unsigned (S8 as c + 128, NF4 as level + 128),
 * maddubs S4 unsigned and S8 / NF4 signed. */
INL void NM(codes)(const int kind, const rt_ilv *I, const uint8_t *blk, __m512i w[8])
{
	if (kind == RK_S8) {
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++) {
			w[j] = _mm512_load_si512(blk + 64 * j);
#if RT_VNNI
			w[j] = _mm512_xor_si512(w[j], _mm512_set1_epi8((char)0x80));
#endif
		}
		return;
	}
	const __m512i m4 = _mm512_set1_epi8(15);
#pragma GCC unroll 4
	for (int h = 0; h < 4; h++) {
		__m512i v = _mm512_load_si512(blk + 64 * h);
		w[h] = _mm512_and_si512(v, m4);
		w[h + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
	}
	if (kind == RK_L4) {
		const uint8_t *t = RT_VNNI ? I->lut_u : (const uint8_t *)I->lut_s;
		__m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)t));
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			w[j] = _mm512_shuffle_epi8(lut, w[j]);
	}
}

INL __m512i NM(bcast)(const int8_t *q)
{
	int32_t v;

	memcpy(&v, q, 4);
	return _mm512_set1_epi32(v);
}

/* Each row's integer sum over a block against the activations q, plus
 * the correction corr. */
INL __m512i NM(dot)(const int kind, const __m512i w[8], const int8_t *q, int32_t corr)
{
#if RT_VNNI
	__m512i i0 = _mm512_set1_epi32(corr), i1 = _mm512_setzero_si512();
#pragma GCC unroll 4
	for (int j = 0; j < 8; j += 2) {
		i0 = _mm512_dpbusd_epi32(i0, w[j], NM(bcast)(q + 4 * j));
		i1 = _mm512_dpbusd_epi32(i1, w[j + 1], NM(bcast)(q + 4 * j + 4));
	}
	(void)kind;
	return _mm512_add_epi32(i0, i1);
#else
	const __m512i one16 = _mm512_set1_epi16(1);
	__m512i s = _mm512_set1_epi32(corr);
	if (kind == RK_S4) {
		/* pairs of u4 x s8 are at most 3810: eight sums fit int16 */
		__m512i t = _mm512_maddubs_epi16(w[0], NM(bcast)(q));
#pragma GCC unroll 8
		for (int j = 1; j < 8; j++)
			t = _mm512_add_epi16(t, _mm512_maddubs_epi16(w[j], NM(bcast)(q + 4 * j)));
		return _mm512_add_epi32(s, _mm512_madd_epi16(t, one16));
	}
#pragma GCC unroll 8
	for (int j = 0; j < 8; j++) {
		/* |w| * (a with w's sign): |w| <= 128, |a| <= 127, pairs fit int16 */
		__m512i a = NM(bcast)(q + 4 * j);
		__m512i as = _mm512_mask_sub_epi8(a, _mm512_movepi8_mask(w[j]),
		                                  _mm512_setzero_si512(), a);
		__m512i p = _mm512_maddubs_epi16(_mm512_abs_epi8(w[j]), as);
		s = _mm512_add_epi32(s, _mm512_madd_epi16(p, one16));
	}
	return s;
#endif
}

/* Group g against C vectors bi[0..C). */
INL void NM(group)(const int kind, const int C, const rt_ijob *J, size_t g, const size_t *bi)
{
	const rt_ilv *I = J->L;
	const rt_act *A = J->act;
	const uint8_t *cb = I->codes + g * I->nb * I->bb;
	const size_t s0 = g * I->gpr * RT_IR;
	size_t n = I->rows - g * RT_IR;
	__mmask16 m = n >= RT_IR ? 0xffff : (__mmask16)((1u << n) - 1);
	__m512 acc[4];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		acc[c] = _mm512_setzero_ps();
	for (size_t k = 0; k < I->nb; k++) {
		size_t s = I->gshift < 0 ? 0 : (k * RT_BLK) >> I->gshift;
		__m512i w[8];
		/* every line of a block some blocks ahead: one thread alone
		 * cannot keep enough misses in flight without it */
		for (size_t o = 0; o < I->bb; o += 64)
			_mm_prefetch((const char *)(cb + (k + RT_PFD) * I->bb + o), _MM_HINT_T0);
		NM(codes)(kind, I, cb + k * I->bb, w);
		__m512 ws = I->sh ? _mm512_cvtph_ps(_mm256_load_si256(
		                            (const __m256i *)(const void *)((const uint16_t *)I->scales +
		                                                            s0 + s * RT_IR)))
		                  : _mm512_load_ps((const float *)I->scales + s0 + s * RT_IR);
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			size_t o = bi[c] * A->nbp + k;
			__m512i p = NM(dot)(kind, w, A->q + o * RT_BLK, A->sb[o]);
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
			                         _mm512_mul_ps(ws, _mm512_set1_ps(A->d[o * 8])), acc[c]);
		}
	}
#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		_mm512_mask_storeu_ps(J->y + bi[c] * I->rows + g * RT_IR, m, acc[c]);
}

/* Groups gs[0..N) against vector 0, their blocks in step: N streams
 * through memory at once, where one group at a time is one. With weights
 * coming from memory (generation), four streams keep more misses in
 * flight than one stream and its software prefetch did (docs/kernels.md,
 * "Streams"); the hardware's prefetchers follow four streams on their own,
 * and software prefetch on top of them only took load slots. Per row the
 * same steps as NM(group), so the same bytes. */
INL void NM(multi)(const int kind, const int N, const rt_ijob *J, const size_t *gs)
{
	const rt_ilv *I = J->L;
	const rt_act *A = J->act;
	const uint8_t *cp[RT_ILV_STREAMS512];
	size_t s0[RT_ILV_STREAMS512];
	__m512 acc[RT_ILV_STREAMS512];

#pragma GCC unroll 4
	for (int i = 0; i < N; i++) {
		cp[i] = I->codes + gs[i] * I->nb * I->bb;
		s0[i] = gs[i] * I->gpr * RT_IR;
		acc[i] = _mm512_setzero_ps();
	}
	for (size_t k = 0; k < I->nb; k++) {
		size_t s = I->gshift < 0 ? 0 : (k * RT_BLK) >> I->gshift;
		__m512 d = _mm512_set1_ps(A->d[k * 8]);
		const int8_t *q = A->q + k * RT_BLK;
#pragma GCC unroll 4
		for (int i = 0; i < N; i++) {
			__m512i w[8];
			NM(codes)(kind, I, cp[i] + k * I->bb, w);
			__m512 ws = I->sh ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(const void *)(
			                            (const uint16_t *)I->scales + s0[i] + s * RT_IR)))
			                  : _mm512_load_ps((const float *)I->scales + s0[i] + s * RT_IR);
			__m512i p = NM(dot)(kind, w, q, A->sb[k]);
			acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ws, d), acc[i]);
		}
	}
#pragma GCC unroll 4
	for (int i = 0; i < N; i++) {
		size_t n = I->rows - gs[i] * RT_IR;
		__mmask16 m = n >= RT_IR ? 0xffff : (__mmask16)((1u << n) - 1);
		_mm512_mask_storeu_ps(J->y + gs[i] * RT_IR, m, acc[i]);
	}
}

/* One vector, groups [g0, g1): rt_ilv_streams' steps, N streams each. */
INL void NM(gemv)(const int kind, const rt_ijob *J, size_t g0, size_t g1)
{
	size_t step = 0, gs[RT_ILV_STREAMS512];
	int n;

	while ((n = rt_ilv_streams(g0, g1, RT_ILV_STREAMS512, step++, gs)) > 0) {
		if (n == 4)
			NM(multi)(kind, 4, J, gs);
		else if (n == 3)
			NM(multi)(kind, 3, J, gs);
		else if (n == 2)
			NM(multi)(kind, 2, J, gs);
		else
			NM(multi)(kind, 1, J, gs);
	}
}

INL void NM(run)(const int kind, const rt_ijob *J, size_t g0, size_t g1)
{
	const size_t B = J->act->batch;

	if (B == 1) {
		NM(gemv)(kind, J, g0, g1);
		return;
	}

	for (size_t cc = 0; cc < B; cc += J->tile_cols) {
		size_t ce = cc + J->tile_cols < B ? cc + J->tile_cols : B;
		for (size_t g = g0; g < g1; g++)
			for (size_t b0 = cc; b0 < ce;) {
				size_t left = ce - b0, bi[4];
				int C = left >= 4 ? 4 : left >= 2 ? 2 : 1;
				for (int c = 0; c < 4; c++)
					bi[c] = b0 + (size_t)(c < C ? c : C - 1);
				if (C == 4)
					NM(group)(kind, 4, J, g, bi);
				else if (C == 2)
					NM(group)(kind, 2, J, g, bi);
				else
					NM(group)(kind, 1, J, g, bi);
				b0 += (size_t)C;
			}
	}
}

static void NM(s4)(const rt_ijob *J, size_t g0, size_t g1) { NM(run)(RK_S4, J, g0, g1); }
static void NM(s8)(const rt_ijob *J, size_t g0, size_t g1) { NM(run)(RK_S8, J, g0, g1); }
static void NM(l4)(const rt_ijob *J, size_t g0, size_t g1) { NM(run)(RK_L4, J, g0, g1); }

static void NM(dispatch)(const rt_ijob *J, size_t g0, size_t g1)
{
	switch (J->L->kind) {
	case RK_S4: NM(s4)(J, g0, g1); break;
	case RK_S8: NM(s8)(J, g0, g1); break;
	default: NM(l4)(J, g0, g1); break;
	}
}

#undef INL
