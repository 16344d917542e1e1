// Each of ResNet-20's 3x3 convolution passes on oneDNN's TBB build, timed two ways.
//
// `halves`: whole against halves.
//   whole:  one primitive over the batch, on TBB's pool of every core (as the kernels run);
//   halves: the batch split in two at the pointer (NHWC: each half is contiguous), each
//           half a primitive built and run in a TBB arena of one thread, the two halves
//           at once (tbb::parallel_invoke); the weight gradient's halves write f32
//           gradients that are summed after (and narrowed to bf16 in bf16).
//   Does a team of one per half beat oneDNN's own split of the work over TBB's threads?
// `cold`: hot against cold buffers.
//   hot:  every run on the same buffers, as `halves` times them;
//   cold: runs rotating over 23 other sets of buffers, each untouched by the 45 calls between.
//   Is a call in the training step slower because its buffers are not in the caches?
//
//   PY=$(python -c "import sys; print(sys.prefix)")
//   LINK="-L$PY/lib -ldnnl -ltbb -Wl,--disable-new-dtags,-rpath,$PY/lib"
//   g++ -O2 -std=c++17 -I$PY/include -I$TBB_INCLUDE convs.cc -o /tmp/convs $LINK
//   (for i in 1 2; do /tmp/convs halves 128 500; done) > output.txt
//   /tmp/convs cold 128 > cold_buffers_output.txt
// (TBB_INCLUDE: `pip download tbb-devel==2021.13.1 --no-deps`, unzipped, its include folder.)
// Each line: the median of alternating runs of both ways after 3 warm-up runs (15 of
// each for `halves`, 45 for `cold`).
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/tbb/parallel_invoke.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

enum Pass { kForward, kBackwardData, kBackwardWeights };
const char* kPassNames[] = {"forward", "input_gradient", "weight_gradient"};

struct Shape {
  int c, o, size, stride;
};

// A primitive with its own buffers, ready to run.
struct Run {
  dnnl::primitive primitive;
  std::vector<std::unique_ptr<char[]>> buffers;
  std::unordered_map<int, memory> args;
  float* weight_gradient_f32 = nullptr;  // halves' weight gradients, to be summed
  size_t weight_elements = 0;
};

char* Buffer(Run& run, size_t bytes) {
  run.buffers.emplace_back(new char[bytes + 64]);
  char* data = run.buffers.back().get();
  std::memset(data, 1, bytes + 64);  // nonzero bf16/f32 garbage, the same in every way
  return data;
}

memory Bind(Run& run, const dnnl::engine& engine, const memory::desc& desc) {
  return memory(desc, engine, Buffer(run, desc.get_size()));
}

// One engine for every primitive, memory and stream (oneDNN refuses to mix them).
const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

