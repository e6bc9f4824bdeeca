// Per-block dequantizers: one GGML block -> float32, bit-exact with the reference
// dequantizer in sparsetier/weights/quant.py (same float operations in the same order:
// e.g. Q4_1 is d*q then +m, never a fused multiply-add; the build uses
// -ffp-contract=off so the compiler cannot fuse them either).
//
// Used by the bulk dequantize (prefill, embeddings) and by the exact-mode GEMV, which
// dequantizes a tile of weights into an L1 buffer and multiplies it in float32.
#pragma once

#include "common.h"

namespace st {

template <int T>
void dequant_block(const uint8_t* b, float* y);

#if defined(ST_AVX512)

// AVX-512: 16 weights per vector.

// 16 bytes -> 16 x i32 (zero-extended).
static inline __m512i u8x16(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)); }

template <>
inline void dequant_block<Q4_0>(const uint8_t* b, float* y) {
  const __m512 d = _mm512_set1_ps(load_half(b));
  const __m512i v = u8x16(b + 2), o8 = _mm512_set1_epi32(8);
  const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), o8);
  const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(v, 4), o8);
  _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
  _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)));
}

template <>
inline void dequant_block<Q4_1>(const uint8_t* b, float* y) {
  const __m512 d = _mm512_set1_ps(load_half(b)), m = _mm512_set1_ps(load_half(b + 2));
  const __m512i v = u8x16(b + 4);
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
  _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(d, lo), m));
  _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(d, hi), m));
}

template <>
inline void dequant_block<Q5_0>(const uint8_t* b, float* y) {
  const __m512 d = _mm512_set1_ps(load_half(b));
  const uint32_t qh = load_u32(b + 2);
  const __m512i v = u8x16(b + 6), c16 = _mm512_set1_epi32(16);
  __m512i lo = _mm512_and_si512(v, _mm512_set1_epi32(15)), hi = _mm512_srli_epi32(v, 4);
  lo = _mm512_mask_or_epi32(lo, (__mmask16)(qh & 0xFFFF), lo, c16);  // fifth bit: bit j of qh
  hi = _mm512_mask_or_epi32(hi, (__mmask16)(qh >> 16), hi, c16);
  _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, c16))));
  _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, c16))));
}

template <>
inline void dequant_block<Q5_1>(const uint8_t* b, float* y) {
  const __m512 d = _mm512_set1_ps(load_half(b)), m = _mm512_set1_ps(load_half(b + 2));
  const uint32_t qh = load_u32(b + 4);
  const __m512i v = u8x16(b + 8), c16 = _mm512_set1_epi32(16);
  __m512i lo = _mm512_and_si512(v, _mm512_set1_epi32(15)), hi = _mm512_srli_epi32(v, 4);
  lo = _mm512_mask_or_epi32(lo, (__mmask16)(qh & 0xFFFF), lo, c16);
  hi = _mm512_mask_or_epi32(hi, (__mmask16)(qh >> 16), hi, c16);
  _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), m));
  _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)), m));
}

template <>
inline void dequant_block<Q8_0>(const uint8_t* b, float* y) {
  const __m512 d = _mm512_set1_ps(load_half(b));
  for (int k = 0; k < 2; ++k) {
    const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 2 + 16 * k)));
    _mm512_storeu_ps(y + 16 * k, _mm512_mul_ps(d, _mm512_cvtepi32_ps(v)));
  }
}

