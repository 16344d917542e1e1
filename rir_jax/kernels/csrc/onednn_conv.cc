// 2-D convolution (NHWC input, HWIO kernel, NHWC output) on oneDNN, as XLA FFI
// handlers for the forward pass and both backward passes.
//
// Every handler takes two operands, returns one result and has the attributes
// `strides`, `pad_lo` and `pad_hi` (two int64 each, for H and W). Buffers are
// dense row-major, f32 or bf16, one dtype per call.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Attr = ffi::Span<const int64_t>;

enum Pass { kForward, kBackwardData, kBackwardWeights };

// One convolution pass in NHWC/HWIO terms: the key of a cached primitive.
struct Problem {
  Pass pass;
  memory::data_type dtype;
  int64_t n, h, w, c, kh, kw, o, oh, ow;
  int64_t sh, sw, plh, plw, phh, phw;

  auto Tie() const {
    return std::tie(pass, dtype, n, h, w, c, kh, kw, o, oh, ow, sh, sw, plh,
                    plw, phh, phw);
  }
  bool operator<(const Problem& other) const { return Tie() < other.Tie(); }
};

// A primitive with what running it takes. Activations stay in XLA's NHWC
// layout (blocked ones gained nothing), but the weights take the layout the
// primitive prefers: with plain HWIO weights oneDNN falls back to im2col+GEMM
// for both backward passes, several times slower. The reorder costs little: weights
// are small.
struct Compiled {
  dnnl::primitive primitive;
  int x_arg, w_arg, y_arg;  // DNNL_ARG_* of the input, kernel and output.
  memory::desc weights;     // The layout the primitive chose.
  dnnl::primitive reorder;  // HWIO to `weights`, or back for kBackwardWeights.
  memory::desc scratchpad, reorder_scratchpad;
  size_t weights_offset, workspace_bytes;  // Scratchpads first, then weights.
};

const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  // Streams are not thread-safe: one per calling thread.
  thread_local dnnl::stream stream(Engine());
  return stream;
}

memory::desc Src(const Problem& p) {
  return memory::desc({p.n, p.c, p.h, p.w}, p.dtype, memory::format_tag::nhwc);
}
memory::desc Weights(const Problem& p, memory::format_tag tag) {
  return memory::desc({p.o, p.c, p.kh, p.kw}, p.dtype, tag);
}
memory::desc Dst(const Problem& p) {
  return memory::desc({p.n, p.o, p.oh, p.ow}, p.dtype,
                      memory::format_tag::nhwc);
}

size_t Align(size_t bytes) { return (bytes + 63) / 64 * 64; }

Compiled Finish(const Problem& p, const dnnl::primitive_desc& pd,
                const dnnl::primitive_attr& attr, int x_arg, int w_arg,
                int y_arg) {
  const memory::desc hwio = Weights(p, memory::format_tag::hwio);
  const memory::desc chosen = pd.query_md(dnnl::query::exec_arg_md, w_arg);
  const dnnl::reorder::primitive_desc reorder_pd =
      p.pass == kBackwardWeights
          ? dnnl::reorder::primitive_desc(Engine(), chosen, Engine(), hwio, attr)
          : dnnl::reorder::primitive_desc(Engine(), hwio, Engine(), chosen, attr);
  const memory::desc scratchpad = pd.scratchpad_desc();
  const memory::desc reorder_scratchpad = reorder_pd.scratchpad_desc();
  // The reorder and the convolution run one after the other: they share.
  const size_t offset = Align(
      std::max(scratchpad.get_size(), reorder_scratchpad.get_size()));
  Compiled compiled;
  compiled.primitive = dnnl::primitive(pd);
  compiled.x_arg = x_arg;
  compiled.w_arg = w_arg;
  compiled.y_arg = y_arg;
  compiled.weights = chosen;
  compiled.reorder = dnnl::reorder(reorder_pd);
  compiled.scratchpad = scratchpad;
  compiled.reorder_scratchpad = reorder_scratchpad;
  compiled.weights_offset = offset;
  compiled.workspace_bytes = offset + chosen.get_size();
  return compiled;
}

