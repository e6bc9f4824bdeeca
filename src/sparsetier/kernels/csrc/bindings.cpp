// Python bindings of the kernels (module sparsetier._C).
//
// Plain pybind11 functions rather than torch.ops: the dispatcher adds microseconds per
// call, and decode calls these ~10 times per layer. The GIL is released while the
// kernels run, so server threads can overlap.
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "kernels.h"

namespace {

using st::Weight;

Weight weight_of(const at::Tensor& data, int64_t qtype, int64_t rows, int64_t cols) {
  TORCH_CHECK(st::is_supported((int)qtype), "sparsetier._C: unsupported GGML type id ", qtype);
  TORCH_CHECK(data.device().is_cpu(), "sparsetier._C: weights must be on the CPU");
  TORCH_CHECK(data.dim() == 2 && data.size(0) == rows, "sparsetier._C: weight data must be [rows, row_bytes]");
  TORCH_CHECK(data.stride(1) == 1, "sparsetier._C: weight rows must be contiguous");
  const int bw = st::block_weights((int)qtype), bb = st::block_bytes((int)qtype);
  TORCH_CHECK(cols % bw == 0, "sparsetier._C: ", cols, " columns is not a multiple of the block size ", bw);
  const int64_t esize = data.element_size();
  TORCH_CHECK(data.size(1) * esize == cols / bw * bb, "sparsetier._C: weight row has ", data.size(1) * esize,
              " bytes, expected ", cols / bw * bb);
  if (st::is_float_type((int)qtype)) {
    const auto want = qtype == st::F32 ? at::kFloat : qtype == st::F16 ? at::kHalf : at::kBFloat16;
    TORCH_CHECK(data.scalar_type() == want, "sparsetier._C: float weight dtype does not match its type");
  }
  Weight w;
  w.data = (const uint8_t*)data.data_ptr();
  w.qtype = (int)qtype;
  w.rows = rows;
  w.cols = cols;
  w.row_stride = data.stride(0) * esize;
  return w;
}

// Row indices as contiguous int64, checked in one pass (cheaper than two reductions).
at::Tensor checked_index(const at::Tensor& index_, int64_t rows, const char* who) {
  at::Tensor index = index_.to(at::kLong).contiguous().reshape({-1});
  const int64_t* p = index.data_ptr<int64_t>();
  for (int64_t i = 0, m = index.numel(); i < m; ++i)
    TORCH_CHECK(p[i] >= 0 && p[i] < rows, "sparsetier._C.", who, ": row index ", p[i], " out of range [0, ", rows, ")");
  return index;
}

// Activations [..., cols] as a contiguous float32 tensor (n = numel / cols rows).
at::Tensor as_input(const at::Tensor& x, int64_t cols) {
  TORCH_CHECK(x.device().is_cpu(), "sparsetier._C: activations must be on the CPU");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == cols, "sparsetier._C: activations must be [..., ", cols, "]");
  return x.scalar_type() == at::kFloat ? x.contiguous() : x.to(at::kFloat).contiguous();
}

// Output shape: x's leading dimensions, then `rows`.
std::vector<int64_t> out_shape(const at::Tensor& x, int64_t rows) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = rows;
  return shape;
}

const float* bias_ptr(const std::optional<at::Tensor>& bias, int64_t n, at::Tensor& keep) {
  if (!bias.has_value()) return nullptr;
  keep = bias->to(at::kFloat).contiguous();
  TORCH_CHECK(keep.numel() == n, "sparsetier._C: bias has ", keep.numel(), " values, expected ", n);
  return keep.data_ptr<float>();
}

at::Tensor linear(const at::Tensor& x_, const at::Tensor& data, int64_t qtype, int64_t rows, int64_t cols,
                  const std::optional<at::Tensor>& bias, bool exact, double threshold) {
  const Weight w = weight_of(data, qtype, rows, cols);
  const at::Tensor x = as_input(x_, cols);
  const int64_t n = x.numel() / cols;
  at::Tensor y = at::empty(out_shape(x, rows), x.options());
  at::Tensor keep;
  std::vector<st::Job> jobs(1);
  jobs[0].w = w;
  jobs[0].n_out = rows;
  jobs[0].y = y.data_ptr<float>();
  jobs[0].ldy = rows;
  jobs[0].bias = bias_ptr(bias, rows, keep);
  jobs[0].threshold = (float)threshold;
  {
    pybind11::gil_scoped_release nogil;
    st::run_jobs(x.data_ptr<float>(), n, cols, jobs, exact);
  }
  return y;
}

