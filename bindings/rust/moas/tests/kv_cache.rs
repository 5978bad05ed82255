use moas::{Attention, Config, HeadSelectionStrategy, KvCache, MoasMode, Model, Status};

const VOCAB: usize = 16;
const SEQ: usize = 12;
const BATCH: usize = 2;
const PROMPT: usize = 5;

fn tiny() -> Config {
    Config::new().vocab_size(VOCAB).block_size(16).layers(2).heads(4).width(32).mlp_hidden(64).dropout(0.0).threads(1)
}

fn mha() -> Config {
    tiny().kv_heads(4)
}

fn moas_top1() -> Config {
    tiny().attention(Attention::Moas).moas_mode(MoasMode::Top1).branch_kv_heads(&[0, 2, 1]).seed(3)
}

fn moh() -> Config {
    tiny().head_selection(HeadSelectionStrategy::MixtureOfHeads {
        num_shared_heads: 1,
        num_active_routed_heads: 2,
        load_balance_weight: 0.01,
    })
}

/// Two different sequences [BATCH, SEQ].
fn tokens() -> Vec<i32> {
    (0..BATCH * SEQ).map(|i| ((i * 7 + i / SEQ * 3 + 1) % VOCAB) as i32).collect()
}

/// Rows `positions` of every sequence of logits [BATCH, seq, VOCAB], as [BATCH, positions.len(), VOCAB].
fn rows(logits: &[f32], seq: usize, positions: std::ops::Range<usize>) -> Vec<f32> {
    (0..BATCH)
        .flat_map(|b| logits[(b * seq + positions.start) * VOCAB..(b * seq + positions.end) * VOCAB].to_vec())
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5 * scale, "{what}: max |diff| {worst} > 1e-5 * max |logit| {scale}");
}

/// Prefill a prompt, then decode the rest one token at a time: every step's logits match a full forward.
fn decoding_matches_full_forward(config: Config) {
    let mut model = Model::new(&config).unwrap();
    let tokens = tokens();
    model.forward(&tokens, None, BATCH, SEQ, false).unwrap();
    let full = model.logits().unwrap();
    if config.attention_kind() != Some(Attention::Scheme) {
        // The routing differs between tokens, so the cache has to follow each token's own choice.
        for stats in model.router_stats_all().unwrap() {
            let used = stats.top_share.iter().filter(|&&s| s > 0.0).count();
            assert!(used >= 2, "every token takes the same route: {:?}", stats.top_share);
        }
    }

    let mut cache = KvCache::new(&model, BATCH, SEQ).unwrap();
    assert!(cache.is_empty());
    assert_eq!((cache.batch(), cache.capacity(), cache.remaining()), (BATCH, SEQ, SEQ));
    let prompt: Vec<i32> = (0..BATCH).flat_map(|b| tokens[b * SEQ..b * SEQ + PROMPT].to_vec()).collect();
    let last = model.prefill(&mut cache, &prompt, PROMPT).unwrap();
    assert_eq!(cache.len(), PROMPT);
    assert_close(&last, &rows(&full, SEQ, PROMPT - 1..PROMPT), "prefill's last logits");
    // Every new position stays readable through logits().
    assert_close(&model.logits().unwrap(), &rows(&full, SEQ, 0..PROMPT), "prefill's logits()");

    for t in PROMPT..SEQ {
        let step: Vec<i32> = (0..BATCH).map(|b| tokens[b * SEQ + t]).collect();
        let logits = model.decode_step(&mut cache, &step).unwrap();
        assert_eq!(cache.len(), t + 1);
        assert_close(&logits, &rows(&full, SEQ, t..t + 1), &format!("decode step at position {t}"));
    }
    assert_eq!(cache.remaining(), 0);
}

#[test]
fn decoding_matches_full_forward_mha() {
    decoding_matches_full_forward(mha());
}

#[test]
fn decoding_matches_full_forward_moas_top1() {
    decoding_matches_full_forward(moas_top1());
}

#[test]
fn decoding_matches_full_forward_mixture_of_heads() {
    decoding_matches_full_forward(moh());
}

#[test]
fn a_full_cache_is_an_error_and_reset_makes_room() {
    let mut model = Model::new(&mha()).unwrap();
    let mut cache = KvCache::new(&model, 1, 4).unwrap();
    model.prefill(&mut cache, &[1, 2, 3], 3).unwrap();
    model.decode_step(&mut cache, &[4]).unwrap();
    assert_eq!(cache.len(), 4);

    let error = model.decode_step(&mut cache, &[5]).unwrap_err();
    assert_eq!(error.status(), Status::ContextFull);
    assert_eq!(error.status().code(), 25);
    assert!(!error.message().is_empty());
    assert_eq!(cache.len(), 4, "a failed call leaves the cache as it was");
    assert_eq!(model.prefill(&mut cache, &[1], 1).unwrap_err().status(), Status::ContextFull);

    cache.reset();
    assert!(cache.is_empty());
    assert_eq!(model.prefill(&mut cache, &[1, 2, 3, 4, 5], 5).unwrap_err().status(), Status::ContextFull);
    let first = model.prefill(&mut cache, &[1, 2], 2).unwrap();
    assert_eq!(first.len(), VOCAB);
    assert_eq!(cache.len(), 2);

    // Replaying after a reset gives the same logits.
    cache.reset();
    assert_eq!(model.prefill(&mut cache, &[1, 2], 2).unwrap(), first);
}