Compiled Compile(const Problem& p) {
  using namespace dnnl;
  const memory::dims strides{p.sh, p.sw}, pad_l{p.plh, p.plw},
      pad_r{p.phh, p.phw};
  // A user scratchpad keeps one primitive safe to run from several threads.
  primitive_attr attr;
  attr.set_scratchpad_mode(scratchpad_mode::user);
  const auto alg = algorithm::convolution_direct;
  const auto weights = Weights(p, memory::format_tag::any);
  const convolution_forward::primitive_desc fwd(
      Engine(), prop_kind::forward_training, alg, Src(p), weights, Dst(p),
      strides, pad_l, pad_r, attr);
  switch (p.pass) {
    case kForward:
      return Finish(p, fwd, attr, DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST);
    case kBackwardData:
      return Finish(p,
                    convolution_backward_data::primitive_desc(
                        Engine(), alg, Src(p), weights, Dst(p), strides, pad_l,
                        pad_r, fwd, attr),
                    attr, DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS,
                    DNNL_ARG_DIFF_DST);
    case kBackwardWeights:
      return Finish(p,
                    convolution_backward_weights::primitive_desc(
                        Engine(), alg, Src(p), weights, Dst(p), strides, pad_l,
                        pad_r, fwd, attr),
                    attr, DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS,
                    DNNL_ARG_DIFF_DST);
  }
  throw std::invalid_argument("unknown pass");
}

// Building a primitive costs far more than running a small one: build each
// problem once per process, shared by every calling thread.
const Compiled& Lookup(const Problem& p) {
  static std::mutex mutex;
  static std::map<Problem, std::unique_ptr<Compiled>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Compiled>& slot = cache[p];
  if (!slot) slot = std::make_unique<Compiled>(Compile(p));
  return *slot;
}

// Grow-only, 64-byte aligned workspace, one per thread so that concurrent
// runs of one primitive never share it.
char* Workspace(size_t bytes) {
  struct Free {
    void operator()(void* ptr) const { std::free(ptr); }
  };
  thread_local std::unique_ptr<void, Free> buffer;
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    capacity = Align(bytes);
    buffer.reset(std::aligned_alloc(64, capacity));
    if (!buffer) throw std::bad_alloc();
  }
  return static_cast<char*>(buffer.get());
}

