{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "native/addon.cc",
        "native/binding.cc",
        "native/copy_binding.cc",
        "native/cpu_features.cc",
        "native/cpu_features_binding.cc",
        "native/gcm.cc",
        "native/gcm_binding.cc",
        "native/gcm_evp.cc",
        "native/gcm_vaes.cc",
        "native/page_map.cc",
        "native/zero_pages.cc",
        "native/zero_pages_binding.cc"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "FERRY_HAVE_EVP=1"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra"]
    }
  ]
}
