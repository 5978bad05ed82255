#include "attention/moh.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <utility>

#include "attention/attention_math.hpp"
#include "attention/balance_loss.hpp"
#include "attention/routing.hpp"
#include "base/gemm.hpp"
#include "ops/linear.hpp"
#include "ops/softmax.hpp"

namespace moas {

MohLayout moh_layout(const ModelConfig &config) {
  const int64_t H = config.n_head;
  if (config.heads.strategy == HeadStrategy::MixtureOfHeads) {
    const int64_t shared = config.heads.num_shared_heads;
    return {{shared, H - shared, config.heads.num_active_routed_heads, config.heads.reference_gates}, shared,
            config.n_kv_head};
  }
  const int64_t k = config.heads.num_active_heads;
  return {{0, 0, 0, true}, k, (k - 1) / (H / config.n_kv_head) + 1};
}

template <typename T>
MohAttention<T>::MohAttention(const ModelConfig &config, ParamTable<T> &params, const std::string &prefix)
    : shape_{config.n_embd, config.n_head, config.n_kv_head, config.bias},
      mixture_(config.heads.strategy == HeadStrategy::MixtureOfHeads) {
  const int64_t C = config.n_embd;
  const MohLayout layout = moh_layout(config);
  spec_ = layout.spec;
  dense_heads_ = layout.dense_heads;
  kv_computed_ = layout.kv_computed;
  w_ = register_scheme_weights(params, prefix, shape_);
  if (mixture_) {
    // Registered back to back: the three routers are one [R, C] weight and one product.
    const int64_t first = params.total();
    if (spec_.routed > 0) params.add(prefix + "wg.weight", {spec_.routed, C});
    if (spec_.head_type_router()) params.add(prefix + "wg_0.weight", {2, C});
    if (spec_.shared > 1) params.add(prefix + "wg_1.weight", {spec_.shared, C});
    router_rows_ = (params.total() - first) / C;
    if (router_rows_ > 0) w_routers_ = first;
  }
  options_ = register_attention_options(params, prefix, config);
  routed_.resize((size_t)spec_.routed);
}

// The routers' softmaxes, top-K selection, per-token gates, each routed head's rows, and the load-balance loss
// E sum_i P_i f_i with P_i the mean of the full routed softmax and f_i the fraction of tokens selecting head i.
template <typename T>
void MohAttention<T>::route(const ParamTable<T> &params, const T *x, const BlockContext<T> &ctx) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, E = spec_.routed, S = spec_.shared;
  gate_.assign((size_t)(N * H), T(0));
  aux_ = 0;
  if (!mixture_) {
    for (int64_t n = 0; n < N; n++) std::fill_n(gate_.data() + n * H, dense_heads_, T(1));
    return;
  }
  const int64_t R = router_rows_;
  logits_.resize((size_t)(N * R));
  if (R > 0) linear_forward(logits_.data(), R, x, params.value(w_routers_), (const T *)nullptr, N, C, R, ctx.decode);
  auto router_softmax = [&](std::vector<T> &out, int64_t column, int64_t width) {
    out.resize((size_t)(N * width));
    softmax_rows(out.data(), width, logits_.data() + column, R, N, width);
  };
  const int64_t type_column = E, shared_column = E + (spec_.head_type_router() ? 2 : 0);
  if (E > 0) router_softmax(r_, 0, E);
  if (spec_.head_type_router()) router_softmax(a_, type_column, 2);
  if (S > 1) router_softmax(s_, shared_column, S);
  selected_.resize((size_t)(N * E));
  parallel_for(N, N * H >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      top_k_lower(r_.data() + n * E, E, spec_.active, selected_.data() + n * E);
      moh_gates_token(spec_, r_.data() + n * E, selected_.data() + n * E, S > 1 ? s_.data() + n * S : nullptr,
                      spec_.head_type_router() ? a_.data() + 2 * n : nullptr, gate_.data() + n * H);
    }
  });
  aux_ = moh_balance_loss(r_.data(), selected_.data(), N, E, &p_, &f_);
  build_groups(N);
  for (int64_t i = 0; i < E; i++)
    routed_[(size_t)i].rows.select(
        ctx.batch, ctx.seq, [&](int64_t n) { return selected_[(size_t)(n * E + i)] != 0; }, ctx.past);
}

