use moas::{AdamW, Attention, HeadSelectionStrategy, Layer, LayerConfig, MoasMode, Position, Status};

const WIDTH: usize = 32;
const SEQ: usize = 10;
const BATCH: usize = 2;

fn small() -> LayerConfig {
    LayerConfig::new().width(WIDTH).max_seq_len(16).threads(1)
}

fn mixture_of_heads() -> HeadSelectionStrategy {
    HeadSelectionStrategy::MixtureOfHeads { num_shared_heads: 2, num_active_routed_heads: 4, load_balance_weight: 0.01 }
}

/// Deterministic O(1) activations [BATCH, SEQ, WIDTH] that differ between tokens (a fixed-seed LCG).
fn activations(seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..BATCH * SEQ * WIDTH)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn defaults_are_rustgpts_attention_shape() {
    let config = LayerConfig::new();
    let raw = config.as_raw();
    assert_eq!((raw.n_embd, raw.n_head, raw.n_kv_head, raw.max_seq_len), (128, 8, 4, 80));
    assert_eq!(raw.residual, 1);
    assert_eq!(config.attention_kind(), Some(Attention::Scheme));
    assert_eq!(config.position_kind(), Some(Position::Learned));
    assert_eq!(config.sliding_window(), None);
    assert_eq!(config.head_selection_strategy(), Some(HeadSelectionStrategy::AllHeads));

    let cope = config.position(Position::Cope { max_pos: 12 }).window_size(Some(6));
    assert_eq!(cope.position_kind(), Some(Position::Cope { max_pos: 12 }));
    assert_eq!(cope.sliding_window(), Some(6));
    assert_eq!(cope.window_size(None).sliding_window(), None);
    assert_eq!(config.head_selection(mixture_of_heads()).attention_kind(), Some(Attention::Moh));
}

#[test]
fn shapes_for_every_attention_kind() {
    let configs = [
        small(),
        small().position(Position::Rope).kv_heads(1),
        small().position(Position::Cope { max_pos: 8 }).window_size(Some(4)),
        small().attention(Attention::Moas).moas_mode(MoasMode::Top1).branch_kv_heads(&[0, 2, 1]),
        small().head_selection(mixture_of_heads()),
        small().residual(false),
    ];
    let x = activations(1);
    for config in configs {
        let mut layer = Layer::new(&config).unwrap();
        assert_eq!(layer.width(), WIDTH);
        assert_eq!(layer.num_parameters(), layer.parameters().iter().map(|p| p.numel).sum::<usize>());
        let y = layer.forward(&x, BATCH, SEQ, true).unwrap();
        assert_eq!(y.len(), x.len());
        assert!(y.iter().all(|v| v.is_finite()));
        let mut y_into = vec![f32::NAN; x.len()];
        layer.forward_into(&x, &mut y_into, BATCH, SEQ, true).unwrap();
        assert_eq!(y_into, y, "{config:?}");
        let dx = layer.backward(&vec![1.0; y.len()]).unwrap();
        assert_eq!(dx.len(), x.len());
        assert!(dx.iter().all(|v| v.is_finite()));
        // One sequence of a different length reuses the same layer.
        assert_eq!(layer.forward(&x[..3 * WIDTH], 1, 3, false).unwrap().len(), 3 * WIDTH);
    }
}

