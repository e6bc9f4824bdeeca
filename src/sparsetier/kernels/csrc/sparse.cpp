// Input-sparse GEMV on a column-major ("transposed") copy of GGML weights.
//
// Activation sparsity zeroes input channels of a projection (TEAL thresholds, ReLU zeros,
// predicted-inactive neurons). In GGML's row-major blocks the weights of one input channel
// are spread over every row, so skipping a channel saves no bytes. Here each input channel
// owns one contiguous record holding its quants for all outputs; a GEMV reads only the
// records of active channels (plus the per-output scales, which every active channel needs).
//
// The layout is a lossless rearrangement of the GGML blocks, not a re-quantization: every
// weight keeps its integer quant and its block's scale/min exactly, so memory stays the
// size of the file (rows padded to a multiple of 64 are the only overhead) and the dequantized
// values are bit-identical to the row-major ones.
//
//   records  uint8, in blocks of kBlockTiles tiles (the last block may be shorter); inside a
//            block channel-major: [block][cols][block tiles * tile_bytes]. A channel's part of
//            a block is one contiguous run (1-2 KB), and a thread that takes a range of
//            channels of one block streams one contiguous range of memory at sparsity 0.
//            tile = 64 outputs of one channel:
//     4-bit types: 32 bytes, output o' of the tile in byte slot(o' % 32), low nibble for
//                  o' < 32, high nibble for o' >= 32; 5-bit: + 8 bytes of fifth bits
//                  (bit slot, then 32 + slot); Q6_K: + 16 bytes of 2-bit high parts;
//                  Q8_0: 64 bytes (q + 128, unsigned), slot order in each half.
//   scales   uint8 [units][...]   per unit of channels (32, or a 256 super-block for the
//                  k-quants), planes over all outputs in natural order (structure of arrays):
//     Q4_0/Q5_0/Q8_0: d f16 | Q4_1/Q5_1: d f16, m f16 | Q4_K/Q5_K: d f16, dmin f16, the
//     12 packed 6-bit scale bytes as 12 byte planes | Q6_K: d f16, 16 int8 scale planes.
//
// slot() is the byte order that a 4-way byte interleave (unpacklo/hi epi8 then epi16, per
// 128-bit lane) turns back into natural output order, so the fast kernel interleaves the
// records of 4 active channels and feeds them to vpdpbusd (u8 weights x s8 activations,
// 4 channels per int32 lane) with no further shuffles.
//
// Fast mode: active activations are quantized to int8 per unit (max|x|/127, like Q8_0 /
// Q8_K); per output the integer dot products are scaled once per unit (k-quants: the 6-bit
// or int8 sub-block scales are applied in the integer domain with vpmaddubsw + vpdpwssd).
// Exact mode: float32 activations times weights dequantized with the reference's float
// operations, i.e. the reference numbers up to summation order.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <vector>

#include "common.h"