// Tokens that selected the same routed heads form a group, its tokens in order, and slot_[n * E + i] is token n's row
// among routed head i's compact rows. Whole projections use neither, so they are chosen first, from the number of
// distinct head sets (counted over the sorted sets in kept buffers: a RustGPT-sized call allocates nothing); the
// groups are built only when used.
template <typename T>
void MohAttention<T>::build_groups(int64_t N) {
  const int64_t E = spec_.routed;
  set_of_.assign((size_t)N, 0);
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < E; i++)
      if (selected_[(size_t)(n * E + i)]) set_of_[(size_t)n] |= uint64_t(1) << i;
  sorted_sets_.assign(set_of_.begin(), set_of_.end());
  std::sort(sorted_sets_.begin(), sorted_sets_.end());
  set_sizes_.clear();  // (tokens, head set) of each distinct non-empty set, in set order
  for (size_t k = 0; k < sorted_sets_.size();) {
    size_t end = k;
    while (end < sorted_sets_.size() && sorted_sets_[end] == sorted_sets_[k]) end++;
    if (sorted_sets_[k] != 0) set_sizes_.push_back({(int64_t)(end - k), sorted_sets_[k]});
    k = end;
  }
  groups_.clear();
  // Few tokens per head set (short sequences): groups would be thin products of a handful of rows each.
  const int64_t distinct_sets = (int64_t)set_sizes_.size();
  whole_projections_ = distinct_sets > 0 && N < kWideGroup * distinct_sets;
  if (whole_projections_) return;
  // Largest first: the dynamically scheduled group loops then end with small groups, so no thread waits long for
  // the last one. Ties go by head set: the order depends on the routing alone, so sums over groups stay
  // deterministic.
  std::vector<std::pair<int64_t, uint64_t>> order = set_sizes_;
  std::sort(order.begin(), order.end(), [](const auto &a, const auto &b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<int64_t> group_of_set((size_t)distinct_sets);  // index in set_sizes_ (set order) -> group
  for (const auto &[tokens, set] : order) {
    Group g;
    g.tokens.reserve((size_t)tokens);
    for (int64_t i = 0; i < E; i++)
      if (set >> i & 1) g.heads.push_back(dense_heads_ + i);
    group_of_set[(size_t)set_index(set)] = (int64_t)groups_.size();
    groups_.push_back(std::move(g));
  }
  slot_.assign((size_t)(N * E), -1);
  std::vector<int64_t> filled((size_t)E, 0);
  for (int64_t n = 0; n < N; n++) {
    if (set_of_[(size_t)n] == 0) continue;
    groups_[(size_t)group_of_set[(size_t)set_index(set_of_[(size_t)n])]].tokens.push_back(n);
    for (int64_t i = 0; i < E; i++)
      if (selected_[(size_t)(n * E + i)]) slot_[(size_t)(n * E + i)] = filled[(size_t)i]++;
  }
}

// The position of a non-empty head set among set_sizes_ (sorted by set).
template <typename T>
int64_t MohAttention<T>::set_index(uint64_t set) const {
  const auto at = std::lower_bound(
      set_sizes_.begin(), set_sizes_.end(), set,
      [](const std::pair<int64_t, uint64_t> &entry, uint64_t s) { return entry.second < s; });
  return at - set_sizes_.begin();
}

// Between a group's [m, K d] buffer (head s of the group in columns s d .. s d + d - 1) and the heads' compact rows.
template <typename T>
void MohAttention<T>::move_group_rows(const Group &g, T *group_buffer, std::vector<T> RoutedHead::*field,
                                      bool to_heads) {
  const int64_t E = spec_.routed, d = shape_.head_dim(), K = (int64_t)g.heads.size();
  for (size_t r = 0; r < g.tokens.size(); r++)
    for (int64_t s = 0; s < K; s++) {
      const int64_t i = g.heads[(size_t)s] - dense_heads_;
      T *head_row = (routed_[(size_t)i].*field).data() + slot_[(size_t)(g.tokens[r] * E + i)] * d;
      T *group_row = group_buffer + ((int64_t)r * K + s) * d;
      if (to_heads) std::copy_n(group_row, d, head_row);
      else std::copy_n(head_row, d, group_row);
    }
}

// Groups run in parallel, each product on one thread: many small products at once instead of a thread team per
// product. A group writes its own (token, head) slots and its own tokens' rows.
template <typename T>
template <class Work>
void MohAttention<T>::for_each_group(Work &&work) {
  const int threads = omp_get_max_threads();
  while ((int)scratch_.size() < threads) scratch_.emplace_back(shape_.width, shape_.head_dim());
  const int64_t n_groups = (int64_t)groups_.size();
  std::atomic<int64_t> next{0};  // a dynamic schedule: each thread takes the next group (largest first)
  parallel_region(n_groups > 1, [&](int64_t thread, int64_t) {
    for (int64_t g; (g = next.fetch_add(1, std::memory_order_relaxed)) < n_groups;)
      work((size_t)g, groups_[(size_t)g], scratch_[(size_t)thread]);
  });
}

template <typename T>
const std::vector<QueryHead<T>> &MohAttention<T>::query_heads(const BlockContext<T> &ctx) {
  const int64_t N = ctx.tokens(), d = shape_.head_dim(), P = dense_heads_;
  std::vector<QueryHead<T>> &heads = heads_;
  heads.clear();
  for (int64_t h = 0; h < P; h++)
    heads.push_back({h, ctx.all_rows, dense_.data() + h * d, dense_width(), out_dense_.data() + h * d, P * d,
                     lse_dense_.data() + h * N});
  for (int64_t i = 0; i < spec_.routed; i++) {
    RoutedHead &rh = routed_[(size_t)i];
    if (rh.rows.size() > 0)
      heads.push_back({P + i, &rh.rows, rh.q.data(), d, rh.out.data(), d, rh.lse.data()});
  }
  return heads;
}

template <typename T>
KeyValues<T> MohAttention<T>::key_values(const BlockContext<T> &ctx) const {
  const int64_t d = shape_.head_dim(), k_col = query_columns(), v_col = k_col + kv_computed_ * d;
  return {dense_.data() + k_col, dense_width(), dense_.data() + v_col, dense_width(), ctx.seq};
}

// The rows of the [q; k; v] weight (and bias) that every token needs — the always-active heads' queries, the
// computed kv heads' keys and values — gathered into one matrix, so they are one product instead of three.
template <typename T>
void MohAttention<T>::gather_dense_weights(const T *w, const T *bias) {
  const int64_t C = shape_.width, F = dense_width();
  w_dense_.resize((size_t)(F * C));
  b_dense_.resize(bias ? (size_t)F : 0);
  for (const auto &[from, to, rows] : dense_row_blocks()) {
    std::copy_n(w + from * C, rows * C, w_dense_.data() + to * C);
    if (bias) std::copy_n(bias + from, rows, b_dense_.data() + to);
  }
}

// (first row in the [q; k; v] weight, first row in the gathered matrix, rows) for queries, keys, values.
template <typename T>
std::array<std::array<int64_t, 3>, 3> MohAttention<T>::dense_row_blocks() const {
  const int64_t d = shape_.head_dim(), Pd = dense_heads_ * d, KV = kv_computed_ * d, Q = shape_.q_width();
  return {{{0, 0, Pd}, {Q, Pd, KV}, {Q + shape_.kv_width(), Pd + KV, KV}}};
}

template <typename T>
void MohAttention<T>::forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool) {
  route(params, x, ctx);
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, d = shape_.head_dim(), P = dense_heads_;
  const T *w = params.value(w_.qkv), *bias = params.value_or_null(w_.qkv_bias);
  const T *w_proj = params.value(w_.proj);

  // Projections: keys and values of the computed kv heads for every token, queries only where a head is active.
  const int64_t F = dense_width(), QW = query_columns();
  dense_.resize((size_t)(N * F));
  if (whole_projections_) {
    linear_forward(dense_.data(), F, x, w, bias, N, C, F, ctx.decode);
  } else if (ctx.decode) {  // a decode step: each row block re-laid in place, none gathered
    for (const auto &[from, to, rows] : dense_row_blocks())
      linear_forward(dense_.data() + to, F, x, w + from * C, bias ? bias + from : nullptr, N, C, rows, ctx.decode);
  } else {
    gather_dense_weights(w, bias);
    linear_forward(dense_.data(), F, x, w_dense_.data(), bias ? b_dense_.data() : nullptr, N, C, F);
  }
  for (int64_t i = 0; i < spec_.routed; i++) {
    RoutedHead &rh = routed_[(size_t)i];
    const int64_t m = rh.rows.size();
    resize_with_room(rh.q, m * d, N * d);
    resize_with_room(rh.out, m * d, N * d);
    resize_with_room(rh.gated, m * d, N * d);
    resize_with_room(rh.lse, m, N);
    if (whole_projections_)
      for (int64_t r = 0; r < m; r++)
        std::copy_n(dense_.data() + rh.rows.row[(size_t)r] * F + (P + i) * d, d, rh.q.data() + r * d);
  }
  for_each_group([&](size_t, const Group &g, GroupScratch &sc) {  // one product per group of tokens and heads
    const int64_t m = (int64_t)g.tokens.size();
    sc.x.resize((size_t)(m * C));
    sc.h.resize((size_t)(m * (int64_t)g.heads.size() * d));
    gather_rows(sc.x.data(), C, x, C, g.tokens, C);
    sc.projection.queries(sc.h.data(), sc.x.data(), m, g.heads, w, bias);
    move_group_rows(g, sc.h.data(), &RoutedHead::q, true);
  });
  if (ctx.rope) {
    rope_rotate(dense_.data(), F, 0, P, N, ctx.all_rows->pos.data(), *ctx.rope, +1);
    rope_rotate(dense_.data(), F, QW, kv_computed_, N, ctx.all_rows->pos.data(), *ctx.rope, +1);
    for (RoutedHead &rh : routed_) rope_rotate(rh.q.data(), d, 0, 1, rh.rows.size(), rh.rows.pos.data(), *ctx.rope, +1);
  }

  out_dense_.resize((size_t)(N * P * d));
  lse_dense_.resize((size_t)(P * N));
  KeyValues<T> kv = key_values(ctx);
  if (ctx.cache) {  // decoding: append this forward's keys and values, then attend over everything cached
    cache_write(*ctx.cache, 0, kv.k, kv.k_stride, kv.v, kv.v_stride, ctx.batch, ctx.seq, ctx.past);
    kv = cached_key_values(*ctx.cache, 0);
  }
  const AttentionDims dims{ctx.batch, ctx.key_length(), H, shape_.kv_heads, d};
  attend_forward(params, options_, dims, kv, query_heads(ctx),
                 ctx.attn_dropout ? ctx.site((uint32_t)DropoutSiteId::AttentionProbs) : Dropout{});

  // y = c_proj(concat_i gate_i head_i): the dense prefix (every head, with whole projections) in one product, each
  // group's routed heads on its own rows.
  const T *gated_dense = out_dense_.data();
  if (mixture_ && QW > 0) {
    gated_dense_.assign((size_t)(N * QW), T(0));
    parallel_for(N, N * P * d >= kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; n++)
        for (int64_t h = 0; h < P; h++)
          moh_gate_head(gated_dense_.data() + n * QW + h * d, gate_[(size_t)(n * H + h)],
                        out_dense_.data() + (n * P + h) * d, d);
    });
    gated_dense = gated_dense_.data();
  }
  for (int64_t i = 0; i < spec_.routed; i++) {
    RoutedHead &rh = routed_[(size_t)i];
    for (int64_t r = 0; r < rh.rows.size(); r++) {
      const T g = gate_[(size_t)(rh.rows.row[(size_t)r] * H + P + i)];
      T *gated = whole_projections_ ? gated_dense_.data() + rh.rows.row[(size_t)r] * QW + (P + i) * d
                                    : rh.gated.data() + r * d;
      moh_gate_head(gated, g, rh.out.data() + r * d, d);
    }
  }
  // The dense product writes y (beta 0) unless a bias must come first: y is not filled twice.
  const T *proj_bias = params.value_or_null(w_.proj_bias);
  if (proj_bias || QW == 0)
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = 0; c < C; c++) y[n * C + c] = proj_bias ? proj_bias[c] : T(0);
  if (QW > 0 && ctx.decode)  // a decode step: c_proj's dense columns re-laid (decode_weights.hpp)
    packed_product(N, gated_dense, QW, ctx.decode->of(w_proj, C, QW, C), proj_bias ? T(1) : T(0), y, C);
  else if (QW > 0)
    gemm(Trans::No, Trans::Yes, N, C, QW, T(1), gated_dense, QW, w_proj, C, proj_bias ? T(1) : T(0), y, C);
  for_each_group([&](size_t, const Group &g, GroupScratch &sc) {  // adds into its tokens' rows of y
    const int64_t m = (int64_t)g.tokens.size();
    sc.h.resize((size_t)(m * (int64_t)g.heads.size() * d));
    sc.rows.resize((size_t)(m * C));
    move_group_rows(g, sc.h.data(), &RoutedHead::gated, false);
    sc.projection.outputs(sc.rows.data(), sc.h.data(), m, g.heads, w_proj);
    scatter_add_rows(y, C, sc.rows.data(), C, g.tokens, C, (const T *)nullptr);
  });
  dropout_apply(y, N * C, ctx.site((uint32_t)DropoutSiteId::AttentionOut));
}

