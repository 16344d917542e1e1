// Every oneDNN implementation of a 3x3 convolution's weight gradient, timed: is the one
// oneDNN picks for the project's kernels (its first) the fastest on this CPU?
//
//   PY=$(python -c "import sys; print(sys.prefix)")
//   LINK="-L$PY/lib -ldnnl -Wl,--disable-new-dtags,-rpath,$PY/lib"
//   g++ -O2 -std=c++17 -I$PY/include weight_gradient_impls.cc -o /tmp/impls $LINK
//   /tmp/impls > output.txt      # output_repeat.txt: the first rows of a second run
//
// Batch 128, NHWC activations (as the project's kernels pass them), weights in the layout
// oneDNN prefers; the median of 15 runs after 3 warm-up runs. oneDNN's reference
// implementation (`ref:any`, seconds a call) is listed but not timed.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

using dnnl::memory;
using Tag = memory::format_tag;

double MedianMs(dnnl::convolution_backward_weights::primitive_desc& pd, dnnl::engine& engine,
                dnnl::stream& stream) {
  memory src(pd.src_desc(), engine), diff_dst(pd.diff_dst_desc(), engine);
  memory diff_weights(pd.diff_weights_desc(), engine), scratch(pd.scratchpad_desc(), engine);
  std::memset(src.get_data_handle(), 0, pd.src_desc().get_size());
  std::memset(diff_dst.get_data_handle(), 0, pd.diff_dst_desc().get_size());
  dnnl::convolution_backward_weights primitive(pd);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                                       {DNNL_ARG_DIFF_WEIGHTS, diff_weights}};
  std::vector<double> ms;
  for (int i = 0; i < 18; ++i) {
    auto start = std::chrono::steady_clock::now();
    primitive.execute(stream, args);
    stream.wait();
    if (i >= 3)
      ms.push_back(std::chrono::duration<double, std::milli>(
          std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void Compare(int channels, int out_channels, int size, memory::data_type dtype) {
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::dims strides{1, 1}, padding{1, 1};
  memory::desc src({128, channels, size, size}, dtype, Tag::nhwc);
  memory::desc dst({128, out_channels, size, size}, dtype, Tag::nhwc);
  memory::desc weights({out_channels, channels, 3, 3}, dtype, Tag::any);
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      weights, dst, strides, padding, padding);
  dnnl::convolution_backward_weights::primitive_desc pd(
      engine, dnnl::algorithm::convolution_direct, src, weights, dst, strides, padding,
      padding, forward);
  const char* name = dtype == memory::data_type::bf16 ? "bf16" : "f32";
  int rank = 0;
  do {
    const std::string impl = pd.impl_info_str();
    if (impl.rfind("ref", 0) == 0) {
      std::printf("%s %dx%dx%d->%d #%d %-28s not timed\n", name, size, size, channels,
                  out_channels, rank++, impl.c_str());
      continue;
    }
    std::printf("%s %dx%dx%d->%d #%d %-28s %8.3f ms\n", name, size, size, channels,
                out_channels, rank++, impl.c_str(), MedianMs(pd, engine, stream));
  } while (pd.next_impl());
}

int main() {
  const int shapes[][3] = {{3, 16, 32}, {16, 16, 32}, {32, 32, 16}, {64, 64, 8}};
  for (auto dtype : {memory::data_type::f32, memory::data_type::bf16})
    for (const auto& s : shapes) Compare(s[0], s[1], s[2], dtype);
}