namespace st {
namespace {

constexpr int kTile = 64;  // outputs per tile
// Tiles per layout block: a block's int32 sums and scales stay in L1 (3 x 8 KB) while the
// active channels' runs of that block stream past.
constexpr int kBlockTiles = 32;

struct Fmt {
  int tile_bytes = 0;  // record bytes per tile (64 outputs) of one channel
  int unit = 0;        // channels per scale unit (activation quantization block)
  int sub = 0;         // channels per sub-block (scale granularity inside a unit)
  int scale_bytes = 0; // scale-plane bytes per output per unit
  int zero = 0;        // zero point subtracted from the stored quant
  bool has_min = false;
};

Fmt fmt_of(int t) {
  switch (t) {
    case Q4_0: return {32, 32, 32, 2, 8, false};
    case Q4_1: return {32, 32, 32, 4, 0, true};
    case Q5_0: return {40, 32, 32, 2, 16, false};
    case Q5_1: return {40, 32, 32, 4, 0, true};
    case Q8_0: return {64, 32, 32, 2, 128, false};
    case Q4_K: return {32, 256, 32, 16, 0, true};
    case Q5_K: return {40, 256, 32, 16, 0, true};
    case Q6_K: return {48, 256, 16, 18, 32, false};
    default: return {};
  }
}

inline bool is_k(int t) { return t == Q4_K || t == Q5_K || t == Q6_K; }

// Byte slot of output k (0..31) of a tile half; see the header comment.
inline int slot_of(int k) {
  const int g = k >> 3, l = k & 7;
  return l < 4 ? 4 * g + l : 16 + 4 * g + (l - 4);
}

std::atomic<int64_t> g_bytes_read{0};

// ---- layout conversion -----------------------------------------------------------------

struct Layout {
  int qtype;
  int64_t rows, cols, rows_p, tiles, rec, unit_stride;
  int64_t tb, bt, blocks;  // tile bytes, tiles per block, layout blocks
  uint8_t* recs;
  uint8_t* scales;
};

inline int64_t block_tiles(const Layout& L, int64_t b) { return std::min(L.bt, L.tiles - b * L.bt); }
inline uint8_t* block_base(const Layout& L, int64_t b) { return L.recs + b * L.bt * L.tb * L.cols; }
// Tile t (64 outputs) of channel c.
inline uint8_t* tile_ptr(const Layout& L, int64_t c, int64_t t) {
  const int64_t b = t / L.bt;
  return block_base(L, b) + (c * block_tiles(L, b) + t - b * L.bt) * L.tb;
}

// Store quant q (the type's unsigned convention) of output o for channel c.
inline void put_quant(const Layout& L, const Fmt& f, int64_t c, int64_t o, int q) {
  const int64_t t = o / kTile;
  const int op = (int)(o % kTile), half = op >> 5, s = slot_of(op & 31);
  uint8_t* base = tile_ptr(L, c, t);
  if (L.qtype == Q8_0) {
    base[half * 32 + s] = (uint8_t)q;
    return;
  }
  base[s] |= (uint8_t)((q & 15) << (4 * half));
  if (f.tile_bytes == 40) {  // fifth bit
    base[32 + half * 4 + s / 8] |= (uint8_t)(((q >> 4) & 1) << (s % 8));
  } else if (f.tile_bytes == 48) {  // Q6_K: 2 high bits
    const int field = (s >> 4) + 2 * half;
    base[32 + (s & 15)] |= (uint8_t)(((q >> 4) & 3) << (2 * field));
  }
}

inline void put_u16(uint8_t* plane, int64_t o, uint16_t v) { std::memcpy(plane + 2 * o, &v, 2); }

// One GGML row (output o) into the column layout.
void convert_row(const Layout& L, const Fmt& f, const uint8_t* row, int64_t o) {
  const int t = L.qtype;
  const int bw = block_weights(t), bb = block_bytes(t);
  for (int64_t b = 0; b < L.cols / bw; ++b) {
    const uint8_t* blk = row + b * bb;
    const int64_t c0 = b * bw;
    uint8_t* sp = L.scales + (c0 / f.unit) * L.unit_stride;
    switch (t) {
      case Q4_0:
      case Q4_1: {
        const int qoff = t == Q4_0 ? 2 : 4;
        put_u16(sp, o, load_u16(blk));
        if (t == Q4_1) put_u16(sp + 2 * L.rows_p, o, load_u16(blk + 2));
        for (int j = 0; j < 32; ++j) {
          const int q = j < 16 ? blk[qoff + j] & 15 : blk[qoff + j - 16] >> 4;
          put_quant(L, f, c0 + j, o, q);
        }
        break;
      }
      case Q5_0:
      case Q5_1: {
        const int hoff = t == Q5_0 ? 2 : 4;
        put_u16(sp, o, load_u16(blk));
        if (t == Q5_1) put_u16(sp + 2 * L.rows_p, o, load_u16(blk + 2));
        const uint32_t qh = load_u32(blk + hoff);
        for (int j = 0; j < 32; ++j) {
          const int lo = j < 16 ? blk[hoff + 4 + j] & 15 : blk[hoff + 4 + j - 16] >> 4;
          put_quant(L, f, c0 + j, o, lo | (int)(((qh >> j) & 1) << 4));
        }
        break;
      }
      case Q8_0: {
        put_u16(sp, o, load_u16(blk));
        for (int j = 0; j < 32; ++j) put_quant(L, f, c0 + j, o, (int)(int8_t)blk[2 + j] + 128);
        break;
      }
      case Q4_K:
      case Q5_K: {
        put_u16(sp, o, load_u16(blk));
        put_u16(sp + 2 * L.rows_p, o, load_u16(blk + 2));
        for (int p = 0; p < 12; ++p) sp[4 * L.rows_p + p * L.rows_p + o] = blk[4 + p];
        const uint8_t* qs = blk + (t == Q4_K ? 16 : 48);
        for (int sb = 0; sb < 8; ++sb)
          for (int l = 0; l < 32; ++l) {
            int q = (qs[32 * (sb / 2) + l] >> (4 * (sb & 1))) & 15;
            if (t == Q5_K) q |= ((blk[16 + l] >> sb) & 1) << 4;
            put_quant(L, f, c0 + 32 * sb + l, o, q);
          }
        break;
      }
      case Q6_K: {
        put_u16(sp, o, load_u16(blk + 208));
        for (int p = 0; p < 16; ++p) sp[2 * L.rows_p + p * L.rows_p + o] = blk[192 + p];
        for (int h = 0; h < 2; ++h)
          for (int g = 0; g < 4; ++g)
            for (int l = 0; l < 32; ++l) {
              const uint8_t lb = blk[64 * h + 32 * (g & 1) + l];
              const int lo = g < 2 ? (lb & 15) : (lb >> 4);
              const int hi = (blk[128 + 32 * h + l] >> (2 * g)) & 3;
              put_quant(L, f, c0 + 128 * h + 32 * g + l, o, lo | (hi << 4));
            }
        break;
      }
      default: break;
    }
  }
}

Layout layout_of(const at::Tensor& recs, const at::Tensor& scales, int64_t qtype, int64_t rows, int64_t cols) {
  const Fmt f = fmt_of((int)qtype);
  TORCH_CHECK(f.tile_bytes > 0, "sparsetier._C: no column layout for GGML type ", qtype);
  Layout L;
  L.qtype = (int)qtype;
  L.rows = rows;
  L.cols = cols;
  L.rows_p = (rows + kTile - 1) / kTile * kTile;
  L.tiles = L.rows_p / kTile;
  L.rec = L.tiles * f.tile_bytes;
  L.tb = f.tile_bytes;
  L.bt = std::min<int64_t>(kBlockTiles, L.tiles);
  L.blocks = (L.tiles + L.bt - 1) / L.bt;
  L.unit_stride = (int64_t)f.scale_bytes * L.rows_p;
  TORCH_CHECK(cols % f.unit == 0, "sparsetier._C: ", cols, " columns is not a multiple of ", f.unit);
  TORCH_CHECK(recs.is_contiguous() && recs.scalar_type() == at::kByte && recs.numel() == cols * L.rec,
              "sparsetier._C: column records must be ", cols * L.rec, " contiguous bytes");
  TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kByte &&
                  scales.numel() == cols / f.unit * L.unit_stride,
              "sparsetier._C: column scales must be contiguous uint8 [", cols / f.unit, ", ", L.unit_stride, "]");
  L.recs = recs.data_ptr<uint8_t>();
  L.scales = scales.data_ptr<uint8_t>();
  return L;
}

std::vector<at::Tensor> to_columns(const at::Tensor& data, int64_t qtype, int64_t rows, int64_t cols) {
  const Fmt f = fmt_of((int)qtype);
  TORCH_CHECK(f.tile_bytes > 0, "sparsetier._C.to_columns: no column layout for GGML type ", qtype);
  TORCH_CHECK(data.device().is_cpu() && data.dim() == 2 && data.size(0) == rows && data.stride(1) == 1 &&
                  data.scalar_type() == at::kByte,
              "sparsetier._C.to_columns: weight data must be uint8 [rows, row_bytes]");
  TORCH_CHECK(data.size(1) == cols / block_weights((int)qtype) * block_bytes((int)qtype),
              "sparsetier._C.to_columns: row bytes do not match the type");
  const int64_t rows_p = (rows + kTile - 1) / kTile * kTile;
  at::Tensor recs = at::zeros({cols * (rows_p / kTile) * f.tile_bytes}, at::kByte);
  at::Tensor scales = at::zeros({cols / f.unit, (int64_t)f.scale_bytes * rows_p}, at::kByte);
  const Layout L = layout_of(recs, scales, qtype, rows, cols);
  const uint8_t* src = data.data_ptr<uint8_t>();
  const int64_t stride = data.stride(0);
  {
    pybind11::gil_scoped_release nogil;
    // One tile of outputs per task: tiles own disjoint bytes of every record.
    at::parallel_for(0, L.tiles, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (int64_t o = t * kTile; o < std::min(rows, (t + 1) * kTile); ++o) convert_row(L, f, src + o * stride, o);
    });
  }
  return {recs, scales};
}

