// Fast-mode tile kernels: R weight rows against NT int8-quantized activation rows.
//
// out[r][j] = sum_k W[row r, k] * x[n0 + j, k], computed as integer dot products of the
// weight quants with the int8 activations, scaled per block in float32.
//
// Each weight block is unpacked once and reused for all NT activation rows; R > 1 rows
// are interleaved block by block, which gives the out-of-order core independent
// dependency chains and spreads the per-row setup/reduction cost.
//
// Offsets/minimums of the weight formats are applied through activation sums:
//   Q4_0/Q5_0:   d*(q - o)      -> d*dx*sum(q*x) - o*d*(dx*sum x)       (o = 8 / 16)
//   Q4_1/Q5_1:   d*q + m        -> d*dx*sum(q*x) + m*(dx*sum x)
//   Q8_0:        d*q (signed)   -> dot(|q|, sign(q)*x) (the sign trick; no offset)
//   Q4_K/Q5_K:   d*sc_j*q - dmin*m_j per sub-block of 32 (x sums per 16: Q8_K bsums)
//   Q6_K:        d*sc_j*(q - 32) per sub-block of 16
// Unsigned weight quants (<= 63) times int8 activations (|x| <= 127) never saturate the
// i16 pair sums of vpmaddubsw (2*63*127 < 32767), so the AVX2 path is exact too.
#pragma once

#include "kernels.h"

#define ST_INLINE inline __attribute__((always_inline))
#define ST_INLINE_LAMBDA __attribute__((always_inline))

#ifndef ST_PF_DIST
#define ST_PF_DIST 8192
#endif
#ifndef ST_PF_HINT
#define ST_PF_HINT _MM_HINT_T1
#endif

namespace st {

// Per activation row: where its quantized values, scales and sums are.
struct ActRow {
  const int8_t* q;
  const float* d;
  const float* s;       // Q8_32: d*sum(q) per 32
  const int16_t* bs;    // Q8_K: sum(q) per 16
};

inline ActRow act_row(const QAct& a, int64_t n) {
  ActRow r;
  r.q = a.qs.data() + n * a.ld;
  if (a.kquant) {
    r.d = a.d.data() + n * (a.k / QK_K);
    r.s = nullptr;
    r.bs = a.bsums.data() + n * (a.k / 16);
  } else {
    r.d = a.d.data() + n * (a.k / QK);
    r.s = a.s.data() + n * (a.k / QK);
    r.bs = nullptr;
  }
  return r;
}

#if defined(ST_AVX2)

static ST_INLINE __m256i load256(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }

// ---- the 32-weight block types (one block per 256-bit vector) --------------------------

template <int T>
struct Kern32 {
  struct W {
    __m256i q;    // unsigned weight quants (|q| for Q8_0)
    __m256i sgn;  // Q8_0 only: the signed quants, for the sign trick
    __m256 d;     // block scale, broadcast
    float c;      // coefficient of the activation sum s = dx*sum(x) (offset or minimum)
  };
  struct Acc {
    __m256 v;
    float s;
  };
  static constexpr int kBlockBytes = T == Q4_0 ? 18 : T == Q4_1 ? 20 : T == Q5_0 ? 22 : T == Q5_1 ? 24 : 34;
  static constexpr int kSub = 1;  // GGML blocks per step

