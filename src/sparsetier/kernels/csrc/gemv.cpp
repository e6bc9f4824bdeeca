// GEMV / small-batch GEMM on GGML-quantized weights, fast (int8 activations) and exact
// (float32) modes, plus the row-parallel driver shared by linear / linear_multi /
// linear_rows, and the bulk row dequantizers.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "dequant.h"
#include "gemv_fast.h"
#include "gemv_g16.h"
#include "kernels.h"

namespace st {

namespace {

constexpr int kFastTile = 4;   // activation rows per pass over a weight row (fast mode)
constexpr int kExactTile = 8;  // activation rows per pass (exact mode)
constexpr int kRowTile = 4;    // weight rows dequantized together (exact mode)
constexpr int kChunk = 256;    // columns dequantized per step (exact mode): 4 KB buffer

// ---- fast mode -------------------------------------------------------------------------

template <int T, int R>
inline void fast_group(const uint8_t* const* rows, int64_t nb, const QAct& a, int64_t n0, int64_t nt, float* out) {
  switch (nt) {
    case 4: return fast_tile<T, R, 4>(rows, nb, a, n0, out);
    case 3: return fast_tile<T, R, 3>(rows, nb, a, n0, out);
    case 2: return fast_tile<T, R, 2>(rows, nb, a, n0, out);
    default: return fast_tile<T, R, 1>(rows, nb, a, n0, out);
  }
}

constexpr int64_t kIndexAhead = 8;  // listed rows: prefetch distance in rows

// Rows [i0, i1) of a job, one weight row at a time: the row is streamed from memory once
// and later activation tiles re-read it from L1. (Interleaving several rows, i.e. several
// concurrent streams, measured 20-50% slower from DRAM: it defeats the hardware
// prefetcher.)
template <int T>
void fast_rows(const Job& job, int64_t i0, int64_t i1, const QAct& a) {
  const Weight& w = job.w;
  const int64_t n = a.n, nb = w.cols / block_weights(T), row_bytes = nb * block_bytes(T);
  float out[kFastTile];
  for (int64_t i = i0; i < i1; ++i) {
    if (job.index && i + kIndexAhead < i1) {
      // Listed rows (linear_rows: sparse output head, ReLU neurons) are scattered, so the
      // in-row prefetch, which runs past the end of a row into the next one, misses: fetch
      // the whole row kIndexAhead ahead (the head's candidates read at 2x the speed).
      const char* next = (const char*)(w.data + job.index[i + kIndexAhead] * w.row_stride);
      for (int64_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(next + o, 0, 2);
    }
    const uint8_t* row = w.data + (job.index ? job.index[i] : i) * w.row_stride;
    const float bias = job.bias ? job.bias[i] : 0.f;
    for (int64_t n0 = 0; n0 < n; n0 += kFastTile) {
      const int64_t nt = std::min<int64_t>(kFastTile, n - n0);
      fast_group<T, 1>(&row, nb, a, n0, nt, out);
      for (int64_t j = 0; j < nt; ++j) job.y[(n0 + j) * job.ldy + i] = out[j] + bias;
    }
  }
}

// ---- exact mode ------------------------------------------------------------------------

// Weights [c0, c0+len) of `row` as float32: a pointer into the row for F32, else
// dequantized into buf.
template <int T>
inline const float* tile_of(const uint8_t* row, int64_t c0, int64_t len, float* buf) {
  if constexpr (T == F32) {
    return (const float*)row + c0;
  } else if constexpr (T == F16 || T == BF16) {
    convert_run(T, row + 2 * c0, buf, len);
    return buf;
  } else {
    constexpr int BW = (T == Q4_K || T == Q5_K || T == Q6_K) ? QK_K : QK;
    dequant_run<T>(row + c0 / BW * block_bytes(T), buf, len);
    return buf;
  }
}

// acc[j][r] (+)= dot(w[r][0:len], x[j][0:len]) for R weight rows and nt activation rows.
template <int R>
inline void tile_dot(const float* const* w, const float* x, int64_t ldx, int64_t nt, int64_t len, float (*acc)[kRowTile]) {
  for (int64_t j = 0; j < nt; ++j) {
    const float* xj = x + j * ldx;
#if defined(ST_AVX512)
    __m512 a0[R], a1[R];
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    int64_t v = 0;
    for (; v + 32 <= len; v += 32) {
      const __m512 x0 = _mm512_loadu_ps(xj + v), x1 = _mm512_loadu_ps(xj + v + 16);
      for (int r = 0; r < R; ++r) {
        a0[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w[r] + v), x0, a0[r]);
        a1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w[r] + v + 16), x1, a1[r]);
      }
    }
    float tail[R];
    for (int r = 0; r < R; ++r) tail[r] = 0.f;
    for (; v < len; ++v)
      for (int r = 0; r < R; ++r) tail[r] = __builtin_fmaf(w[r][v], xj[v], tail[r]);
    for (int r = 0; r < R; ++r) acc[j][r] += _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r])) + tail[r];