std::vector<at::Tensor> linear_multi(const at::Tensor& x_, const std::vector<at::Tensor>& datas,
                                     const std::vector<int64_t>& qtypes, const std::vector<int64_t>& rows,
                                     int64_t cols, const std::vector<std::optional<at::Tensor>>& biases,
                                     bool exact, const std::vector<double>& thresholds) {
  const size_t m = datas.size();
  TORCH_CHECK(qtypes.size() == m && rows.size() == m && (biases.empty() || biases.size() == m) &&
                  (thresholds.empty() || thresholds.size() == m),
              "sparsetier._C.linear_multi: argument lists differ in length");
  const at::Tensor x = as_input(x_, cols);
  const int64_t n = x.numel() / cols;
  std::vector<at::Tensor> ys, keep(m);
  std::vector<st::Job> jobs(m);
  for (size_t i = 0; i < m; ++i) {
    jobs[i].w = weight_of(datas[i], qtypes[i], rows[i], cols);
    ys.push_back(at::empty(out_shape(x, rows[i]), x.options()));
    jobs[i].n_out = rows[i];
    jobs[i].y = ys[i].data_ptr<float>();
    jobs[i].ldy = rows[i];
    jobs[i].bias = biases.empty() ? nullptr : bias_ptr(biases[i], rows[i], keep[i]);
    jobs[i].threshold = thresholds.empty() ? -1.f : (float)thresholds[i];
  }
  {
    pybind11::gil_scoped_release nogil;
    st::run_jobs(x.data_ptr<float>(), n, cols, jobs, exact);
  }
  return ys;
}

at::Tensor linear_rows(const at::Tensor& x_, const at::Tensor& data, int64_t qtype, int64_t rows, int64_t cols,
                       const at::Tensor& index_, const std::optional<at::Tensor>& bias, bool exact) {
  const Weight w = weight_of(data, qtype, rows, cols);
  const at::Tensor x = as_input(x_, cols);
  const at::Tensor index = checked_index(index_, rows, "linear_rows");
  const int64_t m = index.numel();
  const int64_t n = x.numel() / cols;
  at::Tensor y = at::empty(out_shape(x, m), x.options());
  at::Tensor keep;
  std::optional<at::Tensor> picked;
  if (bias.has_value()) picked = bias->to(at::kFloat).reshape({-1}).index_select(0, index);
  std::vector<st::Job> jobs(1);
  jobs[0].w = w;
  jobs[0].index = index.data_ptr<int64_t>();
  jobs[0].n_out = m;
  jobs[0].y = y.data_ptr<float>();
  jobs[0].ldy = m;
  jobs[0].bias = bias_ptr(picked, m, keep);
  if (m > 0) {
    pybind11::gil_scoped_release nogil;
    st::run_jobs(x.data_ptr<float>(), n, cols, jobs, exact);
  }
  return y;
}

