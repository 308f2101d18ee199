// websd shim for TVM's src/support/arena.h (not shipped in the apache-tvm wheel); see README.md here.
//
// Scratch memory for the RPC endpoint: it allocates the arrays of one message with allocate_<T>(n)
// and drops them all with RecycleAll() when the message is done. Objects placed here are never
// destroyed, so only trivially destructible types belong in it (as in TVM).
#ifndef WEBSD_TVM_SUPPORT_ARENA_H_
#define WEBSD_TVM_SUPPORT_ARENA_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Uninitialised room for `count` T's, valid until RecycleAll().
  template <typename T>
  T* allocate_(int count = 1) {
    static_assert(std::is_trivial<T>::value, "Arena neither constructs nor destroys");
    return static_cast<T*>(Alloc(sizeof(T) * static_cast<size_t>(std::max(count, 0)), alignof(T)));
  }

  // Makes all memory handed out so far reusable. Keeps the largest block, frees the rest.
  void RecycleAll() {
    if (blocks_.size() > 1) {
      auto largest = std::max_element(blocks_.begin(), blocks_.end(),
                                      [](const Block& a, const Block& b) { return a.size < b.size; });
      Block keep = std::move(*largest);
      blocks_.clear();
      blocks_.push_back(std::move(keep));
    }
    used_ = 0;
  }

 private:
  struct Block {
    std::unique_ptr<std::max_align_t[]> data;
    size_t size;
  };
  static constexpr size_t kMinBlock = 4096;

  void* Alloc(size_t size, size_t align) {
    if (!blocks_.empty()) {
      size_t offset = (used_ + align - 1) / align * align;
      if (offset + size <= blocks_.back().size) {
        used_ = offset + size;
        return reinterpret_cast<char*>(blocks_.back().data.get()) + offset;
      }
    }
    size_t block_size = std::max(kMinBlock, size + align);
    size_t units = (block_size + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    blocks_.push_back(Block{std::make_unique<std::max_align_t[]>(units), units * sizeof(std::max_align_t)});
    used_ = size;
    return blocks_.back().data.get();
  }

  std::vector<Block> blocks_;  // memory is handed out from the last one
  size_t used_ = 0;            // bytes used in the last block
};

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_ARENA_H_