#elif defined(ST_AVX2)
    __m256 a0[R], a1[R];
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    int64_t v = 0;
    for (; v + 16 <= len; v += 16) {
      const __m256 x0 = _mm256_loadu_ps(xj + v), x1 = _mm256_loadu_ps(xj + v + 8);
      for (int r = 0; r < R; ++r) {
        a0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + v), x0, a0[r]);
        a1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + v + 8), x1, a1[r]);
      }
    }
    float tail[R];
    for (int r = 0; r < R; ++r) tail[r] = 0.f;
    for (; v < len; ++v)
      for (int r = 0; r < R; ++r) tail[r] = __builtin_fmaf(w[r][v], xj[v], tail[r]);
    for (int r = 0; r < R; ++r) acc[j][r] += hsum(_mm256_add_ps(a0[r], a1[r])) + tail[r];
#else
    for (int r = 0; r < R; ++r) {
      float s = 0.f;
      for (int64_t v = 0; v < len; ++v) s += w[r][v] * xj[v];
      acc[j][r] += s;
    }
#endif
  }
}

template <int T, int R>
void exact_group(const Job& job, int64_t i0, const float* x, int64_t n, int64_t k) {
  const Weight& w = job.w;
  alignas(64) float buf[R][kChunk];
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w.data + (job.index ? job.index[i0 + r] : i0 + r) * w.row_stride;
  for (int64_t n0 = 0; n0 < n; n0 += kExactTile) {
    const int64_t nt = std::min<int64_t>(kExactTile, n - n0);
    float acc[kExactTile][kRowTile] = {};
    for (int64_t c0 = 0; c0 < k; c0 += kChunk) {
      const int64_t len = std::min<int64_t>(kChunk, k - c0);
      const float* tp[R];
      for (int r = 0; r < R; ++r) tp[r] = tile_of<T>(rows[r], c0, len, buf[r]);
      tile_dot<R>(tp, x + n0 * k + c0, k, nt, len, acc);
    }
    for (int64_t j = 0; j < nt; ++j)
      for (int r = 0; r < R; ++r)
        job.y[(n0 + j) * job.ldy + i0 + r] = acc[j][r] + (job.bias ? job.bias[i0 + r] : 0.f);
  }
}

template <int T>
void exact_rows(const Job& job, int64_t i0, int64_t i1, const float* x, int64_t n, int64_t k) {
  int64_t i = i0;
  for (; i + kRowTile <= i1; i += kRowTile) exact_group<T, kRowTile>(job, i, x, n, k);
  switch (i1 - i) {
    case 3: exact_group<T, 3>(job, i, x, n, k); break;
    case 2: exact_group<T, 2>(job, i, x, n, k); break;
    case 1: exact_group<T, 1>(job, i, x, n, k); break;
    default: break;
  }
}

// ---- dispatch --------------------------------------------------------------------------

