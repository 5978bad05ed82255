// Asking for MOAS_DEVICE_CUDA through the public ABI: with no usable device, MOAS_ERR_DEVICE_UNAVAILABLE with the
// reason, whichever applies to this build (MOAS_TEST_CUDA_BUILT) and machine; with one, a model on it.
#include <catch2/catch.hpp>
#include <string>

#include "api_helpers.hpp"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("Asking for the CUDA device gives a model on it, or says why it cannot", "[api][cuda]") {
  moas_model_config c = api_test::small_config();
  c.device = MOAS_DEVICE_CUDA;
  moas_model *m = nullptr;
  const moas_status status = moas_model_create(&c, &m);
  const std::string why = moas_last_error();
  INFO(why);
#if MOAS_TEST_CUDA_BUILT
  // libmoas_cuda.so sits beside libmoas.so: a device and a model on it, or CUDA's reason for having none.
  if (status == MOAS_OK) {
    moas_model_destroy(m);
    c.device_index = 1 << 20;
    REQUIRE(moas_model_create(&c, &m) == MOAS_ERR_DEVICE_UNAVAILABLE);
    REQUIRE_THAT(std::string(moas_last_error()), Contains("device_index is 1048576"));
  } else {
    REQUIRE(status == MOAS_ERR_DEVICE_UNAVAILABLE);
    REQUIRE(m == nullptr);
    REQUIRE_THAT(why, StartsWith("no CUDA device: "));
    REQUIRE(why != "no CUDA device: libmoas_cuda.so not found (built without CUDA)");
    REQUIRE(why.size() > std::string("no CUDA device: ").size());
  }
#else
  REQUIRE(status == MOAS_ERR_DEVICE_UNAVAILABLE);
  REQUIRE(m == nullptr);
  REQUIRE(why == "no CUDA device: libmoas_cuda.so not found (built without CUDA)");
#endif
  c.device = MOAS_DEVICE_CPU;  // the same config on the CPU is fine
  REQUIRE(moas_model_create(&c, &m) == MOAS_OK);
  moas_model_destroy(m);
}
