// websd shim for <tvm/support/cuda/nvtx.h> (not shipped in the apache-tvm wheel); see README.md here.
//
// The Relax VM marks profiling ranges for NVIDIA's NVTX tracer. There is no tracer in a browser, so a
// range is an empty object.
#ifndef WEBSD_TVM_SUPPORT_CUDA_NVTX_H_
#define WEBSD_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

#define TVM_NVTX_FUNC_SCOPE()

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_CUDA_NVTX_H_
