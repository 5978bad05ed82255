//! Training a `Layer` the ways RustGPT-style programs do: several threads sharing one layer behind a `Mutex` and
//! combining their gradients, `backward_step` (RustGPT's `backward(grads, lr)`), and checkpoints that let training
//! continue bit for bit.
use moas::{AdamW, Attention, HeadSelectionStrategy, Layer, LayerConfig, MoasMode, Model, MohGates, Position, Status};
use std::path::PathBuf;
use std::sync::Mutex;

const WIDTH: usize = 32;

/// A fixed-seed LCG: O(1) values in [-1, 1) that differ between elements.
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moas-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

/// Every parameter of a layer, concatenated in parameter order.
fn weights(layer: &Layer) -> Vec<f32> {
    layer.parameters().iter().flat_map(|p| layer.parameter(&p.name).unwrap()).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn layers_and_models_are_send_so_a_mutex_shares_them() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Layer>();
    send::<Model>();
    sync::<Mutex<Layer>>();
    sync::<Mutex<Model>>();
}

#[test]
fn adamw_rustgpt_is_plain_adam_and_not_the_default() {
    let adam = AdamW::rustgpt();
    assert_eq!(
        (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay, adam.grad_clip),
        (1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0)
    );
    let default = AdamW::default();
    assert_eq!(
        (default.lr, default.beta1, default.beta2, default.eps, default.weight_decay, default.grad_clip),
        (1e-3, 0.9, 0.99, 1e-8, 0.1, 1.0)
    );
    // Struct-update syntax keeps the other fields of the value it starts from.
    let tuned = AdamW { lr: 3e-4, ..Default::default() };
    assert_eq!((tuned.beta2, tuned.weight_decay, tuned.grad_clip), (0.99, 0.1, 1.0));
    let tuned = AdamW { lr: 3e-4, ..AdamW::rustgpt() };
    assert_eq!((tuned.beta2, tuned.weight_decay, tuned.grad_clip), (0.999, 0.0, 0.0));
}

#[test]
fn gradients_as_one_buffer() {
    let config = LayerConfig::new().width(WIDTH).max_seq_len(16).threads(1).head_selection(
        HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        },
    );
    let mut layer = Layer::new(&config).unwrap();
    assert_eq!(layer.num_parameters(), layer.parameters().iter().map(|p| p.numel).sum::<usize>());
    assert!(layer.gradients().unwrap().iter().all(|&g| g == 0.0));
    let x = values(1, 2 * 10 * WIDTH);
    layer.forward(&x, 2, 10, true).unwrap();
    layer.backward(&values(2, x.len())).unwrap();
    let all = layer.gradients().unwrap();
    let by_name: Vec<f32> = layer.parameters().iter().flat_map(|p| layer.gradient(&p.name).unwrap()).collect();
    assert_eq!(all, by_name, "one buffer, the tensors in parameter order");
    let mut into = vec![f32::NAN; all.len()];
    layer.gradients_into(&mut into).unwrap();
    assert_eq!(into, all);

    // Accumulation until zero_grad: a second backward adds the same gradient again.
    layer.forward(&x, 2, 10, true).unwrap();
    layer.backward(&values(2, x.len())).unwrap();
    let twice = layer.gradients().unwrap();
    assert!(all.iter().zip(&twice).all(|(a, b)| (2.0 * a - b).abs() <= 1e-5 * (1.0 + b.abs())));

    let halved: Vec<f32> = twice.iter().map(|g| g * 0.5).collect();
    layer.set_gradients(&halved).unwrap();
    assert_eq!(layer.gradients().unwrap(), halved);
    layer.zero_grad().unwrap();
    assert!(layer.gradients().unwrap().iter().all(|&g| g == 0.0));

    let error = layer.set_gradients(&halved[1..]).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert!(!error.message().is_empty());
    assert_eq!(layer.gradients_into(&mut into[1..]).unwrap_err().status(), Status::SizeMismatch);
    let mut bad = halved.clone();
    bad[3] = f32::NAN;
    assert_eq!(layer.set_gradients(&bad).unwrap_err().status(), Status::NonFinite);
    assert!(layer.gradients().unwrap().iter().all(|&g| g == 0.0), "a refused write changes nothing");
}

