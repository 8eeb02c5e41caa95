// libFuzzer target: any byte string given to the safetensors parser is either rejected with an error or
// yields tensors whose every byte lies inside the input (ASan checks the reads).
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto st = sdrt::SafeTensors::parse(data, size, nullptr, "fuzz");
  if (!st.is_ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& info : st->tensors()) {
    sdrt::Tensor t = st->tensor(info);
    const auto* p = static_cast<const uint8_t*>(t.data());
    if (t.nbytes()) sink = sink ^ p[0] ^ p[t.nbytes() - 1];
  }
  (void)sink;
  return 0;
}