template <typename T>
void MohAttention<T>::backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx,
                               double aux_grad_scale) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, d = shape_.head_dim(), P = dense_heads_;
  const int64_t KV = kv_computed_ * d, E = spec_.routed, S = spec_.shared;
  const T *w = params.value(w_.qkv), *w_proj = params.value(w_.proj);
  T *dw = params.grad(w_.qkv), *dbias = params.grad_or_null(w_.qkv_bias), *dw_proj = params.grad(w_.proj);

  dropout_apply(dy, N * C, ctx.site((uint32_t)DropoutSiteId::AttentionOut));
  if (T *db = params.grad_or_null(w_.proj_bias)) column_sum_accumulate(db, dy, N, C);
  d_gate_.assign((size_t)(N * H), T(0));

  // Through c_proj and the gates: d gated = dy W_h, d out = gate * d gated, d gate = <d gated, out>.
  const int64_t QW = query_columns();
  const T *gated_dense = mixture_ && QW > 0 ? gated_dense_.data() : out_dense_.data();
  d_gated_dense_.resize((size_t)(N * QW));
  d_out_dense_.resize((size_t)(N * P * d));
  if (QW > 0) {
    gemm(Trans::Yes, Trans::No, C, QW, N, T(1), dy, C, gated_dense, QW, T(1), dw_proj, C);
    gemm(Trans::No, Trans::No, N, QW, C, T(1), dy, C, w_proj, C, T(0), d_gated_dense_.data(), QW);
    parallel_for(N, N * P * d >= kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; n++)
        for (int64_t h = 0; h < P; h++) {
          d_gate_[(size_t)(n * H + h)] =
              moh_gate_head_backward(d_out_dense_.data() + (n * P + h) * d, gate_[(size_t)(n * H + h)],
                                     d_gated_dense_.data() + n * QW + h * d, out_dense_.data() + (n * P + h) * d, d);
        }
    });
  }
  for (int64_t i = 0; i < E; i++) {
    RoutedHead &rh = routed_[(size_t)i];
    const int64_t m = rh.rows.size();
    resize_with_room(rh.d_gated, m * d, N * d);
    resize_with_room(rh.d_out, m * d, N * d);
    resize_with_room(rh.d_q, m * d, N * d);
    if (whole_projections_)
      for (int64_t r = 0; r < m; r++)
        std::copy_n(d_gated_dense_.data() + rh.rows.row[(size_t)r] * QW + (P + i) * d, d, rh.d_gated.data() + r * d);
  }
  group_dw_.resize(groups_.size());
  for_each_group([&](size_t index, const Group &g, GroupScratch &sc) {
    const int64_t m = (int64_t)g.tokens.size(), Kd = (int64_t)g.heads.size() * d;
    sc.rows.resize((size_t)(m * C));
    sc.h.resize((size_t)(m * Kd));
    sc.d.resize((size_t)(m * Kd));
    group_dw_[index].resize((size_t)(C * Kd));
    gather_rows(sc.rows.data(), C, dy, C, g.tokens, C);
    move_group_rows(g, sc.h.data(), &RoutedHead::gated, false);
    sc.projection.outputs_backward(sc.d.data(), group_dw_[index].data(), sc.rows.data(), sc.h.data(), m, g.heads,
                                   w_proj);
    move_group_rows(g, sc.d.data(), &RoutedHead::d_gated, true);
  });
  // Groups share the heads' weights: their gradients are added in group order, the same for any thread count.
  for (size_t index = 0; index < groups_.size(); index++) {
    const std::vector<int64_t> &heads = groups_[index].heads;
    const int64_t Kd = (int64_t)heads.size() * d;
    for (int64_t c = 0; c < C; c++)
      for (size_t s = 0; s < heads.size(); s++) {
        T *dst = dw_proj + c * C + heads[s] * d;
        const T *src = group_dw_[index].data() + c * Kd + (int64_t)s * d;
        for (int64_t i = 0; i < d; i++) dst[i] += src[i];
      }
  }
  for (int64_t i = 0; i < E; i++) {
    RoutedHead &rh = routed_[(size_t)i];
    const int64_t m = rh.rows.size(), h = P + i;
    for (int64_t r = 0; r < m; r++) {
      const int64_t slot = rh.rows.row[(size_t)r] * H + h;
      d_gate_[(size_t)slot] = moh_gate_head_backward(rh.d_out.data() + r * d, gate_[(size_t)slot],
                                                     rh.d_gated.data() + r * d, rh.out.data() + r * d, d);
    }
  }

  // Attention. The kernel writes every dq row of the dense heads and every dk/dv row of the kv heads some listed
  // head reads; a computed kv head nobody read this time (possible with few tokens) needs zeros.
  const int64_t F = dense_width();
  const std::vector<QueryHead<T>> &query_rows = query_heads(ctx);
  kv_read_.assign((size_t)kv_computed_, 0);
  for (const QueryHead<T> &qh : query_rows) kv_read_[(size_t)kv_head_of(qh.head, H / shape_.kv_heads)] = 1;
  d_dense_.resize((size_t)(N * F));
  if (whole_projections_ || std::find(kv_read_.begin(), kv_read_.end(), 0) != kv_read_.end())
    std::fill(d_dense_.begin(), d_dense_.end(), T(0));  // whole projections: inactive queries' rows stay 0
  std::vector<QueryHeadGrad<T>> &grads = head_grads_;
  grads.clear();
  for (int64_t h = 0; h < P; h++) grads.push_back({d_out_dense_.data() + h * d, P * d, d_dense_.data() + h * d, F});
  for (RoutedHead &rh : routed_)
    if (rh.rows.size() > 0) grads.push_back({rh.d_out.data(), d, rh.d_q.data(), d});
  const AttentionDims dims{ctx.batch, ctx.seq, H, shape_.kv_heads, d};
  attend_backward(params, options_, dims, key_values(ctx), query_rows, grads,
                  KeyValueGrads<T>{d_dense_.data() + QW, F, d_dense_.data() + QW + KV, F},
                  ctx.attn_dropout ? ctx.site((uint32_t)DropoutSiteId::AttentionProbs) : Dropout{});
  if (ctx.rope) {
    rope_rotate(d_dense_.data(), F, 0, P, N, ctx.all_rows->pos.data(), *ctx.rope, -1);
    rope_rotate(d_dense_.data(), F, QW, kv_computed_, N, ctx.all_rows->pos.data(), *ctx.rope, -1);
    for (RoutedHead &rh : routed_)
      if (rh.rows.size() > 0) rope_rotate(rh.d_q.data(), d, 0, 1, rh.rows.size(), rh.rows.pos.data(), *ctx.rope, -1);
  }

  if (whole_projections_) {
    for (int64_t i = 0; i < E; i++) {
      const RoutedHead &rh = routed_[(size_t)i];
      for (int64_t r = 0; r < rh.rows.size(); r++)
        std::copy_n(rh.d_q.data() + r * d, d, d_dense_.data() + rh.rows.row[(size_t)r] * F + (P + i) * d);
    }
    linear_backward(dx, true, dw, dbias, d_dense_.data(), x, w, N, C, F);
  } else {
    // The dense product through the gathered weights, its gradient added back to the weights' rows; then groups.
    gather_dense_weights(w, nullptr);
    dw_dense_.assign((size_t)(F * C), T(0));
    db_dense_.assign(dbias ? (size_t)F : 0, T(0));
    linear_backward(dx, true, dw_dense_.data(), dbias ? db_dense_.data() : nullptr, d_dense_.data(), x, w_dense_.data(),
                    N, C, F);
    for (const auto &[from, to, rows] : dense_row_blocks()) {
      for (int64_t i = 0; i < rows * C; i++) dw[from * C + i] += dw_dense_[(size_t)(to * C + i)];
      if (dbias)
        for (int64_t i = 0; i < rows; i++) dbias[from + i] += db_dense_[(size_t)(to + i)];
    }
    group_db_.resize(groups_.size());
    for_each_group([&](size_t index, const Group &g, GroupScratch &sc) {  // adds into its tokens' rows of dx
      const int64_t m = (int64_t)g.tokens.size(), Kd = (int64_t)g.heads.size() * d;
      sc.x.resize((size_t)(m * C));
      sc.d.resize((size_t)(m * Kd));
      sc.rows.resize((size_t)(m * C));
      group_dw_[index].resize((size_t)(Kd * C));
      group_db_[index].resize((size_t)Kd);
      gather_rows(sc.x.data(), C, x, C, g.tokens, C);
      move_group_rows(g, sc.d.data(), &RoutedHead::d_q, false);
      sc.projection.queries_backward(sc.rows.data(), group_dw_[index].data(), dbias ? group_db_[index].data() : nullptr,
                                     sc.d.data(), sc.x.data(), m, g.heads, w);
      scatter_add_rows(dx, C, sc.rows.data(), C, g.tokens, C, (const T *)nullptr);
    });
    for (size_t index = 0; index < groups_.size(); index++) {
      const std::vector<int64_t> &heads = groups_[index].heads;
      for (size_t s = 0; s < heads.size(); s++) {
        T *dst = dw + heads[s] * d * C;
        const T *src = group_dw_[index].data() + (int64_t)s * d * C;
        for (int64_t i = 0; i < d * C; i++) dst[i] += src[i];
        if (dbias)
          for (int64_t i = 0; i < d; i++) dbias[heads[s] * d + i] += group_db_[index][s * (size_t)d + (size_t)i];
      }
    }
  }
  if (!mixture_) return;

  // Gates -> router softmaxes (plus the load-balance gradient E f_i / N on the routed softmax) -> router weights.
  d_r_.resize((size_t)(N * E));
  d_s_.resize((size_t)(N * S));
  d_a_.resize((size_t)(N * 2));
  moh_balance_gradient_row(N, E, f_, aux_grad_scale, balance_row_);
  const std::vector<T> &balance = balance_row_;
  parallel_for(N, N * H >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const bool type = spec_.head_type_router();
      moh_gates_token_backward(spec_, r_.data() + n * E, selected_.data() + n * E, S > 1 ? s_.data() + n * S : nullptr,
                               type ? a_.data() + 2 * n : nullptr, d_gate_.data() + n * H, d_r_.data() + n * E,
                               S > 1 ? d_s_.data() + n * S : nullptr, type ? d_a_.data() + 2 * n : nullptr);
      for (int64_t i = 0; i < E; i++) d_r_[(size_t)(n * E + i)] += balance[(size_t)i];
    }
  });
  const int64_t R = router_rows_, type_column = E, shared_column = E + (spec_.head_type_router() ? 2 : 0);
  if (R == 0) return;
  d_logits_.resize((size_t)(N * R));
  if (E > 0) softmax_rows_backward(d_logits_.data(), R, d_r_.data(), r_.data(), N, E);
  if (spec_.head_type_router()) softmax_rows_backward(d_logits_.data() + type_column, R, d_a_.data(), a_.data(), N, 2);
  if (S > 1) softmax_rows_backward(d_logits_.data() + shared_column, R, d_s_.data(), s_.data(), N, S);
  linear_backward(dx, true, params.grad(w_routers_), (T *)nullptr, d_logits_.data(), x, params.value(w_routers_), N, C,
                  R);
}

