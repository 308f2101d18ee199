// websd shim for <tvm/support/io.h> (not shipped in the apache-tvm wheel); see stages/tvm_runtime/README.md.
//
// The byte-stream interface the TVM runtime reads and writes its binary formats through (executables,
// tensors, device function tables). A stream moves raw bytes; typed values go through Serializer<T>,
// specialised in <tvm/support/serializer.h> and in TVM's own runtime headers.
#ifndef WEBSD_TVM_SUPPORT_IO_H_
#define WEBSD_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Specialisations provide: `static constexpr bool enabled = true;`,
// `static void Write(Stream*, const T&)` and `static bool Read(Stream*, T*)`.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;
  // Raw bytes; both return how many bytes were moved.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  // Typed values. Subclasses that override the raw methods re-export these with `using Stream::Read;`.
  template <typename T>
  bool Read(T* value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialised for T");
    return Serializer<T>::Read(this, value);
  }
  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "tvm::support::Serializer<T> is not specialised for T");
    Serializer<T>::Write(this, value);
  }

  // `count` values one after the other, without a length prefix.
  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write<T>(values[i]);
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_IO_H_