// ---- decoding (exact mode, dequantize) -----------------------------------------------------

inline float f16_at(const uint8_t* plane, int64_t o) { return half_to_float(load_u16(plane + 2 * o)); }

// Stored quant of output o' (0..63) in a channel's tile.
inline int quant_at(int t, const uint8_t* base, int op) {
  const int half = op >> 5, s = slot_of(op & 31);
  if (t == Q8_0) return base[half * 32 + s];
  int q = (base[s] >> (4 * half)) & 15;
  if (t == Q5_0 || t == Q5_1 || t == Q5_K) q |= ((base[32 + half * 4 + s / 8] >> (s % 8)) & 1) << 4;
  if (t == Q6_K) q |= ((base[32 + (s & 15)] >> (2 * ((s >> 4) + 2 * half))) & 3) << 4;
  return q;
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j for output o from the byte planes.
inline void k_scale_at(const uint8_t* P, int64_t rp, int64_t o, int j, int& sc, int& mn) {
  auto p = [&](int i) { return (int)P[i * rp + o]; };
  if (j < 4) {
    sc = p(j) & 63, mn = p(j + 4) & 63;
  } else {
    sc = (p(j + 4) & 15) | ((p(j - 4) >> 2) & 0x30);
    mn = (p(j + 4) >> 4) | ((p(j) >> 2) & 0x30);
  }
}

// Per output of sub-block `sb`: w = a * (float)(q - zero) - b (k-quants: a*q - b), with the
// reference's float operations: exact mode and dequantize use this.
struct Affine {
  float a[kTile], b[kTile];
};

void affine_of(const Layout& L, const Fmt& f, int64_t sb, int64_t t, Affine& A) {
  const int64_t unit = sb * f.sub / f.unit;
  const uint8_t* sp = L.scales + unit * L.unit_stride;
  const int64_t rp = L.rows_p;
  for (int i = 0; i < kTile; ++i) {
    const int64_t o = t * kTile + i;
    switch (L.qtype) {
      case Q4_0: case Q5_0: case Q8_0:
        A.a[i] = f16_at(sp, o), A.b[i] = 0.f;
        break;
      case Q4_1: case Q5_1:
        A.a[i] = f16_at(sp, o), A.b[i] = -f16_at(sp + 2 * rp, o);
        break;
      case Q4_K: case Q5_K: {
        int sc, mn;
        k_scale_at(sp + 4 * rp, rp, o, (int)(sb % 8), sc, mn);
        A.a[i] = f16_at(sp, o) * (float)sc, A.b[i] = f16_at(sp + 2 * rp, o) * (float)mn;
        break;
      }
      case Q6_K:
        A.a[i] = f16_at(sp, o) * (float)(int8_t)sp[2 * rp + (sb % 16) * rp + o], A.b[i] = 0.f;
        break;
      default: break;
    }
  }
}

// The weight value exactly as the reference dequantizer computes it.
inline float weight_of(int t, const Fmt& f, const Affine& A, int i, int q) {
  switch (t) {
    case Q4_1: case Q5_1: return A.a[i] * (float)q - A.b[i];  // d*q + m (b = -m, exact negation)
    case Q4_K: case Q5_K: return A.a[i] * (float)q - A.b[i];
    case Q8_0: return A.a[i] * (float)(q - 128);
    default: return A.a[i] * (float)(q - f.zero);
  }
}

at::Tensor col_dequantize(const at::Tensor& recs, const at::Tensor& scales, int64_t qtype, int64_t rows, int64_t cols,
                          int64_t c0, int64_t c1, bool bf16) {
  const Layout L = layout_of(recs, scales, qtype, rows, cols);
  const Fmt f = fmt_of((int)qtype);
  TORCH_CHECK(0 <= c0 && c0 <= c1 && c1 <= cols && c0 % f.sub == 0, "sparsetier._C.col_dequantize: bad channel range");
  at::Tensor out = at::empty({c1 - c0, rows}, bf16 ? at::kBFloat16 : at::kFloat);
  float* of = bf16 ? nullptr : out.data_ptr<float>();
  uint16_t* ob = bf16 ? (uint16_t*)out.data_ptr() : nullptr;
  {
    pybind11::gil_scoped_release nogil;
    const int64_t nsub = (c1 - c0 + f.sub - 1) / f.sub;
    at::parallel_for(0, nsub, 1, [&](int64_t b, int64_t e) {
      Affine A;
      for (int64_t s = b; s < e; ++s) {
        const int64_t sb = c0 / f.sub + s;
        for (int64_t t = 0; t < L.tiles; ++t) {
          affine_of(L, f, sb, t, A);
          const int n = (int)std::min<int64_t>(kTile, rows - t * kTile);
          for (int64_t c = sb * f.sub; c < std::min(c1, (sb + 1) * f.sub); ++c) {
            const uint8_t* base = tile_ptr(L, c, t);
            const int64_t at_ = (c - c0) * rows + t * kTile;
            for (int i = 0; i < n; ++i) {
              const float w = weight_of(L.qtype, f, A, i, quant_at(L.qtype, base, i));
              if (bf16)
                ob[at_ + i] = float_to_bf16(w);
              else
                of[at_ + i] = w;
            }
          }
        }
      }
    });
  }
  return out;
}

// ---- activations: which channels are active, and their int8 values ----------------------

struct Prep {
  // Active channels, grouped by sub-block, padded to quads (pad: a repeated channel, x = 0).
  std::vector<int32_t> ch;       // channel index per slot
  std::vector<int8_t> xq;        // quantized activation per slot (fast mode)
  std::vector<float> xf;         // float activation per slot (exact mode)
  std::vector<int32_t> sub_start, sub_count;  // slot range of each sub-block (count: padded)
  std::vector<int32_t> sub_bsum;  // sum of xq over the sub-block's active channels
  std::vector<float> unit_sx;     // activation scale per unit
  std::vector<uint8_t> unit_any;  // unit has an active channel
  int64_t n_active = 0;
};

// active: |x| > thr (thr < 0: every channel), or the listed channels when index is given.
void prepare(const float* x, int64_t cols, const Fmt& f, float thr, const int64_t* index, int64_t n_index,
             bool exact, Prep& P) {
  const int64_t nsub = cols / f.sub, nunit = cols / f.unit, subs_per_unit = f.unit / f.sub;
  P.ch.clear(), P.xq.clear(), P.xf.clear();
  P.sub_start.assign(nsub, 0), P.sub_count.assign(nsub, 0), P.sub_bsum.assign(nsub, 0);
  P.unit_sx.assign(nunit, 0.f), P.unit_any.assign(nunit, 0);
  P.n_active = 0;
  std::vector<uint8_t> mask;
  if (index) {
    mask.assign(cols, 0);
    for (int64_t i = 0; i < n_index; ++i) mask[index[i]] = 1;
  }
  auto active = [&](int64_t c) { return index ? mask[c] != 0 : (thr < 0.f || std::fabs(x[c]) > thr); };
  for (int64_t u = 0; u < nunit; ++u) {
    float amax = 0.f;
    for (int64_t c = u * f.unit; c < (u + 1) * f.unit; ++c)
      if (active(c)) amax = std::max(amax, std::fabs(x[c]));
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    P.unit_sx[u] = amax / 127.f;
    for (int64_t s = u * subs_per_unit; s < (u + 1) * subs_per_unit; ++s) {
      P.sub_start[s] = (int32_t)P.ch.size();
      int n = 0, bsum = 0;
      for (int64_t c = s * f.sub; c < (s + 1) * f.sub; ++c) {
        if (!active(c)) continue;
        const int q = (int)std::nearbyint(x[c] * id);
        P.ch.push_back((int32_t)c);
        P.xq.push_back((int8_t)std::clamp(q, -127, 127));
        P.xf.push_back(x[c]);
        bsum += P.xq.back();
        ++n;
      }
      if (n == 0) continue;
      P.n_active += n;
      P.unit_any[u] = 1;
      const int32_t pad_ch = P.ch[P.sub_start[s]];
      for (; n % 4 != 0; ++n) P.ch.push_back(pad_ch), P.xq.push_back(0), P.xf.push_back(0.f);
      P.sub_count[s] = n;
      P.sub_bsum[s] = bsum;
    }
  }
  (void)exact;
}

// ---- kernels ------------------------------------------------------------------------------

struct Job {
  Layout L;
  Fmt f;
  Prep* P;
};

// A piece of work: the sub-blocks [s0, s1) of layout block `blk`, added into y ([rows_p]).
// Exact mode (and the portable fallback of fast mode's semantics).
void exact_piece(const Job& J, int64_t blk, int64_t s0, int64_t s1, float* yout) {
  const Layout& L = J.L;
  const Fmt& f = J.f;
  const Prep& P = *J.P;
  Affine A;
  for (int64_t t = blk * L.bt; t < blk * L.bt + block_tiles(L, blk); ++t) {
    float* y = yout + t * kTile;
    for (int64_t s = s0; s < s1; ++s) {
      if (P.sub_count[s] == 0) continue;
      affine_of(L, f, s, t, A);
      for (int32_t k = P.sub_start[s]; k < P.sub_start[s] + P.sub_count[s]; ++k) {
        const float xv = P.xf[k];
        if (xv == 0.f) continue;  // padding
        const uint8_t* base = tile_ptr(L, P.ch[k], t);
        for (int i = 0; i < kTile; ++i)
          y[i] = __builtin_fmaf(xv, weight_of(L.qtype, f, A, i, quant_at(L.qtype, base, i)), y[i]);
      }
    }
  }
}

// Fast mode, portable: integer dot products per output, scaled per unit like the SIMD path.
void fast_piece_scalar(const Job& J, int64_t blk, int64_t s0, int64_t s1, float* yout) {
  const Layout& L = J.L;
  const Fmt& f = J.f;
  const Prep& P = *J.P;
  const int64_t rp = L.rows_p, subs_per_unit = f.unit / f.sub;
  for (int64_t t = blk * L.bt; t < blk * L.bt + block_tiles(L, blk); ++t) {
    float* y = yout + t * kTile;
    for (int64_t u = s0 / subs_per_unit; u * subs_per_unit < s1; ++u) {
      if (!P.unit_any[u]) continue;
      const uint8_t* sp = L.scales + u * L.unit_stride;
      const float sx = P.unit_sx[u];
      for (int i = 0; i < kTile; ++i) {
        const int64_t o = t * kTile + i;
        int64_t acc = 0, accm = 0;
        for (int64_t s = std::max(s0, u * subs_per_unit); s < std::min(s1, (u + 1) * subs_per_unit); ++s) {
          if (P.sub_count[s] == 0) continue;
          int64_t dot = 0;
          for (int32_t k = P.sub_start[s]; k < P.sub_start[s] + P.sub_count[s]; ++k)
            dot += (int64_t)quant_at(L.qtype, tile_ptr(L, P.ch[k], t), i) * P.xq[k];
          if (L.qtype == Q4_K || L.qtype == Q5_K) {
            int sc, mn;
            k_scale_at(sp + 4 * rp, rp, o, (int)(s % 8), sc, mn);
            acc += sc * dot, accm += (int64_t)mn * P.sub_bsum[s];
          } else if (L.qtype == Q6_K) {
            const int sc = (int8_t)sp[2 * rp + (s % 16) * rp + o];
            acc += sc * dot, accm += (int64_t)sc * P.sub_bsum[s];
          } else {
            acc += dot, accm += P.sub_bsum[s];
          }
        }
        const float d = f16_at(sp, o);
        switch (L.qtype) {
          case Q4_K: case Q5_K:
            y[i] += (float)acc * (d * sx) - (float)accm * (f16_at(sp + 2 * rp, o) * sx);
            break;
          case Q6_K: y[i] += (float)(acc - 32 * accm) * (d * sx); break;
          case Q4_1: case Q5_1:
            y[i] += (float)acc * (d * sx) + f16_at(sp + 2 * rp, o) * (sx * (float)accm);
            break;
          default: y[i] += (float)(acc - (int64_t)f.zero * accm) * (d * sx); break;
        }
      }
    }
  }
}

#if defined(ST_VNNI) && defined(__AVX512VBMI__)
#define ST_COL_SIMD 1

// 4 channels' tile bytes -> r[k]: int32 lane L holds the 4 channels' bytes of slot(8k + L).
static inline void interleave4(__m256i a, __m256i b, __m256i c, __m256i d, __m256i* r) {
  const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
  const __m256i cd_lo = _mm256_unpacklo_epi8(c, d), cd_hi = _mm256_unpackhi_epi8(c, d);
  r[0] = _mm256_unpacklo_epi16(ab_lo, cd_lo);
  r[1] = _mm256_unpackhi_epi16(ab_lo, cd_lo);
  r[2] = _mm256_unpacklo_epi16(ab_hi, cd_hi);
  r[3] = _mm256_unpackhi_epi16(ab_hi, cd_hi);
}

static inline __m256i ld(const uint8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }

// Quants of a quad of channels for one tile -> q[8] (u8 x 4 channels per int32 lane);
// q[k] covers outputs 8k..8k+7 of the tile.
template <int T>
static inline void load_quad(const uint8_t* const* p, __m256i* q) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (T == Q4_0 || T == Q4_1 || T == Q4_K) {
    __m256i r[4];
    interleave4(ld(p[0]), ld(p[1]), ld(p[2]), ld(p[3]), r);
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_and_si256(r[k], m4);
      q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(r[k], 4), m4);
    }
  } else if constexpr (T == Q8_0) {
    interleave4(ld(p[0]), ld(p[1]), ld(p[2]), ld(p[3]), q);
    interleave4(ld(p[0] + 32), ld(p[1] + 32), ld(p[2] + 32), ld(p[3] + 32), q + 4);
  } else if constexpr (T == Q5_0 || T == Q5_1 || T == Q5_K) {
    const __m256i c16 = _mm256_set1_epi8(16);
    __m256i lo[4], hi[4];
    for (int i = 0; i < 4; ++i) {
      const __m256i raw = ld(p[i]);
      lo[i] = _mm256_and_si256(raw, m4);
      hi[i] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
      lo[i] = _mm256_mask_add_epi8(lo[i], (__mmask32)load_u32(p[i] + 32), lo[i], c16);
      hi[i] = _mm256_mask_add_epi8(hi[i], (__mmask32)load_u32(p[i] + 36), hi[i], c16);
    }
    interleave4(lo[0], lo[1], lo[2], lo[3], q);
    interleave4(hi[0], hi[1], hi[2], hi[3], q + 4);
  } else {  // Q6_K
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const __m256i sh_lo = _mm256_setr_epi16(4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m256i sh_hi = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m256i lo[4], hi[4];
    for (int i = 0; i < 4; ++i) {
      const __m256i raw = ld(p[i]);
      const __m256i hb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(p[i] + 32)));
      lo[i] = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(_mm256_sllv_epi16(hb, sh_lo), m30));
      hi[i] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                              _mm256_and_si256(_mm256_srlv_epi16(hb, sh_hi), m30));
    }
    interleave4(lo[0], lo[1], lo[2], lo[3], q);
    interleave4(hi[0], hi[1], hi[2], hi[3], q + 4);
  }
}