// Whether a fast-mode product of n activation rows takes the 16-row kernels of gemv_g16.h.
// For one activation row the one-row kernels win (decode, measured: Gemma 3 86 vs 72 tok/s,
// Qwen2.5-1.5B 27.6 vs 24.2): they stream one weight row at a time with no transposition,
// and a single activation row leaves the multiply ports idle anyway.
bool use_g16(int t, int64_t n, bool exact) {
#if defined(ST_VNNI)
  if (exact || is_float_type(t)) return false;
  static const int64_t forced = [] {
    const char* e = std::getenv("SPARSETIER_G16_MIN_N");
    return e ? (int64_t)std::atoll(e) : (int64_t)-1;
  }();
  if (forced >= 0) return n >= forced;
  return n >= 2;
#else
  (void)t, (void)n, (void)exact;
  return false;
#endif
}

template <int T>
void fast_range(const Job& job, int64_t i0, int64_t i1, const QAct& a, bool g16) {
#if defined(ST_VNNI)
  if (g16) return g16::rows<T>(job, i0, i1, a);
#endif
  (void)g16;
  fast_rows<T>(job, i0, i1, a);
}

void run_range(const Job& job, int64_t i0, int64_t i1, const float* x, int64_t n, int64_t k, bool exact,
               const QAct& a32, const QAct& ak) {
  const int t = job.w.qtype;
  if (exact || is_float_type(t)) {
    return with_qtype(t, [&](auto q) { exact_rows<decltype(q)::value>(job, i0, i1, x, n, k); });
  }
  const bool g16 = use_g16(t, n, exact);
  with_block_qtype(t, [&](auto q) {
    constexpr int T = decltype(q)::value;
    fast_range<T>(job, i0, i1, is_kquant(T) ? ak : a32, g16);
  });
}

int64_t row_bytes_of(const Weight& w) { return w.cols / block_weights(w.qtype) * block_bytes(w.qtype); }

// Below this much work (weight bytes, scaled by the activation rows) per thread, another
// thread costs more to wake than it saves.
constexpr int64_t kMinBytesPerThread = 48 * 1024;

}  // namespace

// One input as the jobs with one threshold see it: x with |x| <= threshold zeroed (activation
// sparsity on the dense GEMV), quantized once for every job that needs each format.
struct Input {
  float threshold = -1.f;
  std::vector<float> masked;  // empty: x itself
  QAct a32, ak;
  const float* x = nullptr;
};

