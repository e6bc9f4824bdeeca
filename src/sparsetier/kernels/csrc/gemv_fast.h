// Fast-mode row kernels: one weight row against NT quantized activation rows.
//
// out[j] = sum_k W[row, k] * x[n0 + j, k] computed as integer dot products of the
// weight quants with the int8 activations, scaled per block in float32.
//
// Each weight block is unpacked to unsigned bytes once and reused for all NT activation
// rows. Offsets/minimums of the weight formats are applied through the activation sums:
//   Q4_0/Q5_0:   d*(q - o)      -> d*dx*sum(q*x) - o*d*(dx*sum x)       (o = 8 / 16)
//   Q4_1/Q5_1:   d*q + m        -> d*dx*sum(q*x) + m*(dx*sum x)
//   Q8_0:        d*q (signed)   -> |q| * sign(q)x (the sign trick; no offset)
//   Q4_K/Q5_K:   d*sc_j*q - dmin*m_j per sub-block of 32 (sums of x per 32 via bsums)
//   Q6_K:        d*sc_j*(q - 32) per sub-block of 16
#pragma once

#include "kernels.h"

namespace st {

#if defined(ST_AVX2)

static inline __m256i load256(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }

// ---- the 32-weight block types -------------------------------------------------------

template <int T>
struct Blk32 {
  __m256i q;    // unsigned weight quants (|q| for Q8_0)
  __m256i sgn;  // Q8_0 only: the signed quants, for the sign trick
  float d;      // block scale
  float c;      // coefficient of the activation sum s = dx*sum(x) (offset or minimum)
};

template <int T>
static inline Blk32<T> unpack32(const uint8_t* b) {
  Blk32<T> r;
  if constexpr (T == Q4_0) {
    r.d = load_half(b);
    r.c = -8.f * r.d;
    r.q = nibbles32(b + 2);
  } else if constexpr (T == Q4_1) {
    r.d = load_half(b);
    r.c = load_half(b + 2);
    r.q = nibbles32(b + 4);
  } else if constexpr (T == Q5_0 || T == Q5_1) {
    constexpr int off = T == Q5_0 ? 2 : 4;
    r.d = load_half(b);
    r.c = T == Q5_0 ? -16.f * r.d : load_half(b + 2);
    const uint32_t qh = load_u32(b + off);
    const __m256i lo = nibbles32(b + off + 4);
#if defined(ST_AVX512)
    r.q = _mm256_mask_add_epi8(lo, (__mmask32)qh, lo, _mm256_set1_epi8(16));
#else
    r.q = _mm256_or_si256(lo, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(16)));
#endif
  } else {  // Q8_0
    r.d = load_half(b);
    r.c = 0.f;
    r.sgn = load256(b + 2);
    r.q = _mm256_abs_epi8(r.sgn);
  }
  return r;
}

template <int T, int NT>
static inline void step32(const Blk32<T>& w, const int8_t* const* xq, const float* const* xd,
                          const float* const* xs, int64_t b, __m256* acc, float* accs) {
  const __m256 vd = _mm256_set1_ps(w.d);
  for (int j = 0; j < NT; ++j) {
    __m256i xv = load256(xq[j] + b * QK);
    if constexpr (T == Q8_0) xv = _mm256_sign_epi8(xv, w.sgn);
    const __m256i dot = dot_u8s8(_mm256_setzero_si256(), w.q, xv);
    const __m256 scale = _mm256_mul_ps(vd, _mm256_broadcast_ss(xd[j] + b));
    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[j]);
    if constexpr (T != Q8_0) accs[j] = __builtin_fmaf(w.c, xs[j][b], accs[j]);
  }
}

template <int T, int NT>
static void fast_row32(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  const int bb = block_bytes(T);
  const int8_t* xq[NT];
  const float* xd[NT];
  const float* xs[NT];
  __m256 acc0[NT], acc1[NT];
  float accs0[NT], accs1[NT];
  for (int j = 0; j < NT; ++j) {
    xq[j] = a.qs.data() + (n0 + j) * a.k;
    xd[j] = a.d.data() + (n0 + j) * nb;
    xs[j] = a.s.data() + (n0 + j) * nb;
    acc0[j] = acc1[j] = _mm256_setzero_ps();
    accs0[j] = accs1[j] = 0.f;
  }
  int64_t b = 0;
  // Two independent accumulator sets: the FMA latency would otherwise bound NT=1.
  for (; b + 2 <= nb; b += 2) {
    const Blk32<T> w0 = unpack32<T>(w + b * bb);
    const Blk32<T> w1 = unpack32<T>(w + (b + 1) * bb);
    step32<T, NT>(w0, xq, xd, xs, b, acc0, accs0);
    step32<T, NT>(w1, xq, xd, xs, b + 1, acc1, accs1);
  }
  if (b < nb) step32<T, NT>(unpack32<T>(w + b * bb), xq, xd, xs, b, acc0, accs0);
  for (int j = 0; j < NT; ++j) out[j] = hsum(_mm256_add_ps(acc0[j], acc1[j])) + (accs0[j] + accs1[j]);
}

