// websd shim for TVM's src/support/base64.h (not shipped in the apache-tvm wheel); see README.md here.
//
// Standard base64 (RFC 4648 alphabet, '=' padding) as streams over another stream. The runtime uses
// it for the JSON form of a tensor (`__data_to_json__` / `__data_from_json__` in tensor.cc):
//   Base64OutStream: Write() bytes, then Finish() to emit the padded tail.
//   Base64InStream: InitPosition() skips leading white space; Read() decodes until the text ends
//   (end of stream, white space, or padding).
#ifndef WEBSD_TVM_SUPPORT_BASE64_H_
#define WEBSD_TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <string>

namespace tvm {
namespace support {

namespace websd_base64 {

inline char EncodeDigit(unsigned value) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  return kDigits[value & 63];
}

// The 6-bit value of a base64 digit; throws on anything else.
inline unsigned DecodeDigit(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  TVM_FFI_THROW(ValueError) << "invalid base64 character " << c;
  return 0;
}

}  // namespace websd_base64

class Base64OutStream : public Stream {
 public:
  using Stream::Write;
  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* bytes = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_[group_len_++] = bytes[i];
      if (group_len_ == 3) EmitGroup();
    }
    return size;
  }
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }

  // Emits the last, padded group; then `end_char` unless it is EOF.
  void Finish(int end_char = EOF) {
    if (group_len_ != 0) EmitGroup();
    if (end_char != EOF) text_.push_back(static_cast<char>(end_char));
    Flush();
  }

 private:
  void EmitGroup() {
    unsigned bits = group_[0] << 16 | (group_len_ > 1 ? group_[1] << 8 : 0) | (group_len_ > 2 ? group_[2] : 0);
    text_.push_back(websd_base64::EncodeDigit(bits >> 18));
    text_.push_back(websd_base64::EncodeDigit(bits >> 12));
    text_.push_back(group_len_ > 1 ? websd_base64::EncodeDigit(bits >> 6) : '=');
    text_.push_back(group_len_ > 2 ? websd_base64::EncodeDigit(bits) : '=');
    group_len_ = 0;
    if (text_.size() >= 1024) Flush();
  }
  void Flush() {
    if (!text_.empty()) sink_->Write(text_.data(), text_.size());
    text_.clear();
  }

  Stream* sink_;
  unsigned char group_[3];
  int group_len_ = 0;
  std::string text_;  // encoded, not yet written to sink_
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  explicit Base64InStream(Stream* source) : source_(source) {}

  void InitPosition() {
    do {
      next_ = NextChar();
    } while (next_ != EOF && std::isspace(next_));
  }

  size_t Read(void* ptr, size_t size) final {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (decoded_pos_ < decoded_len_) {
        out[n++] = decoded_[decoded_pos_++];
      } else if (!DecodeGroup()) {
        break;
      }
    }
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  // Decodes the next four digits into decoded_; false at the end of the text.
  bool DecodeGroup() {
    if (finished_ || next_ == EOF || std::isspace(next_)) return false;
    int c[4] = {next_, NextChar(), NextChar(), NextChar()};
    for (int ch : c) TVM_FFI_ICHECK(ch != EOF && !std::isspace(ch)) << "truncated base64 text";
    TVM_FFI_ICHECK(c[0] != '=' && c[1] != '=') << "invalid base64 padding";
    unsigned bits = websd_base64::DecodeDigit(c[0]) << 18 | websd_base64::DecodeDigit(c[1]) << 12;
    decoded_len_ = 1;
    if (c[2] != '=') {
      bits |= websd_base64::DecodeDigit(c[2]) << 6;
      decoded_len_ = 2;
      if (c[3] != '=') {
        bits |= websd_base64::DecodeDigit(c[3]);
        decoded_len_ = 3;
      }
    }
    finished_ = decoded_len_ < 3;  // padding ends the text
    decoded_[0] = static_cast<unsigned char>(bits >> 16);
    decoded_[1] = static_cast<unsigned char>(bits >> 8);
    decoded_[2] = static_cast<unsigned char>(bits);
    decoded_pos_ = 0;
    next_ = finished_ ? EOF : NextChar();
    return true;
  }
  int NextChar() {
    if (chunk_pos_ == chunk_len_) {
      chunk_len_ = source_->Read(chunk_, sizeof(chunk_));
      chunk_pos_ = 0;
      if (chunk_len_ == 0) return EOF;
    }
    return static_cast<unsigned char>(chunk_[chunk_pos_++]);
  }

  Stream* source_;
  char chunk_[256];
  size_t chunk_len_ = 0, chunk_pos_ = 0;
  int next_ = EOF;  // the first character not yet decoded
  unsigned char decoded_[3];
  int decoded_len_ = 0, decoded_pos_ = 0;
  bool finished_ = false;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_BASE64_H_