  static ST_INLINE W unpack(const uint8_t* b) {
    W r;
    const float d = load_half(b);
    r.d = _mm256_set1_ps(d);
    if constexpr (T == Q4_0) {
      r.c = -8.f * d;
      r.q = nibbles32(b + 2);
    } else if constexpr (T == Q4_1) {
      r.c = load_half(b + 2);
      r.q = nibbles32(b + 4);
    } else if constexpr (T == Q5_0 || T == Q5_1) {
      constexpr int off = T == Q5_0 ? 2 : 4;
      r.c = T == Q5_0 ? -16.f * d : load_half(b + 2);
      const uint32_t qh = load_u32(b + off);
      const __m256i lo = nibbles32(b + off + 4);
#if defined(ST_AVX512)
      r.q = _mm256_mask_add_epi8(lo, (__mmask32)qh, lo, _mm256_set1_epi8(16));
#else
      r.q = _mm256_or_si256(lo, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(16)));
#endif
    } else {  // Q8_0
      r.c = 0.f;
      r.sgn = load256(b + 2);
      r.q = _mm256_abs_epi8(r.sgn);
    }
    return r;
  }
  static ST_INLINE void zero(Acc& a) { a.v = _mm256_setzero_ps(), a.s = 0.f; }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    __m256i xv = load256(x.q + b * QK);
    if constexpr (T == Q8_0) xv = _mm256_sign_epi8(xv, w.sgn);
    const __m256i dot = dot_u8s8(_mm256_setzero_si256(), w.q, xv);
    const __m256 scale = _mm256_mul_ps(w.d, _mm256_broadcast_ss(x.d + b));
    a.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, a.v);
    if constexpr (T != Q8_0) a.s = __builtin_fmaf(w.c, x.s[b], a.s);
  }
  static ST_INLINE float finish(const Acc& a) { return hsum(a.v) + a.s; }
};


#if defined(ST_AVX512)
// Two 32-weight blocks per 512-bit vector (AVX-512): the same math as Kern32 with half
// the instructions per weight. Lanes 0-7 of the i32 dot products belong to the first
// block, 8-15 to the second.
static ST_INLINE __m512i dot_u8s8_512(__m512i a, __m512i b) {
#if defined(ST_VNNI)
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), a, b);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1));
#endif
}

template <int T>
struct Kern32x2 {
  static constexpr int kOne = Kern32<T>::kBlockBytes;
  static constexpr int kBlockBytes = 2 * kOne;
  static constexpr int kSub = 2;
  struct W {
    __m512i q;
    __mmask64 neg;  // Q8_0: negative weights (sign trick)
    __m128 d;       // [d0, d1, -, -]
    __m128 c;       // coefficients of the activation sums s: [c0, c1, -, -]
  };
  struct Acc {
    __m512 v;
    __m128 s;
  };
  // 16 bytes at p and at p+kOne -> 64 bytes [p:16 | p:16 | q:16 | q:16]
  static ST_INLINE __m512i pair16(const uint8_t* p) {
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)p)),
                                              _mm_loadu_si128((const __m128i*)(p + kOne)), 1);
    return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(t));
  }
  // [low nibbles of block 0 | high nibbles of block 0 | same for block 1]: natural order.
  static ST_INLINE __m512i nibbles64(const uint8_t* p) {
    const __m512i v = _mm512_srlv_epi64(pair16(p), _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
  }
  static ST_INLINE W unpack(const uint8_t* b) {
    W w;
    const uint32_t dd = (uint32_t)load_u16(b) | ((uint32_t)load_u16(b + kOne) << 16);
    w.d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
    if constexpr (T == Q4_0) {
      w.c = _mm_mul_ps(w.d, _mm_set1_ps(-8.f));
      w.q = nibbles64(b + 2);
    } else if constexpr (T == Q4_1) {
      const uint32_t mm = (uint32_t)load_u16(b + 2) | ((uint32_t)load_u16(b + kOne + 2) << 16);
      w.c = _mm_cvtph_ps(_mm_cvtsi32_si128((int)mm));
      w.q = nibbles64(b + 4);
    } else if constexpr (T == Q5_0 || T == Q5_1) {
      constexpr int off = T == Q5_0 ? 2 : 4;
      if constexpr (T == Q5_0) {
        w.c = _mm_mul_ps(w.d, _mm_set1_ps(-16.f));
      } else {
        const uint32_t mm = (uint32_t)load_u16(b + 2) | ((uint32_t)load_u16(b + kOne + 2) << 16);
        w.c = _mm_cvtph_ps(_mm_cvtsi32_si128((int)mm));
      }
      const uint64_t qh = (uint64_t)load_u32(b + off) | ((uint64_t)load_u32(b + kOne + off) << 32);
      const __m512i lo = nibbles64(b + off + 4);
      w.q = _mm512_mask_add_epi8(lo, (__mmask64)qh, lo, _mm512_set1_epi8(16));
    } else {  // Q8_0
      const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(load256(b + 2)), load256(b + kOne + 2), 1);
      w.neg = _mm512_movepi8_mask(v);
      w.q = _mm512_abs_epi8(v);
      w.c = _mm_setzero_ps();
    }
    return w;
  }
  static ST_INLINE void zero(Acc& a) { a.v = _mm512_setzero_ps(), a.s = _mm_setzero_ps(); }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    __m512i xv = _mm512_loadu_si512(x.q + b * 64);
    if constexpr (T == Q8_0) xv = _mm512_mask_sub_epi8(xv, w.neg, _mm512_setzero_si512(), xv);
    const __m512i dot = dot_u8s8_512(w.q, xv);
    const __m128 dd = _mm_mul_ps(w.d, _mm_castpd_ps(_mm_load_sd((const double*)(x.d + 2 * b))));
    const __m512 scale = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                               _mm512_castps128_ps512(dd));
    a.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, a.v);
    if constexpr (T != Q8_0)
      a.s = _mm_fmadd_ps(w.c, _mm_castpd_ps(_mm_load_sd((const double*)(x.s + 2 * b))), a.s);
  }
  static ST_INLINE float finish(const Acc& a) {
    const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(a.v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)));
    const __m128 s = a.s;
    return hsum(v) + (_mm_cvtss_f32(s) + _mm_cvtss_f32(_mm_movehdup_ps(s)));
  }
};
#endif  // ST_AVX512