// The last forward's statistics, computed when asked (a forward does not pay for them).
template <typename T>
bool MohAttention<T>::router_stats(RouterStats *out) const {
  if (!mixture_ || spec_.routed == 0 || spec_.active == 0) return false;
  const int64_t N = (int64_t)gate_.size() / shape_.heads;
  *out = moh_router_stats(spec_, shape_.heads, N, r_.data(), gate_.data(),
                          spec_.head_type_router() ? a_.data() : nullptr, f_, aux_);
  return true;
}

// share = f_i / K over the routed heads (SPEC §8); top_share = f_i.
template <typename T>
RouterStats moh_router_stats(const MohGateSpec &spec, int64_t H, int64_t N, const T *r, const T *gate, const T *a,
                             const std::vector<double> &f, double aux) {
  const int64_t E = spec.routed, P = H - E;
  RouterStats st;
  st.attention = MOAS_ATTENTION_MOH;
  st.top_share = f;
  st.share.resize((size_t)E);
  st.mean_gate.assign((size_t)E, 0.0);
  for (int64_t i = 0; i < E; i++) st.share[(size_t)i] = f[(size_t)i] / (double)spec.active;
  st.entropy = 0;
  double a1 = 0, a2 = 0;
  for (int64_t n = 0; n < N; n++) {
    for (int64_t i = 0; i < E; i++) {
      const double ri = (double)r[n * E + i];
      st.mean_gate[(size_t)i] += (double)gate[n * H + P + i] / (double)N;
      if (ri > 0) st.entropy -= ri * std::log(ri) / (double)N;
    }
    if (a) {
      a1 += (double)a[2 * n] / (double)N;
      a2 += (double)a[2 * n + 1] / (double)N;
    }
  }
  st.mean_shared_weight = a ? a1 : (spec.shared > 0 ? 1.0 : 0.0);
  st.mean_routed_weight = a ? a2 : 1.0;
  st.aux_loss = aux;
  return st;
}

template RouterStats moh_router_stats<float>(const MohGateSpec &, int64_t, int64_t, const float *, const float *,
                                             const float *, const std::vector<double> &, double);
template RouterStats moh_router_stats<double>(const MohGateSpec &, int64_t, int64_t, const double *, const double *,
                                              const double *, const std::vector<double> &, double);
template class MohAttention<float>;
template class MohAttention<double>;

}  // namespace moas
