// websd shim for <tvm/support/serializer.h> (not shipped in the apache-tvm wheel); see README.md here.
//
// The wire format TVM's compiler writes into a library (the Relax VM executable, device function
// tables) and the runtime reads back. Everything is little-endian; a container is a uint64 element
// count followed by its elements; a string is a uint64 byte count followed by its bytes.
// wasm32 is little-endian, so values are copied as they are in memory.
#ifndef WEBSD_TVM_SUPPORT_SERIALIZER_H_
#define WEBSD_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

static_assert(TVM_FFI_IO_NO_ENDIAN_SWAP, "websd's TVM serializer shim assumes a little-endian target");

namespace tvm {
namespace support {

namespace websd_detail {

inline bool ReadCount(Stream* strm, uint64_t* count) {
  return strm->Read(count, sizeof(uint64_t)) == sizeof(uint64_t);
}
inline void WriteCount(Stream* strm, uint64_t count) { strm->Write(&count, sizeof(uint64_t)); }

// A length-prefixed byte string into any container with resize() and data().
template <typename Buffer>
bool ReadByteString(Stream* strm, Buffer* out) {
  uint64_t count;
  if (!ReadCount(strm, &count)) return false;
  out->resize(static_cast<size_t>(count));
  return count == 0 || strm->Read(&(*out)[0], out->size()) == out->size();
}
inline void WriteByteString(Stream* strm, const char* data, size_t size) {
  WriteCount(strm, size);
  if (size != 0) strm->Write(data, size);
}

}  // namespace websd_detail

// Numbers: their bytes as they are in memory.
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) { strm->Write(&value, sizeof(T)); }
  static bool Read(Stream* strm, T* value) { return strm->Read(value, sizeof(T)) == sizeof(T); }
};

// Enums: as their underlying integer.
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Int = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& value) { Serializer<Int>::Write(strm, static_cast<Int>(value)); }
  static bool Read(Stream* strm, T* value) {
    Int raw;
    if (!Serializer<Int>::Read(strm, &raw)) return false;
    *value = static_cast<T>(raw);
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    websd_detail::WriteByteString(strm, s.data(), s.size());
  }
  static bool Read(Stream* strm, std::string* s) { return websd_detail::ReadByteString(strm, s); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    websd_detail::WriteByteString(strm, s.data(), s.size());
  }
  static bool Read(Stream* strm, ffi::String* s) {
    std::string buffer;
    if (!websd_detail::ReadByteString(strm, &buffer)) return false;
    *s = ffi::String(std::move(buffer));
    return true;
  }
};

template <>
struct Serializer<ffi::Bytes> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Bytes& b) {
    websd_detail::WriteByteString(strm, b.data(), b.size());
  }
  static bool Read(Stream* strm, ffi::Bytes* b) {
    std::string buffer;
    if (!websd_detail::ReadByteString(strm, &buffer)) return false;
    *b = ffi::Bytes(std::move(buffer));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& items) {
    websd_detail::WriteCount(strm, items.size());
    if constexpr (std::is_arithmetic_v<T>) {
      if (!items.empty()) strm->Write(items.data(), items.size() * sizeof(T));
    } else {
      for (const T& item : items) Serializer<T>::Write(strm, item);
    }
  }
  static bool Read(Stream* strm, std::vector<T>* items) {
    uint64_t count;
    if (!websd_detail::ReadCount(strm, &count)) return false;
    items->resize(static_cast<size_t>(count));
    if constexpr (std::is_arithmetic_v<T>) {
      size_t nbytes = items->size() * sizeof(T);
      return nbytes == 0 || strm->Read(items->data(), nbytes) == nbytes;
    } else {
      for (T& item : *items) {
        if (!Serializer<T>::Read(strm, &item)) return false;
      }
      return true;
    }
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* p) {
    return Serializer<A>::Read(strm, &p->first) && Serializer<B>::Read(strm, &p->second);
  }
};

// Maps: a count, then key, value, key, value, ...
template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& map) {
    websd_detail::WriteCount(strm, map.size());
    for (const auto& kv : map) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* map) {
    uint64_t count;
    if (!websd_detail::ReadCount(strm, &count)) return false;
    map->clear();
    for (uint64_t i = 0; i < count; ++i) {
      std::pair<K, V> kv;
      if (!Serializer<std::pair<K, V>>::Read(strm, &kv)) return false;
      map->insert(std::move(kv));
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& items) {
    websd_detail::WriteCount(strm, items.size());
    for (const T& item : items) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* items) {
    uint64_t count;
    if (!websd_detail::ReadCount(strm, &count)) return false;
    ffi::Array<T> result;
    result.reserve(static_cast<int64_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      result.push_back(std::move(item));
    }
    *items = std::move(result);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& map) {
    websd_detail::WriteCount(strm, map.size());
    for (const auto& kv : map) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* map) {
    uint64_t count;
    if (!websd_detail::ReadCount(strm, &count)) return false;
    ffi::Map<K, V> result;
    for (uint64_t i = 0; i < count; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      result.Set(std::move(key), std::move(value));
    }
    *map = std::move(result);
    return true;
  }
};

// DLDataType: code (u8), bits (u8), lanes (u16).
template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& t) {
    Serializer<uint8_t>::Write(strm, t.code);
    Serializer<uint8_t>::Write(strm, t.bits);
    Serializer<uint16_t>::Write(strm, t.lanes);
  }
  static bool Read(Stream* strm, DLDataType* t) {
    return Serializer<uint8_t>::Read(strm, &t->code) && Serializer<uint8_t>::Read(strm, &t->bits) &&
           Serializer<uint16_t>::Read(strm, &t->lanes);
  }
};

// DLDevice: device type (i32), device id (i32).
template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& d) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(d.device_type));
    Serializer<int32_t>::Write(strm, d.device_id);
  }
  static bool Read(Stream* strm, DLDevice* d) {
    int32_t type;
    if (!Serializer<int32_t>::Read(strm, &type) || !Serializer<int32_t>::Read(strm, &d->device_id)) {
      return false;
    }
    d->device_type = static_cast<DLDeviceType>(type);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBSD_TVM_SUPPORT_SERIALIZER_H_
