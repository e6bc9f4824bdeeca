// Batched fast-mode kernels (AVX-512 VNNI): 16 weight rows x up to 8 activation rows per
// pass, for batched decode (n = 2..16 activation rows) and, where it is faster, n = 1.
//
// One zmm lane per weight row. A 16-row group is read in chunks of whole blocks; each
// chunk is transposed (16x16 dwords, in registers) into an L1 buffer T, so T[d] holds
// dword d of the chunk for all 16 rows. A weight vector is then 4 consecutive weights of
// every row (u8), and vpdpbusd against one activation dword broadcast to all lanes adds
// 4 products to each of the 16 rows: no horizontal sums, and the float scaling happens
// once per (block, 16 rows, activation row) instead of once per (block, row, activation
// row). Per 32 weights x 16 rows x activation row: 8 vpdpbusd + 2-3 float ops (the one-row
// kernels of gemv_fast.h need ~40 for the same work). Zen 4 runs one 512-bit
// multiply-class op (vpdpbusd, vpmulld, FMA) per cycle, so that count is the cost; the
// transposition and unpacking use other ports and are shared by all activation rows.
//
// The weights stay in GGUF layout (no repacked copy). Offsets are folded into the integer
// accumulator's start value (-o * sum(x), from the activation sums), minimums and the
// k-quant mins go through the activation sums as in gemv_fast.h:
//   Q4_0/Q5_0/Q8_0: acc = -o*sum(x) + dot(q, x), o = 8 / 16 / 128 (Q8_0 as q + 128, u8)
//   Q4_1/Q5_1:      d*dx*dot(q, x) + m*(dx*sum x)
//   Q4_K/Q5_K:      d*dx*sum_j sc_j*dot_j - dmin*dx*sum_j m_j*sum(x_j)   (vpmulld, vpdpwssd)
//   Q6_K:           d*dx*sum_j sc_j*(dot_j - 32*sum(x_j))
// All integer sums are exact (no saturating instructions), so the result differs from the
// one-row kernels only by float rounding.
#pragma once

#include <algorithm>
#include <vector>

#include "gemv_fast.h"

#if defined(ST_VNNI)

namespace st {
namespace g16 {

constexpr int kRows = 16;
constexpr int kMaxNT = 8;         // activation rows per pass (accumulators in registers)
constexpr int kChunkBytes = 256;  // bytes of a row per chunk for the 32-weight types

// ---- transposition ---------------------------------------------------------------------

// r[i] = 64 bytes of row i  ->  r[c] lane i = dword c of row i.
static ST_INLINE void transpose16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // r[4q + c] 128-bit lane L: rows 4q..4q+3, dword 4L + c
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE);
    const __m512i e = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44), f = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(a, e, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(a, e, 0xDD);
    t[8 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(b, f, 0xDD);
  }
  for (int c = 0; c < 16; ++c) r[c] = t[c];
}

// Bytes [off, off + len) of the 16 rows -> T[0 .. ceil(len / 64) * 16). Masked loads for a
// partial last 64 bytes, so nothing is read past the chunk (or the end of the tensor).
static ST_INLINE void transpose_chunk(const uint8_t* const* rows, int64_t off, int len, __m512i* T) {
  for (int c0 = 0; c0 < len; c0 += 64) {
    __m512i r[16];
    if (len - c0 >= 64) {
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(rows[i] + off + c0);
    } else {
      const __mmask64 m = (__mmask64)((1ULL << (len - c0)) - 1);
      for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_epi8(m, rows[i] + off + c0);
    }
    transpose16(r);
    for (int c = 0; c < 16; ++c) _mm512_store_si512(T + c0 / 4 + c, r[c]);
  }
}

// ---- field access in a transposed chunk (byte offsets are even, known at compile time) --

template <int O>
static ST_INLINE __m512i dword_at(const __m512i* T) {
  if constexpr ((O & 3) == 0) {
    return T[O >> 2];
  } else {
#if defined(__AVX512VBMI2__)
    return _mm512_shrdi_epi32(T[O >> 2], T[(O >> 2) + 1], 16);
#else
    return _mm512_or_si512(_mm512_srli_epi32(T[O >> 2], 16), _mm512_slli_epi32(T[(O >> 2) + 1], 16));
#endif
  }
}