// Rows (all, or `index`) of a weight as float32 or bfloat16 [n_rows, cols], into `out`
// when given (a reused buffer: a fresh 10+ MB tensor costs a page fault per 4 KB).
at::Tensor dequantize(const at::Tensor& data, int64_t qtype, int64_t rows, int64_t cols,
                      const std::optional<at::Tensor>& index_, bool bf16, const std::optional<at::Tensor>& out_) {
  const Weight w = weight_of(data, qtype, rows, cols);
  at::Tensor index;
  const int64_t* ip = nullptr;
  int64_t m = rows;
  if (index_.has_value()) {
    index = checked_index(*index_, rows, "dequantize");
    m = index.numel();
    ip = index.data_ptr<int64_t>();
  }
  at::Tensor out;
  if (out_.has_value()) {
    out = *out_;
    TORCH_CHECK(out.is_contiguous() && out.numel() == m * cols &&
                    out.scalar_type() == (bf16 ? at::kBFloat16 : at::kFloat),
                "sparsetier._C.dequantize: `out` must be a contiguous tensor of ", m * cols,
                bf16 ? " bfloat16" : " float32", " values");
  } else {
    out = at::empty({m, cols}, at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  }
  if (m > 0) {
    pybind11::gil_scoped_release nogil;
    if (bf16)
      st::dequantize_rows_bf16(w, ip, m, (uint16_t*)out.data_ptr());
    else
      st::dequantize_rows(w, ip, m, out.data_ptr<float>());
  }
  return out;
}

double read_bandwidth(int64_t bytes, int64_t reps) {
  pybind11::gil_scoped_release nogil;
  return st::read_bandwidth(bytes, (int)reps);
}

double read_runs_seconds(const at::Tensor& buf, int64_t run_bytes, const at::Tensor& runs_, int64_t ahead) {
  const at::Tensor runs = runs_.to(at::kLong).contiguous();
  const int64_t* rp = runs.data_ptr<int64_t>();
  TORCH_CHECK(buf.is_contiguous() && buf.scalar_type() == at::kByte && run_bytes > 0 && run_bytes % 256 == 0,
              "sparsetier._C.read_runs_seconds: a contiguous uint8 buffer and runs of a multiple of 256 bytes");
  for (int64_t i = 0; i < runs.numel(); ++i)
    TORCH_CHECK(rp[i] >= 0 && (rp[i] + 1) * run_bytes <= buf.numel(), "sparsetier._C.read_runs_seconds: run out of range");
  pybind11::gil_scoped_release nogil;
  return st::read_runs_seconds(buf.data_ptr<uint8_t>(), run_bytes, rp, runs.numel(), ahead);
}

}  // namespace

void register_decode_ops(pybind11::module& m);  // decode_ops.cpp
void register_sparse_ops(pybind11::module& m);  // sparse.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsetier CPU kernels on GGML-quantized weights";
  m.def("linear", &linear, "y = x @ W.T (+ bias) on GGML weights, inputs with |x| <= threshold as 0",
        pybind11::arg("x"), pybind11::arg("data"), pybind11::arg("qtype"), pybind11::arg("rows"),
        pybind11::arg("cols"), pybind11::arg("bias"), pybind11::arg("exact"), pybind11::arg("threshold") = -1.0);
  m.def("linear_multi", &linear_multi, "several weights sharing one input, one parallel region",
        pybind11::arg("x"), pybind11::arg("datas"), pybind11::arg("qtypes"), pybind11::arg("rows"),
        pybind11::arg("cols"), pybind11::arg("biases"), pybind11::arg("exact"),
        pybind11::arg("thresholds") = std::vector<double>{});
  m.def("linear_rows", &linear_rows, "only the output rows `index`", pybind11::arg("x"), pybind11::arg("data"),
        pybind11::arg("qtype"), pybind11::arg("rows"), pybind11::arg("cols"), pybind11::arg("index"),
        pybind11::arg("bias"), pybind11::arg("exact"));
  m.def("dequantize", &dequantize, "rows of a weight as float32 / bfloat16", pybind11::arg("data"),
        pybind11::arg("qtype"), pybind11::arg("rows"), pybind11::arg("cols"), pybind11::arg("index"),
        pybind11::arg("bf16"), pybind11::arg("out") = pybind11::none());
  m.def("read_bandwidth", &read_bandwidth, "memory read bandwidth, GB/s", pybind11::arg("bytes"),
        pybind11::arg("reps"));
  m.def("read_runs_seconds", &read_runs_seconds, "seconds to read the listed runs of a buffer once",
        pybind11::arg("buf"), pybind11::arg("run_bytes"), pybind11::arg("runs"), pybind11::arg("ahead"));
  m.def("simd_level", []() { return std::string(st::simd_level()); });
  register_decode_ops(m);
  register_sparse_ops(m);
}
