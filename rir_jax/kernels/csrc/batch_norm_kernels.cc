// Batch norm's per-channel sums over channels-last activations, as XLA FFI
// handlers for the CPU: each reads its activations once, in their own dtype.
//
// XLA's CPU reductions take in no type conversion, select or broadcast, so the
// batch norm of rir_jax.kernels.batch_norm costs XLA a pass writing the
// ReLU-masked gradient before its sums, and in bf16 a conversion pass before
// every sum. These handlers are the same sums with none of those passes:
//   Stats:     sums = (sum x, sum x^2)
//   WeightedStats: sums = (sum w x, sum w x^2), w the weight of x's example
//              (0 for padding rows, which then count nowhere)
//   GradSums:  g = dy where relu?(x * a + b) > 0; sums = (sum g, sum g * x)
// per channel. Activations are [rows, C] (every axis but the last flattened),
// f32 or bf16; the coefficients a and b are one f32 [2, C] array; the sums are
// f32 [2, C]. Each chunk of rows is summed on its own and the chunks are added
// in a fixed order, so results do not depend on how threads shared them.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using bf16 = uint16_t;  // the bits of a bfloat16
constexpr int64_t kChunkRows = 512;

// 16 channels at a time as one vector (GCC/Clang vector extensions: AVX-512
// registers where the CPU has them, halves or quarters elsewhere); a last
// block of fewer channels goes one channel at a time as plain floats.
constexpr int64_t kLanes = 16;
using Vec = float __attribute__((vector_size(4 * kLanes)));
using HalfBits = uint16_t __attribute__((vector_size(2 * kLanes)));
using Bits = uint32_t __attribute__((vector_size(4 * kLanes)));

inline float Load(const float* p, float) { return *p; }
inline float Load(const bf16* p, float) {
  const uint32_t bits = uint32_t{*p} << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
inline Vec Load(const float* p, Vec) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline Vec Load(const bf16* p, Vec) {
  HalfBits half;
  std::memcpy(&half, p, sizeof half);
  const Bits bits = __builtin_convertvector(half, Bits) << 16;
  Vec v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
inline void Put(float* p, float v) { *p = v; }
inline void Put(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

// Calls body(j0, V{}) for each block of channels from j0: V is Vec for a full
// block of kLanes channels, float for each channel left over.
template <typename Body>
void ForChannelBlocks(int64_t c, const Body& body) {
  int64_t j0 = 0;
  for (; j0 + kLanes <= c; j0 += kLanes) body(j0, Vec{});
  for (; j0 < c; ++j0) body(j0, float{});
}

// Runs body(chunk) for chunk in [0, chunks) on the caller and on XLA's
// intra-op threads. Helpers claim chunks from a shared counter, so the caller
// never waits for a helper that has not started: it only waits for chunks
// already claimed. A helper that starts late finds none and returns.
template <typename Body>
void ForEachChunk(ffi::ThreadPool& pool, int64_t chunks, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, chunks, &body] {
    for (int64_t c; (c = state->next.fetch_add(1)) < chunks;) {
      body(c);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work] { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) {
    std::this_thread::yield();
  }
}

int64_t Chunks(int64_t rows) { return (rows + kChunkRows - 1) / kChunkRows; }

// Per-chunk partial sums [chunks][2][C], added in chunk order into sums[2][C].
// chunk_sums(begin, end, s, q) writes its rows' two sums into s and q.
template <typename ChunkSums>
void Sum(ffi::ThreadPool& pool, int64_t rows, int64_t c, float* sums,
         const ChunkSums& chunk_sums) {
  const int64_t chunks = Chunks(rows);
  std::vector<float> partial(chunks * 2 * c);
  ForEachChunk(pool, chunks, [&](int64_t k) {
    float* s = &partial[k * 2 * c];
    const int64_t begin = k * kChunkRows;
    chunk_sums(begin, std::min(rows, begin + kChunkRows), s, s + c);
  });
  std::fill(sums, sums + 2 * c, 0.0f);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t i = 0; i < 2 * c; ++i) sums[i] += partial[k * 2 * c + i];
  }
}

template <typename X>
void Stats(ffi::ThreadPool& pool, const X* x, int64_t rows, int64_t c,
           float* sums) {
  Sum(pool, rows, c, sums, [&](int64_t begin, int64_t end, float* s, float* q) {
    ForChannelBlocks(c, [&](int64_t j0, auto lanes) {
      using V = decltype(lanes);
      V sum_x{}, sum_xx{};
      for (int64_t r = begin; r < end; ++r) {
        const V v = Load(x + r * c + j0, V{});
        sum_x += v;
        sum_xx += v * v;
      }
      Put(s + j0, sum_x);
      Put(q + j0, sum_xx);
    });
  });
}

// Stats with each row times the weight of its example: weights[n] for the
// rows of example n, which are rows / examples consecutive rows.
template <typename X>
void WeightedStats(ffi::ThreadPool& pool, const X* x, const float* weights,
                   int64_t rows_per_example, int64_t rows, int64_t c,
                   float* sums) {
  Sum(pool, rows, c, sums, [&](int64_t begin, int64_t end, float* s, float* q) {
    ForChannelBlocks(c, [&](int64_t j0, auto lanes) {
      using V = decltype(lanes);
      V sum_x{}, sum_xx{};
      for (int64_t r = begin; r < end; ++r) {
        const V v = Load(x + r * c + j0, V{});
        const V weighted = v * weights[r / rows_per_example];
        sum_x += weighted;
        sum_xx += weighted * v;
      }
      Put(s + j0, sum_x);
      Put(q + j0, sum_xx);
    });
  });
}

// g: dy where the forward pass's ReLU let x through (x * a + b > 0), all of
// dy without a ReLU.
template <typename X, typename Y>
void GradSums(ffi::ThreadPool& pool, const X* x, const Y* dy, const float* a,
              const float* b, bool relu, int64_t rows, int64_t c,
              float* sums) {
  Sum(pool, rows, c, sums, [&](int64_t begin, int64_t end, float* s, float* q) {
    ForChannelBlocks(c, [&](int64_t j0, auto lanes) {
      using V = decltype(lanes);
      const V aj = Load(a + j0, V{}), bj = Load(b + j0, V{});
      // Without a ReLU, every g passes: compare against -inf.
      const V floor = V{} + (relu ? 0.0f : -INFINITY);
      V sum_g{}, sum_gx{};
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = r * c + j0;
        const V v = Load(x + i, V{});
        const V g = v * aj + bj > floor ? Load(dy + i, V{}) : V{};
        sum_g += g;
        sum_gx += g * v;
      }
      Put(s + j0, sum_g);
      Put(q + j0, sum_gx);
    });
  });
}

