// The export table of ferry's native addon; each operation lives in its own file.
#include "binding.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  ferry::init_cpu_features(env, exports);
  ferry::init_gcm(env, exports);
  ferry::init_zero_pages(env, exports);
  ferry::init_copy(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_native, init)