Run Build(Pass pass, Shape s, int n, Type type, bool f32_weight_gradient) {
  const dnnl::engine& engine = Engine();
  const int out = (s.size + s.stride - 1) / s.stride;
  const memory::dims strides{s.stride, s.stride}, pad_l{1, 1},
      pad_r{s.stride == 1 ? 1 : 0, s.stride == 1 ? 1 : 0};
  memory::desc src({n, s.c, s.size, s.size}, type, Tag::nhwc);
  memory::desc dst({n, s.o, out, out}, type, Tag::nhwc);
  memory::desc weights({s.o, s.c, 3, 3}, type, Tag::any);
  memory::desc weight_grad({s.o, s.c, 3, 3}, f32_weight_gradient ? Type::f32 : type, Tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto alg = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(engine, dnnl::prop_kind::forward_training,
                                                alg, src, weights, dst, strides, pad_l,
                                                pad_r, attr);
  Run run;
  dnnl::primitive_desc_base* pd = nullptr;
  dnnl::convolution_backward_data::primitive_desc bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights;
  if (pass == kForward) {
    run.primitive = dnnl::convolution_forward(fwd);
    run.args = {{DNNL_ARG_SRC, Bind(run, engine, src)},
                {DNNL_ARG_WEIGHTS, Bind(run, engine, fwd.weights_desc())},
                {DNNL_ARG_DST, Bind(run, engine, dst)}};
    pd = &fwd;
  } else if (pass == kBackwardData) {
    bwd_data = dnnl::convolution_backward_data::primitive_desc(
        engine, alg, src, weights, dst, strides, pad_l, pad_r, fwd, attr);
    run.primitive = dnnl::convolution_backward_data(bwd_data);
    run.args = {{DNNL_ARG_DIFF_SRC, Bind(run, engine, src)},
                {DNNL_ARG_WEIGHTS, Bind(run, engine, bwd_data.weights_desc())},
                {DNNL_ARG_DIFF_DST, Bind(run, engine, dst)}};
    pd = &bwd_data;
  } else {
    bwd_weights = dnnl::convolution_backward_weights::primitive_desc(
        engine, alg, src, weight_grad, dst, strides, pad_l, pad_r, fwd, attr);
    run.primitive = dnnl::convolution_backward_weights(bwd_weights);
    memory grad = Bind(run, engine, bwd_weights.diff_weights_desc());
    run.args = {{DNNL_ARG_SRC, Bind(run, engine, src)},
                {DNNL_ARG_DIFF_WEIGHTS, grad},
                {DNNL_ARG_DIFF_DST, Bind(run, engine, dst)}};
    if (f32_weight_gradient) {
      run.weight_gradient_f32 = static_cast<float*>(grad.get_data_handle());
      run.weight_elements = bwd_weights.diff_weights_desc().get_size() / 4;
    }
    pd = &bwd_weights;
  }
  run.args[DNNL_ARG_SCRATCHPAD] = Bind(run, engine, pd->scratchpad_desc());
  return run;
}

void Execute(Run& run) {
  dnnl::stream stream(Engine());
  run.primitive.execute(stream, run.args);
  stream.wait();
}

double Ms(const std::function<void()>& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs `a` and `b` in turn `rounds` times and prints the medians after 3 warm-up rounds,
// with a's time over b's (b's over a's where `b_over_a`).
void Alternate(Pass pass, Shape s, int n, Type type, int rounds, const char* a_name,
               const std::function<void()>& a, const char* b_name,
               const std::function<void()>& b, bool b_over_a) {
  std::vector<double> a_ms, b_ms;
  for (int i = 0; i < rounds; ++i) {
    const double ta = Ms(a), tb = Ms(b);
    if (i >= 3) a_ms.push_back(ta), b_ms.push_back(tb);
  }
  const double ma = Median(a_ms), mb = Median(b_ms);
  std::printf("%-5s batch %3d %2dx%-2d %2d->%-2d s%d %-16s %s %7.3f ms  %s %7.3f ms  %.2fx\n",
              type == Type::bf16 ? "bf16" : "f32", n, s.size, s.size, s.c, s.o, s.stride,
              kPassNames[pass], a_name, ma, b_name, mb, b_over_a ? mb / ma : ma / mb);
  std::fflush(stdout);
}

void CompareHalves(Pass pass, Shape s, int n, Type type) {
  const bool weights = pass == kBackwardWeights;
  Run whole = Build(pass, s, n, type, false);
  oneapi::tbb::task_arena one_a(1), one_b(1);
  Run half_a, half_b;
  one_a.execute([&] { half_a = Build(pass, s, n / 2, type, weights); });
  one_b.execute([&] { half_b = Build(pass, s, n - n / 2, type, weights); });
  std::vector<uint16_t> narrowed(weights ? half_a.weight_elements : 0);
  auto halves = [&] {
    oneapi::tbb::parallel_invoke([&] { one_a.execute([&] { Execute(half_a); }); },
                                 [&] { one_b.execute([&] { Execute(half_b); }); });
    if (!weights) return;
    float* a = half_a.weight_gradient_f32;
    const float* b = half_b.weight_gradient_f32;
    for (size_t i = 0; i < half_a.weight_elements; ++i) a[i] += b[i];
    if (type == Type::bf16) {
      for (size_t i = 0; i < half_a.weight_elements; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &a[i], 4);
        narrowed[i] = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
      }
    }
  };
  Alternate(pass, s, n, type, 18, "whole", [&] { Execute(whole); }, "halves", halves, false);
}

void CompareCold(Pass pass, Shape s, int n, Type type) {
  std::vector<Run> runs;
  for (int i = 0; i < 24; ++i) runs.push_back(Build(pass, s, n, type, false));
  int call = 0;
  Alternate(pass, s, n, type, 48, "hot", [&] { Execute(runs[0]); }, "cold",
            [&] { Execute(runs[1 + call++ % 23]); }, true);
}

int main(int argc, char** argv) {
  const bool cold = argc > 1 && std::strcmp(argv[1], "cold") == 0;
  if (argc < 3 || (!cold && std::strcmp(argv[1], "halves") != 0)) {
    std::fprintf(stderr, "usage: %s halves|cold BATCH...\n", argv[0]);
    return 2;
  }
  const Shape shapes[] = {{16, 16, 32, 1}, {16, 32, 32, 2}, {32, 32, 16, 1},
                          {32, 64, 16, 2}, {64, 64, 8, 1}};
  for (int i = 2; i < argc; ++i)
    for (Type type : {Type::f32, Type::bf16})
      for (Pass pass : {kForward, kBackwardData, kBackwardWeights})
        for (const Shape& s : shapes)
          (cold ? CompareCold : CompareHalves)(pass, s, std::atoi(argv[i]), type);
}
