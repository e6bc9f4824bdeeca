// Fused small ops of the decode step: RMSNorm (with the residual add), RoPE in place, and
// attention of one new token over the KV cache.
//
// Why: at decode time each of these works on a few KB, so PyTorch's per-op cost (several
// small kernels, dispatch, and for SDPA a flash-attention setup) is 10-60 us where the
// arithmetic needs 1-10 us; over 30 layers that was half of SmolLM2's decode step.
// Numerics follow the PyTorch/transformers formulas in float32 (exact-mode tests hold).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"

namespace {

// Dot product and y += a * x over n floats.
inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// exp over n floats in place (inputs <= 0 here: scores minus their max).
void exp_inplace(float* x, int64_t n) {
  int64_t i = 0;
#if defined(ST_AVX512)
  // Cephes-style expf: 2^k * p(r), r = x - k ln2 split in two constants; ~1 ulp.
  const __m512 lo = _mm512_set1_ps(-87.3f), log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 c1 = _mm512_set1_ps(0.693359375f), c2 = _mm512_set1_ps(-2.12194440e-4f);
  const __m512 p0 = _mm512_set1_ps(1.9875691500e-4f), p1 = _mm512_set1_ps(1.3981999507e-3f),
               p2 = _mm512_set1_ps(8.3334519073e-3f), p3 = _mm512_set1_ps(4.1665795894e-2f),
               p4 = _mm512_set1_ps(1.6666665459e-1f), p5 = _mm512_set1_ps(5.0000001201e-1f),
               one = _mm512_set1_ps(1.f);
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_max_ps(_mm512_loadu_ps(x + i), lo);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_fnmadd_ps(k, c1, v);
    v = _mm512_fnmadd_ps(k, c2, v);
    const __m512 z = _mm512_mul_ps(v, v);
    __m512 y = _mm512_fmadd_ps(p0, v, p1);
    y = _mm512_fmadd_ps(y, v, p2);
    y = _mm512_fmadd_ps(y, v, p3);
    y = _mm512_fmadd_ps(y, v, p4);
    y = _mm512_fmadd_ps(y, v, p5);
    y = _mm512_fmadd_ps(y, z, _mm512_add_ps(v, one));
    _mm512_storeu_ps(x + i, _mm512_scalef_ps(y, k));
  }
#endif
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}

// scores[h][j] = q[h] . k[j] * scale for the `group` query heads sharing keys k [n][hd].
void group_scores(const float* q, const float* k, int64_t group, int64_t n, int64_t hd, float scale, float* scores) {
#if defined(ST_AVX512)
  if (hd % 16 == 0 && hd <= 256 && group <= 8) {
    const int64_t c = hd / 16;
    for (int64_t j = 0; j < n; ++j) {
      const float* kj = k + j * hd;
      __m512 acc[8];
      for (int64_t h = 0; h < group; ++h) acc[h] = _mm512_setzero_ps();
      for (int64_t i = 0; i < c; ++i) {
        const __m512 kv = _mm512_loadu_ps(kj + 16 * i);
        for (int64_t h = 0; h < group; ++h) acc[h] = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * hd + 16 * i), kv, acc[h]);
      }
      for (int64_t h = 0; h < group; ++h) scores[h * n + j] = _mm512_reduce_add_ps(acc[h]) * scale;
    }
    return;
  }
#endif
  for (int64_t h = 0; h < group; ++h)
    for (int64_t j = 0; j < n; ++j) scores[h * n + j] = dot(q + h * hd, k + j * hd, hd) * scale;
}

// out[h] = sum_j p[h][j] * v[j] for the `group` query heads sharing values v [n][hd].
void group_values(const float* p, const float* v, int64_t group, int64_t n, int64_t hd, float* out) {
#if defined(ST_AVX512)
  if (hd % 16 == 0 && hd <= 256) {
    for (int64_t i = 0; i < hd; i += 16) {
      __m512 acc[8];
      for (int64_t h0 = 0; h0 < group; h0 += 8) {
        const int64_t hn = std::min<int64_t>(8, group - h0);
        for (int64_t h = 0; h < hn; ++h) acc[h] = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; ++j) {
          const __m512 vv = _mm512_loadu_ps(v + j * hd + i);
          for (int64_t h = 0; h < hn; ++h) acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[(h0 + h) * n + j]), vv, acc[h]);
        }
        for (int64_t h = 0; h < hn; ++h) _mm512_storeu_ps(out + (h0 + h) * hd + i, acc[h]);
      }
    }
    return;
  }