bool IsFloat(ffi::DataType t) {
  return t == ffi::DataType::F32 || t == ffi::DataType::BF16;
}

// Calls f(X*, Y*) with `x` and `y` cast to their element types (f32 or bf16).
template <typename F>
ffi::Error Dispatch(const ffi::AnyBuffer& x, const ffi::AnyBuffer& y, F f) {
  if (!IsFloat(x.element_type()) || !IsFloat(y.element_type())) {
    return ffi::Error::InvalidArgument("batch_norm_kernels: only f32 and bf16");
  }
  const bool xf = x.element_type() == ffi::DataType::F32;
  const bool yf = y.element_type() == ffi::DataType::F32;
  void* xp = x.untyped_data();
  void* yp = y.untyped_data();
  if (xf && yf) f(static_cast<float*>(xp), static_cast<float*>(yp));
  if (xf && !yf) f(static_cast<float*>(xp), static_cast<bf16*>(yp));
  if (!xf && yf) f(static_cast<bf16*>(xp), static_cast<float*>(yp));
  if (!xf && !yf) f(static_cast<bf16*>(xp), static_cast<bf16*>(yp));
  return ffi::Error::Success();
}

int64_t Channels(const ffi::AnyBuffer& x) {
  const auto d = x.dimensions();
  return d.size() == 0 ? 1 : d.back();
}
int64_t Rows(const ffi::AnyBuffer& x) {
  const int64_t c = Channels(x);
  return c == 0 ? 0 : static_cast<int64_t>(x.element_count()) / c;
}

ffi::Error StatsHandler(ffi::ThreadPool pool, ffi::AnyBuffer x,
                        ffi::Result<ffi::Buffer<ffi::F32>> sums) {
  return Dispatch(x, x, [&](auto* xp, auto*) {
    Stats(pool, xp, Rows(x), Channels(x), sums->typed_data());
  });
}

ffi::Error WeightedStatsHandler(ffi::ThreadPool pool, ffi::AnyBuffer x,
                                ffi::Buffer<ffi::F32> weights,
                                ffi::Result<ffi::Buffer<ffi::F32>> sums) {
  const auto d = weights.dimensions();
  const int64_t examples = d.size() == 1 ? d[0] : 0;
  const int64_t rows = Rows(x);
  if (examples == 0 || rows % examples) {
    return ffi::Error::InvalidArgument(
        "batch_norm_kernels: the weights must be one per example (leading axis)");
  }
  return Dispatch(x, x, [&](auto* xp, auto*) {
    WeightedStats(pool, xp, weights.typed_data(), rows / examples, rows,
                  Channels(x), sums->typed_data());
  });
}

ffi::Error GradSumsHandler(ffi::ThreadPool pool, ffi::AnyBuffer x,
                           ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> ab,
                           ffi::Result<ffi::Buffer<ffi::F32>> sums, bool relu) {
  const int64_t c = Channels(x);
  const auto d = ab.dimensions();
  if (d.size() != 2 || d[0] != 2 || d[1] != c) {
    return ffi::Error::InvalidArgument(
        "batch_norm_kernels: the coefficients must be [2, channels]");
  }
  return Dispatch(x, dy, [&](auto* xp, auto* dyp) {
    GradSums(pool, xp, dyp, ab.typed_data(), ab.typed_data() + c, relu, Rows(x),
             c, sums->typed_data());
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RirBatchNormStats, StatsHandler,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RirBatchNormWeightedStats, WeightedStatsHandler,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RirBatchNormGradSums, GradSumsHandler,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("relu"));
