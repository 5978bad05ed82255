use moas::{AdamW, Attention, Config, HeadSelectionStrategy, MoasMode, Model, Position, Status};
use std::path::PathBuf;

const VOCAB: usize = 16;
const SEQ: usize = 12;

fn tiny() -> Config {
    Config::new().vocab_size(VOCAB).block_size(16).layers(2).heads(4).width(32).mlp_hidden(64).dropout(0.0).threads(1)
}

fn mixture_of_heads(shared: usize, active: usize) -> HeadSelectionStrategy {
    HeadSelectionStrategy::MixtureOfHeads {
        num_shared_heads: shared,
        num_active_routed_heads: active,
        load_balance_weight: 0.01,
    }
}

/// A batch of 2 periodic sequences and their next-token targets.
fn batch() -> (Vec<i32>, Vec<i32>) {
    let sequence: Vec<i32> = (0..2 * SEQ + 1).map(|i| ((i * 5) % VOCAB) as i32).collect();
    let tokens = [&sequence[..SEQ], &sequence[SEQ..2 * SEQ]].concat();
    let targets = [&sequence[1..SEQ + 1], &sequence[SEQ + 1..2 * SEQ + 1]].concat();
    (tokens, targets)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moas-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

#[test]
fn defaults_come_from_the_library() {
    let config = Config::new();
    let raw = config.as_raw();
    assert_eq!(raw.abi_version, moas::sys::MOAS_ABI_VERSION);
    assert_eq!(moas::abi_version(), moas::sys::MOAS_ABI_VERSION);
    assert!(raw.vocab_size > 0 && raw.n_layer > 0 && raw.n_embd % raw.n_head == 0);
    assert_eq!(config.attention_kind(), Some(Attention::Scheme));
    assert_eq!(config.head_selection_strategy(), Some(HeadSelectionStrategy::AllHeads));
    let adamw = AdamW::default();
    assert!(adamw.lr > 0.0 && adamw.beta1 < adamw.beta2 && adamw.eps > 0.0);

    let moh = config.head_selection(mixture_of_heads(1, 2));
    assert_eq!(moh.attention_kind(), Some(Attention::Moh));
    assert_eq!(moh.head_selection_strategy(), Some(mixture_of_heads(1, 2)));
}

#[test]
fn invalid_configs_report_status_and_message() {
    let error = Model::new(&tiny().heads(4).kv_heads(3)).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
    assert!(error.message().contains("n_kv_head"), "{}", error.message());
    assert!(error.to_string().starts_with("MOAS_ERR_INVALID_CONFIG: "), "{error}");

    // 4 heads, 1 shared: 3 routed heads, so K = 4 cannot be active.
    let error = Model::new(&tiny().head_selection(mixture_of_heads(1, 4))).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
    assert!(!error.message().is_empty());

    let error =
        Model::new(&tiny().head_selection(HeadSelectionStrategy::StaticPruning { num_active_heads: 5 })).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);

    let error = Model::new(&tiny().attention(Attention::Moas).branch_kv_heads(&[0, 2, 1, 4, 1])).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
}

#[test]
fn cope_and_window_settings_reach_the_model() {
    let config = tiny().position(Position::Cope { max_pos: 8 }).window_size(Some(4));
    let mut model = Model::new(&config).unwrap();
    assert_eq!(model.config().position_kind(), Some(Position::Cope { max_pos: 8 }));
    assert_eq!(model.config().sliding_window(), Some(4));
    let names = model.parameter_names();
    assert!(!names.contains(&"transformer.wpe.weight"), "CoPE has no position embeddings");
    let cope = model.parameters().iter().find(|p| p.name == "transformer.h.1.attn.cope.weight").unwrap();
    assert_eq!(cope.shape, vec![4, 8, 8]); // [heads, max_pos, head_dim]
    let (tokens, targets) = batch();
    let (loss, _) = model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
    assert!(loss.is_finite());
    model.backward().unwrap();

    let error = Model::new(&tiny().position(Position::Cope { max_pos: 0 })).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
    assert!(error.message().contains("cope_max_pos"), "{}", error.message());
    let error = Model::new(&tiny().window_size(Some(0))).unwrap_err();
    assert!(error.message().contains("window_size"), "{}", error.message());
}