#[test]
fn parameters_are_named_and_shaped() {
    let layer =
        Layer::new(&small().position(Position::Cope { max_pos: 8 }).head_selection(mixture_of_heads())).unwrap();
    let names = layer.parameter_names();
    for name in ["attn.c_proj.weight", "attn.wg.weight", "attn.wg_0.weight", "attn.wg_1.weight", "attn.cope.weight"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let shape_of = |name: &str| layer.parameters().iter().find(|p| p.name == name).unwrap().shape.clone();
    assert_eq!(shape_of("attn.q_proj.weight"), vec![WIDTH, WIDTH]);
    assert_eq!(shape_of("attn.k_proj.weight"), vec![4 * WIDTH / 8, WIDTH]); // 4 kv heads of 8
    assert_eq!(shape_of("attn.wg.weight"), vec![6, WIDTH]); // the 6 routed heads
    assert_eq!(shape_of("attn.cope.weight"), vec![8, 8, WIDTH / 8]); // [heads, max_pos, head_dim]
    assert!(layer.parameter("attn.cope.weight").unwrap().iter().all(|&v| v == 0.0), "CoPE starts at zero");
}

#[test]
fn residual_adds_the_input() {
    let x = activations(2);
    let mut with = Layer::new(&small().seed(5)).unwrap();
    let mut without = Layer::new(&small().seed(5).residual(false)).unwrap();
    let y = with.forward(&x, BATCH, SEQ, false).unwrap();
    let attn = without.forward(&x, BATCH, SEQ, false).unwrap();
    for ((y, a), x) in y.iter().zip(&attn).zip(&x) {
        assert!((y - (x + a)).abs() <= 1e-6 * (1.0 + y.abs()), "{y} != {x} + {a}");
    }
}

#[test]
fn errors_carry_status_and_message() {
    let error = Layer::new(&small().kv_heads(3)).unwrap_err();
    assert_eq!(error.status(), Status::InvalidConfig);
    assert!(error.message().contains("n_kv_head"), "{}", error.message());
    assert!(error.to_string().starts_with("MOAS_ERR_INVALID_CONFIG: "), "{error}");
    assert_eq!(Layer::new(&small().window_size(Some(0))).unwrap_err().status(), Status::InvalidConfig);

    let mut layer = Layer::new(&small()).unwrap();
    let x = activations(3);
    assert_eq!(layer.backward(&x).unwrap_err().status(), Status::NoForward);
    assert_eq!(layer.gates().unwrap_err().status(), Status::NoForward);
    assert_eq!(layer.router_stats().unwrap_err().status(), Status::NoForward);

    let error = layer.forward(&x[1..], BATCH, SEQ, false).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert!(error.message().contains("n_embd"), "{}", error.message());
    let error = layer.forward_into(&x, &mut [0.0; 5], BATCH, SEQ, false).unwrap_err();
    assert_eq!(error.status(), Status::SizeMismatch);
    assert_eq!(layer.forward(&x, usize::MAX, SEQ, false).unwrap_err().status(), Status::SizeMismatch);
    let long = vec![0.0; 17 * WIDTH];
    let error = layer.forward(&long, 1, 17, false).unwrap_err();
    assert_eq!(error.status(), Status::ContextTooLong);
    assert!(error.message().contains("max_seq_len"), "{}", error.message());

    layer.forward(&x, BATCH, SEQ, false).unwrap();
    assert_eq!(layer.backward(&x).unwrap_err().status(), Status::NoForward, "an eval forward keeps nothing");
    layer.forward(&x, BATCH, SEQ, true).unwrap();
    assert_eq!(layer.backward(&x[..WIDTH]).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(layer.backward_into(&x, &mut [0.0; 3]).unwrap_err().status(), Status::SizeMismatch);
    assert_eq!(layer.router_stats().unwrap_err().status(), Status::NoRouter);
    assert_eq!(layer.gates().unwrap().width, 0);

    assert_eq!(layer.parameter("attn.no_such.weight").unwrap_err().status(), Status::UnknownParameter);
    assert_eq!(layer.gradient("nul\0name").unwrap_err().status(), Status::UnknownParameter);
    assert_eq!(layer.set_gradient("attn.c_proj.weight", &[0.0; 3]).unwrap_err().status(), Status::SizeMismatch);
    let error = layer.set_parameter("attn.c_proj.weight", &vec![f32::INFINITY; WIDTH * WIDTH]).unwrap_err();
    assert_eq!(error.status(), Status::NonFinite);
    let bad_adamw = AdamW { lr: f32::NAN, ..AdamW::default() };
    assert_eq!(layer.step(&bad_adamw).unwrap_err().status(), Status::InvalidConfig);
}

#[test]
fn nan_input_is_refused_and_the_layer_works_on() {
    let mut layer = Layer::new(&small().head_selection(mixture_of_heads())).unwrap();
    let x = activations(4);
    let before = layer.forward(&x, BATCH, SEQ, true).unwrap();

    let mut bad = x.clone();
    bad[7] = f32::NAN;
    let mut y = vec![-1.0; x.len()];
    let error = layer.forward_into(&bad, &mut y, BATCH, SEQ, true).unwrap_err();
    assert_eq!(error.status(), Status::NonFinite);
    assert!(!error.message().is_empty());
    assert!(y.iter().all(|&v| v == -1.0), "y is untouched on failure");

    // The failed call kept the training forward before it: backward still applies to it.
    let dx = layer.backward(&vec![1.0; x.len()]).unwrap();
    assert!(dx.iter().all(|v| v.is_finite()));
    assert_eq!(layer.forward(&x, BATCH, SEQ, true).unwrap(), before);
}

#[test]
fn backward_matches_finite_differences() {
    // Loss = <y, r> for a fixed r: dLoss/dx = backward(r); checked along one direction with central differences.
    let mut layer = Layer::new(&small().position(Position::Rope).window_size(Some(4))).unwrap();
    for info in layer.parameters().to_vec() {
        // O(1) weights so attention is far from uniform and the check exercises it.
        let values: Vec<f32> =
            activations(info.numel as u64).iter().cycle().take(info.numel).map(|v| v * 0.5).collect();
        layer.set_parameter(&info.name, &values).unwrap();
    }
    let x = activations(5);
    let r = activations(6);
    let direction = activations(7);
    layer.forward(&x, BATCH, SEQ, true).unwrap();
    let dx = layer.backward(&r).unwrap();

    let eps = 1e-2f32;
    let mut loss_at = |sign: f32| {
        let shifted: Vec<f32> = x.iter().zip(&direction).map(|(x, d)| x + sign * eps * d).collect();
        dot(&layer.forward(&shifted, BATCH, SEQ, false).unwrap(), &r)
    };
    let numeric = (loss_at(1.0) - loss_at(-1.0)) / (2.0 * eps as f64);
    let analytic = dot(&dx, &direction);
    assert!((numeric - analytic).abs() <= 1e-2 * analytic.abs().max(1.0), "numeric {numeric} vs backward {analytic}");
}

#[test]
fn gradients_write_and_step() {
    let mut layer = Layer::new(&small()).unwrap();
    let name = "attn.c_proj.weight";
    let numel = WIDTH * WIDTH;
    assert!(layer.gradient(name).unwrap().iter().all(|&g| g == 0.0));

    let x = activations(8);
    layer.forward(&x, BATCH, SEQ, true).unwrap();
    layer.backward(&x).unwrap();
    let once = layer.gradient(name).unwrap();
    assert!(once.iter().any(|&g| g != 0.0));
    layer.forward(&x, BATCH, SEQ, true).unwrap();
    layer.backward(&x).unwrap();
    let twice = layer.gradient(name).unwrap();
    assert!(once.iter().zip(&twice).all(|(a, b)| (2.0 * a - b).abs() <= 1e-5 * (1.0 + b.abs())), "gradients add up");
    layer.zero_grad().unwrap();
    assert!(layer.gradient(name).unwrap().iter().all(|&g| g == 0.0));

    // A written gradient drives the step: Adam's first step moves each weight by lr against the gradient's sign.
    let before = layer.parameter(name).unwrap();
    let untouched = layer.parameter("attn.q_proj.weight").unwrap();
    let gradient: Vec<f32> = (0..numel).map(|i| if i % 2 == 0 { 1.0 } else { -0.5 }).collect();
    layer.set_gradient(name, &gradient).unwrap();
    assert_eq!(layer.gradient(name).unwrap(), gradient);
    let adam = AdamW { lr: 1e-2, weight_decay: 0.0, grad_clip: 0.0, ..AdamW::default() };
    let norm = layer.step(&adam).unwrap();
    let want_norm = gradient.iter().map(|g| g * g).sum::<f32>().sqrt();
    assert!((norm - want_norm).abs() <= 1e-4 * want_norm, "grad norm {norm} vs {want_norm}");
    let after = layer.parameter(name).unwrap();
    for ((b, a), g) in before.iter().zip(&after).zip(&gradient) {
        assert!((b - a - 1e-2 * g.signum()).abs() < 1e-5, "{b} -> {a} for gradient {g}");
    }
    // Parameters without a gradient stay put (plain Adam, no decay).
    assert_eq!(layer.parameter("attn.q_proj.weight").unwrap(), untouched);
    assert_eq!(layer.backward(&x).unwrap_err().status(), Status::NoForward, "a step invalidates the forward");
}

#[test]
fn router_stats_and_gates_for_mixture_of_heads() {
    let mut layer = Layer::new(&small().head_selection(mixture_of_heads())).unwrap();
    let x = activations(9);
    layer.forward(&x, BATCH, SEQ, true).unwrap();
    assert!(layer.aux_loss() > 0.0);
    let stats = layer.router_stats().unwrap();
    assert_eq!(stats.attention, Attention::Moh);
    assert_eq!(stats.share.len(), 6);
    assert!((stats.top_share.iter().sum::<f32>() - 4.0).abs() < 1e-3);
    assert!((stats.aux_loss - layer.aux_loss()).abs() <= 1e-6);

    let gates = layer.gates().unwrap();
    assert_eq!(gates.width, 8);
    assert_eq!(gates.values.len(), BATCH * SEQ * 8);
    for row in gates.values.chunks(8) {
        assert!(row[..2].iter().all(|&g| g > 0.0), "shared heads are always active: {row:?}");
        assert_eq!(row[2..].iter().filter(|&&g| g > 0.0).count(), 4, "4 of 6 routed heads: {row:?}");
    }
    layer.forward(&x, BATCH, SEQ, false).unwrap();
    assert_eq!(layer.aux_loss(), 0.0, "eval mode computes no aux loss");
}

#[test]
fn gates_for_moas() {
    let mut layer = Layer::new(&small().attention(Attention::Moas).branch_kv_heads(&[0, 2])).unwrap();
    layer.forward(&activations(10), BATCH, SEQ, false).unwrap();
    let gates = layer.gates().unwrap();
    assert_eq!(gates.width, 2);
    for row in gates.values.chunks(2) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "a softmax over branches: {row:?}");
    }
    assert_eq!(layer.router_stats().unwrap().attention, Attention::Moas);
}

#[test]
fn layers_move_between_threads() {
    let x = activations(11);
    let mut layer = Layer::new(&small()).unwrap();
    let here = layer.forward(&x, BATCH, SEQ, false).unwrap();
    let there = std::thread::spawn(move || layer.forward(&x, BATCH, SEQ, false)).join().unwrap().unwrap();
    assert_eq!(here, there);
}
