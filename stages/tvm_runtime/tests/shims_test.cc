// Native check of the runtime shims (they are header-only), under the address and UB sanitizers:
//
//   S=.venv/lib/python3.11/site-packages
//   g++ -std=c++17 -g -fsanitize=address,undefined -Istages/tvm_runtime -Istages/tvm_runtime/include \
//       -I$S/tvm_ffi/include stages/tvm_runtime/tests/shims_test.cc -L$S/tvm_ffi/lib -ltvm_ffi \
//       -Wl,-rpath,$S/tvm_ffi/lib -o build/shims_test && build/shims_test
//
// The wasm build exercises Serializer and BytesInStream on every VM load (tests/node/runtime.test.mjs);
// base64, the ring buffer and the arena are on paths the page does not take, so they are checked here.
#include <tvm/support/serializer.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "src/support/arena.h"
#include "src/support/base64.h"
#include "src/support/bytes_io.h"
#include "src/support/ring_buffer.h"
#include "src/support/utils.h"

using namespace tvm::support;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                 \
    }                                                               \
  } while (0)

static std::mt19937 rng(1);

static std::string Encode(const std::string& data, int end_char = EOF) {
  std::string text;
  BytesOutStream out(&text);
  Base64OutStream b64(&out);
  b64.Write(data.data(), data.size());
  b64.Finish(end_char);
  return text;
}

static void TestBase64() {
  CHECK(Encode("Man is") == "TWFuIGlz");  // RFC 4648 examples
  CHECK(Encode("Ma", '\n') == "TWE=\n");
  CHECK(Encode("M") == "TQ==");
  for (size_t n = 0; n < 300; ++n) {
    std::string data(n, 0);
    for (char& c : data) c = static_cast<char>(rng());
    std::string text = "  \n" + Encode(data) + "\n";  // InitPosition skips the leading white space
    BytesInStream in(text);
    Base64InStream b64(&in);
    b64.InitPosition();
    std::string back(n, 0);
    size_t got = 0;
    while (got < n) {  // odd-sized reads cross the 3-byte groups
      size_t k = b64.Read(&back[got], std::min<size_t>(7, n - got));
      if (k == 0) break;
      got += k;
    }
    char extra;
    CHECK(got == n && back == data && b64.Read(&extra, 1) == 0);
  }
}

static void TestSerializer() {
  std::string blob;
  BytesOutStream out(&blob);
  out.Write(std::string("hello"));
  out.Write(std::vector<int64_t>{1, -2, 3});
  out.Write(std::vector<std::string>{"a", "bc"});
  out.Write(DLDataType{kDLFloat, 32, 1});
  out.Write(DLDevice{kDLWebGPU, 3});
  out.Write(tvm::ffi::Array<tvm::ffi::String>{"x", "yz"});
  CHECK(blob.substr(0, 13) == std::string("\5\0\0\0\0\0\0\0hello", 13));  // u64 length, then bytes

  BytesInStream in(blob);
  std::string s;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  DLDataType dtype;
  DLDevice dev;
  tvm::ffi::Array<tvm::ffi::String> arr;
  CHECK(in.Read(&s) && in.Read(&ints) && in.Read(&strings) && in.Read(&dtype) && in.Read(&dev) && in.Read(&arr));
  CHECK(s == "hello" && ints == (std::vector<int64_t>{1, -2, 3}) && strings[1] == "bc");
  CHECK(dtype.code == kDLFloat && dtype.bits == 32 && dtype.lanes == 1);
  CHECK(dev.device_type == kDLWebGPU && dev.device_id == 3 && arr.size() == 2 && arr[1] == "yz");
  int64_t past_end;
  CHECK(!in.Read(&past_end));
}

static void TestRingBuffer() {
  RingBuffer ring;
  std::string model;  // what the FIFO should hold
  auto random_bytes = [](size_t n) {
    std::string d(n, 0);
    for (char& c : d) c = static_cast<char>(rng());
    return d;
  };
  for (int step = 0; step < 20000; ++step) {
    size_t n = rng() % 300, limit = rng() % 200;
    switch (rng() % 4) {
      case 0: {
        std::string d = random_bytes(n);
        ring.Write(d.data(), n);
        model += d;
        break;
      }
      case 1: {
        n = std::min(n, model.size());
        std::string d(n, 0);
        ring.Read(&d[0], n);
        CHECK(d == model.substr(0, n));
        model.erase(0, n);
        break;
      }
      case 2: {  // the callee takes only part of what is offered
        std::string taken;
        size_t k = ring.ReadWithCallback(
            [&](const void* p, size_t size) {
              size_t t = std::min(size, limit);
              taken.append(static_cast<const char*>(p), t);
              return t;
            },
            n);
        CHECK(k == taken.size() && taken == model.substr(0, k));
        model.erase(0, k);
        break;
      }
      default: {  // the callee fills only part of the room
        std::string given;
        size_t k = ring.WriteWithCallback(
            [&](void* p, size_t size) {
              given = random_bytes(std::min(size, limit));
              std::memcpy(p, given.data(), given.size());
              return given.size();
            },
            n);
        CHECK(k == given.size());
        model += given;
      }
    }
    CHECK(ring.bytes_available() == model.size());
    if (step % 1000 == 0) ring.Reserve(model.size() + 100);
  }
}

static void TestArena() {
  Arena arena;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 100; ++i) {
      int64_t* ints = arena.allocate_<int64_t>(i);
      CHECK(reinterpret_cast<uintptr_t>(ints) % alignof(int64_t) == 0);
      for (int j = 0; j < i; ++j) ints[j] = j;
      char* chars = arena.allocate_<char>(3 * i + 1);
      chars[3 * i] = 1;
    }
    arena.RecycleAll();
  }
}

int main() {
  TestBase64();
  TestSerializer();
  TestRingBuffer();
  TestArena();
  CHECK(StartsWith(tvm::ffi::String("RPCSessionTimeoutError: x"), "RPCSessionTimeoutError: "));
  CHECK(!StartsWith(tvm::ffi::String("RPC"), "RPCS"));
  std::puts("runtime shims: ok");
}