// ---- k-quants --------------------------------------------------------------------------

// Byte-shuffle patterns that broadcast one i16 lane of a 128-bit half to the whole half:
// kBcast[j] picks lane j in both halves; kPair[g] picks lane 2g (low half) / 2g+1 (high).
struct KPatterns {
  __m256i bcast[8];
  __m256i pair[4];
  KPatterns() {
    for (int j = 0; j < 8; ++j) {
      alignas(32) uint8_t p[32];
      for (int i = 0; i < 32; i += 2) p[i] = (uint8_t)(2 * j), p[i + 1] = (uint8_t)(2 * j + 1);
      bcast[j] = _mm256_load_si256((const __m256i*)p);
    }
    for (int g = 0; g < 4; ++g) {
      alignas(32) uint8_t p[32];
      for (int i = 0; i < 16; i += 2) p[i] = (uint8_t)(4 * g), p[i + 1] = (uint8_t)(4 * g + 1);
      for (int i = 16; i < 32; i += 2) p[i] = (uint8_t)(4 * g + 2), p[i + 1] = (uint8_t)(4 * g + 3);
      pair[g] = _mm256_load_si256((const __m256i*)p);
    }
  }
};
static inline const KPatterns& kpat() {
  static const KPatterns p;
  return p;
}

// Q4_K and Q5_K share everything but the fifth bit.
template <int T, int NT>
static void fast_row_q45k(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  constexpr int bb = T == Q4_K ? 144 : 176;
  const KPatterns& P = kpat();
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[NT], accm[NT];
  for (int j = 0; j < NT; ++j) acc[j] = accm[j] = _mm256_setzero_ps();
  const int64_t k = a.k;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    const float d = load_half(blk), dmin = load_half(blk + 2);
    alignas(16) uint8_t sm[16];  // 8 scales then 8 mins
    k_scales(blk + 4, sm, sm + 8);
    const __m128i sm8 = _mm_load_si128((const __m128i*)sm);
    const __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
    const __m128i mn8 = _mm_unpackhi_epi8(sm8, sm8);  // mn0,mn0,mn1,mn1,...
    const __m256i mnv = _mm256_cvtepu8_epi16(mn8);
    const uint8_t* qs = blk + (T == Q4_K ? 16 : 48);
    __m256i q[8];
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load256(qs + 32 * c);
      q[2 * c] = _mm256_and_si256(v, m4);
      q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    if constexpr (T == Q5_K) {
      const __m256i qh = load256(blk + 16);  // bit j of byte l: fifth bit of sub-block j
#if defined(ST_AVX512)
      const __m256i c16 = _mm256_set1_epi8(16);
      for (int j = 0; j < 8; ++j) {
        const __mmask32 m = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << j)));
        q[j] = _mm256_mask_add_epi8(q[j], m, q[j], c16);
      }
#else
      const __m256i c16 = _mm256_set1_epi8(16);
      for (int j = 0; j < 8; ++j) {
        const __m256i m = _mm256_set1_epi8((char)(1 << j));
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m);
        q[j] = _mm256_or_si256(q[j], _mm256_and_si256(set, c16));
      }
#endif
    }
    __m256i S[8];
    for (int j = 0; j < 8; ++j) S[j] = _mm256_shuffle_epi8(scv, P.bcast[j]);
    for (int jn = 0; jn < NT; ++jn) {
      const int8_t* x = a.qs.data() + (n0 + jn) * k + b * QK_K;
      __m256i ai = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) ai = dot_i16(ai, _mm256_maddubs_epi16(q[j], load256(x + 32 * j)), S[j]);
      const __m256i mins = _mm256_madd_epi16(load256(a.bsums.data() + ((n0 + jn) * k + b * QK_K) / 16), mnv);
      const float dx = a.d[(n0 + jn) * nb + b];
      acc[jn] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(d * dx), acc[jn]);
      accm[jn] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(dmin * dx), accm[jn]);
    }
  }
  for (int j = 0; j < NT; ++j) out[j] = hsum(_mm256_sub_ps(acc[j], accm[j]));
}

template <int NT>
static void fast_row_q6k(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  const KPatterns& P = kpat();
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  __m256 acc[NT];
  for (int j = 0; j < NT; ++j) acc[j] = _mm256_setzero_ps();
  const int64_t k = a.k;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * 210;
    const float d = load_half(blk + 208);
    const __m128i sc8 = _mm_loadu_si128((const __m128i*)(blk + 192));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);  // 16 sub-block scales as i16
    __m256i q[8], S[8];
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load256(blk + 64 * h), l1 = load256(blk + 64 * h + 32);
      const __m256i hb = load256(blk + 128 + 32 * h);
      // 16-bit shifts are safe: the 0x30 mask drops the bits that cross bytes.
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
      const __m256i half = h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                  : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int g = 0; g < 4; ++g) S[4 * h + g] = _mm256_shuffle_epi8(half, P.pair[g]);
    }
    for (int jn = 0; jn < NT; ++jn) {
      const int8_t* x = a.qs.data() + (n0 + jn) * k + b * QK_K;
      __m256i ai = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) ai = dot_i16(ai, _mm256_maddubs_epi16(q[j], load256(x + 32 * j)), S[j]);
      // q is stored +32: subtract 32 * sum_j sc_j * (sum of x over sub-block j).
      const __m256i off = _mm256_madd_epi16(load256(a.bsums.data() + ((n0 + jn) * k + b * QK_K) / 16), sc16);
      ai = _mm256_sub_epi32(ai, _mm256_slli_epi32(off, 5));
      const float dx = a.d[(n0 + jn) * nb + b];
      acc[jn] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(d * dx), acc[jn]);
    }
  }
  for (int j = 0; j < NT; ++j) out[j] = hsum(acc[j]);
}