#endif
  for (int64_t h = 0; h < group; ++h) {
    float* oh = out + h * hd;
    std::fill_n(oh, hd, 0.f);
    for (int64_t j = 0; j < n; ++j) axpy(p[h * n + j], v + j * hd, oh, hd);
  }
}

void check_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "sparsetier._C: ", name,
              " must be a float32 CPU tensor");
}

inline float inv_rms(const float* x, int64_t d, float eps) {
  const float ss = dot(x, x, d);
  return 1.f / std::sqrt(ss / (float)d + eps);
}

// y = x / rms(x) * w over the last dimension.
at::Tensor rms_norm(const at::Tensor& x_, const at::Tensor& w_, double eps) {
  check_f32(x_, "x");
  const at::Tensor x = x_.contiguous(), w = w_.contiguous();
  const int64_t d = x.size(-1), rows = x.numel() / d;
  TORCH_CHECK(w.numel() == d, "sparsetier._C.rms_norm: weight has ", w.numel(), " values, expected ", d);
  at::Tensor y = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * d;
    float* yr = yp + r * d;
    const float inv = inv_rms(xr, d, (float)eps);
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * inv) * wp[i];
  }
  return y;
}

// x += a (in place, the residual stream); returns rms_norm(x) * w.
at::Tensor add_rms_norm_(at::Tensor& x, const at::Tensor& a_, const at::Tensor& w_, double eps) {
  check_f32(x, "x");
  TORCH_CHECK(x.is_contiguous(), "sparsetier._C.add_rms_norm_: x must be contiguous");
  const at::Tensor a = a_.contiguous(), w = w_.contiguous();
  TORCH_CHECK(a.numel() == x.numel(), "sparsetier._C.add_rms_norm_: shapes differ");
  const int64_t d = x.size(-1), rows = x.numel() / d;
  at::Tensor y = at::empty_like(x);
  float *xp = x.data_ptr<float>(), *yp = y.data_ptr<float>();
  const float *ap = a.data_ptr<float>(), *wp = w.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = xp + r * d;
    const float* ar = ap + r * d;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) xr[i] += ar[i];
    const float inv = inv_rms(xr, d, (float)eps);
    float* yr = yp + r * d;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * inv) * wp[i];
  }
  return y;
}

// Rotate x [rows, heads, head_dim] in place; row r uses cos/sin row r (tables [rows, dim/2]).
// interleaved: pairs (2i, 2i+1) (GGUF llama layout); otherwise halves (i, i + dim/2).
void rope_(at::Tensor& x, const at::Tensor& cos_, const at::Tensor& sin_, int64_t dim, bool interleaved) {
  check_f32(x, "x");
  TORCH_CHECK(x.is_contiguous() && x.dim() == 3, "sparsetier._C.rope_: x must be contiguous [rows, heads, hd]");
  const at::Tensor cs = cos_.contiguous(), sn = sin_.contiguous();
  const int64_t rows = x.size(0), heads = x.size(1), hd = x.size(2), half = dim / 2;
  TORCH_CHECK(dim <= hd && dim % 2 == 0 && cs.numel() == rows * half && sn.numel() == rows * half,
              "sparsetier._C.rope_: tables do not match x");
  float* xp = x.data_ptr<float>();
  const float *cp = cs.data_ptr<float>(), *sp = sn.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float *c = cp + r * half, *s = sp + r * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = xp + (r * heads + h) * hd;
      if (interleaved) {
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[2 * i], b = v[2 * i + 1];
          v[2 * i] = a * c[i] - b * s[i];
          v[2 * i + 1] = b * c[i] + a * s[i];
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  }
}

