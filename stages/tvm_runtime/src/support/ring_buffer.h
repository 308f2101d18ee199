// websd shim for TVM's src/support/ring_buffer.h (not shipped in the apache-tvm wheel); see README.md.
//
// The byte queue between the RPC endpoint and its channel: bytes are appended at the back (Write,
// WriteWithCallback) and consumed from the front (Read, ReadWithCallback). TVM's version is a ring;
// this one is a flat buffer that is compacted when its front has been consumed, which has the same
// first-in first-out behaviour. The callback forms hand the callee one contiguous span.
#ifndef WEBSD_TVM_SUPPORT_RING_BUFFER_H_
#define WEBSD_TVM_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  size_t bytes_available() const { return end_ - begin_; }

  // Makes room so that `n` bytes in total can be held without growing.
  void Reserve(size_t n) {
    Compact();
    if (buffer_.size() < n) buffer_.resize(n);
  }

  // Consumes exactly `size` bytes; there must be that many.
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_GE(bytes_available(), size);
    if (size == 0) return;
    std::memcpy(data, buffer_.data() + begin_, size);
    Consume(size);
  }

  // Offers up to `max_nbytes` bytes to `fsend(const void*, size_t) -> size_t`; consumes what it took.
  template <typename FSend>
  size_t ReadWithCallback(FSend fsend, size_t max_nbytes) {
    size_t n = std::min(max_nbytes, bytes_available());
    size_t sent = n == 0 ? 0 : fsend(buffer_.data() + begin_, n);
    Consume(sent);
    return sent;
  }

  void Write(const void* data, size_t size) {
    if (size == 0) return;
    std::memcpy(Grow(size), data, size);
    end_ += size;
  }

  // Lets `frecv(void*, size_t) -> size_t` fill up to `max_nbytes`; keeps what it wrote.
  template <typename FRecv>
  size_t WriteWithCallback(FRecv frecv, size_t max_nbytes) {
    size_t received = max_nbytes == 0 ? 0 : frecv(Grow(max_nbytes), max_nbytes);
    end_ += received;
    return received;
  }

 private:
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Moves the unread bytes to the front.
  void Compact() {
    if (begin_ == 0) return;
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  // Room for `n` more bytes at the back; returns where they go.
  char* Grow(size_t n) {
    if (buffer_.size() - end_ < n) {
      Compact();
      if (buffer_.size() - end_ < n) buffer_.resize(std::max(end_ + n, buffer_.size() * 2));
    }
    return buffer_.data() + end_;
  }

  std::vector<char> buffer_;
  size_t begin_ = 0;  // first unread byte
  size_t end_ = 0;    // one past the last written byte
};

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_RING_BUFFER_H_