#if defined(ST_AVX512)

// ---- k-quants, 512-bit: 64 weights (two 32-sub-blocks, or four 16-sub-blocks) per
// vector. Sub-block scales are spread over the i16 lanes with one vpermw per vector and
// applied by vpdpwssd (i16 pair products, i32 accumulate) after vpmaddubsw (q * x).

static ST_INLINE __m512i dot_i16_512(__m512i acc, __m512i a, __m512i b) {
#if defined(ST_VNNI)
  return _mm512_dpwssd_epi32(acc, a, b);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

struct KIdx512 {
  __m512i q45[4];    // vpermw index: lanes 0-15 <- scale 2c, lanes 16-31 <- scale 2c+1 (interleaved)
  __m512i q6[4];     // lanes 8m..8m+7 <- scale 4c+m
  __m512i q5bit[4];  // bytes 0-31: bit 2c, bytes 32-63: bit 2c+1 (Q5_K fifth bits)
  KIdx512() {
    for (int c = 0; c < 4; ++c) {
      alignas(64) int16_t a[32], b[32];
      alignas(64) uint8_t m[64];
      for (int i = 0; i < 32; ++i) {
        const int j = 2 * c + i / 16;  // Q4_K/Q5_K sub-block; see k_scales_interleaved
        a[i] = (int16_t)(j < 4 ? j : j + 4), b[i] = (int16_t)(4 * c + i / 8);
      }
      for (int i = 0; i < 64; ++i) m[i] = (uint8_t)(1u << (2 * c + i / 32));
      q45[c] = _mm512_load_si512(a);
      q6[c] = _mm512_load_si512(b);
      q5bit[c] = _mm512_load_si512(m);
    }
  }
};
inline const KIdx512 kKIdx512;

static ST_INLINE __m256i fold512(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// sum_c maddubs(q[c], x[64c..]) . S[c] over the 4 vectors of a block, two chains.
static ST_INLINE __m256i kdot512(const __m512i* q, const __m512i* S, const int8_t* x) {
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  a0 = dot_i16_512(a0, _mm512_maddubs_epi16(q[0], _mm512_loadu_si512(x)), S[0]);
  a1 = dot_i16_512(a1, _mm512_maddubs_epi16(q[1], _mm512_loadu_si512(x + 64)), S[1]);
  a0 = dot_i16_512(a0, _mm512_maddubs_epi16(q[2], _mm512_loadu_si512(x + 128)), S[2]);
  a1 = dot_i16_512(a1, _mm512_maddubs_epi16(q[3], _mm512_loadu_si512(x + 192)), S[3]);
  return fold512(_mm512_add_epi32(a0, a1));
}

// Q4_K and Q5_K share everything but the fifth bit.
template <int T>
struct KernQ45K {
  struct W {
    __m512i q[4], S[4];
    __m256i mn;  // mins as i16 pairs: mn0,mn0,mn1,mn1,...
    float d, dmin;
  };
  struct Acc {
    __m256 v, m;
  };
  static constexpr int kBlockBytes = T == Q4_K ? 144 : 176;
  static constexpr int kSub = 1;

  static ST_INLINE W unpack(const uint8_t* blk) {
    W w;
    w.d = load_half(blk), w.dmin = load_half(blk + 2);
    // 6-bit scales/mins, two 64-bit words at once: bytes [sc0-3 mn0-3 | sc4-7 mn4-7].
    const __m128i sm8 = k_scales_interleaved(blk + 4);
    const __m512i scz = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sm8));
    w.mn = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm8, _mm_setr_epi8(4, 4, 5, 5, 6, 6, 7, 7, 12, 12, 13, 13, 14, 14, 15, 15)));
    const uint8_t* qs = blk + (T == Q4_K ? 16 : 48);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i nib_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    for (int c = 0; c < 4; ++c) {
      // One 32-byte chunk in both halves, the high half shifted: [sub-block 2c | 2c+1].
      const __m512i v = _mm512_broadcast_i64x4(load256(qs + 32 * c));
      w.q[c] = _mm512_and_si512(_mm512_srlv_epi64(v, nib_shift), m4);
      w.S[c] = _mm512_permutexvar_epi16(kKIdx512.q45[c], scz);
    }
    if constexpr (T == Q5_K) {
      const __m512i qh = _mm512_broadcast_i64x4(load256(blk + 16));
      const __m512i c16 = _mm512_set1_epi8(16);
      for (int c = 0; c < 4; ++c)
        w.q[c] = _mm512_mask_add_epi8(w.q[c], _mm512_test_epi8_mask(qh, kKIdx512.q5bit[c]), w.q[c], c16);
    }
    return w;
  }
  static ST_INLINE void zero(Acc& a) { a.v = a.m = _mm256_setzero_ps(); }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    const __m256i ai = kdot512(w.q, w.S, x.q + b * QK_K);
    const __m256i mins = _mm256_madd_epi16(load256(x.bs + b * 16), w.mn);
    const float dx = x.d[b];
    a.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(w.d * dx), a.v);
    a.m = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(w.dmin * dx), a.m);
  }
  static ST_INLINE float finish(const Acc& a) { return hsum(_mm256_sub_ps(a.v, a.m)); }
};