void run_jobs(const float* x, int64_t n, int64_t k, std::vector<Job>& jobs, bool exact) {
  // Per calling thread, reused across calls; the worker threads must see the caller's
  // buffers, so the lambdas below use these references, never the thread_locals.
  thread_local std::vector<Input> tl_inputs;
  std::vector<Input>& inputs = tl_inputs;
  std::vector<size_t> input_of(jobs.size());
  size_t used = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const float t = jobs[j].threshold < 0.f ? -1.f : jobs[j].threshold;
    size_t i = 0;
    while (i < used && inputs[i].threshold != t) ++i;
    if (i == used) {
      if (inputs.size() <= used) inputs.emplace_back();
      Input& in = inputs[used++];
      in.threshold = t;
      in.x = x;
      if (t >= 0.f) {
        in.masked.resize((size_t)(n * k));
        for (int64_t e = 0; e < n * k; ++e) in.masked[e] = std::fabs(x[e]) > t ? x[e] : 0.f;
        in.x = in.masked.data();
      }
      bool need32 = false, needk = false;
      for (size_t q = j; q < jobs.size(); ++q) {
        const float tq = jobs[q].threshold < 0.f ? -1.f : jobs[q].threshold;
        if (tq != t || exact || is_float_type(jobs[q].w.qtype)) continue;
        (is_kquant(jobs[q].w.qtype) ? needk : need32) = true;
      }
      if (need32) quantize_act_q8_32(in.x, n, k, in.a32);
      if (needk) quantize_act_q8_k(in.x, n, k, in.ak);
    }
    input_of[j] = i;
  }

  // Split the rows of all jobs by bytes of weights, one contiguous range per thread, so
  // each thread streams its part of memory sequentially. The 16-row kernels take whole
  // groups of 16 rows (units); the others single rows.
  std::vector<int64_t> rb(jobs.size()), unit(jobs.size()), start(jobs.size() + 1, 0);
  int64_t total = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    unit[j] = use_g16(jobs[j].w.qtype, n, exact) ? 16 : 1;
    rb[j] = std::max<int64_t>(1, row_bytes_of(jobs[j].w)) * unit[j];
    start[j + 1] = start[j] + (jobs[j].n_out + unit[j] - 1) / unit[j] * rb[j];
  }
  total = start[jobs.size()];
  if (total == 0) return;
  const int64_t work = total * (exact ? 2 + n : std::max<int64_t>(1, n / 2));
  const int64_t nthreads = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), work / kMinBytesPerThread));

  auto run_part = [&](int64_t part) {
    const int64_t lo = total * part / nthreads, hi = total * (part + 1) / nthreads;
    for (size_t j = 0; j < jobs.size(); ++j) {
      const int64_t b = std::max(lo, start[j]), e = std::min(hi, start[j + 1]);
      if (b >= e) continue;
      // A unit belongs to the part that holds its first byte.
      const int64_t i0 = (b - start[j] + rb[j] - 1) / rb[j] * unit[j];
      const int64_t i1 = std::min(jobs[j].n_out, (e - start[j] + rb[j] - 1) / rb[j] * unit[j]);
      const Input& in = inputs[input_of[j]];
      if (i0 < i1) run_range(jobs[j], i0, i1, in.x, n, k, exact, in.a32, in.ak);
    }
  };
  if (nthreads == 1) {
    run_part(0);
  } else {
    at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) run_part(p);
    });
  }
}

// ---- bulk dequantize ---------------------------------------------------------------------

namespace {

template <int T>
void dequant_row(const uint8_t* row, int64_t cols, float* out) {
  if constexpr (T == F32 || T == F16 || T == BF16)
    convert_run(T, row, out, cols);
  else
    dequant_run<T>(row, out, cols);
}

using RowFn = void (*)(const uint8_t*, int64_t, float*);

RowFn row_fn(int t) {
  return with_qtype(t, [](auto q) -> RowFn { return dequant_row<decltype(q)::value>; });
}

// float32 -> bfloat16 (round to nearest even), 8 at a time where possible.
void to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(ST_AVX512) && defined(__AVX512BF16__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i*)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
#endif
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

template <class F>
void parallel_rows(int64_t n_rows, int64_t row_cost, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(1, row_cost));
  if (n_rows <= grain) {
    f(0, n_rows);
  } else {
    at::parallel_for(0, n_rows, grain, f);
  }
}

}  // namespace

void dequantize_rows(const Weight& w, const int64_t* index, int64_t n_rows, float* out) {
  RowFn fn = row_fn(w.qtype);
  parallel_rows(n_rows, w.cols * 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = index ? index[i] : i;
      fn(w.data + r * w.row_stride, w.cols, out + i * w.cols);
    }
  });
}

void dequantize_rows_bf16(const Weight& w, const int64_t* index, int64_t n_rows, uint16_t* out) {
  RowFn fn = row_fn(w.qtype);
  parallel_rows(n_rows, w.cols * 4, [&](int64_t b, int64_t e) {
    std::vector<float> tmp((size_t)w.cols);
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = index ? index[i] : i;
      fn(w.data + r * w.row_stride, w.cols, tmp.data());
      to_bf16(tmp.data(), out + i * w.cols, w.cols);
    }
  });
}

const char* simd_level() {
#if defined(ST_VNNI)
  return "avx512-vnni";
#elif defined(ST_AVX512)
  return "avx512";
#elif defined(ST_AVX2)
  return "avx2";
#else
  return "scalar";
#endif
}

}  // namespace st