#[test]
fn bytes_per_token_follows_the_kv_heads() {
    let model_bytes = |config: Config| {
        let model = Model::new(&config).unwrap();
        KvCache::new(&model, 1, 8).unwrap().bytes_per_token()
    };
    let (mha, gqa, mqa) = (model_bytes(mha()), model_bytes(tiny().kv_heads(2)), model_bytes(tiny().kv_heads(1)));
    assert!(mqa < gqa && gqa < mha, "MQA {mqa}, GQA {gqa}, MHA {mha}");
    // 2 layers of keys and values, 4 heads of 8 floats.
    assert_eq!(mha, 2 * 2 * 32 * 4);
    assert_eq!(mqa * 4, mha);
}

#[test]
fn decode_read_bytes_grow_with_the_cache() {
    let mut model = Model::new(&mha()).unwrap();
    let mut cache = KvCache::new(&model, 1, 8).unwrap();
    let (weights, empty) = cache.decode_read_bytes();
    assert!(weights > 0);
    assert_eq!(empty, 0);
    model.prefill(&mut cache, &[1, 2, 3], 3).unwrap();
    assert_eq!(cache.decode_read_bytes(), (weights, 3 * cache.bytes_per_token()));
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut model = Model::new(&mha()).unwrap();
    // Sizes checked by the library.
    assert_eq!(KvCache::new(&model, 0, 4).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(KvCache::new(&model, 1, 0).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(KvCache::new(&model, 1, 17).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(KvCache::new(&model, usize::MAX, 4).unwrap_err().status(), Status::SizeMismatch);

    // Slice lengths checked on the Rust side.
    let mut cache = KvCache::new(&model, 2, 8).unwrap();
    let error = model.prefill(&mut cache, &[1, 2, 3], 2).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert!(error.message().contains("tokens"), "{}", error.message());
    assert_eq!(model.prefill(&mut cache, &[1, 2], usize::MAX).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(model.decode_step(&mut cache, &[1]).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(model.decode_step(&mut cache, &[1, 2, 3]).unwrap_err().status(), Status::SizeMismatch);
    // Values checked by the library.
    assert_eq!(model.prefill(&mut cache, &[], 0).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(model.decode_step(&mut cache, &[1, VOCAB as i32]).unwrap_err().status(), Status::TokenOutOfRange);
    assert!(cache.is_empty());

    // A cache made for another architecture is refused.
    let other = Model::new(&tiny().kv_heads(1)).unwrap();
    let mut foreign = KvCache::new(&other, 2, 8).unwrap();
    assert_eq!(model.decode_step(&mut foreign, &[1, 2]).unwrap_err().status(), Status::SizeMismatch);
    assert!(foreign.is_empty());
    assert_eq!(model.decode_step(&mut cache, &[1, 2]).unwrap().len(), 2 * VOCAB);
}

#[test]
fn a_cache_outlives_its_model_and_serves_any_model_of_that_architecture() {
    let mut cache = {
        let model = Model::new(&mha().seed(1)).unwrap();
        KvCache::new(&model, 1, 8).unwrap()
    };
    let mut model = Model::new(&mha().seed(2)).unwrap();
    let prompt = [3, 1, 4, 1, 5];
    let cached = model.prefill(&mut cache, &prompt, prompt.len()).unwrap();
    model.forward(&prompt, None, 1, prompt.len(), false).unwrap();
    let full = model.logits().unwrap();
    assert_close(&cached, &full[(prompt.len() - 1) * VOCAB..], "a cache from another model of the architecture");
}

#[test]
fn a_model_and_its_cache_move_to_another_thread() {
    let mut model = Model::new(&moh()).unwrap();
    let mut cache = KvCache::new(&model, 1, 8).unwrap();
    let worker = std::thread::spawn(move || {
        model.prefill(&mut cache, &[1, 2, 3], 3)?;
        model.decode_step(&mut cache, &[4]).map(|logits| (logits, cache.len()))
    });
    let (logits, len) = worker.join().unwrap().unwrap();
    assert_eq!((logits.len(), len), (VOCAB, 4));
    assert!(logits.iter().all(|x| x.is_finite()));
}