struct KernQ6K {
  struct W {
    __m512i q[4], S[4];
    __m256i sc;  // the 16 sub-block scales as i16
    float d;
  };
  struct Acc {
    __m256 v;
  };
  static constexpr int kBlockBytes = 210;
  static constexpr int kSub = 1;

  static ST_INLINE W unpack(const uint8_t* blk) {
    W w;
    w.d = load_half(blk + 208);
    w.sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));
    const __m512i scz = _mm512_castsi256_si512(w.sc);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    // Upper two bits of the 64 weights of a vector: low half from qh bits 0-1 (4-5),
    // high half from bits 2-3 (6-7), moved to bits 4-5. 16-bit shifts are safe: the
    // 0x30 mask drops the bits that cross bytes.
    const __m512i sh_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i sh_hi = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(load256(blk + 128 + 32 * h));
      w.q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, sh_lo), m30));
      w.q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m30));
    }
    for (int c = 0; c < 4; ++c) w.S[c] = _mm512_permutexvar_epi16(kKIdx512.q6[c], scz);
    return w;
  }
  static ST_INLINE void zero(Acc& a) { a.v = _mm256_setzero_ps(); }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    __m256i ai = kdot512(w.q, w.S, x.q + b * QK_K);
    // q is stored +32: subtract 32 * sum_j sc_j * (sum of x over sub-block j).
    const __m256i off = _mm256_madd_epi16(load256(x.bs + b * 16), w.sc);
    ai = _mm256_sub_epi32(ai, _mm256_slli_epi32(off, 5));
    a.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(w.d * x.d[b]), a.v);
  }
  static ST_INLINE float finish(const Acc& a) { return hsum(a.v); }
};

