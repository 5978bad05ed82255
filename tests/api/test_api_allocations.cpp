// A layer's training call (forward, backward, Adam step, zero_grad) allocates nothing once a call of the same shape
// has run: RustGPT makes one such call per sequence, thousands of times, and tile-sized buffers allocated (and zeroed)
// per call cost a fifth of a short sequence's call in system calls and page faults. The program's malloc-family
// functions count every call that reaches them, on any thread (glibc's own allocator does the work). Built only
// without the sanitizers, which replace malloc themselves.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "api_helpers.hpp"
#include "moas.h"

extern "C" {
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *pointer, size_t size);
void *__libc_memalign(size_t alignment, size_t size);
void __libc_free(void *pointer);
}

namespace {

// Allocations of at least this many bytes count: larger ones are where glibc maps memory or grows the heap.
constexpr size_t kLarge = 4096;
std::atomic<long> allocations{0}, large_allocations{0};

void count(size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (size >= kLarge) large_allocations.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

extern "C" {
void *malloc(size_t size) {
  count(size);
  return __libc_malloc(size);
}
void *calloc(size_t n, size_t size) {
  count(n * size);
  return __libc_calloc(n, size);
}
void *realloc(void *pointer, size_t size) {
  count(size);
  return __libc_realloc(pointer, size);
}
void *memalign(size_t alignment, size_t size) {
  count(size);
  return __libc_memalign(alignment, size);
}
void *aligned_alloc(size_t alignment, size_t size) {
  count(size);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void **out, size_t alignment, size_t size) {
  count(size);
  *out = __libc_memalign(alignment, size);
  return *out ? 0 : ENOMEM;
}
void free(void *pointer) { __libc_free(pointer); }
}

namespace {

using namespace api_test;

struct Counts {
  long all, large;
};

// What `calls` repetitions of one RustGPT call allocate after a first one of the same shape.
Counts allocations_after_first_call(moas_layer *l, int C, int Tn, int calls) {
  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  REQUIRE(moas_adamw_config_rustgpt(&adam) == MOAS_OK);
  const size_t n = (size_t)Tn * C;
  const std::vector<float> x = random_floats(n, 1), dy = random_floats(n, 2);
  std::vector<float> y(n), dx(n);
  auto call = [&] {
    bool ok = moas_layer_forward(l, x.data(), y.data(), n, 1, Tn, 1, nullptr) == MOAS_OK;
    ok = ok && moas_layer_backward(l, dy.data(), dx.data(), n) == MOAS_OK;
    ok = ok && moas_layer_optimizer_step(l, &adam, nullptr) == MOAS_OK;
    return ok && moas_layer_zero_grad(l) == MOAS_OK;
  };
  REQUIRE(call());
  const Counts before{allocations.load(), large_allocations.load()};
  bool ok = true;
  for (int i = 0; i < calls; i++) ok = ok && call();
  const Counts made{allocations.load() - before.all, large_allocations.load() - before.large};
  REQUIRE(ok);
  return made;
}

void check_calls(moas_layer *l, int C) {
  for (int Tn : {8, 25, 80}) {
    const Counts made = allocations_after_first_call(l, C, Tn, 5);
    INFO("T = " << Tn << ": " << made.large << " of " << made.all << " allocations in 5 calls were large");
    REQUIRE(made.all == 0);
  }
}

}  // namespace

TEST_CASE("a RustGPT layer call allocates nothing once a call of its shape has run",
          "[api][layer][allocations]") {
  moas_layer_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_layer_config_default(&c) == MOAS_OK);  // RustGPT's shape: C 128, 8 heads, 4 kv heads, T <= 80
  const long probe = large_allocations.load();
  std::vector<char> *counted = new std::vector<char>(kLarge);
  delete counted;
  REQUIRE(large_allocations.load() == probe + 1);  // the counter sees C++ allocations

  for (int threads : {1, 0}) {
    c.n_threads = threads;
    SECTION("AllHeads, n_threads " + std::to_string(threads)) {
      LayerPtr layer = make_layer(c);
      check_calls(layer.get(), c.n_embd);
    }
    SECTION("MixtureOfHeads 2 + 4 of 6, n_threads " + std::to_string(threads)) {
      c.attention = MOAS_ATTENTION_MOH;
      c.head_selection.strategy = MOAS_HEADS_MIXTURE;
      c.head_selection.num_shared_heads = 2;
      c.head_selection.num_active_routed_heads = 4;
      LayerPtr layer = make_layer(c);
      check_calls(layer.get(), c.n_embd);
    }
  }
}

namespace {

// Heap allocations of `steps` decode steps after a first one, with the cache prefilled to `prompt` positions.
long decode_allocations(const moas_model_config &c, int32_t batch, int32_t prompt, int32_t steps) {
  ModelPtr model = make_model(c);
  moas_kv_cache *cache = nullptr;
  REQUIRE(moas_kv_cache_create(model.get(), batch, c.block_size, &cache) == MOAS_OK);
  std::vector<int32_t> tokens((size_t)(batch * prompt)), next((size_t)batch);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = (int32_t)((i * 7) % (size_t)c.vocab_size);
  std::vector<float> logits((size_t)(batch * c.vocab_size));
  bool ok = moas_prefill(model.get(), cache, tokens.data(), prompt, logits.data(), logits.size()) == MOAS_OK;
  auto step = [&](int32_t s) {
    for (int32_t b = 0; b < batch; b++) next[(size_t)b] = (s * 5 + b * 3) % c.vocab_size;
    return moas_decode_step(model.get(), cache, next.data(), logits.data(), logits.size()) == MOAS_OK;
  };
  ok = ok && step(0);
  const long before = allocations.load();
  for (int32_t s = 1; s <= steps; s++) ok = ok && step(s);
  const long made = allocations.load() - before;
  moas_kv_cache_destroy(cache);
  REQUIRE(ok);
  return made;
}

}  // namespace

TEST_CASE("decode steps allocate nothing once the first has run", "[api][decode][allocations]") {
  moas_model_config c = small_config();
  c.block_size = 1100;  // past two 512-key parts of the decode attention, so the context crosses a part boundary
  c.n_embd = 64;
  c.n_threads = 0;
  auto check = [&](const char *kind) {
    for (int32_t batch : {1, 3}) {
      INFO(kind << ", batch " << batch);
      REQUIRE(decode_allocations(c, batch, 500, 40) == 0);
    }
  };
  check("GQA 4/2");
  c.attention = MOAS_ATTENTION_MOAS;
  c.n_kv_head = c.n_head;
  c.moas_mode = MOAS_MODE_SOFT;
  check("MoAS soft");
  c.moas_mode = MOAS_MODE_TOP1;
  check("MoAS top-1");
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 2;
  check("MoH 1 + 2 of 3");
}
