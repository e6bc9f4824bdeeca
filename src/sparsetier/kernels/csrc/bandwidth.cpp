// Memory read bandwidth probes: the roofline the GEMV kernels are measured against.
//
// read_bandwidth: each thread reads its own contiguous half (third, ...) of a buffer much
// larger than the caches with wide loads and a trivial reduction (so the loop is load-bound),
// the way a GEMV streams its rows. Best of `reps` passes.
//
// read_runs_seconds: the bound of input-sparse kernels. The column layout skips an inactive
// channel's record, a run of run_bytes (768 B for a 1536-output Q4_K matrix); this reads only
// the listed runs of a large buffer, in ascending order (as the kernels visit them), each
// thread a contiguous share of the list, with the next runs software-prefetched. How much
// faster half of the runs read than all of them is the most any such kernel can gain at 50%.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "kernels.h"

namespace st {

namespace {

uint64_t read_sum(const uint8_t* p, int64_t n) {
#if defined(ST_AVX512)
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 256 <= n; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512((const void*)(p + i)));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512((const void*)(p + i + 64)));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512((const void*)(p + i + 128)));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512((const void*)(p + i + 192)));
  }
  const __m512i a = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  return (uint64_t)_mm512_reduce_add_epi64(a);
#elif defined(ST_AVX2)
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i*)(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i*)(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i*)(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i*)(p + i + 96)));
  }
  const __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  return (uint64_t)hsum_i32(a);
#else
  uint64_t s = 0;
  const uint64_t* q = (const uint64_t*)p;
  for (int64_t i = 0; i < n / 8; ++i) s ^= q[i];
  return s;
#endif
}

uint8_t* filled_buffer(int64_t n, int64_t nthreads) {
  uint8_t* buf = (uint8_t*)std::aligned_alloc(4096, (size_t)n);
  if (!buf) return nullptr;
  // First touch by the threads that will read each part (page placement), non-zero data.
  at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t lo = n * t / nthreads / 4096 * 4096, hi = n * (t + 1) / nthreads / 4096 * 4096;
      for (int64_t i = lo; i < hi; ++i) buf[i] = (uint8_t)(i * 131 + 7);
    }
  });
  return buf;
}

}  // namespace

double read_bandwidth(int64_t bytes, int reps) {
  const int64_t n = std::max<int64_t>(1 << 20, bytes / 4096 * 4096);
  const int64_t nthreads = at::get_num_threads();
  uint8_t* buf = filled_buffer(n, nthreads);
  if (!buf) return 0.0;
  double best = 0.0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < std::max(1, reps); ++r) {
    std::vector<uint64_t> part((size_t)nthreads, 0);
    const auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t lo = n * t / nthreads / 4096 * 4096, hi = n * (t + 1) / nthreads / 4096 * 4096;
        part[(size_t)t] = read_sum(buf + lo, hi - lo);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : part) sink = sink + v;
    best = std::max(best, (double)n / s / 1e9);
  }
  std::free(buf);
  return best;
}

double read_runs_seconds(const uint8_t* buf, int64_t run_bytes, const int64_t* runs, int64_t n_runs, int64_t ahead) {
  const int64_t nthreads = at::get_num_threads();
  std::vector<uint64_t> part((size_t)nthreads, 0);
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i0 = n_runs * t / nthreads, i1 = n_runs * (t + 1) / nthreads;
      uint64_t s = 0;
      for (int64_t i = i0; i < i1; ++i) {
        if (ahead > 0 && i + ahead < i1) {
          const char* q = (const char*)(buf + runs[i + ahead] * run_bytes);
          for (int64_t o = 0; o < run_bytes; o += 64) __builtin_prefetch(q + o, 0, 2);
        }
        s += read_sum(buf + runs[i] * run_bytes, run_bytes);
      }
      part[(size_t)t] = s;
    }
  });
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile uint64_t sink = 0;
  for (uint64_t v : part) sink = sink + v;
  return sec;
}

}  // namespace st