template <int T>
inline void dequant_q45k_512(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  const uint8_t* qs = b + (T == Q4_K ? 16 : 48);
  const uint8_t* qh = b + 16;  // Q5_K: bit j of qh[l] is the fifth bit of sub-block j
  const __m512i m4 = _mm512_set1_epi32(15), c16 = _mm512_set1_epi32(16);
  for (int c = 0; c < 4; ++c) {  // 32 bytes -> sub-blocks 2c (low nibbles), 2c+1 (high)
    const int j0 = 2 * c, j1 = 2 * c + 1;
    const __m512 ds0 = _mm512_set1_ps(d * (float)sc[j0]), dm0 = _mm512_set1_ps(dmin * (float)mn[j0]);
    const __m512 ds1 = _mm512_set1_ps(d * (float)sc[j1]), dm1 = _mm512_set1_ps(dmin * (float)mn[j1]);
    for (int g = 0; g < 2; ++g) {
      const __m512i v = u8x16(qs + 32 * c + 16 * g);
      __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_srli_epi32(v, 4);
      if constexpr (T == Q5_K) {
        const __m512i h = u8x16(qh + 16 * g);
        lo = _mm512_mask_or_epi32(lo, _mm512_test_epi32_mask(h, _mm512_set1_epi32(1 << j0)), lo, c16);
        hi = _mm512_mask_or_epi32(hi, _mm512_test_epi32_mask(h, _mm512_set1_epi32(1 << j1)), hi, c16);
      }
      _mm512_storeu_ps(y + 64 * c + 16 * g, _mm512_sub_ps(_mm512_mul_ps(ds0, _mm512_cvtepi32_ps(lo)), dm0));
      _mm512_storeu_ps(y + 64 * c + 32 + 16 * g, _mm512_sub_ps(_mm512_mul_ps(ds1, _mm512_cvtepi32_ps(hi)), dm1));
    }
  }
}
template <>
inline void dequant_block<Q4_K>(const uint8_t* b, float* y) { dequant_q45k_512<Q4_K>(b, y); }
template <>
inline void dequant_block<Q5_K>(const uint8_t* b, float* y) { dequant_q45k_512<Q5_K>(b, y); }

template <>
inline void dequant_block<Q6_K>(const uint8_t* b, float* y) {
  const int8_t* scales = (const int8_t*)(b + 192);
  const float d = load_half(b + 208);
  const __m512i m4 = _mm512_set1_epi32(15), m30 = _mm512_set1_epi32(0x30), o32 = _mm512_set1_epi32(32);
  for (int h = 0; h < 2; ++h) {  // two halves of 128 weights
    const uint8_t* l = b + 64 * h;
    const uint8_t* hh = b + 128 + 32 * h;
    float* yh = y + 128 * h;
    for (int k = 0; k < 2; ++k) {  // weights 16k .. 16k+15 of each group of 32 = one sub-block
      const __m512i a = u8x16(l + 16 * k), c = u8x16(l + 32 + 16 * k), q = u8x16(hh + 16 * k);
      const __m512i g0 = _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_and_si512(_mm512_slli_epi32(q, 4), m30));
      const __m512i g1 = _mm512_or_si512(_mm512_and_si512(c, m4), _mm512_and_si512(_mm512_slli_epi32(q, 2), m30));
      const __m512i g2 = _mm512_or_si512(_mm512_srli_epi32(a, 4), _mm512_and_si512(q, m30));
      const __m512i g3 = _mm512_or_si512(_mm512_srli_epi32(c, 4), _mm512_and_si512(_mm512_srli_epi32(q, 2), m30));
      const int s = 8 * h + k;  // sub-block of group 0; groups step by 2 sub-blocks
      _mm512_storeu_ps(yh + 16 * k, _mm512_mul_ps(_mm512_set1_ps(d * (float)scales[s]), _mm512_cvtepi32_ps(_mm512_sub_epi32(g0, o32))));
      _mm512_storeu_ps(yh + 32 + 16 * k, _mm512_mul_ps(_mm512_set1_ps(d * (float)scales[s + 2]), _mm512_cvtepi32_ps(_mm512_sub_epi32(g1, o32))));
      _mm512_storeu_ps(yh + 64 + 16 * k, _mm512_mul_ps(_mm512_set1_ps(d * (float)scales[s + 4]), _mm512_cvtepi32_ps(_mm512_sub_epi32(g2, o32))));
      _mm512_storeu_ps(yh + 96 + 16 * k, _mm512_mul_ps(_mm512_set1_ps(d * (float)scales[s + 6]), _mm512_cvtepi32_ps(_mm512_sub_epi32(g3, o32))));
    }
  }
}

#elif defined(ST_AVX2)

// 8 bytes -> 8 x i32 (zero-extended).
static inline __m256i u8x8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)); }

template <>
inline void dequant_block<Q4_0>(const uint8_t* b, float* y) {
  const __m256 d = _mm256_set1_ps(load_half(b));
  const __m256i m4 = _mm256_set1_epi32(15), o8 = _mm256_set1_epi32(8);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = u8x8(b + 2 + 8 * h);
    const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(v, m4), o8);
    const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), o8);
    _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
    _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
  }
}

