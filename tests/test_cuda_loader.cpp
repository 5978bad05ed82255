// The CUDA loader (src/cuda_loader.cpp) on each way libmoas_cuda.so can be missing or unusable, and on the real
// library when this build has one (MOAS_TEST_LIBMOAS_CUDA): a table of the right version, then either devices or
// CUDA's own reason for having none.
#include <catch2/catch.hpp>
#include <string>

#include "cuda_loader.hpp"

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