#else  // ---- k-quants, AVX2: one 32-weight sub-block (or two 16s) per 256-bit vector

// Byte-shuffle patterns that broadcast one i16 lane of a 128-bit half to the whole half:
// bcast[j] picks lane j in both halves; pair[g] picks lane 2g (low half) / 2g+1 (high).
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
inline const KPatterns kKPat;

static ST_INLINE __m256i kdot256(const __m256i* q, const __m256i* S, const int8_t* x) {
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  for (int j = 0; j < 8; j += 2) {
    a0 = dot_i16(a0, _mm256_maddubs_epi16(q[j], load256(x + 32 * j)), S[j]);
    a1 = dot_i16(a1, _mm256_maddubs_epi16(q[j + 1], load256(x + 32 * j + 32)), S[j + 1]);
  }
  return _mm256_add_epi32(a0, a1);
}

template <int T>
struct KernQ45K {
  struct W {
    __m256i q[8], S[8];
    __m256i mn;
    float d, dmin;
  };
  struct Acc {
    __m256 v, m;
  };
  static constexpr int kBlockBytes = T == Q4_K ? 144 : 176;
  static constexpr int kSub = 1;

  static ST_INLINE W unpack(const uint8_t* blk) {
    W w;
    w.d = load_half(blk), w.dmin = load_half(blk + 2);
    alignas(16) uint8_t sm[16];
    k_scales(blk + 4, sm, sm + 8);
    const __m128i sm8 = _mm_load_si128((const __m128i*)sm);
    const __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
    w.mn = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm8, sm8));
    const uint8_t* qs = blk + (T == Q4_K ? 16 : 48);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load256(qs + 32 * c);
      w.q[2 * c] = _mm256_and_si256(v, m4);
      w.q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    if constexpr (T == Q5_K) {
      const __m256i qh = load256(blk + 16);  // bit j of byte l: fifth bit of sub-block j
      const __m256i c16 = _mm256_set1_epi8(16);
      for (int j = 0; j < 8; ++j) {
        const __m256i m = _mm256_set1_epi8((char)(1 << j));
        w.q[j] = _mm256_or_si256(w.q[j], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), c16));
      }
    }
    for (int j = 0; j < 8; ++j) w.S[j] = _mm256_shuffle_epi8(scv, kKPat.bcast[j]);
    return w;
  }
  static ST_INLINE void zero(Acc& a) { a.v = a.m = _mm256_setzero_ps(); }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    const __m256i ai = kdot256(w.q, w.S, x.q + b * QK_K);
    const __m256i mins = _mm256_madd_epi16(load256(x.bs + b * 16), w.mn);
    const float dx = x.d[b];
    a.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(w.d * dx), a.v);
    a.m = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(w.dmin * dx), a.m);
  }
  static ST_INLINE float finish(const Acc& a) { return hsum(_mm256_sub_ps(a.v, a.m)); }
};

struct KernQ6K {
  struct W {
    __m256i q[8], S[8];
    __m256i sc;
    float d;
  };
  struct Acc {
    __m256 v;
  };
  static constexpr int kBlockBytes = 210;
  static constexpr int kSub = 1;

  static ST_INLINE W unpack(const uint8_t* blk) {
    W w;
    w.d = load_half(blk + 208);
    w.sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load256(blk + 64 * h), l1 = load256(blk + 64 * h + 32);
      const __m256i hb = load256(blk + 128 + 32 * h);
      // 16-bit shifts are safe: the 0x30 mask drops the bits that cross bytes.
      w.q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
      w.q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
      w.q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
      w.q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
      const __m256i half = _mm256_permute2x128_si256(w.sc, w.sc, h == 0 ? 0x00 : 0x11);
      for (int g = 0; g < 4; ++g) w.S[4 * h + g] = _mm256_shuffle_epi8(half, kKPat.pair[g]);
    }
    return w;
  }
  static ST_INLINE void zero(Acc& a) { a.v = _mm256_setzero_ps(); }
  static ST_INLINE void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    __m256i ai = kdot256(w.q, w.S, x.q + b * QK_K);
    const __m256i off = _mm256_madd_epi16(load256(x.bs + b * 16), w.sc);
    ai = _mm256_sub_epi32(ai, _mm256_slli_epi32(off, 5));
    a.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(w.d * x.d[b]), a.v);
  }
  static ST_INLINE float finish(const Acc& a) { return hsum(a.v); }
};