template <>
inline void dequant_block<Q4_1>(const uint8_t* b, float* y) {
  const __m256 d = _mm256_set1_ps(load_half(b)), m = _mm256_set1_ps(load_half(b + 2));
  const __m256i m4 = _mm256_set1_epi32(15);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = u8x8(b + 4 + 8 * h);
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, m4));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    _mm256_storeu_ps(y + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, lo), m));
    _mm256_storeu_ps(y + 16 + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, hi), m));
  }
}

// The fifth bit of weights j0..j0+7 (bit j of qh), moved to bit 4.
static inline __m256i q5_high(uint32_t qh, int j0) {
  const __m256i sh = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i bits = _mm256_srlv_epi32(_mm256_set1_epi32((int)(qh >> j0)), sh);
  return _mm256_slli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(1)), 4);
}

template <>
inline void dequant_block<Q5_0>(const uint8_t* b, float* y) {
  const __m256 d = _mm256_set1_ps(load_half(b));
  const uint32_t qh = load_u32(b + 2);
  const __m256i m4 = _mm256_set1_epi32(15), o16 = _mm256_set1_epi32(16);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = u8x8(b + 6 + 8 * h);
    const __m256i lo = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(v, m4), q5_high(qh, 8 * h)), o16);
    const __m256i hi = _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32(v, 4), q5_high(qh, 16 + 8 * h)), o16);
    _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
    _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
  }
}

template <>
inline void dequant_block<Q5_1>(const uint8_t* b, float* y) {
  const __m256 d = _mm256_set1_ps(load_half(b)), m = _mm256_set1_ps(load_half(b + 2));
  const uint32_t qh = load_u32(b + 4);
  const __m256i m4 = _mm256_set1_epi32(15);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = u8x8(b + 8 + 8 * h);
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_or_si256(_mm256_and_si256(v, m4), q5_high(qh, 8 * h)));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_or_si256(_mm256_srli_epi32(v, 4), q5_high(qh, 16 + 8 * h)));
    _mm256_storeu_ps(y + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, lo), m));
    _mm256_storeu_ps(y + 16 + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, hi), m));
  }
}

template <>
inline void dequant_block<Q8_0>(const uint8_t* b, float* y) {
  const __m256 d = _mm256_set1_ps(load_half(b));
  for (int k = 0; k < 4; ++k) {
    const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(b + 2 + 8 * k)));
    _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
  }
}

template <>
inline void dequant_block<Q4_K>(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  const __m256i m4 = _mm256_set1_epi32(15);
  for (int c = 0; c < 4; ++c) {  // 32 bytes -> sub-blocks 2c (low nibbles), 2c+1 (high)
    const __m256 ds0 = _mm256_set1_ps(d * (float)sc[2 * c]), dm0 = _mm256_set1_ps(dmin * (float)mn[2 * c]);
    const __m256 ds1 = _mm256_set1_ps(d * (float)sc[2 * c + 1]), dm1 = _mm256_set1_ps(dmin * (float)mn[2 * c + 1]);
    float* y0 = y + 64 * c;
    for (int g = 0; g < 4; ++g) {
      const __m256i v = u8x8(qs + 32 * c + 8 * g);
      const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, m4));
      const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
      _mm256_storeu_ps(y0 + 8 * g, _mm256_sub_ps(_mm256_mul_ps(ds0, lo), dm0));
      _mm256_storeu_ps(y0 + 32 + 8 * g, _mm256_sub_ps(_mm256_mul_ps(ds1, hi), dm1));
    }
  }
}