#else  // ---- portable scalar versions ------------------------------------------------

template <int T, int NT>
static void fast_row32(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  const int bb = block_bytes(T);
  for (int j = 0; j < NT; ++j) {
    const int8_t* x = a.qs.data() + (n0 + j) * a.k;
    const float* xd = a.d.data() + (n0 + j) * nb;
    const float* xs = a.s.data() + (n0 + j) * nb;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * bb;
      const int8_t* xb = x + b * QK;
      const float d = load_half(blk);
      int dot = 0;
      float c = 0.f;
      if constexpr (T == Q8_0) {
        for (int i = 0; i < 32; ++i) dot += (int)(int8_t)blk[2 + i] * xb[i];
      } else {
        const int qoff = T == Q4_0 ? 2 : T == Q4_1 ? 4 : T == Q5_0 ? 6 : 8;
        const uint32_t qh = (T == Q5_0 || T == Q5_1) ? load_u32(blk + qoff - 4) : 0;
        for (int i = 0; i < 16; ++i) {
          const int lo = (blk[qoff + i] & 15) | (((qh >> i) & 1) << 4);
          const int hi = (blk[qoff + i] >> 4) | (((qh >> (16 + i)) & 1) << 4);
          dot += lo * xb[i] + hi * xb[16 + i];
        }
        c = T == Q4_0 ? -8.f * d : T == Q5_0 ? -16.f * d : load_half(blk + 2);
      }
      acc += d * xd[b] * (float)dot + c * xs[b];
    }
    out[j] = acc;
  }
}

template <int T, int NT>
static void fast_row_q45k(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  constexpr int bb = T == Q4_K ? 144 : 176;
  for (int j = 0; j < NT; ++j) {
    const int8_t* x = a.qs.data() + (n0 + j) * a.k;
    const int16_t* bs = a.bsums.data() + (n0 + j) * a.k / 16;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * bb;
      uint8_t sc[8], mn[8];
      k_scales(blk + 4, sc, mn);
      const uint8_t* qs = blk + (T == Q4_K ? 16 : 48);
      int sumi = 0, summ = 0;
      for (int sb = 0; sb < 8; ++sb) {
        int dot = 0;
        for (int l = 0; l < 32; ++l) {
          int q = (qs[32 * (sb / 2) + l] >> (4 * (sb & 1))) & 15;
          if constexpr (T == Q5_K) q |= ((blk[16 + l] >> sb) & 1) << 4;
          dot += q * x[b * QK_K + 32 * sb + l];
        }
        sumi += sc[sb] * dot;
        summ += mn[sb] * (bs[b * 16 + 2 * sb] + bs[b * 16 + 2 * sb + 1]);
      }
      const float dx = a.d[(n0 + j) * nb + b];
      acc += load_half(blk) * dx * (float)sumi - load_half(blk + 2) * dx * (float)summ;
    }
    out[j] = acc;
  }
}

template <int NT>
static void fast_row_q6k(const uint8_t* w, int64_t nb, const QAct& a, int64_t n0, float* out) {
  for (int j = 0; j < NT; ++j) {
    const int8_t* x = a.qs.data() + (n0 + j) * a.k;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 210;
      const int8_t* sc = (const int8_t*)(blk + 192);
      int sumi = 0;
      for (int h = 0; h < 2; ++h)
        for (int g = 0; g < 4; ++g) {
          int dot[2] = {0, 0};
          for (int l = 0; l < 32; ++l) {
            const uint8_t lb = blk[64 * h + 32 * (g & 1) + l];
            const int lo = g < 2 ? (lb & 15) : (lb >> 4);
            const int hi = (blk[128 + 32 * h + l] >> (2 * g)) & 3;
            dot[l / 16] += ((lo | (hi << 4)) - 32) * x[b * QK_K + 128 * h + 32 * g + l];
          }
          sumi += sc[8 * h + 2 * g] * dot[0] + sc[8 * h + 2 * g + 1] * dot[1];
        }
      acc += load_half(blk + 208) * a.d[(n0 + j) * nb + b] * (float)sumi;
    }
    out[j] = acc;
  }
}

#endif  // ST_AVX2

}  // namespace st
