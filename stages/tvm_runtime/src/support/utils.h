// websd shim for TVM's src/support/utils.h (not shipped in the apache-tvm wheel); see README.md here.
//
// Of TVM's string and process helpers, the runtime files built into the wasm use only StartsWith
// (the RPC endpoint, to recognise a timeout error message).
#ifndef WEBSD_TVM_SUPPORT_UTILS_H_
#define WEBSD_TVM_SUPPORT_UTILS_H_

#include <tvm/ffi/string.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const ffi::String& str, const char* prefix) {
  size_t n = std::strlen(prefix);
  return str.size() >= n && std::memcmp(str.data(), prefix, n) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_UTILS_H_