// vpermb indices: int32 lane L of output vector k (mod 4) takes source byte 8k + L at bytes
// 0 and 2 (and, for vpermt2b, the sign byte 32 + 8k + L at bytes 1 and 3).
struct ScaleIdx {
  __m256i dup[4];
  ScaleIdx() {
    for (int k = 0; k < 4; ++k) {
      alignas(32) uint8_t b[32];
      for (int l = 0; l < 8; ++l) {
        b[4 * l + 0] = b[4 * l + 2] = (uint8_t)(8 * k + l);
        b[4 * l + 1] = b[4 * l + 3] = (uint8_t)(32 + 8 * k + l);
      }
      dup[k] = _mm256_load_si256((const __m256i*)b);
    }
  }
};
inline const ScaleIdx kIdx;

// Each active channel's part of a block is one contiguous run of 1-2 KB; the runs of the
// channels kPrefetchQuads quads ahead are software-prefetched into L2 (the hardware prefetcher
// alone, restarted at every run, left reads latency-bound at ~10 GB/s against ~30).
#ifndef ST_COL_PF_HINT
#define ST_COL_PF_HINT _MM_HINT_T1
#endif
#ifndef ST_COL_PF_QUADS
#define ST_COL_PF_QUADS 4
#endif
constexpr int kPrefetchQuads = ST_COL_PF_QUADS;

