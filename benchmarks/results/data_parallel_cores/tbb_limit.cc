// Limits TBB (oneDNN's runtime) to one thread per calling thread, for the whole process.
#include <oneapi/tbb/global_control.h>
static oneapi::tbb::global_control *limit;
extern "C" void tbb_limit(int n) {
  delete limit;
  limit = new oneapi::tbb::global_control(oneapi::tbb::global_control::max_allowed_parallelism, n);
}