template <>
inline void dequant_block<Q5_K>(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  const __m256i m4 = _mm256_set1_epi32(15), b4 = _mm256_set1_epi32(16);
  for (int c = 0; c < 4; ++c) {
    const int j0 = 2 * c, j1 = 2 * c + 1;  // bit j of qh[l] is the fifth bit of sub-block j
    const __m256 ds0 = _mm256_set1_ps(d * (float)sc[j0]), dm0 = _mm256_set1_ps(dmin * (float)mn[j0]);
    const __m256 ds1 = _mm256_set1_ps(d * (float)sc[j1]), dm1 = _mm256_set1_ps(dmin * (float)mn[j1]);
    float* y0 = y + 64 * c;
    for (int g = 0; g < 4; ++g) {
      const __m256i v = u8x8(qs + 32 * c + 8 * g);
      const __m256i h = u8x8(qh + 8 * g);
      // (h >> j) & 1, moved to bit 4: shift left when j < 4, right otherwise.
      const __m256i h0 = _mm256_and_si256(j0 <= 4 ? _mm256_slli_epi32(h, 4 - j0) : _mm256_srli_epi32(h, j0 - 4), b4);
      const __m256i h1 = _mm256_and_si256(j1 <= 4 ? _mm256_slli_epi32(h, 4 - j1) : _mm256_srli_epi32(h, j1 - 4), b4);
      const __m256 lo = _mm256_cvtepi32_ps(_mm256_or_si256(_mm256_and_si256(v, m4), h0));
      const __m256 hi = _mm256_cvtepi32_ps(_mm256_or_si256(_mm256_srli_epi32(v, 4), h1));
      _mm256_storeu_ps(y0 + 8 * g, _mm256_sub_ps(_mm256_mul_ps(ds0, lo), dm0));
      _mm256_storeu_ps(y0 + 32 + 8 * g, _mm256_sub_ps(_mm256_mul_ps(ds1, hi), dm1));
    }
  }
}

template <>
inline void dequant_block<Q6_K>(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = (const int8_t*)(b + 192);
  const float d = load_half(b + 208);
  const __m256i m4 = _mm256_set1_epi32(15), m30 = _mm256_set1_epi32(0x30), o32 = _mm256_set1_epi32(32);
  for (int h = 0; h < 2; ++h) {  // two halves of 128 weights
    const uint8_t* l = ql + 64 * h;
    const uint8_t* hh = qh + 32 * h;
    float* yh = y + 128 * h;
    __m256 ds[8];
    for (int s = 0; s < 8; ++s) ds[s] = _mm256_set1_ps(d * (float)scales[8 * h + s]);
    for (int k = 0; k < 4; ++k) {  // weights l = 8k .. 8k+7 of each group of 32
      const __m256i a = u8x8(l + 8 * k), c = u8x8(l + 32 + 8 * k), q = u8x8(hh + 8 * k);
      const __m256i g0 = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_and_si256(_mm256_slli_epi32(q, 4), m30));
      const __m256i g1 = _mm256_or_si256(_mm256_and_si256(c, m4), _mm256_and_si256(_mm256_slli_epi32(q, 2), m30));
      const __m256i g2 = _mm256_or_si256(_mm256_srli_epi32(a, 4), _mm256_and_si256(q, m30));
      const __m256i g3 = _mm256_or_si256(_mm256_srli_epi32(c, 4), _mm256_and_si256(_mm256_srli_epi32(q, 2), m30));
      const int s = k >> 1;  // sub-block of 16 within the group of 32
      _mm256_storeu_ps(yh + 8 * k, _mm256_mul_ps(ds[s], _mm256_cvtepi32_ps(_mm256_sub_epi32(g0, o32))));
      _mm256_storeu_ps(yh + 32 + 8 * k, _mm256_mul_ps(ds[2 + s], _mm256_cvtepi32_ps(_mm256_sub_epi32(g1, o32))));
      _mm256_storeu_ps(yh + 64 + 8 * k, _mm256_mul_ps(ds[4 + s], _mm256_cvtepi32_ps(_mm256_sub_epi32(g2, o32))));
      _mm256_storeu_ps(yh + 96 + 8 * k, _mm256_mul_ps(ds[6 + s], _mm256_cvtepi32_ps(_mm256_sub_epi32(g3, o32))));
    }
  }
}

#else  // portable scalar dequantizers