template <int T>
void fast_piece_simd(const Job& J, int64_t blk, int64_t s0, int64_t s1, float* yout) {
  constexpr bool KQ = T == Q4_K || T == Q5_K || T == Q6_K;
  constexpr int TB = T == Q8_0 ? 64 : (T == Q5_0 || T == Q5_1 || T == Q5_K) ? 40 : T == Q6_K ? 48 : 32;
  const Layout& L = J.L;
  const Fmt& f = J.f;
  const Prep& P = *J.P;
  const int64_t rp = L.rows_p, subs_per_unit = f.unit / f.sub;
  alignas(64) __m256i acc[kBlockTiles][8], accm[kBlockTiles][8], S[kBlockTiles][8];
  const int64_t b0 = blk * L.bt;  // first tile
  const int nt = (int)block_tiles(L, blk);
  const int64_t run = (int64_t)nt * TB;  // one channel's bytes in this block
  const uint8_t* base = block_base(L, blk);
  __m256 yv[kBlockTiles][8];
  for (int t = 0; t < nt; ++t)
    for (int k = 0; k < 8; ++k) yv[t][k] = _mm256_setzero_ps();
  for (int64_t u = s0 / subs_per_unit; u * subs_per_unit < s1; ++u) {
    if (!P.unit_any[u]) continue;
    const uint8_t* sp = L.scales + u * L.unit_stride;
    const float sx = P.unit_sx[u];
    for (int t = 0; t < nt; ++t)
      for (int k = 0; k < 8; ++k) acc[t][k] = accm[t][k] = _mm256_setzero_si256();
    for (int64_t s = std::max(s0, u * subs_per_unit); s < std::min(s1, (u + 1) * subs_per_unit); ++s) {
      const int n = P.sub_count[s];
      if (n == 0) continue;
      const int32_t* ch = P.ch.data() + P.sub_start[s];
      const int8_t* xq = P.xq.data() + P.sub_start[s];
      const __m256i bs = _mm256_set1_epi32(KQ ? (P.sub_bsum[s] & 0xFFFF) : P.sub_bsum[s]);
      if constexpr (KQ) {
        // This sub-block's scales as i16 pairs [s, s] per output lane (mins [m, 0]); the
        // min / offset term sum_j scale_j * bsum_j goes straight into accm.
        const int j = (int)(s % (T == Q6_K ? 16 : 8));
        for (int t = 0; t < nt; ++t) {
          const int64_t o0 = (b0 + t) * kTile;
          if constexpr (T == Q6_K) {
            const uint8_t* pl = sp + 2 * rp + j * rp + o0;
            for (int h = 0; h < 2; ++h) {
              const __m256i sc = ld(pl + 32 * h);
              const __m256i sg = _mm256_cmpgt_epi8(_mm256_setzero_si256(), sc);
              for (int k = 0; k < 4; ++k) {
                S[t][4 * h + k] = _mm256_permutex2var_epi8(sc, kIdx.dup[k], sg);
                accm[t][4 * h + k] = _mm256_dpwssd_epi32(accm[t][4 * h + k], S[t][4 * h + k], bs);
              }
            }
          } else {
            const uint8_t* P8 = sp + 4 * rp + o0;
            auto plane = [&](int i, int h) { return ld(P8 + i * rp + 32 * h); };
            const __m256i m63 = _mm256_set1_epi8(63), m30 = _mm256_set1_epi8(0x30), m15 = _mm256_set1_epi8(15);
            for (int h = 0; h < 2; ++h) {
              __m256i sc, mn;
              if (j < 4) {
                sc = _mm256_and_si256(plane(j, h), m63);
                mn = _mm256_and_si256(plane(j + 4, h), m63);
              } else {
                const __m256i a = plane(j + 4, h);
                sc = _mm256_or_si256(_mm256_and_si256(a, m15),
                                     _mm256_and_si256(_mm256_srli_epi16(plane(j - 4, h), 2), m30));
                mn = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m15),
                                     _mm256_and_si256(_mm256_srli_epi16(plane(j, h), 2), m30));
              }
              for (int k = 0; k < 4; ++k) {
                S[t][4 * h + k] = _mm256_maskz_permutexvar_epi8(0x55555555u, kIdx.dup[k], sc);
                const __m256i M = _mm256_maskz_permutexvar_epi8(0x11111111u, kIdx.dup[k], mn);
                accm[t][4 * h + k] = _mm256_dpwssd_epi32(accm[t][4 * h + k], M, bs);
              }
            }
          }
        }
      } else {
        for (int t = 0; t < nt; ++t)
          for (int k = 0; k < 8; ++k) accm[t][k] = bs;
      }
      // Stream each quad of active channels over the block's tiles. Two quads per pass when
      // there are: one read-modify-write of the L1 sums per 8 channels (the pair's i16
      // products are added before the widening dpwssd; at most 2 x 2 x 63 x 127 < 32767).
      // While tile t of these 8 runs is computed, tile t of the 8 runs kPrefetchQuads quads
      // ahead (in processing order, across sub-blocks) is prefetched: spread over the pass,
      // not in a burst at its start, which stalled on full miss queues (2x slower from DRAM).
      const int64_t n_all = (int64_t)P.ch.size();
      for (int i = 0; i < n; i += 8) {
        const bool two = i + 8 <= n;
        const int64_t gi = P.sub_start[s] + i + 4 * kPrefetchQuads;
        const char* pf[8];
        for (int c = 0; c < 8; ++c)
          pf[c] = (const char*)(base + (int64_t)P.ch[std::min(n_all - 1, gi + c)] * run + TB - 1);
        auto prefetch = [&](int64_t o) __attribute__((always_inline)) {
          for (int c = 0; c < 8; ++c) _mm_prefetch(pf[c] + o, ST_COL_PF_HINT);
        };
        int32_t x4[2] = {0, 0};
        std::memcpy(x4, xq + i, two ? 8 : 4);
        const __m256i xa = _mm256_set1_epi32(x4[0]), xc = _mm256_set1_epi32(x4[1]);
        const uint8_t* a0 = base + (int64_t)ch[i] * run;
        const uint8_t* a1 = base + (int64_t)ch[i + 1] * run;
        const uint8_t* a2 = base + (int64_t)ch[i + 2] * run;
        const uint8_t* a3 = base + (int64_t)ch[i + 3] * run;
        const uint8_t* c0 = two ? base + (int64_t)ch[i + 4] * run : a0;
        const uint8_t* c1 = two ? base + (int64_t)ch[i + 5] * run : a1;
        const uint8_t* c2 = two ? base + (int64_t)ch[i + 6] * run : a2;
        const uint8_t* c3 = two ? base + (int64_t)ch[i + 7] * run : a3;
        if constexpr (T == Q4_0 || T == Q4_1 || T == Q4_K) {
          // 4-bit: interleave the raw bytes (both nibbles at once), then split.
          const __m256i m4 = _mm256_set1_epi8(0x0F);
          for (int t = 0; t < nt; ++t) {
            const int64_t o = (int64_t)t * TB;
            prefetch(o);
            __m256i ra[4], rc[4];
            interleave4(ld(a0 + o), ld(a1 + o), ld(a2 + o), ld(a3 + o), ra);
            interleave4(ld(c0 + o), ld(c1 + o), ld(c2 + o), ld(c3 + o), rc);
            for (int k = 0; k < 4; ++k) {
              const __m256i la = _mm256_and_si256(ra[k], m4), lc = _mm256_and_si256(rc[k], m4);
              const __m256i ha = _mm256_and_si256(_mm256_srli_epi16(ra[k], 4), m4);
              const __m256i hc = _mm256_and_si256(_mm256_srli_epi16(rc[k], 4), m4);
              if constexpr (KQ) {
                const __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(la, xa), _mm256_maddubs_epi16(lc, xc));
                const __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(ha, xa), _mm256_maddubs_epi16(hc, xc));
                acc[t][k] = _mm256_dpwssd_epi32(acc[t][k], pl, S[t][k]);
                acc[t][k + 4] = _mm256_dpwssd_epi32(acc[t][k + 4], ph, S[t][k + 4]);
              } else {
                acc[t][k] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc[t][k], la, xa), lc, xc);
                acc[t][k + 4] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc[t][k + 4], ha, xa), hc, xc);
              }
            }
          }
        } else {
          for (int t = 0; t < nt; ++t) {
            const int64_t o = (int64_t)t * TB;
            prefetch(o);
            const uint8_t* pa[4] = {a0 + o, a1 + o, a2 + o, a3 + o};
            const uint8_t* pc[4] = {c0 + o, c1 + o, c2 + o, c3 + o};
            __m256i q[8], q2[8];
            load_quad<T>(pa, q);
            load_quad<T>(pc, q2);
            if constexpr (KQ) {
              for (int k = 0; k < 8; ++k) {
                const __m256i pr = _mm256_add_epi16(_mm256_maddubs_epi16(q[k], xa), _mm256_maddubs_epi16(q2[k], xc));
                acc[t][k] = _mm256_dpwssd_epi32(acc[t][k], pr, S[t][k]);
              }
            } else {
              for (int k = 0; k < 8; ++k)
                acc[t][k] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc[t][k], q[k], xa), q2[k], xc);
            }
          }
        }
      }
    }
    // Scale this unit's integer sums into the float outputs.
    const __m256 vsx = _mm256_set1_ps(sx);
    for (int t = 0; t < nt; ++t) {
      const uint8_t* dpl = sp + 2 * ((b0 + t) * kTile);
      for (int k = 0; k < 8; ++k) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(dpl + 16 * k)));
        const __m256 dsx = _mm256_mul_ps(d, vsx);
        if constexpr (T == Q4_K || T == Q5_K) {
          const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(dpl + 2 * rp + 16 * k)));
          yv[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][k]), dsx, yv[t][k]);
          yv[t][k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(accm[t][k]), _mm256_mul_ps(dm, vsx), yv[t][k]);
        } else if constexpr (T == Q6_K) {
          const __m256i v = _mm256_sub_epi32(acc[t][k], _mm256_slli_epi32(accm[t][k], 5));
          yv[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), dsx, yv[t][k]);
        } else if constexpr (T == Q4_1 || T == Q5_1) {
          const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(dpl + 2 * rp + 16 * k)));
          yv[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][k]), dsx, yv[t][k]);
          yv[t][k] = _mm256_fmadd_ps(m, _mm256_mul_ps(vsx, _mm256_cvtepi32_ps(accm[t][k])), yv[t][k]);
        } else {
          constexpr int Z = T == Q4_0 ? 8 : T == Q5_0 ? 16 : 128;
          const __m256i v = _mm256_sub_epi32(acc[t][k], _mm256_mullo_epi32(accm[t][k], _mm256_set1_epi32(Z)));
          yv[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), dsx, yv[t][k]);
        }
      }
    }
  }
  for (int t = 0; t < nt; ++t) {
    float* y = yout + (b0 + t) * kTile;
    for (int k = 0; k < 8; ++k) _mm256_storeu_ps(y + 8 * k, _mm256_add_ps(_mm256_loadu_ps(y + 8 * k), yv[t][k]));
  }
}