void Execute(const Compiled& compiled, void* x, void* w, void* y,
             const Problem& p) {
  char* workspace = Workspace(compiled.workspace_bytes);
  const memory user_weights(Weights(p, memory::format_tag::hwio), Engine(), w);
  const memory weights(compiled.weights, Engine(),
                       workspace + compiled.weights_offset);
  const memory reorder_scratchpad(compiled.reorder_scratchpad, Engine(),
                                  workspace);
  const bool weights_out = p.pass == kBackwardWeights;
  if (!weights_out) {
    compiled.reorder.execute(Stream(),
                             {{DNNL_ARG_FROM, user_weights},
                              {DNNL_ARG_TO, weights},
                              {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
  }
  compiled.primitive.execute(
      Stream(),
      {{compiled.x_arg, memory(Src(p), Engine(), x)},
       {compiled.w_arg, weights},
       {compiled.y_arg, memory(Dst(p), Engine(), y)},
       {DNNL_ARG_SCRATCHPAD, memory(compiled.scratchpad, Engine(), workspace)}});
  if (weights_out) {
    compiled.reorder.execute(Stream(),
                             {{DNNL_ARG_FROM, weights},
                              {DNNL_ARG_TO, user_weights},
                              {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
  }
  Stream().wait();
}

ffi::ErrorOr<memory::data_type> DnnlType(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32:
      return memory::data_type::f32;
    case ffi::DataType::BF16:
      return memory::data_type::bf16;
    default:
      return ffi::Unexpected(
          ffi::Error::InvalidArgument("onednn_conv: only f32 and bf16"));
  }
}

// `x`, `w` and `y` are the NHWC input, HWIO kernel and NHWC output of the
// forward convolution, whichever of them this pass reads or writes.
ffi::Error Run(Pass pass, const ffi::AnyBuffer& x, const ffi::AnyBuffer& w,
               const ffi::AnyBuffer& y, Attr strides, Attr pad_lo,
               Attr pad_hi) {
  if (x.dimensions().size() != 4 || w.dimensions().size() != 4 ||
      y.dimensions().size() != 4) {
    return ffi::Error::InvalidArgument("onednn_conv: operands must be 4-D");
  }
  if (strides.size() != 2 || pad_lo.size() != 2 || pad_hi.size() != 2) {
    return ffi::Error::InvalidArgument(
        "onednn_conv: strides, pad_lo and pad_hi need two entries each");
  }
  if (x.element_type() != w.element_type() ||
      x.element_type() != y.element_type()) {
    return ffi::Error::InvalidArgument("onednn_conv: mixed dtypes");
  }
  ffi::ErrorOr<memory::data_type> dtype = DnnlType(x.element_type());
  if (dtype.has_error()) return dtype.error();
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y.dimensions();
  const Problem p{pass,      *dtype,     xd[0],      xd[1],     xd[2],
                  xd[3],     wd[0],      wd[1],      wd[3],     yd[1],
                  yd[2],     strides[0], strides[1], pad_lo[0], pad_lo[1],
                  pad_hi[0], pad_hi[1]};
  try {
    Execute(Lookup(p), x.untyped_data(), w.untyped_data(), y.untyped_data(),
            p);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w,
                   ffi::Result<ffi::AnyBuffer> y, Attr strides, Attr pad_lo,
                   Attr pad_hi) {
  return Run(kForward, x, w, *y, strides, pad_lo, pad_hi);
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                        ffi::Result<ffi::AnyBuffer> dx, Attr strides,
                        Attr pad_lo, Attr pad_hi) {
  return Run(kBackwardData, *dx, w, dy, strides, pad_lo, pad_hi);
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                           ffi::Result<ffi::AnyBuffer> dw, Attr strides,
                           Attr pad_lo, Attr pad_hi) {
  return Run(kBackwardWeights, x, *dw, dy, strides, pad_lo, pad_hi);
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<Attr>("strides")
      .Attr<Attr>("pad_lo")
      .Attr<Attr>("pad_hi");
}

}  // namespace

// Creates the engine up front, so that a oneDNN that cannot run here (a SYCL
// build that finds no CPU device) says so at load time, not inside a step.
// Writes the version, and any error, to `message`; returns 0 where usable.
extern "C" int RirOnednnCheck(char* message, size_t size) {
  const dnnl_version_t* v = dnnl_version();
  try {
    Engine();
  } catch (const std::exception& e) {
    std::snprintf(message, size, "oneDNN v%d.%d.%d: %s", v->major, v->minor,
                  v->patch, e.what());
    return 1;
  }
  std::snprintf(message, size, "oneDNN v%d.%d.%d", v->major, v->minor,
                v->patch);
  return 0;
}

// Whether this oneDNN builds bf16 convolutions on this CPU (all three passes of
// a small one): its bf16 kernels need AVX-512 or AMX, and without them creating
// a primitive fails. Returns 1 where they build, 0 where not.
extern "C" int RirOnednnSupportsBf16() {
  const Problem probe{kForward, memory::data_type::bf16, 2, 8, 8, 16, 3, 3, 16,
                      8, 8, 1, 1, 1, 1, 1, 1};
  try {
    for (Pass pass : {kForward, kBackwardData, kBackwardWeights}) {
      Problem p = probe;
      p.pass = pass;
      Compile(p);
    }
  } catch (const std::exception&) {
    return 0;
  }
  return 1;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(RirOnednnConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RirOnednnConvBackwardData, BackwardData,
                              Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RirOnednnConvBackwardWeights, BackwardWeights,
                              Binding());