template <>
inline void dequant_block<Q4_0>(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int i = 0; i < 16; ++i) {
    y[i] = d * (float)((b[2 + i] & 15) - 8);
    y[16 + i] = d * (float)((b[2 + i] >> 4) - 8);
  }
}
template <>
inline void dequant_block<Q4_1>(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  for (int i = 0; i < 16; ++i) {
    y[i] = d * (float)(b[4 + i] & 15) + m;
    y[16 + i] = d * (float)(b[4 + i] >> 4) + m;
  }
}
template <>
inline void dequant_block<Q5_0>(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load_u32(b + 2);
  for (int i = 0; i < 16; ++i) {
    const int lo = (int)((b[6 + i] & 15) | (((qh >> i) & 1) << 4));  // signed before the -16
    const int hi = (int)((b[6 + i] >> 4) | (((qh >> (16 + i)) & 1) << 4));
    y[i] = d * (float)(lo - 16);
    y[16 + i] = d * (float)(hi - 16);
  }
}
template <>
inline void dequant_block<Q5_1>(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint32_t qh = load_u32(b + 4);
  for (int i = 0; i < 16; ++i) {
    y[i] = d * (float)((b[8 + i] & 15) | (((qh >> i) & 1) << 4)) + m;
    y[16 + i] = d * (float)((b[8 + i] >> 4) | (((qh >> (16 + i)) & 1) << 4)) + m;
  }
}
template <>
inline void dequant_block<Q8_0>(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int i = 0; i < 32; ++i) y[i] = d * (float)(int8_t)b[2 + i];
}
template <>
inline void dequant_block<Q4_K>(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  for (int c = 0; c < 4; ++c) {
    const float ds0 = d * (float)sc[2 * c], dm0 = dmin * (float)mn[2 * c];
    const float ds1 = d * (float)sc[2 * c + 1], dm1 = dmin * (float)mn[2 * c + 1];
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = b[16 + 32 * c + l];
      y[64 * c + l] = ds0 * (float)(q & 15) - dm0;
      y[64 * c + 32 + l] = ds1 * (float)(q >> 4) - dm1;
    }
  }
}
template <>
inline void dequant_block<Q5_K>(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  for (int c = 0; c < 4; ++c) {
    const float ds0 = d * (float)sc[2 * c], dm0 = dmin * (float)mn[2 * c];
    const float ds1 = d * (float)sc[2 * c + 1], dm1 = dmin * (float)mn[2 * c + 1];
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = b[48 + 32 * c + l];
      const int h0 = (qh[l] >> (2 * c)) & 1, h1 = (qh[l] >> (2 * c + 1)) & 1;
      y[64 * c + l] = ds0 * (float)((q & 15) | (h0 << 4)) - dm0;
      y[64 * c + 32 + l] = ds1 * (float)((q >> 4) | (h1 << 4)) - dm1;
    }
  }
}
template <>
inline void dequant_block<Q6_K>(const uint8_t* b, float* y) {
  const int8_t* scales = (const int8_t*)(b + 192);
  const float d = load_half(b + 208);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* l = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    for (int i = 0; i < 32; ++i) {
      const int q0 = ((l[i] & 15) | (((qh[i] >> 0) & 3) << 4)) - 32;
      const int q1 = ((l[32 + i] & 15) | (((qh[i] >> 2) & 3) << 4)) - 32;
      const int q2 = ((l[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) - 32;
      const int q3 = ((l[32 + i] >> 4) | (((qh[i] >> 6) & 3) << 4)) - 32;
      const int s = 8 * h + i / 16;
      y[128 * h + i] = (d * (float)scales[s]) * (float)q0;
      y[128 * h + 32 + i] = (d * (float)scales[s + 2]) * (float)q1;
      y[128 * h + 64 + i] = (d * (float)scales[s + 4]) * (float)q2;
      y[128 * h + 96 + i] = (d * (float)scales[s + 6]) * (float)q3;
    }
  }
}

#endif  // ST_AVX2

// Dequantize `n` weights (a multiple of the block size) starting at block pointer `src`.
template <int T>
inline void dequant_run(const uint8_t* src, float* y, int64_t n) {
  constexpr int BW = (T == Q4_K || T == Q5_K || T == Q6_K) ? QK_K : QK;
  const int bb = block_bytes(T);
  for (int64_t i = 0; i < n; i += BW, src += bb) dequant_block<T>(src, y + i);
}

// Float source types (F32/F16/BF16): n values starting at element pointer `src`.
inline void convert_run(int t, const uint8_t* src, float* y, int64_t n) {
  int64_t i = 0;
  if (t == F32) {
    std::memcpy(y, src, (size_t)n * 4);
    return;
  }
  const uint16_t* s = (const uint16_t*)src;
#if defined(ST_AVX2)
  if (t == F16) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))));
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(s + i)));
      _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
  }
#endif
  for (; i < n; ++i) y[i] = t == F16 ? half_to_float(s[i]) : bf16_to_float(s[i]);
}

}  // namespace st
