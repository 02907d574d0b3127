// NumPy-level binding over the same C++ kernels the TF op runs. Imports without TensorFlow.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cpu/kernels.h"
#include "softmax_exp.h"

namespace py = pybind11;

namespace tfup {
namespace {

// Contiguous chunks on a few std::threads; small problems stay on the calling thread. A thread
// that cannot be started leaves its chunks to the calling thread; an exception in a chunk is
// rethrown here (pybind11 turns std::bad_alloc into MemoryError).
void ThreadRunner(int64_t total, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t want = std::min<int64_t>({hw, total, std::max<int64_t>(1, total * cost / 100000)});
  RunCatching([&](const std::function<void(int64_t, int64_t)>& work) {
    if (want <= 1) return work(0, total);
    std::vector<std::thread> threads;
    threads.reserve(want);
    int64_t t = 1;
    for (; t < want; ++t) {
      const int64_t b = total * t / want, e = total * (t + 1) / want;
      try {
        threads.emplace_back([&work, b, e] { work(b, e); });
      } catch (const std::system_error&) {
        break;
      }
    }
    work(0, total / want);  // chunk 0 here, and any chunks no thread could be started for
    if (t < want) work(total * t / want, total);
    for (auto& th : threads) th.join();
  }, fn);
}

// (n, h, w, c) of an [H, W, C] (n = 1) or [N, H, W, C] array, and the shape of a result of
// height oh and width ow in the same form.
struct ImageDims {
  int64_t n, h, w, c;
  bool batched;
  template <typename T>
  explicit ImageDims(const py::array_t<T, py::array::c_style>& a) : batched(a.ndim() == 4) {
    n = batched ? a.shape(0) : 1;
    h = a.shape(batched ? 1 : 0);
    w = a.shape(batched ? 2 : 1);
    c = a.shape(batched ? 3 : 2);
  }
  std::vector<py::ssize_t> Out(int64_t oh, int64_t ow) const {
    std::vector<py::ssize_t> shape = {oh, ow, c};
    if (batched) shape.insert(shape.begin(), n);
    return shape;
  }
};

template <typename T>
py::array Upsample(py::array in_any, int64_t factor) {
  // Any strides are accepted: a non-contiguous view is copied once to C order.
  auto in = py::array_t<T, py::array::c_style>::ensure(in_any);
  const ImageDims d(in);
  Geometry g;
  const std::string err = MakeBilinearGeometry(d.n, d.h, d.w, d.c, factor, Layout::kNHWC, &g);
  if (!err.empty()) throw py::value_error(err);
  py::array_t<T> out(d.Out(g.y.n_out, g.x.n_out));
  if (g.OutputElements() > 0) {
    const T* src = in.data();
    T* dst = out.mutable_data();
    py::gil_scoped_release release;
    BilinearForward<T>(g, src, dst, ThreadRunner);
  }
  return out;
}

py::array BilinearUpsample(py::object array, py::object factor_obj) {
  if (py::isinstance<py::bool_>(factor_obj) || !py::isinstance<py::int_>(factor_obj)) {
    throw py::type_error("factor must be a positive integer, got " +
                         std::string(py::str(py::repr(factor_obj))));
  }
  const int64_t factor = factor_obj.cast<int64_t>();
  if (factor < 1) throw py::value_error("factor must be a positive integer, got " + std::to_string(factor));
  py::array in = py::array::ensure(array);
  if (!in) throw py::type_error("array must be a NumPy array (or convertible to one)");
  if (in.ndim() != 3 && in.ndim() != 4) {
    throw py::value_error("array must be [H, W, C] or [N, H, W, C], got " +
                          std::to_string(in.ndim()) + " dimensions");
  }
  if (in.dtype().is(py::dtype::of<float>())) {
    return Upsample<float>(in, factor);
  }
  if (in.dtype().is(py::dtype::of<double>())) return Upsample<double>(in, factor);
  throw py::type_error("array must be float32 or float64, got " +
                       std::string(py::str(in.dtype())));
}

template <typename T>
py::array ResizeArray(py::array in_any, int64_t oh, int64_t ow, Resize mode) {
  auto in = py::array_t<T, py::array::c_style>::ensure(in_any);
  const ImageDims d(in);
  Geometry g;
  const std::string err = MakeResizeGeometry(d.n, d.h, d.w, d.c, oh, ow, mode, Layout::kNHWC, &g);
  if (!err.empty()) throw py::value_error(err);
  py::array_t<float> out(d.Out(oh, ow));
  if (g.OutputElements() > 0) {
    const T* src = in.data();
    float* dst = out.mutable_data();
    py::gil_scoped_release release;
    ResizeBilinear<T>(g, src, dst, ThreadRunner);
  }
  return out;
}

// tf.compat.v1.image.resize_bilinear's conventions; the array [H, W, C] or [N, H, W, C].
py::array ResizeBilinearArray(py::object array, int64_t out_h, int64_t out_w, bool align_corners,
                              bool half_pixel_centers) {
  if (align_corners && half_pixel_centers) {
    throw py::value_error("If half_pixel_centers is True, align_corners must be False.");
  }
  const Resize mode = half_pixel_centers ? Resize::kHalfPixel
                                         : (align_corners ? Resize::kAlignCorners : Resize::kAsymmetric);
  py::array in = py::array::ensure(array);
  if (!in) throw py::type_error("array must be a NumPy array (or convertible to one)");
  if (in.ndim() != 3 && in.ndim() != 4) {
    throw py::value_error("array must be [H, W, C] or [N, H, W, C], got " +
                          std::to_string(in.ndim()) + " dimensions");
  }
  if (in.dtype().is(py::dtype::of<float>())) return ResizeArray<float>(in, out_h, out_w, mode);
  if (in.dtype().is(py::dtype::of<double>())) return ResizeArray<double>(in, out_h, out_w, mode);
  throw py::type_error("array must be float32 or float64, got " + std::string(py::str(in.dtype())));
}

// The op kernel's own geometry check, for the stock-op path (XLA, load fallback), which has no
// kernel to refuse an inconsistent output_shape.
std::string CheckDepthwiseGeometry(std::vector<int64_t> in, std::vector<int64_t> out,
                                   std::vector<int64_t> kernel, std::vector<int64_t> strides,
                                   const std::string& padding) {
  Geometry g;
  return MakeDepthwiseGeometry(in[0], in[1], in[2], in[3], out[0], out[1], kernel[0], kernel[1],
                               strides[0], strides[1],
                               padding == "VALID" ? Padding::kValid : Padding::kSame,
                               Layout::kNHWC, &g);
}

// geometry.h's bilinear weights, for the Python paths that build the kernel as a tensor: the
// window of length k (k = 2f - f % 2 for factor f), each weight computed in dtype.
py::array BilinearWindow(int64_t k, const std::string& dtype) {
  if (k < 1) throw py::value_error("kernel size must be a positive integer, got " + std::to_string(k));
  if (dtype == "float32") {
    py::array_t<float> w(k);
    for (int64_t a = 0; a < k; ++a) w.mutable_data()[a] = BilinearWindowWeight<float>(k, a);
    return std::move(w);
  }
  if (dtype != "float64") throw py::value_error("dtype must be 'float32' or 'float64', got " + dtype);
  py::array_t<double> w(k);
  for (int64_t a = 0; a < k; ++a) w.mutable_data()[a] = BilinearWindowWeight<double>(k, a);
  return std::move(w);
}

Padding ParsePadding(const std::string& padding) {
  if (padding == "SAME") return Padding::kSame;
  if (padding == "VALID") return Padding::kValid;
  throw py::value_error("padding must be 'SAME' or 'VALID', got '" + padding + "'");
}

void CheckAxisArgs(int64_t n, int64_t k, int64_t s) {
  if (n < 0 || k < 1 || s < 1) {
    throw py::value_error("need size >= 0, kernel size >= 1 and stride >= 1, got " +
                          std::to_string(n) + ", " + std::to_string(k) + ", " + std::to_string(s));
  }
}

}  // namespace
}  // namespace tfup