template <int O>
static ST_INLINE __m512 half_at(const __m512i* T) {
  __m512i v = T[O >> 2];
  if constexpr ((O & 3) != 0) v = _mm512_srli_epi32(v, 16);
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

// Byte s (0..3) of every dword as u32 / as a sign-extended i32.
static ST_INLINE __m512i byte_u32(__m512i v, int s) {
  const __m512i ctrl = _mm512_set1_epi32((int)(0x80808000u | (uint32_t)s));
  const __m512i lane = _mm512_set4_epi32(12, 8, 4, 0);  // dword base inside each 128-bit lane
  return _mm512_shuffle_epi8(v, _mm512_add_epi8(ctrl, lane));
}
static ST_INLINE __m512i byte_i32(__m512i v, int s) {
  const __m512i ctrl = _mm512_set1_epi32((int)(((uint32_t)s << 24) | 0x808080u));
  const __m512i lane = _mm512_set4_epi32(12 << 24, 8 << 24, 4 << 24, 0);
  return _mm512_srai_epi32(_mm512_shuffle_epi8(v, _mm512_add_epi32(ctrl, lane)), 24);
}
// Bytes 2p, 2p+1 of every dword as an i16 pair (u8 values).
static ST_INLINE __m512i bytes_u16x2(__m512i v, int p) {
  const __m512i ctrl = _mm512_set1_epi32((int)(0x80008000u | ((uint32_t)(2 * p + 1) << 16) | (uint32_t)(2 * p)));
  const __m512i lane = _mm512_set4_epi32(0x000C000C, 0x00080008, 0x00040004, 0);
  return _mm512_shuffle_epi8(v, _mm512_add_epi32(ctrl, lane));
}

// Byte masks from the fifth bits of Q5_0/Q5_1: byte b of every dword lane set when bit
// `first + b` of the lane's 32-bit qh is set.
static ST_INLINE __mmask64 qh_mask(__m512i qh, int first) {
#if defined(__AVX512BITALG__)
  // vpshufbitqmb picks bit ctrl[b] of the byte's 64-bit lane (two rows per 64-bit lane).
  const __m512i ctrl = _mm512_set1_epi64((long long)(0x2322212003020100ULL + 0x0101010101010101ULL * first));
  return _mm512_bitshuffle_epi64_mask(qh, ctrl);
#else
  const __m512i t = _mm512_srli_epi32(qh, first);
  const __m512i low = _mm512_shuffle_epi8(t, _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0));
  return _mm512_test_epi8_mask(low, _mm512_set1_epi32(0x08040201));
#endif
}

static ST_INLINE __m512i bcast32(const void* p) { return _mm512_set1_epi32(load_u32((const uint8_t*)p)); }

// Activation rows of a pass, plus the extra sums the kernels here read.
struct XRow {
  const int8_t* q;
  const float* d;
  const float* s;      // Q8_32: d * sum(q) per 32
  const int32_t* ns;   // Q8_32: -sum(q) per 32
  const int16_t* b32;  // Q8_K: sum(q) per 32
  const int32_t* b16;  // Q8_K: -32 * sum(q) per 16
};

inline XRow xrow(const QAct& a, int64_t n) {
  XRow r{};
  r.q = a.qs.data() + n * a.ld;
  if (a.kquant) {
    r.d = a.d.data() + n * (a.k / QK_K);
    r.b32 = a.bs32.data() + n * (a.k / 32);
    r.b16 = a.bsn32.data() + n * (a.k / 16);
  } else {
    r.d = a.d.data() + n * (a.k / QK);
    r.s = a.s.data() + n * (a.k / QK);
    r.ns = a.nsum.data() + n * (a.k / QK);
  }
  return r;
}

// ---- 32-weight block types ---------------------------------------------------------------