#endif  // ST_AVX512

#else  // ---- portable scalar versions ------------------------------------------------

template <int T>
struct Kern32 {
  struct W {
    const uint8_t* b;
  };
  struct Acc {
    float v;
  };
  static constexpr int kBlockBytes = T == Q4_0 ? 18 : T == Q4_1 ? 20 : T == Q5_0 ? 22 : T == Q5_1 ? 24 : 34;
  static constexpr int kSub = 1;
  static W unpack(const uint8_t* b) { return W{b}; }
  static void zero(Acc& a) { a.v = 0.f; }
  static void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    const uint8_t* blk = w.b;
    const int8_t* xb = x.q + b * QK;
    const float d = load_half(blk);
    int dot = 0;
    float c = 0.f;
    if constexpr (T == Q8_0) {
      for (int i = 0; i < 32; ++i) dot += (int)(int8_t)blk[2 + i] * xb[i];
    } else {
      constexpr int qoff = T == Q4_0 ? 2 : T == Q4_1 ? 4 : T == Q5_0 ? 6 : 8;
      const uint32_t qh = (T == Q5_0 || T == Q5_1) ? load_u32(blk + qoff - 4) : 0;
      for (int i = 0; i < 16; ++i) {
        const int lo = (blk[qoff + i] & 15) | (((qh >> i) & 1) << 4);
        const int hi = (blk[qoff + i] >> 4) | (((qh >> (16 + i)) & 1) << 4);
        dot += lo * xb[i] + hi * xb[16 + i];
      }
      c = T == Q4_0 ? -8.f * d : T == Q5_0 ? -16.f * d : load_half(blk + 2);
    }
    a.v += d * x.d[b] * (float)dot + c * x.s[b];
  }
  static float finish(const Acc& a) { return a.v; }
};

template <int T>
struct KernQ45K {
  struct W {
    const uint8_t* b;
  };
  struct Acc {
    float v;
  };
  static constexpr int kBlockBytes = T == Q4_K ? 144 : 176;
  static constexpr int kSub = 1;
  static W unpack(const uint8_t* b) { return W{b}; }
  static void zero(Acc& a) { a.v = 0.f; }
  static void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    const uint8_t* blk = w.b;
    uint8_t sc[8], mn[8];
    k_scales(blk + 4, sc, mn);
    const uint8_t* qs = blk + (T == Q4_K ? 16 : 48);
    const int8_t* xb = x.q + b * QK_K;
    const int16_t* bs = x.bs + b * 16;
    int sumi = 0, summ = 0;
    for (int sb = 0; sb < 8; ++sb) {
      int dot = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (qs[32 * (sb / 2) + l] >> (4 * (sb & 1))) & 15;
        if constexpr (T == Q5_K) q |= ((blk[16 + l] >> sb) & 1) << 4;
        dot += q * xb[32 * sb + l];
      }
      sumi += sc[sb] * dot;
      summ += mn[sb] * (bs[2 * sb] + bs[2 * sb + 1]);
    }
    a.v += load_half(blk) * x.d[b] * (float)sumi - load_half(blk + 2) * x.d[b] * (float)summ;
  }
  static float finish(const Acc& a) { return a.v; }
};

