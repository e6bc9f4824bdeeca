// On-the-fly activation quantization for the fast (integer) kernels.
//
// Each block of 32 (Q8_32) or 256 (Q8_K) activations becomes int8 q = round(x / d) with
// d = max|x| / 127, so |x - d*q| <= d/2 per value: the error the fast-mode tests bound.
#include <ATen/Parallel.h>

#include <cmath>

#include "kernels.h"

namespace st {

namespace {

#if defined(ST_AVX2)
inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
// 32 floats * id -> 32 int8 (round to nearest even), stored at q; returns the 8 x i32
// partial sums (lane i: values 4i..4i+3 ... see below) via `sum16` as two 16-sums.
inline void quant32(const float* x, float id, int8_t* q, int* sum_lo16, int* sum_hi16) {
  const __m256 vid = _mm256_set1_ps(id);
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vid));
  const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), vid));
  const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), vid));
  if (sum_lo16) {
    *sum_lo16 = hsum_i32(_mm256_add_epi32(i0, i1));
    *sum_hi16 = hsum_i32(_mm256_add_epi32(i2, i3));
  }
  // packs work per 128-bit lane: fix the order with one dword permute at the end.
  const __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
  const __m256i p = _mm256_packs_epi16(p01, p23);
  const __m256i fixed = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256((__m256i*)q, fixed);
}
#endif

float amax_of(const float* x, int n) {
#if defined(ST_AVX2)
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + i)));
  return hmax(m);
#else
  float m = 0.f;
  for (int i = 0; i < n; ++i) m = std::fmax(m, std::fabs(x[i]));
  return m;
#endif
}

// One block of 32 (or 8 groups of 32 sharing id); returns the sum of q per 16.
void quant_block(const float* x, int n, float id, int8_t* q, int* sums16) {
#if defined(ST_AVX2)
  for (int i = 0; i < n; i += 32) quant32(x + i, id, q + i, sums16 ? sums16 + i / 16 : nullptr,
                                          sums16 ? sums16 + i / 16 + 1 : nullptr);
#else
  for (int i = 0; i < n; ++i) {
    const int v = (int)std::nearbyint(x[i] * id);
    q[i] = (int8_t)(v > 127 ? 127 : (v < -127 ? -127 : v));
  }
  if (sums16)
    for (int g = 0; g < n / 16; ++g) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += q[16 * g + i];
      sums16[g] = s;
    }
#endif
}

int64_t act_stride(int64_t k) { return k % 1024 == 0 ? k + 64 : k; }

template <class F>
void over_rows(int64_t n, int64_t k, F&& f) {
  // Quantizing is ~10 ops per value: only worth a parallel region for big batches.
  if (n > 1 && n * k >= (1 << 16)) {
    at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) f(r);
    });
  } else {
    for (int64_t r = 0; r < n; ++r) f(r);
  }
}

}  // namespace

void quantize_act_q8_32(const float* x, int64_t n, int64_t k, QAct& a) {
  const int64_t nb = k / QK;
  a.n = n, a.k = k, a.ld = act_stride(k), a.kquant = false;
  a.qs.resize((size_t)(n * a.ld));
  a.d.resize((size_t)(n * nb));
  a.s.resize((size_t)(n * nb));
  a.nsum.resize((size_t)(n * nb));
  over_rows(n, k, [&](int64_t r) {
    const float* xr = x + r * k;
    for (int64_t b = 0; b < nb; ++b) {
      const float amax = amax_of(xr + b * QK, QK);
      const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
      int sums[2];
      quant_block(xr + b * QK, QK, id, a.qs.data() + r * a.ld + b * QK, sums);
      a.d[r * nb + b] = d;
      a.s[r * nb + b] = d * (float)(sums[0] + sums[1]);
      a.nsum[r * nb + b] = -(sums[0] + sums[1]);
    }
  });
}

void quantize_act_q8_k(const float* x, int64_t n, int64_t k, QAct& a) {
  const int64_t nb = k / QK_K;
  a.n = n, a.k = k, a.ld = act_stride(k), a.kquant = true;
  a.qs.resize((size_t)(n * a.ld));
  a.d.resize((size_t)(n * nb));
  a.bsums.resize((size_t)(n * k / 16));
  a.bs32.resize((size_t)(n * k / 32));
  a.bsn32.resize((size_t)(n * k / 16));
  over_rows(n, k, [&](int64_t r) {
    const float* xr = x + r * k;
    for (int64_t b = 0; b < nb; ++b) {
      const float amax = amax_of(xr + b * QK_K, QK_K);
      const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
      int sums[16];
      quant_block(xr + b * QK_K, QK_K, id, a.qs.data() + r * a.ld + b * QK_K, sums);
      a.d[r * nb + b] = d;
      const int64_t o16 = (r * k + b * QK_K) / 16;
      for (int g = 0; g < 16; ++g) {
        a.bsums[o16 + g] = (int16_t)sums[g];
        a.bsn32[o16 + g] = -32 * sums[g];
      }
      for (int g = 0; g < 8; ++g) a.bs32[o16 / 2 + g] = (int16_t)(sums[2 * g] + sums[2 * g + 1]);
    }
  });
}

}  // namespace st