// One new token of one sequence: store k/v [kv_heads, hd] at cache position `pos`
// (caches [kv_heads, max_seq, hd]), then attend q [heads, hd] over positions first..pos.
at::Tensor attend_one(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, at::Tensor& kc,
                      at::Tensor& vc, int64_t pos, int64_t first, double scale) {
  check_f32(kc, "k cache");
  check_f32(vc, "v cache");
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const int64_t kvh = kc.size(0), max_seq = kc.size(1), hd = kc.size(2), heads = q.numel() / hd;
  TORCH_CHECK(kc.stride(2) == 1 && kc.stride(1) == hd && vc.strides() == kc.strides() && vc.sizes() == kc.sizes(),
              "sparsetier._C.attend_one: caches must be [kv_heads, max_seq, hd] with contiguous rows");
  TORCH_CHECK(k.numel() == kvh * hd && v.numel() == kvh * hd && heads % kvh == 0,
              "sparsetier._C.attend_one: q/k/v shapes do not match the cache");
  TORCH_CHECK(0 <= first && first <= pos && pos < max_seq, "sparsetier._C.attend_one: bad positions");
  float *kcp = kc.data_ptr<float>(), *vcp = vc.data_ptr<float>();
  const int64_t hs = kc.stride(0);  // floats between heads in the cache
  for (int64_t g = 0; g < kvh; ++g) {
    std::copy_n(k.data_ptr<float>() + g * hd, hd, kcp + g * hs + pos * hd);
    std::copy_n(v.data_ptr<float>() + g * hd, hd, vcp + g * hs + pos * hd);
  }
  const int64_t n = pos - first + 1, group = heads / kvh;
  at::Tensor out = at::empty({heads * hd}, q.options());
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // One kv head at a time, all the query heads that share it together: each cached key
  // and value row is loaded once for the whole group.
  auto run = [&](int64_t g0, int64_t g1) {
    std::vector<float> p(group * n);
    for (int64_t g = g0; g < g1; ++g) {
      const float* kh = kcp + g * hs + first * hd;
      const float* vh = vcp + g * hs + first * hd;
      const float* qg = qp + g * group * hd;
      float* og = op + g * group * hd;
      group_scores(qg, kh, group, n, hd, (float)scale, p.data());
      for (int64_t h = 0; h < group; ++h) {
        float* ph = p.data() + h * n;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) m = std::max(m, ph[j]);
        for (int64_t j = 0; j < n; ++j) ph[j] -= m;
        exp_inplace(ph, n);
        float sum = 0.f;
        for (int64_t j = 0; j < n; ++j) sum += ph[j];
        const float inv = 1.f / sum;
        for (int64_t j = 0; j < n; ++j) ph[j] *= inv;
      }
      group_values(p.data(), vh, group, n, hd, og);
    }
  };
  // Split heads over threads only when there is enough work to pay for the wake-up.
  if (kvh > 1 && n * heads * hd >= (1 << 18)) {
    at::parallel_for(0, kvh, 1, run);
  } else {
    run(0, kvh);
  }
  return out;
}

}  // namespace

void register_decode_ops(pybind11::module& m) {
  m.def("rms_norm", &rms_norm, "x / rms(x) * w over the last dim", pybind11::arg("x"), pybind11::arg("w"),
        pybind11::arg("eps"));
  m.def("add_rms_norm_", &add_rms_norm_, "x += a in place; returns rms_norm(x) * w", pybind11::arg("x"),
        pybind11::arg("a"), pybind11::arg("w"), pybind11::arg("eps"));
  m.def("rope_", &rope_, "rotary embedding in place on [rows, heads, hd]", pybind11::arg("x"),
        pybind11::arg("cos"), pybind11::arg("sin"), pybind11::arg("dim"), pybind11::arg("interleaved"));
  m.def("attend_one", &attend_one, "append k/v at pos and attend one query over the cache", pybind11::arg("q"),
        pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("k_cache"), pybind11::arg("v_cache"),
        pybind11::arg("pos"), pybind11::arg("first"), pybind11::arg("scale"));
}