/// Several threads share one layer behind a Mutex, each computing the gradient of its own sequence; the mean of
/// those gradients drives one step. A twin layer (same seed) runs the same sequences as one batch and scales its
/// gradient by 1/n: the two layers end with the same weights.
#[test]
fn mean_of_per_thread_sequence_gradients_equals_the_batched_gradient() {
    const SEQUENCES: usize = 4;
    const SEQ: usize = 12;
    // One scheme (GQA, 2 kv heads over 4): no load-balance loss, whose batch mean would not split over sequences.
    let config = LayerConfig::new().width(WIDTH).heads(4).kv_heads(2).max_seq_len(20).threads(1).seed(11);
    // eps 1e-2 keeps the first Adam step lr * g / (|g| + eps) a smooth function of the gradient; with eps 1e-8 it is
    // lr * sign(g), which float noise in a near-zero gradient element could flip, moving that weight by 2 lr.
    let adam = AdamW { lr: 1e-2, eps: 1e-2, ..AdamW::rustgpt() };
    let xs: Vec<Vec<f32>> = (0..SEQUENCES).map(|i| values(100 + i as u64, SEQ * WIDTH)).collect();
    let dys: Vec<Vec<f32>> = (0..SEQUENCES).map(|i| values(200 + i as u64, SEQ * WIDTH)).collect();

    let shared = Mutex::new(Layer::new(&config).unwrap());
    let per_thread: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SEQUENCES)
            .map(|i| {
                let (shared, x, dy) = (&shared, &xs[i], &dys[i]);
                scope.spawn(move || {
                    let mut layer = shared.lock().unwrap();
                    layer.forward(x, 1, SEQ, true).unwrap();
                    layer.backward(dy).unwrap();
                    let gradients = layer.gradients().unwrap();
                    layer.zero_grad().unwrap();
                    gradients
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut layer = shared.into_inner().unwrap();
    let mut mean = vec![0f32; layer.num_parameters()];
    for gradients in &per_thread {
        for (m, g) in mean.iter_mut().zip(gradients) {
            *m += g;
        }
    }
    mean.iter_mut().for_each(|m| *m /= SEQUENCES as f32);
    layer.set_gradients(&mean).unwrap();
    layer.step(&adam).unwrap();

    let mut batched = Layer::new(&config).unwrap();
    batched.forward(&xs.concat(), SEQUENCES, SEQ, true).unwrap();
    batched.backward(&dys.concat()).unwrap();
    let scaled: Vec<f32> = batched.gradients().unwrap().iter().map(|g| g / SEQUENCES as f32).collect();
    batched.set_gradients(&scaled).unwrap();
    batched.step(&adam).unwrap();

    // The two sums add the same terms in another order (per sequence, then across threads; or over the whole
    // batch at once), so they agree to float rounding, not bit for bit.
    let scale = max_abs(&scaled);
    assert!(scale > 0.0);
    let gradient_error = max_difference(&mean, &scaled);
    assert!(gradient_error <= 1e-5 * scale, "gradients differ by {gradient_error} (largest {scale})");
    let weight_error = max_difference(&weights(&layer), &weights(&batched));
    assert!(weight_error <= 1e-6, "weights differ by {weight_error} after one step of lr {}", adam.lr);
    assert_ne!(weights(&layer), weights(&Layer::new(&config).unwrap()), "the step moved the weights");
}

#[test]
fn backward_step_is_backward_then_step_at_lr_then_zero_grad() {
    let config = LayerConfig::new().width(WIDTH).max_seq_len(16).threads(1).seed(3).dropout(0.1).head_selection(
        HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        },
    );
    // adam.lr differs from the lr argument: backward_step must use the argument.
    let adam = AdamW { lr: 0.5, ..AdamW::rustgpt() };
    let lr = 2e-3;
    let mut combined = Layer::new(&config).unwrap();
    let mut separate = Layer::new(&config).unwrap();
    for step in 0..3u64 {
        let seq = 8 + 4 * step as usize;
        let x = values(10 + step, seq * WIDTH);
        let dy = values(20 + step, seq * WIDTH);

        combined.forward(&x, 1, seq, true).unwrap();
        let mut dx = vec![0f32; dy.len()];
        combined.backward_step(&dy, &mut dx, lr, &adam).unwrap();

        separate.forward(&x, 1, seq, true).unwrap();
        let want_dx = separate.backward(&dy).unwrap();
        separate.step(&AdamW { lr, ..adam }).unwrap();
        separate.zero_grad().unwrap();

        assert_eq!(dx, want_dx, "step {step}: dx");
        assert_eq!(weights(&combined), weights(&separate), "step {step}: weights");
        assert!(combined.gradients().unwrap().iter().all(|&g| g == 0.0), "step {step}: gradients zeroed");
    }
    assert_eq!(combined.optimizer_steps().unwrap(), 3);
    assert_eq!(separate.optimizer_steps().unwrap(), 3);

    // A failed backward changes nothing; a failed step still leaves no gradient behind.
    let mut dx = vec![0f32; 8 * WIDTH];
    let before = weights(&combined);
    assert_eq!(
        combined.backward_step(&values(1, 8 * WIDTH), &mut dx, lr, &adam).unwrap_err().status(),
        Status::NoForward
    );
    combined.forward(&values(30, 8 * WIDTH), 1, 8, true).unwrap();
    let error = combined.backward_step(&values(31, 8 * WIDTH), &mut dx, f32::NAN, &adam).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
    assert!(error.message().contains("lr"), "{}", error.message());
    assert_eq!(weights(&combined), before);
    assert!(combined.gradients().unwrap().iter().all(|&g| g == 0.0));
    assert_eq!(combined.optimizer_steps().unwrap(), 3);
}

#[test]
fn checkpoints_continue_training_bit_for_bit() {
    // Dropout on: the masks are keyed by the count of training forwards, which the optimiser file carries.
    let config = LayerConfig::new()
        .width(WIDTH)
        .max_seq_len(16)
        .threads(1)
        .seed(5)
        .dropout(0.1)
        .position(Position::Rope)
        .head_selection(HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        });
    let adam = AdamW::rustgpt();
    let train = |layer: &mut Layer, step: u64| {
        let x = values(40 + step, 2 * 10 * WIDTH);
        layer.forward(&x, 2, 10, true).unwrap();
        let mut dx = vec![0f32; x.len()];
        layer.backward_step(&values(50 + step, x.len()), &mut dx, 1e-2, &adam).unwrap();
    };

    let mut original = Layer::new(&config).unwrap();
    let (weights_path, optimizer_path) = (scratch("layer.safetensors"), scratch("layer-optimizer.safetensors"));
    // No step taken yet: there is no state to save.
    let error = original.optimizer_save(&optimizer_path).unwrap_err();
    assert!(error.message().contains("optimizer_step"), "{error}");
    for step in 0..3 {
        train(&mut original, step);
    }
    original.save(&weights_path, Some("{\"vocab\": \"abc\"}")).unwrap();
    original.optimizer_save(&optimizer_path).unwrap();
    assert_eq!(moas::checkpoint_user_metadata(&weights_path).unwrap(), "{\"vocab\": \"abc\"}");

    let mut restored = Layer::from_file(&weights_path, Some(&LayerConfig::new().threads(1))).unwrap();
    assert_eq!(restored.parameters(), original.parameters());
    assert_eq!(weights(&restored), weights(&original));
    assert_eq!(restored.width(), WIDTH);
    assert_eq!(format!("{:?}", restored.config()), format!("{config:?}"));
    assert_eq!(restored.optimizer_steps().unwrap(), 0);
    restored.optimizer_load(&optimizer_path).unwrap();
    assert_eq!(restored.optimizer_steps().unwrap(), 3);

    for step in 3..6 {
        train(&mut original, step);
        train(&mut restored, step);
    }
    assert_eq!(weights(&restored), weights(&original), "training continued bit for bit");

    // A fresh layer of the same config, loaded in place, continues like one created from the file (the seed keys
    // the dropout masks, so it must be the file's).
    let mut reloaded = Layer::new(&config).unwrap();
    reloaded.load(&weights_path).unwrap();
    reloaded.optimizer_load(&optimizer_path).unwrap();
    let mut again = Layer::from_file(&weights_path, None).unwrap();
    again.optimizer_load(&optimizer_path).unwrap();
    for step in 3..6 {
        train(&mut reloaded, step);
        train(&mut again, step);
    }
    assert_eq!(weights(&reloaded), weights(&again));

    // A layer of another shape refuses both files with the library's message and stays as it was.
    let mut wider = Layer::new(&config.width(2 * WIDTH)).unwrap();
    let before = weights(&wider);
    let error = wider.load(&weights_path).unwrap_err();
    assert_eq!(error.status(), Status::CheckpointConfig, "{error}");
    assert!(error.message().contains("n_embd"), "{error}");
    assert_eq!(weights(&wider), before);
    let error = wider.optimizer_load(&optimizer_path).unwrap_err();
    assert_eq!(error.status(), Status::CheckpointConfig, "{error}");
    assert_eq!(wider.optimizer_steps().unwrap(), 0);

    let missing = scratch("no-such-layer.safetensors");
    assert_eq!(Layer::from_file(&missing, None).unwrap_err().status(), Status::Io);
    for path in [weights_path, optimizer_path] {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn from_file_reads_back_the_config() {
    let base = LayerConfig::new().width(WIDTH).max_seq_len(20).threads(1).seed(3);
    let configs = [
        base,
        base.position(Position::Cope { max_pos: 6 }).window_size(Some(4)).bias(true).residual(false),
        base.attention(Attention::Moas).moas_mode(MoasMode::Top1).branch_kv_heads(&[0, 1]).aux_weight(0.02),
        base.kv_heads(2).moh_gates(MohGates::Paper).head_selection(HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 1,
            num_active_routed_heads: 3,
            load_balance_weight: 0.05,
        }),
        base.position(Position::Rope)
            .dropout(0.25)
            .head_selection(HeadSelectionStrategy::StaticPruning { num_active_heads: 5 }),
    ];
    let path = scratch("config-round-trip.safetensors");
    let x = values(60, 2 * 6 * WIDTH);
    for config in configs {
        let mut layer = Layer::new(&config).unwrap();
        layer.save(&path, None).unwrap();
        let mut restored = Layer::from_file(&path, Some(&LayerConfig::new().threads(1))).unwrap();
        // The library reports MoAS branch kv heads resolved: the MHA branch's 0 reads back as the 8 heads.
        let expected =
            if config.attention_kind() == Some(Attention::Moas) { config.branch_kv_heads(&[8, 1]) } else { config };
        assert_eq!(format!("{:?}", restored.config()), format!("{expected:?}"));
        assert_eq!(format!("{:?}", layer.config()), format!("{expected:?}"));
        assert_eq!(weights(&restored), weights(&layer));
        assert_eq!(restored.forward(&x, 2, 6, false).unwrap(), layer.forward(&x, 2, 6, false).unwrap());
    }
    // Without overrides the layer runs with the library's defaults for threads and device.
    let restored = Layer::from_file(&path, None).unwrap();
    assert_eq!(restored.config().as_raw().n_threads, 0);
    std::fs::remove_file(&path).unwrap();

    // A model's checkpoint is not a layer's.
    let model = Model::new(&moas::Config::new().vocab_size(13).block_size(8).layers(1).heads(4).width(WIDTH)).unwrap();
    model.save(&path, None).unwrap();
    let error = Layer::from_file(&path, None).unwrap_err();
    assert_eq!(error.status(), Status::CheckpointConfig);
    assert!(error.message().contains("model"), "{error}");
    std::fs::remove_file(&path).unwrap();
}