template <int T>
struct B32 {
  static constexpr int kBytes = T == Q4_0 ? 18 : T == Q4_1 ? 20 : T == Q5_0 ? 22 : T == Q5_1 ? 24 : 34;
  static constexpr int kQs = T == Q4_0 ? 2 : T == Q4_1 ? 4 : T == Q5_0 ? 6 : T == Q5_1 ? 8 : 2;
  static constexpr int kQh = T == Q5_0 ? 2 : 4;
  static constexpr bool kMin = T == Q4_1 || T == Q5_1;               // + m * (dx * sum x)
  static constexpr int kShift = T == Q4_0 ? 3 : T == Q5_0 ? 4 : T == Q8_0 ? 7 : -1;  // acc starts at -sum(x) << kShift
  static constexpr int kChunkBlocks = kChunkBytes / kBytes;
};

struct U32 {
  __m512i w[8];  // w[g] lane i: weights 4g..4g+3 of row i (u8)
  __m512 d, m;
};

// The block at byte O of the transposed dwords Tb.
template <int T, int O>
static ST_INLINE void unpack32(const __m512i* Tb, U32& u) {
  using B = B32<T>;
  u.d = half_at<O>(Tb);
  if constexpr (B::kMin) u.m = half_at<O + 2>(Tb);
  if constexpr (T == Q8_0) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);  // q + 128 as u8
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) u.w[g] = _mm512_xor_si512(dword_at<O + 2>(Tb + g), flip);
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const __m512i q = dword_at<O + B::kQs>(Tb + g);
      u.w[g] = _mm512_and_si512(q, m4);                             // weights 4g..
      u.w[4 + g] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);  // weights 16 + 4g..
    }
    if constexpr (T == Q5_0 || T == Q5_1) {
      const __m512i qh = dword_at<O + B::kQh>(Tb);  // bit i: fifth bit of weight i
      const __m512i c16 = _mm512_set1_epi8(16);
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) u.w[g] = _mm512_mask_add_epi8(u.w[g], qh_mask(qh, 4 * g), u.w[g], c16);
    }
  }
}

// Integer dot products of 8 weight vectors (32 weights) with NT activation rows at xq[j],
// accumulated onto acc[j]. The activation rows are interleaved so that consecutive
// vpdpbusd are independent (latency 4); one or two rows get two chains each instead.
template <int NT>
static ST_INLINE void dot32(const __m512i* w, const int8_t* const* xq, __m512i* acc) {
  if constexpr (NT <= 2) {
    __m512i b[NT];
    for (int j = 0; j < NT; ++j) b[j] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int g = 0; g < 8; g += 2) {
      for (int j = 0; j < NT; ++j) {
        acc[j] = _mm512_dpbusd_epi32(acc[j], w[g], bcast32(xq[j] + 4 * g));
        b[j] = _mm512_dpbusd_epi32(b[j], w[g + 1], bcast32(xq[j] + 4 * g + 4));
      }
    }
    for (int j = 0; j < NT; ++j) acc[j] = _mm512_add_epi32(acc[j], b[j]);
  } else {
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g)
      for (int j = 0; j < NT; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], w[g], bcast32(xq[j] + 4 * g));
  }
}

template <int T, int NT>
static ST_INLINE void compute32(const U32& u, const XRow* x, int64_t b, __m512* y) {
  using B = B32<T>;
  __m512i acc[NT];
  const int8_t* xq[NT];
  for (int j = 0; j < NT; ++j) {
    xq[j] = x[j].q + b * QK;
    acc[j] = B::kShift >= 0 ? _mm512_slli_epi32(_mm512_set1_epi32(x[j].ns[b]), B::kShift) : _mm512_setzero_si512();
  }
  dot32<NT>(u.w, xq, acc);
  for (int j = 0; j < NT; ++j) {
    y[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j]), _mm512_mul_ps(u.d, _mm512_set1_ps(x[j].d[b])), y[j]);
    if constexpr (B::kMin) y[j] = _mm512_fmadd_ps(u.m, _mm512_set1_ps(x[j].s[b]), y[j]);
  }
}