struct KernQ6K {
  struct W {
    const uint8_t* b;
  };
  struct Acc {
    float v;
  };
  static constexpr int kBlockBytes = 210;
  static constexpr int kSub = 1;
  static W unpack(const uint8_t* b) { return W{b}; }
  static void zero(Acc& a) { a.v = 0.f; }
  static void step(const W& w, const ActRow& x, int64_t b, Acc& a) {
    const uint8_t* blk = w.b;
    const int8_t* sc = (const int8_t*)(blk + 192);
    const int8_t* xb = x.q + b * QK_K;
    int sumi = 0;
    for (int h = 0; h < 2; ++h)
      for (int g = 0; g < 4; ++g) {
        int dot[2] = {0, 0};
        for (int l = 0; l < 32; ++l) {
          const uint8_t lb = blk[64 * h + 32 * (g & 1) + l];
          const int lo = g < 2 ? (lb & 15) : (lb >> 4);
          const int hi = (blk[128 + 32 * h + l] >> (2 * g)) & 3;
          dot[l / 16] += ((lo | (hi << 4)) - 32) * xb[128 * h + 32 * g + l];
        }
        sumi += sc[8 * h + 2 * g] * dot[0] + sc[8 * h + 2 * g + 1] * dot[1];
      }
    a.v += load_half(blk + 208) * x.d[b] * (float)sumi;
  }
  static float finish(const Acc& a) { return a.v; }
};

#endif  // ST_AVX2

template <int T>
struct KernelOf {
#if defined(ST_AVX512)
  using type = Kern32x2<T>;
#else
  using type = Kern32<T>;
#endif
  using tail = Kern32<T>;  // a last odd block when the step covers two
};
template <>
struct KernelOf<Q4_K> {
  using type = KernQ45K<Q4_K>;
  using tail = type;
};
template <>
struct KernelOf<Q5_K> {
  using type = KernQ45K<Q5_K>;
  using tail = type;
};
template <>
struct KernelOf<Q6_K> {
  using type = KernQ6K;
  using tail = type;
};

// R weight rows x NT activation rows (from n0): out[r * NT + j].
// Blocks alternate between two accumulator sets, so consecutive blocks' float
// accumulations are independent (the FMA latency would otherwise bound R = NT = 1).
template <int T, int R, int NT>
void fast_tile(const uint8_t* const* rows, int64_t nb, const QAct& a, int64_t n0, float* out) {
  using K = typename KernelOf<T>::type;
  ActRow x[NT];
  for (int j = 0; j < NT; ++j) x[j] = act_row(a, n0 + j);
  typename K::Acc acc0[R][NT], acc1[R][NT];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NT; ++j) K::zero(acc0[r][j]), K::zero(acc1[r][j]);
  auto block = [&](int64_t b, typename K::Acc(&acc)[R][NT]) ST_INLINE_LAMBDA {
    for (int r = 0; r < R; ++r) {
#if defined(ST_AVX2)
      // Software prefetch 8 KB ahead of the stream into L2 (rows are contiguous, so
      // running past a row's end fetches the next one): worth ~10% from DRAM on top of
      // the hardware prefetcher; into L2 rather than L1 so long rows do not evict the
      // activations.
      const char* pf = (const char*)rows[r] + b * K::kBlockBytes + ST_PF_DIST;
      for (int o = 0; o < K::kBlockBytes; o += 64) _mm_prefetch(pf + o, ST_PF_HINT);
#endif
      const typename K::W w = K::unpack(rows[r] + b * K::kBlockBytes);
      for (int j = 0; j < NT; ++j) K::step(w, x[j], b, acc[r][j]);
    }
  };
  const int64_t ns = nb / K::kSub;  // steps
  int64_t b = 0;
  for (; b + 2 <= ns; b += 2) {
    block(b, acc0);
    block(b + 1, acc1);
  }
  if (b < ns) block(b, acc0);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NT; ++j) out[r * NT + j] = K::finish(acc0[r][j]) + K::finish(acc1[r][j]);
  if constexpr (K::kSub > 1) {
    if (ns * K::kSub < nb) {  // odd number of 32-blocks: the last one alone
      using KT = typename KernelOf<T>::tail;
      const int64_t bt = nb - 1;
      for (int r = 0; r < R; ++r) {
        const typename KT::W w = KT::unpack(rows[r] + bt * KT::kBlockBytes);
        for (int j = 0; j < NT; ++j) {
          typename KT::Acc t;
          KT::zero(t);
          KT::step(w, x[j], bt, t);
          out[r * NT + j] += KT::finish(t);
        }
      }
    }
  }
}

}  // namespace st
