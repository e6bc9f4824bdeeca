// Shared definitions for the sparsetier CPU kernels: GGML type ids, block layouts,
// half/bfloat conversions and the small SIMD helpers every kernel file uses.
//
// SIMD levels (chosen at compile time from the -march macros):
//   ST_AVX2  : 256-bit integer/float kernels (AVX2 + FMA + F16C)
//   ST_VNNI  : AVX-512 VNNI on 256-bit registers (vpdpbusd / vpdpwssd), no i16 saturation
//   ST_AVX512: AVX-512 F/BW/VL (byte masks for the 5-bit types, 32 vector registers)
//   none of these: portable scalar code (any CPU)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ST_AVX2 1
#include <immintrin.h>
#endif
#if defined(ST_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define ST_AVX512 1
#endif
#if defined(ST_AVX512) && defined(__AVX512VNNI__)
#define ST_VNNI 1
#endif

namespace st {

// GGML type ids (gguf.GGMLQuantizationType values).
enum QType : int {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

// A kernel templated on the type, called for a runtime type id: f(std::integral_constant<int, T>{})
// for the block-quantized types (with_block_qtype) or every supported type (with_qtype); an
// unsupported type returns a value-initialised result. One switch here instead of one per kernel.
template <class F>
decltype(auto) with_block_qtype(int t, F&& f) {
  using R = decltype(f(std::integral_constant<int, Q4_0>{}));
  switch (t) {
    case Q4_0: return f(std::integral_constant<int, Q4_0>{});
    case Q4_1: return f(std::integral_constant<int, Q4_1>{});
    case Q5_0: return f(std::integral_constant<int, Q5_0>{});
    case Q5_1: return f(std::integral_constant<int, Q5_1>{});
    case Q8_0: return f(std::integral_constant<int, Q8_0>{});
    case Q4_K: return f(std::integral_constant<int, Q4_K>{});
    case Q5_K: return f(std::integral_constant<int, Q5_K>{});
    case Q6_K: return f(std::integral_constant<int, Q6_K>{});
    default: return R();
  }
}

template <class F>
decltype(auto) with_qtype(int t, F&& f) {
  switch (t) {
    case F32: return f(std::integral_constant<int, F32>{});
    case F16: return f(std::integral_constant<int, F16>{});
    case BF16: return f(std::integral_constant<int, BF16>{});
    default: return with_block_qtype(t, f);
  }
}

constexpr int QK = 32;    // block size of the 32-weight types
constexpr int QK_K = 256;  // super-block size of the k-quants

// Bytes per block of each type (weights per block: 32 or 256; 1 for float types).
inline int block_weights(int t) {
  switch (t) {
    case F32: case F16: case BF16: return 1;
    case Q4_K: case Q5_K: case Q6_K: return QK_K;
    default: return QK;
  }
}
inline int block_bytes(int t) {
  switch (t) {
    case F32: return 4;
    case F16: case BF16: return 2;
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q5_0: return 22;
    case Q5_1: return 24;
    case Q8_0: return 34;
    case Q4_K: return 144;
    case Q5_K: return 176;
    case Q6_K: return 210;
    default: return 0;
  }
}
inline bool is_supported(int t) { return block_bytes(t) != 0; }
inline bool is_kquant(int t) { return t == Q4_K || t == Q5_K || t == Q6_K; }
inline bool is_float_type(int t) { return t == F32 || t == F16 || t == BF16; }

// IEEE half -> float, exact (handles subnormals, inf, nan); used by the scalar paths.
inline float half_to_float(uint16_t h) {
#if defined(ST_AVX2)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do { ++e; mant <<= 1; } while (!(mant & 0x400));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

inline uint16_t load_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t load_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline float load_half(const uint8_t* p) { return half_to_float(load_u16(p)); }

inline float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// float -> bfloat16, round to nearest even (nan kept quiet), like torch's conversion.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

// Q4_K/Q5_K: 12 bytes of packed 6-bit (scale, min) pairs -> 8 scales and 8 mins (bytes).
// Bytes 0-3 hold scales 0-3 (low 6 bits) plus the top 2 bits of scales 4-7; bytes 4-7 the
// same for mins; bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high).
inline void k_scales(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
  const uint32_t d = load_u32(s), m = load_u32(s + 4), md = load_u32(s + 8);
  const uint32_t sc_lo = d & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (md & 0x0F0F0F0Fu) | ((d >> 2) & 0x30303030u);
  const uint32_t mn_lo = m & 0x3F3F3F3Fu;
  const uint32_t mn_hi = ((md >> 4) & 0x0F0F0F0Fu) | ((m >> 2) & 0x30303030u);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}

#if defined(ST_AVX2)
// The same unpacking on two 64-bit words, as 16 bytes [sc0-3 mn0-3 sc4-7 mn4-7].
inline __m128i k_scales_interleaved(const uint8_t* s) {
  uint64_t dm;
  std::memcpy(&dm, s, 8);
  const uint32_t md = load_u32(s + 8);
  const uint64_t lo = dm & 0x3F3F3F3F3F3F3F3FULL;
  const uint64_t mdx = (uint64_t)(md & 0x0F0F0F0Fu) | ((uint64_t)((md >> 4) & 0x0F0F0F0Fu) << 32);
  const uint64_t hi = mdx | ((dm >> 2) & 0x3030303030303030ULL);
  return _mm_set_epi64x((long long)hi, (long long)lo);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

// acc + sum over groups of 4 of u8(a) * s8(b) -> 8 x i32.
// Without VNNI this goes through i16 pairs (vpmaddubsw), which saturates unless
// 2 * max(a) * max|b| <= 32767: every caller keeps a <= 128 and |b| <= 127.
inline __m256i dot_u8s8(__m256i acc, __m256i a, __m256i b) {
#if defined(ST_VNNI)
  return _mm256_dpbusd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
#endif
}
// acc + pairwise i16 products summed into i32.
inline __m256i dot_i16(__m256i acc, __m256i a, __m256i b) {
#if defined(ST_VNNI)
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// 16 packed bytes -> 32 u8: the 16 low nibbles, then the 16 high nibbles (GGML's order
// inside one 32-weight block).
inline __m256i nibbles32(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128((const __m128i*)p);
  const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
  return _mm256_and_si256(t, _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, 0xFF where the bit is set (bit j -> byte j).
inline __m256i bits_to_bytes(uint32_t bits) {
#if defined(ST_AVX512)
  return _mm256_movm_epi8((__mmask32)bits);
#else
  // Byte j gets byte j/8 of the word, then keeps only its own bit j%8.
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
#endif
}
#endif  // ST_AVX2

}  // namespace st
