// Internal interface between the kernel files (raw pointers, no torch types) and the
// Python bindings (bindings.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"

namespace st {

// One weight matrix as the kernels see it: `rows` rows of `row_bytes` bytes each (GGML
// blocks along the input dimension `cols`; for float types the elements themselves).
struct Weight {
  const uint8_t* data = nullptr;
  int qtype = F32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // bytes between row starts
};

// Activations quantized on the fly (fast mode).
//   Q8_32 (for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0): per 32 values one float scale d and
//          s = d * sum(q) (for the weight offsets / minimums);
//   Q8_K  (for the k-quants): per 256 values one float scale d, per 16 the sum of q.
// q are int8 in [-127, 127]: symmetric, so sign tricks and i16 pair sums never overflow.
// Also, for the batched kernels (gemv_g16.h), integer sums that start their accumulators:
//   Q8_32: nsum = -sum(q) per 32;  Q8_K: bs32 = sum(q) per 32, bsn32 = -32 * sum(q) per 16.
struct QAct {
  int64_t n = 0, k = 0;
  int64_t ld = 0;               // int8 values between rows of qs: k, padded by 64 when k is a
                                // multiple of 1024 (rows 4 KB apart share L1 sets)
  std::vector<int8_t> qs;       // [n][ld]
  std::vector<float> d;         // [n][k/32] or [n][k/256]
  std::vector<float> s;         // Q8_32: [n][k/32]
  std::vector<int32_t> nsum;    // Q8_32: [n][k/32]
  std::vector<int16_t> bsums;   // Q8_K: [n][k/16]
  std::vector<int16_t> bs32;    // Q8_K: [n][k/32]
  std::vector<int32_t> bsn32;   // Q8_K: [n][k/16]
  bool kquant = false;
};

void quantize_act_q8_32(const float* x, int64_t n, int64_t k, QAct& a);
void quantize_act_q8_k(const float* x, int64_t n, int64_t k, QAct& a);

// One output block of a (possibly multi-weight) product: y[j, out_col + i] for the
// weight rows index[i] (or i when index is null), i < n_out.
struct Job {
  Weight w;
  const int64_t* index = nullptr;
  int64_t n_out = 0;
  float* y = nullptr;
  int64_t ldy = 0;  // floats between activation rows of y
  const float* bias = nullptr;  // [n_out] (already gathered for indexed rows) or null
  float threshold = -1.f;       // input channels with |x| <= threshold count as 0 (< 0: none)
};

// y = x @ W.T (+ bias) for every job, all sharing activations x [n][k] (contiguous).
// exact: float32 activations and weights dequantized in registers/L1 (the reference math);
// otherwise activations are quantized to int8 (Q8_32 / Q8_K) and integer dot products used.
void run_jobs(const float* x, int64_t n, int64_t k, std::vector<Job>& jobs, bool exact);

// Rows [r0, r1) of W (or rows index[0..n)) dequantized to float32 / bfloat16.
void dequantize_rows(const Weight& w, const int64_t* index, int64_t n_rows, float* out);
void dequantize_rows_bf16(const Weight& w, const int64_t* index, int64_t n_rows, uint16_t* out);

// Sustained read bandwidth over a buffer of `bytes`, GB/s (best of `reps`).
double read_bandwidth(int64_t bytes, int reps);
double read_runs_seconds(const uint8_t* buf, int64_t run_bytes, const int64_t* runs, int64_t n_runs, int64_t ahead);

// Which SIMD level the kernels were compiled for: "avx512-vnni", "avx2" or "scalar".
const char* simd_level();

}  // namespace st