void fast_piece(const Job& J, int64_t blk, int64_t s0, int64_t s1, float* y) {
  with_block_qtype(J.L.qtype, [&](auto q) { fast_piece_simd<decltype(q)::value>(J, blk, s0, s1, y); });
}
#else
void fast_piece(const Job& J, int64_t blk, int64_t s0, int64_t s1, float* y) { fast_piece_scalar(J, blk, s0, s1, y); }
#endif

// Below this many weight bytes per thread another thread costs more than it saves.
constexpr int64_t kMinBytesPerThread = 32 * 1024;

struct Spec {
  Layout L;
  Fmt f;
  float thr;
  const int64_t* index;
  int64_t n_index;
  const float* bias;
};

// Every job on one activation row x (each job has its own active set); y[j] = [rows_p].
// The work is a list of pieces (job, layout block, active sub-block) in memory order, cut
// into one contiguous range of equal bytes per thread: at sparsity 0 each thread streams one
// range of memory. A thread adds its pieces into its own copy of the outputs; the copies and
// the biases are summed at the end.
void run_row(const float* x, int64_t cols, std::vector<Spec>& specs, std::vector<float*>& ys, bool exact,
             std::vector<Prep>& preps) {
  const size_t m = specs.size();
  std::vector<Job> jobs(m);
  struct Piece {
    int32_t job, blk, sub;
  };
  std::vector<Piece> pieces;
  std::vector<int64_t> at{0};  // cumulative bytes before each piece
  int64_t bytes = 0;
  for (size_t j = 0; j < m; ++j) {
    const Spec& s = specs[j];
    Prep& P = preps[j];
    prepare(x, cols, s.f, s.thr, s.index, s.n_index, exact, P);
    jobs[j] = Job{s.L, s.f, &P};
    int64_t units = 0;
    for (uint8_t a : P.unit_any) units += a;
    bytes += P.n_active * s.L.rec + units * s.L.unit_stride;
    const int64_t subs_per_unit = s.f.unit / s.f.sub, scale_per_sub = s.f.scale_bytes * kTile / subs_per_unit;
    for (int64_t b = 0; b < s.L.blocks; ++b)
      for (int64_t sb = 0; sb < (int64_t)P.sub_count.size(); ++sb) {
        if (P.sub_count[sb] == 0) continue;
        pieces.push_back({(int32_t)j, (int32_t)b, (int32_t)sb});
        at.push_back(at.back() + block_tiles(s.L, b) * (P.sub_count[sb] * s.f.tile_bytes + scale_per_sub));
      }
  }
  g_bytes_read.fetch_add(bytes, std::memory_order_relaxed);
  int64_t rows_total = 0;
  std::vector<int64_t> row_off(m + 1, 0);
  for (size_t j = 0; j < m; ++j) row_off[j + 1] = rows_total += specs[j].L.rows_p;
  const int64_t nthreads = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), (exact ? 8 : 1) * bytes / kMinBytesPerThread));
  std::vector<float> part((size_t)(nthreads * rows_total), 0.f);
  const int64_t total = at.back(), np = (int64_t)pieces.size();
  auto run_part = [&](int64_t p) {
    // Pieces whose first byte falls in this thread's share; runs of one (job, block) at once.
    int64_t k = std::lower_bound(at.begin(), at.end() - 1, total * p / nthreads) - at.begin();
    const int64_t end = std::lower_bound(at.begin(), at.end() - 1, total * (p + 1) / nthreads) - at.begin();
    float* y = part.data() + p * rows_total;
    while (k < std::min(end, np)) {
      const Piece& first = pieces[k];
      int64_t e = k + 1;
      while (e < std::min(end, np) && pieces[e].job == first.job && pieces[e].blk == first.blk) ++e;
      const int64_t s1 = pieces[e - 1].sub + 1;
      if (exact)
        exact_piece(jobs[first.job], first.blk, first.sub, s1, y + row_off[first.job]);
      else
        fast_piece(jobs[first.job], first.blk, first.sub, s1, y + row_off[first.job]);
      k = e;
    }
  };
  if (nthreads == 1) {
    run_part(0);
  } else {
    at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) run_part(p);
    });
  }
  for (size_t j = 0; j < m; ++j) {
    float* y = ys[j];
    const int64_t rows = specs[j].L.rows_p;
    std::copy_n(part.data() + row_off[j], rows, y);
    for (int64_t p = 1; p < nthreads; ++p) {
      const float* q = part.data() + p * rows_total + row_off[j];
      for (int64_t i = 0; i < rows; ++i) y[i] += q[i];
    }
    if (specs[j].bias)
      for (int64_t i = 0; i < specs[j].L.rows; ++i) y[i] += specs[j].bias[i];
  }
}

