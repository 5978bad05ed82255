// The CUDA loader (src/cuda_host/cuda_loader.cpp) on each way libmoas_cuda.so can be missing or unusable, and on the real
// library when this build has one (MOAS_TEST_LIBMOAS_CUDA): a table of the right version, then either devices or
// CUDA's own reason for having none; and the shapes check_device refuses.
#include <catch2/catch.hpp>
#include <string>

#include "cuda_host/cuda_loader.hpp"
#include "device_fit.cuh"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("The CUDA loader says why a library gives no device", "[cuda][loader]") {
  SECTION("no such file") {
    const moas::CudaBackend b = moas::load_cuda_backend("/nonexistent/libmoas_cuda.so");
    REQUIRE(b.table == nullptr);
    REQUIRE(b.devices == 0);
    REQUIRE_THAT(b.why, StartsWith("no CUDA device: /nonexistent/libmoas_cuda.so: cannot open shared object file"));
  }
  SECTION("a library without the entry point") {
    const moas::CudaBackend b = moas::load_cuda_backend("libm.so.6");
    REQUIRE(b.table == nullptr);
    REQUIRE_THAT(b.why, StartsWith("no CUDA device: ") && Contains(MOAS_CUDA_BACKEND_SYMBOL));
  }
#ifdef MOAS_TEST_LIBMOAS_CUDA
  SECTION("the CUDA backend of this build") {
    const moas::CudaBackend b = moas::load_cuda_backend(MOAS_TEST_LIBMOAS_CUDA);
    REQUIRE(b.table != nullptr);
    REQUIRE(b.table->version == MOAS_CUDA_BACKEND_VERSION);
    INFO(b.why);
    if (b.devices == 0)
      REQUIRE(b.why.size() > std::string("no CUDA device: ").size());  // CUDA's reason follows
    else
      REQUIRE(b.why.empty());
  }
#endif
}

// What check_device decides from the device's per-block shared memory, at the limits of an A100 (163 KiB) and an
// H100 (227 KiB): sizes come from the kernels' own carves, so a kernel that grows moves these bounds with it.
TEST_CASE("A model whose attention does not fit a device's shared memory is refused with what to change",
          "[cuda][loader]") {
  using moas::cuda::attention_shared_shortfall;
  const size_t a100 = 166912, h100 = 232448;
  CHECK(attention_shared_shortfall(64, 256, 0, 0, a100).empty());  // the paper's model
  CHECK(attention_shared_shortfall(128, 4096, 0, 0, a100).empty());
  CHECK(attention_shared_shortfall(256, 1024, 0, 0, h100).empty());
  const std::string too_wide = attention_shared_shortfall(256, 1024, 0, 0, a100);  // the fp32 backward's dk/dv tiles
  CHECK_THAT(too_wide, Contains("head_dim 256") && Contains("166912") && Contains("use more heads"));
  CHECK_FALSE(attention_shared_shortfall(512, 1024, 0, 0, h100).empty());
  // CoPE keeps a row's scores over every key it sees: the window bounds them, a long context does not.
  const std::string long_cope = attention_shared_shortfall(64, 16384, 0, 64, h100);
  CHECK_THAT(long_cope, Contains("CoPE over 16384 keys") && Contains("set a window"));
  CHECK(attention_shared_shortfall(64, 16384, 512, 64, h100).empty());
  CHECK(attention_shared_shortfall(64, 256, 0, 64, a100).empty());
}