// nblk blocks of a transposed chunk starting at global block b0, NT activation rows.
// Blocks go in pairs: an even block starts on a dword (2 * block bytes is a multiple of
// 4 for every type), so each field's alignment is known at compile time.
template <int T, int NT>
void chunk32(const __m512i* Tv, int nblk, int64_t b0, const XRow* x, float* yacc) {
  constexpr int BB = B32<T>::kBytes;
  static_assert((2 * BB) % 4 == 0, "block pairs must start on a dword");
  __m512 y[NT];
  for (int j = 0; j < NT; ++j) y[j] = _mm512_loadu_ps(yacc + 16 * j);
  int t = 0;
  for (; t + 2 <= nblk; t += 2) {
    const __m512i* Tb = Tv + t * BB / 4;
    U32 u;
    unpack32<T, 0>(Tb, u);
    compute32<T, NT>(u, x, b0 + t, y);
    unpack32<T, BB>(Tb, u);
    compute32<T, NT>(u, x, b0 + t + 1, y);
  }
  if (t < nblk) {
    U32 u;
    unpack32<T, 0>(Tv + t * BB / 4, u);
    compute32<T, NT>(u, x, b0 + t, y);
  }
  for (int j = 0; j < NT; ++j) _mm512_storeu_ps(yacc + 16 * j, y[j]);
}

// ---- k-quants (one 256-weight super-block per chunk) -------------------------------------

template <int T, int NT>
void chunk_q45k(const __m512i* Tv, int64_t sb, const XRow* x, float* yacc) {
  constexpr int qs = T == Q5_K ? 48 : 16;  // byte offsets in the super-block
  const __m512 d = half_at<0>(Tv), dmin = half_at<2>(Tv);
  // 6-bit scales and mins, as bytes [0-3] | [4-7] (see k_scales in common.h)
  const __m512i s0 = Tv[1], s1 = Tv[2], s2 = Tv[3];
  const __m512i c3f = _mm512_set1_epi8(0x3F), c0f = _mm512_set1_epi8(0x0F), c30 = _mm512_set1_epi8(0x30);
  const __m512i sc_lo = _mm512_and_si512(s0, c3f), mn_lo = _mm512_and_si512(s1, c3f);
  const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(s2, c0f), _mm512_and_si512(_mm512_srli_epi32(s0, 2), c30));
  const __m512i mn_hi =
      _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 4), c0f), _mm512_and_si512(_mm512_srli_epi32(s1, 2), c30));
  const __m512i mp[4] = {bytes_u16x2(mn_lo, 0), bytes_u16x2(mn_lo, 1), bytes_u16x2(mn_hi, 0), bytes_u16x2(mn_hi, 1)};

  __m512i tot[NT];
  for (int j = 0; j < NT; ++j) tot[j] = _mm512_setzero_si512();
  const __m512i m4 = _mm512_set1_epi8(0x0F), c16 = _mm512_set1_epi8(16);
#pragma GCC unroll 8
  for (int s = 0; s < 8; ++s) {  // sub-block s: nibble s & 1 of bytes 32 * (s / 2) ..
    const __m512i sc = byte_u32(s < 4 ? sc_lo : sc_hi, s & 3);
    __m512i w[8];
    for (int g = 0; g < 8; ++g) {
      const __m512i q = Tv[(qs + 32 * (s / 2)) / 4 + g];
      w[g] = _mm512_and_si512(s & 1 ? _mm512_srli_epi16(q, 4) : q, m4);
      if constexpr (T == Q5_K) {
        const __mmask64 hb = _mm512_test_epi8_mask(Tv[16 / 4 + g], _mm512_set1_epi8((char)(1 << s)));
        w[g] = _mm512_mask_add_epi8(w[g], hb, w[g], c16);
      }
    }
    __m512i acc[NT];
    const int8_t* xq[NT];
    for (int j = 0; j < NT; ++j) acc[j] = _mm512_setzero_si512(), xq[j] = x[j].q + sb * QK_K + 32 * s;
    dot32<NT>(w, xq, acc);
    for (int j = 0; j < NT; ++j) tot[j] = _mm512_add_epi32(tot[j], _mm512_mullo_epi32(acc[j], sc));
  }
  for (int j = 0; j < NT; ++j) {
    __m512i mins = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) mins = _mm512_dpwssd_epi32(mins, mp[p], bcast32(x[j].b32 + sb * 8 + 2 * p));
    const __m512 dx = _mm512_set1_ps(x[j].d[sb]);
    const __m512 t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), dmin, _mm512_mul_ps(_mm512_cvtepi32_ps(tot[j]), d));
    _mm512_storeu_ps(yacc + 16 * j, _mm512_fmadd_ps(t, dx, _mm512_loadu_ps(yacc + 16 * j)));
  }
}

