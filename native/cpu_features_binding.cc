#include "binding.h"
#include "cpu_features.h"

namespace ferry {
namespace {

Napi::Value cpu_features_js(const Napi::CallbackInfo& info) {
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("aes", f.aes);
  o.Set("pclmulqdq", f.pclmulqdq);
  o.Set("avx2", f.avx2);
  o.Set("vaes", f.vaes);
  o.Set("vpclmulqdq", f.vpclmulqdq);
  o.Set("avx512f", f.avx512f);
  o.Set("avx512bw", f.avx512bw);
  o.Set("avx512vl", f.avx512vl);
  return o;
}

}  // namespace

void init_cpu_features(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuFeatures", Napi::Function::New(env, cpu_features_js, "cpuFeatures"));
}

}  // namespace ferry