PYBIND11_MODULE(_numpy_ext, m) {
  m.doc() = "tfupsample's C++ kernels for NumPy arrays (no TensorFlow needed)";
  m.def("bilinear_upsample", &tfup::BilinearUpsample, py::arg("array"), py::arg("factor"),
        "Bilinear upsample of an [H, W, C] or [N, H, W, C] float32/float64 array by an integer "
        "factor: the transposed convolution with the bilinear kernel, SAME padding.");
  m.def("resize_bilinear", &tfup::ResizeBilinearArray, py::arg("array"), py::arg("out_h"),
        py::arg("out_w"), py::arg("align_corners"), py::arg("half_pixel_centers"),
        "Bilinear resize of an [H, W, C] or [N, H, W, C] float32/float64 array to out_h x out_w "
        "with ResizeBilinear's conventions: float32, TF's CPU kernel's bits.");
  m.def("check_depthwise_geometry", &tfup::CheckDepthwiseGeometry, py::arg("input_nhwc"),
        py::arg("output_hw"), py::arg("kernel_hw"), py::arg("strides"), py::arg("padding"),
        "'' if the transposed convolution's output size is legal, else the reason.");
  m.def("bilinear_window", &tfup::BilinearWindow, py::arg("kernel_size"), py::arg("dtype") = "float64",
        "The 1-D bilinear window of length kernel_size (2f - f % 2 for factor f), each weight "
        "computed in dtype ('float32' or 'float64') exactly as the kernels compute it.");
  m.def("bilinear_kernel_size", [](int64_t f) { return tfup::BilinearKernelSize(f); }, py::arg("factor"));
  m.def("default_output_size",
        [](int64_t n, int64_t k, int64_t s, const std::string& padding) {
          tfup::CheckAxisArgs(n, k, s);
          return tfup::DefaultOutputSize(n, k, s, tfup::ParsePadding(padding));
        },
        py::arg("size"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        "Output length when none is given (keras.layers.Conv2DTranspose's rule).");
  m.def("legal_output_sizes",
        [](int64_t n, int64_t k, int64_t s, const std::string& padding) {
          tfup::CheckAxisArgs(n, k, s);
          const auto r = tfup::LegalOutputSizes(n, k, s, tfup::ParsePadding(padding));
          return std::make_pair(r.lo, r.hi);
        },
        py::arg("size"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        "(lo, hi): the output lengths a transposed convolution of this axis may have.");
  m.def("softmax_exp",
        [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
          py::array_t<float> y(x.size());
          for (py::ssize_t i = 0; i < x.size(); ++i) y.mutable_data()[i] = tfup::SoftmaxExp(x.data()[i]);
          return y;
        },
        py::arg("x"), "softmax_exp.h's float exp, elementwise (for testing its error bound).");
  m.def("softmax_log",
        [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
          py::array_t<float> y(x.size());
          for (py::ssize_t i = 0; i < x.size(); ++i) y.mutable_data()[i] = tfup::SoftmaxLog(x.data()[i]);
          return y;
        },
        py::arg("x"), "softmax_exp.h's float log, elementwise (for testing its error bound).");
  // The benchmark's write floor (tfupsample.tools.bench): writing an array once, on every core,
  // in 16 KB blocks.
  m.def("fill",
        [](py::array_t<float, py::array::c_style> out, float value, bool stream) {
          float* data = out.mutable_data();
          const int64_t n = out.size();
          py::gil_scoped_release release;
          tfup::FillFloats(data, n, value, stream, tfup::ThreadRunner);
        },
        py::arg("out"), py::arg("value"), py::arg("stream"),
        "Fills a float32 array with value on every core: with non-temporal stores (what the "
        "kernels use for large outputs) or plain ones.");
  m.def("stream_threshold_bytes", &tfup::StreamThresholdBytes,
        "Outputs larger than this (bytes) are written with non-temporal stores.");
  m.def("kernel_isa", [] { return std::string(tfup::KernelIsa()); },
        "Which build of the CPU kernels runs here: 'avx512', 'avx2' or 'baseline' "
        "(TFUPSAMPLE_ISA=baseline|avx2 caps it; all give the same bits).");
  m.def("kernel_x_pass", [] { return std::string(tfup::XPassByPixel() ? "pixels" : "blocks"); },
        "How the bilinear input gradient's x pass reads a run of wide pixels here: 'pixels' (AMD "
        "CPUs) or 'blocks' (TFUPSAMPLE_X_PASS=pixels|blocks overrides it; both give the same bits).");
}