// y_j = x @ W_j.T (+ b_j) over the active channels of x for each column-layout weight j.
std::vector<at::Tensor> col_linear(const at::Tensor& x_, const std::vector<at::Tensor>& recs,
                                   const std::vector<at::Tensor>& scales, const std::vector<int64_t>& qtypes,
                                   const std::vector<int64_t>& rows, int64_t cols, const std::vector<double>& thresholds,
                                   const std::optional<at::Tensor>& index_, const std::vector<std::optional<at::Tensor>>& biases,
                                   bool exact) {
  const size_t m = recs.size();
  TORCH_CHECK(scales.size() == m && qtypes.size() == m && rows.size() == m && thresholds.size() == m &&
                  (biases.empty() || biases.size() == m),
              "sparsetier._C.col_linear: argument lists differ in length");
  TORCH_CHECK(x_.device().is_cpu() && x_.dim() >= 1 && x_.size(-1) == cols,
              "sparsetier._C.col_linear: activations must be [..., ", cols, "]");
  const at::Tensor x = x_.to(at::kFloat).contiguous();
  const int64_t n = x.numel() / cols;
  at::Tensor index;
  if (index_.has_value()) {
    index = index_->to(at::kLong).contiguous().reshape({-1});
    const int64_t* ip = index.data_ptr<int64_t>();
    for (int64_t i = 0; i < index.numel(); ++i)
      TORCH_CHECK(ip[i] >= 0 && ip[i] < cols, "sparsetier._C.col_linear: channel ", ip[i], " out of range");
  }
  std::vector<Spec> specs(m);
  std::vector<at::Tensor> outs, keep(m);
  for (size_t j = 0; j < m; ++j) {
    specs[j].L = layout_of(recs[j], scales[j], qtypes[j], rows[j], cols);
    specs[j].f = fmt_of((int)qtypes[j]);
    specs[j].thr = (float)thresholds[j];
    specs[j].index = index_.has_value() ? index.data_ptr<int64_t>() : nullptr;
    specs[j].n_index = index_.has_value() ? index.numel() : 0;
    specs[j].bias = nullptr;
    if (!biases.empty() && biases[j].has_value()) {
      keep[j] = biases[j]->to(at::kFloat).contiguous();
      TORCH_CHECK(keep[j].numel() == rows[j], "sparsetier._C.col_linear: bias has ", keep[j].numel(), " values");
      specs[j].bias = keep[j].data_ptr<float>();
    }
    outs.push_back(at::empty({n, specs[j].L.rows_p}, x.options()));
  }
  {
    pybind11::gil_scoped_release nogil;
    std::vector<Prep> preps(m);
    std::vector<float*> ys(m);
    for (int64_t r = 0; r < n; ++r) {
      for (size_t j = 0; j < m; ++j) ys[j] = outs[j].data_ptr<float>() + r * specs[j].L.rows_p;
      run_row(x.data_ptr<float>() + r * cols, cols, specs, ys, exact, preps);
    }
  }
  std::vector<at::Tensor> result;
  for (size_t j = 0; j < m; ++j) {
    at::Tensor y = outs[j];
    if (specs[j].L.rows_p != rows[j]) y = y.narrow(1, 0, rows[j]).contiguous();
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = rows[j];
    result.push_back(y.reshape(shape));
  }
  return result;
}

int64_t col_bytes_read(bool reset) {
  return reset ? g_bytes_read.exchange(0) : g_bytes_read.load();
}

}  // namespace
}  // namespace st

void register_sparse_ops(pybind11::module& m) {
  using pybind11::arg;
  m.def("to_columns", &st::to_columns, "GGML row-major weight -> column records and scale planes", arg("data"),
        arg("qtype"), arg("rows"), arg("cols"));
  m.def("col_dequantize", &st::col_dequantize, "channels [c0, c1) of a column layout as float32/bf16 [n, rows]",
        arg("recs"), arg("scales"), arg("qtype"), arg("rows"), arg("cols"), arg("c0"), arg("c1"), arg("bf16"));
  m.def("col_linear", &st::col_linear, "input-sparse GEMV on column layouts (|x| > threshold, or listed channels)",
        arg("x"), arg("recs"), arg("scales"), arg("qtypes"), arg("rows"), arg("cols"), arg("thresholds"),
        arg("index"), arg("biases"), arg("exact"));
  m.def("col_bytes_read", &st::col_bytes_read, "weight bytes the sparse kernels have read", arg("reset") = false);
}