template <int NT>
void chunk_q6k(const __m512i* Tv, int64_t sb, const XRow* x, float* yacc) {
  // ql bytes 0..127, qh 128..191, scales (i8) 192..207, d 208.
  const __m512 d = half_at<208>(Tv);
  __m512i tot[NT];
  for (int j = 0; j < NT; ++j) tot[j] = _mm512_setzero_si512();
  const __m512i m4 = _mm512_set1_epi8(0x0F), c30 = _mm512_set1_epi8(0x30);
#pragma GCC unroll 16
  for (int s = 0; s < 16; ++s) {  // sub-block of 16 weights: half n, quarter Q, 16-weight half lh
    const int n = s / 8, Q = (s % 8) / 2, lh = s % 2;
    const __m512i sc = byte_i32(Tv[48 + s / 4], s % 4);
    __m512i w[4];
    for (int e = 0; e < 4; ++e) {
      const int l = 16 * lh + 4 * e;
      const __m512i ql = Tv[(64 * n + l + 32 * (Q & 1)) / 4];
      const __m512i qh = Tv[(128 + 32 * n + l) / 4];
      const __m512i lo = Q >> 1 ? _mm512_srli_epi16(ql, 4) : ql;
      // bits 2Q, 2Q+1 of qh moved to bits 4, 5 (16-bit shifts: the 0x30 mask drops what crosses bytes)
      const __m512i hi = 2 * Q <= 4 ? _mm512_slli_epi16(qh, 4 - 2 * Q) : _mm512_srli_epi16(qh, 2 * Q - 4);
      w[e] = _mm512_ternarylogic_epi32(lo, _mm512_and_si512(hi, c30), m4, 0xEC);  // (lo & m4) | hi
    }
    __m512i acc[NT];
    const int8_t* xq[NT];
    for (int j = 0; j < NT; ++j) {
      xq[j] = x[j].q + sb * QK_K + 128 * n + 32 * Q + 16 * lh;
      acc[j] = _mm512_set1_epi32(x[j].b16[sb * 16 + s]);  // -32 * sum(x): q is stored + 32
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e)
      for (int j = 0; j < NT; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], w[e], bcast32(xq[j] + 4 * e));
    for (int j = 0; j < NT; ++j) tot[j] = _mm512_add_epi32(tot[j], _mm512_mullo_epi32(acc[j], sc));
  }
  for (int j = 0; j < NT; ++j)
    _mm512_storeu_ps(yacc + 16 * j, _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[j]), _mm512_mul_ps(d, _mm512_set1_ps(x[j].d[sb])),
                                                    _mm512_loadu_ps(yacc + 16 * j)));
}

// ---- driver --------------------------------------------------------------------------------

template <int T, int NT>
ST_INLINE void run_chunk(const __m512i* Tv, int nblk, int64_t b0, const XRow* x, float* yacc) {
  if constexpr (T == Q4_K || T == Q5_K) {
    chunk_q45k<T, NT>(Tv, b0, x, yacc);
  } else if constexpr (T == Q6_K) {
    chunk_q6k<NT>(Tv, b0, x, yacc);
  } else {
    chunk32<T, NT>(Tv, nblk, b0, x, yacc);
  }
}

template <int T>
void run_tile(int nt, const __m512i* Tv, int nblk, int64_t b0, const XRow* x, float* yacc) {
  switch (nt) {
    case 8: return run_chunk<T, 8>(Tv, nblk, b0, x, yacc);
    case 7: return run_chunk<T, 7>(Tv, nblk, b0, x, yacc);
    case 6: return run_chunk<T, 6>(Tv, nblk, b0, x, yacc);
    case 5: return run_chunk<T, 5>(Tv, nblk, b0, x, yacc);
    case 4: return run_chunk<T, 4>(Tv, nblk, b0, x, yacc);
    case 3: return run_chunk<T, 3>(Tv, nblk, b0, x, yacc);
    case 2: return run_chunk<T, 2>(Tv, nblk, b0, x, yacc);
    default: return run_chunk<T, 1>(Tv, nblk, b0, x, yacc);
  }
}