#[test]
fn statuses_keep_their_codes_and_names() {
    for (status, code, name) in [
        (Status::ContextFull, 25, "MOAS_ERR_CONTEXT_FULL"),
        (Status::InvalidArgument, 26, "MOAS_ERR_INVALID_ARGUMENT"),
        (Status::CheckpointValue, 27, "MOAS_ERR_CHECKPOINT_VALUE"),
        (Status::Other(1000), 1000, "MOAS_ERR_UNKNOWN_STATUS"),
    ] {
        assert_eq!(status.code(), code);
        assert!(status.name().starts_with(name), "{} for {status:?}", status.name());
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let mut model = Model::new(&tiny()).unwrap();
    let (tokens, targets) = batch();

    assert_eq!(model.logits().unwrap_err().status(), Status::NoForward);
    assert_eq!(model.backward().unwrap_err().status(), Status::NoForward);

    // Slice lengths, checked on the Rust side.
    let error = model.forward(&tokens[1..], Some(&targets), 2, SEQ, true).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert!(error.message().contains("tokens"), "{}", error.message());
    let error = model.forward(&tokens, Some(&targets[1..]), 2, SEQ, true).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert_eq!(model.forward(&tokens, None, usize::MAX, 2, false).unwrap_err().status(), Status::SizeMismatch);
    let name = model.parameter_names()[0].to_string();
    assert_eq!(model.set_parameter(&name, &[0.0; 3]).unwrap_err().status(), Status::SizeMismatch);

    // Values, checked by the library.
    let mut bad_tokens = tokens.clone();
    bad_tokens[3] = VOCAB as i32;
    let error = model.forward(&bad_tokens, None, 2, SEQ, false).unwrap_err();
    assert_eq!(error.status(), Status::TokenOutOfRange);
    assert!(error.message().contains("tokens[3]"), "{}", error.message());
    let long: Vec<i32> = vec![0; 17];
    assert_eq!(model.forward(&long, None, 1, 17, false).unwrap_err().status(), Status::ContextTooLong);
    assert_eq!(model.parameter("no.such.weight").unwrap_err().status(), Status::UnknownParameter);
    assert_eq!(model.gradient("nul\0name").unwrap_err().status(), Status::UnknownParameter);
    assert_eq!(model.router_stats(0).unwrap_err().status(), Status::NoForward);
    let bad_adamw = AdamW { lr: f32::NAN, ..AdamW::default() };
    assert_eq!(model.step(&bad_adamw).unwrap_err().status(), Status::InvalidConfig);

    // A failed call leaves the model usable.
    model.forward(&tokens, Some(&targets), 2, SEQ, false).unwrap();
    assert_eq!(model.logits().unwrap().len(), 2 * SEQ * VOCAB);
    assert_eq!(model.router_stats(0).unwrap_err().status(), Status::NoRouter);
}

#[test]
fn training_lowers_the_loss() {
    let mut model = Model::new(&tiny().head_selection(mixture_of_heads(1, 2))).unwrap();
    let (tokens, targets) = batch();
    let adamw = AdamW { lr: 1e-2, ..AdamW::default() };
    let (first, _) = model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
    let mut last = first;
    for _ in 0..15 {
        model.zero_grad().unwrap();
        (last, _) = model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
        model.backward().unwrap();
        let grad_norm = model.step(&adamw).unwrap();
        assert!(grad_norm.is_finite() && grad_norm > 0.0);
    }
    assert_eq!(model.optimizer_steps().unwrap(), 15);
    assert!(last < 0.8 * first, "loss {first} -> {last}");

    let router = "transformer.h.0.attn.wg.weight";
    assert!(model.parameter_names().contains(&router));
    let gradient = model.gradient(router).unwrap();
    assert_eq!(gradient.len(), 3 * 32);
    assert!(gradient.iter().any(|g| *g != 0.0), "the MoH router got no gradient");
}

#[test]
fn parameters_round_trip_and_checkpoints_reload_bit_exactly() {
    let config = tiny().head_selection(mixture_of_heads(1, 2)).seed(7);
    let mut model = Model::new(&config).unwrap();
    let (tokens, targets) = batch();

    let name = "transformer.h.1.mlp.c_fc.weight";
    let info = model.parameters().iter().find(|p| p.name == name).unwrap().clone();
    assert_eq!((info.shape.clone(), info.numel), (vec![64, 32], 64 * 32));
    let mut values = model.parameter(name).unwrap();
    values[5] = 0.25;
    model.set_parameter(name, &values).unwrap();
    assert_eq!(model.parameter(name).unwrap(), values);

    model.forward(&tokens, Some(&targets), 2, SEQ, false).unwrap();
    let logits = model.logits().unwrap();
    let path = scratch("roundtrip.safetensors");
    model.save(&path, Some("{\"vocab\": \"abc\"}")).unwrap();
    assert_eq!(moas::checkpoint_user_metadata(&path).unwrap(), "{\"vocab\": \"abc\"}");

    let mut reloaded = Model::from_file(&path).unwrap();
    assert_eq!(reloaded.config().head_selection_strategy(), config.head_selection_strategy());
    for info in model.parameters() {
        assert_eq!(reloaded.parameter(&info.name).unwrap(), model.parameter(&info.name).unwrap(), "{}", info.name);
    }
    reloaded.forward(&tokens, Some(&targets), 2, SEQ, false).unwrap();
    assert_eq!(reloaded.logits().unwrap(), logits);

    let mut other_seed = Model::new(&config.seed(8)).unwrap();
    other_seed.load(&path).unwrap();
    assert_eq!(other_seed.parameter(name).unwrap(), values);

    let error = Model::new(&tiny()).unwrap().load(&path).unwrap_err();
    assert_eq!(error.status(), Status::CheckpointConfig, "{error}");
    let error = Model::from_file(scratch("missing.safetensors")).unwrap_err();
    assert_eq!(error.status(), Status::Io, "{error}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn router_stats_for_mixture_of_heads() {
    let mut model = Model::new(&tiny().heads(8).head_selection(mixture_of_heads(2, 4))).unwrap();
    let (tokens, targets) = batch();
    let (_, aux) = model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
    assert!(aux > 0.0);
    let all = model.router_stats_all().unwrap();
    assert_eq!(all.len(), 2);
    for stats in &all {
        assert_eq!(stats.attention, Attention::Moh);
        assert_eq!(stats.share.len(), 6); // the 6 routed heads
        assert!((stats.share.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!((stats.top_share.iter().sum::<f32>() - 4.0).abs() < 1e-3);
        assert!(stats.balance > 0.0 && stats.balance <= 1.0 + 1e-5);
        assert!(stats.mean_shared_weight > 0.0 && stats.mean_routed_weight > 0.0);
    }
    assert_eq!(model.router_stats(1).unwrap(), all[1]);
    assert_eq!(model.router_stats(2).unwrap_err().status(), Status::IndexOutOfRange);
}

#[test]
fn router_stats_for_moas() {
    let config =
        tiny().attention(Attention::Moas).moas_mode(MoasMode::Top1).branch_kv_heads(&[0, 2, 1]).aux_weight(0.02);
    let mut model = Model::new(&config).unwrap();
    assert_eq!(model.config().as_raw().moas_n_branches, 3);
    let (tokens, targets) = batch();
    model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
    model.backward().unwrap();
    for stats in model.router_stats_all().unwrap() {
        assert_eq!(stats.attention, Attention::Moas);
        assert_eq!(stats.share.len(), 3);
        assert!((stats.share.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert_eq!((stats.mean_shared_weight, stats.mean_routed_weight), (0.0, 0.0));
    }
    let gates = model.gates(1).unwrap();
    assert_eq!(gates.width, 3);
    assert_eq!(gates.values.len(), 2 * SEQ as usize * 3);
    for row in gates.values.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert_eq!(model.gates(2).unwrap_err().status(), Status::IndexOutOfRange);
}

#[test]
fn models_move_between_threads() {
    let (tokens, targets) = batch();
    let workers: Vec<_> = (0..2)
        .map(|seed| {
            let mut model = Model::new(&tiny().seed(seed)).unwrap();
            let (tokens, targets) = (tokens.clone(), targets.clone());
            std::thread::spawn(move || model.forward(&tokens, Some(&targets), 2, SEQ, false).map(|(loss, _)| loss))
        })
        .collect();
    for worker in workers {
        // Errors cross threads with their message intact (read on the failing thread).
        assert!(worker.join().unwrap().unwrap().is_finite());
    }
}

#[test]
fn gradients_as_one_buffer() {
    let mut model = Model::new(&tiny()).unwrap();
    let (tokens, targets) = batch();
    let len = model.num_parameters().unwrap() as usize;
    assert_eq!(model.gradients().unwrap(), vec![0.0; len]);
    model.forward(&tokens, Some(&targets), 2, SEQ, true).unwrap();
    model.backward().unwrap();
    let all = model.gradients().unwrap();
    let by_name: Vec<f32> = model.parameters().iter().flat_map(|p| model.gradient(&p.name).unwrap()).collect();
    assert_eq!(all, by_name, "one buffer, the tensors in parameter order");
    let mut into = vec![f32::NAN; len];
    model.gradients_into(&mut into).unwrap();
    assert_eq!(into, all);

    // The mean of two processes' gradients, say: written back, it is what the step uses.
    let doubled: Vec<f32> = all.iter().map(|g| 2.0 * g).collect();
    model.set_gradients(&doubled).unwrap();
    assert_eq!(model.gradients().unwrap(), doubled);
    assert_eq!(model.set_gradients(&doubled[1..]).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(model.gradients_into(&mut into[..len - 1]).unwrap_err().status(), Status::SizeMismatch);
    let mut bad = doubled.clone();
    bad[len / 2] = f32::INFINITY;
    assert_eq!(model.set_gradients(&bad).unwrap_err().status(), Status::NonFinite);
    assert_eq!(model.gradients().unwrap(), doubled, "a refused write changes nothing");
    model.zero_grad().unwrap();
    assert_eq!(model.gradients().unwrap(), vec![0.0; len]);
}