#ifndef ST_G16_PF_GROUPS
#define ST_G16_PF_GROUPS 1
#endif
#ifndef ST_G16_PF_HINT
#define ST_G16_PF_HINT _MM_HINT_T2
#endif

// Rows [i0, i1) (at most 16) of a job against all n activation rows, accumulating in
// yacc[n][16]. `next` (or null): the rows of a later group, prefetched bit by bit while this
// one computes (contiguous rows only).
template <int T>
void group(const Job& job, int64_t i0, int64_t i1, const XRow* x, int64_t n, float* yacc, const uint8_t* next,
           int64_t next_bytes) {
  constexpr bool kq = T == Q4_K || T == Q5_K || T == Q6_K;
  constexpr int BW = kq ? QK_K : QK;
  constexpr int BB = T == Q4_K ? 144 : T == Q5_K ? 176 : T == Q6_K ? 210 : B32<T>::kBytes;
  constexpr int CB = kq ? 1 : B32<T>::kChunkBlocks;  // blocks per chunk
  const Weight& w = job.w;
  const int64_t nb = w.cols / BW;
  const uint8_t* rows[kRows];
  for (int r = 0; r < kRows; ++r) {
    const int64_t i = std::min(i0 + r, i1 - 1);  // a short last group repeats its last row
    rows[r] = w.data + (job.index ? job.index[i] : i) * w.row_stride;
  }
  alignas(64) __m512i Tv[(CB * BB + 63) / 64 * 16];
  std::fill_n(yacc, 16 * n, 0.f);
  const int64_t nchunks = (nb + CB - 1) / CB;
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t b0 = c * CB;
    const int nblk = (int)std::min<int64_t>(CB, nb - b0);
    if (next) {
      const char* p = (const char*)next + next_bytes * c / nchunks;
      const char* e = (const char*)next + next_bytes * (c + 1) / nchunks;
      for (; p < e; p += 64) _mm_prefetch(p, ST_G16_PF_HINT);
    }
    transpose_chunk(rows, b0 * BB, nblk * BB, Tv);
    for (int64_t j0 = 0; j0 < n; j0 += kMaxNT)
      run_tile<T>((int)std::min<int64_t>(kMaxNT, n - j0), Tv, nblk, b0, x + j0, yacc + 16 * j0);
  }
  const __mmask16 keep = (__mmask16)((1u << (i1 - i0)) - 1);
  __m512 bias = _mm512_setzero_ps();
  if (job.bias) bias = _mm512_maskz_loadu_ps(keep, job.bias + i0);
  for (int64_t j = 0; j < n; ++j)
    _mm512_mask_storeu_ps(job.y + j * job.ldy + i0, keep, _mm512_add_ps(_mm512_loadu_ps(yacc + 16 * j), bias));
}

// Rows [i0, i1) of a job in groups of 16 from i0.
template <int T>
void rows(const Job& job, int64_t i0, int64_t i1, const QAct& a) {
  const int64_t n = a.n, stride = job.w.row_stride;
  std::vector<XRow> x((size_t)n);
  std::vector<float> yacc((size_t)(16 * n));  // [n][16 rows]
  for (int64_t j = 0; j < n; ++j) x[j] = xrow(a, j);
  for (int64_t g = i0; g < i1; g += kRows) {
    const int64_t e = std::min(g + kRows, i1);
    const uint8_t* next = nullptr;
    int64_t next_bytes = 0;
    const int64_t gn = g + ST_G16_PF_GROUPS * kRows;
    if (!job.index && gn < i1) {
      next = job.w.data + gn * stride;
      next_bytes = std::min<int64_t>(kRows, i1 - gn) * stride;
    }
    group<T>(job, g, e, x.data(), n, yacc.data(), next, next_bytes);
  }
}

}  // namespace g16
}  // namespace st

#endif  // ST_VNNI
