//! `Device::Cuda` where no GPU exists: MOAS_CUDA_LIBRARY points libmoas at the test build's table of CPU functions
//! (tests/cuda/cpu_backend_table.hpp), so the CUDA layer and model run their device orchestration over the CPU kernels
//! and must reproduce the CPU exactly. Its own test binary: the library picks its CUDA backend once per process.
use moas::{AdamW, Config, Device, HeadSelectionStrategy, Layer, LayerConfig, MatmulPrecision, Model, Position};
use std::path::PathBuf;

fn cpu_table() -> Option<PathBuf> {
    let table = PathBuf::from(std::env::var_os("MOAS_LIB_DIR")?).join("tests").join("libmoas_cuda_cpu.so");
    table.exists().then_some(table)
}

/// Points libmoas at the CPU table once: the tests of this binary run on several threads, and the environment must
/// not be written while another thread reads it.
fn use_cpu_table() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Some(table) = cpu_table() else {
        eprintln!("skipped: libmoas_cuda_cpu.so not built (MOAS_LIB_DIR/tests)");
        return false;
    };
    ONCE.call_once(|| std::env::set_var("MOAS_CUDA_LIBRARY", table));
    true
}

fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn cuda_layer_and_model_over_the_cpu_table_equal_the_cpu() {
    if !use_cpu_table() {
        return;
    }

    // RustGPT's attention layer: MoH 2 shared + 4 of 6, CoPE, a window.
    let config = LayerConfig::new()
        .position(Position::Cope { max_pos: 16 })
        .window_size(Some(12))
        .head_selection(HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        })
        .threads(1);
    assert_eq!(config.device(Device::Cuda { index: 0 }).device_kind(), Some(Device::Cuda { index: 0 }));
    let mut gpu = Layer::new(&config.device(Device::Cuda { index: 0 })).expect("CUDA layer over the CPU table");
    let mut cpu = Layer::new(&config).unwrap();
    let adam = AdamW { weight_decay: 0.0, ..AdamW::default() };
    for step in 0..3 {
        let x = inputs(40 * 128, step);
        let dy = inputs(40 * 128, 100 + step);
        assert_eq!(gpu.forward(&x, 1, 40, true).unwrap(), cpu.forward(&x, 1, 40, true).unwrap());
        assert_eq!(gpu.backward(&dy).unwrap(), cpu.backward(&dy).unwrap());
        assert_eq!(gpu.step(&adam).unwrap(), cpu.step(&adam).unwrap());
        gpu.zero_grad().unwrap();
        cpu.zero_grad().unwrap();
    }

    // A whole model: the same losses step by step.
    let model_config = Config::new().vocab_size(13).block_size(12).layers(2).heads(4).kv_heads(2).width(16).threads(1);
    let mut gpu = Model::new(&model_config.device(Device::Cuda { index: 0 })).unwrap();
    let mut cpu = Model::new(&model_config).unwrap();
    let tokens: Vec<i32> = (0..24).map(|i| (i * 7 % 13) as i32).collect();
    let targets: Vec<i32> = (0..24).map(|i| (i * 5 % 13) as i32).collect();
    for _ in 0..3 {
        let step = |m: &mut Model| {
            m.zero_grad().unwrap();
            let losses = m.forward(&tokens, Some(&targets), 2, 12, true).unwrap();
            m.backward().unwrap();
            (losses, m.step(&AdamW::default()).unwrap())
        };
        assert_eq!(step(&mut gpu), step(&mut cpu));
    }
    assert_eq!(gpu.parameter("transformer.ln_f.weight").unwrap(), cpu.parameter("transformer.ln_f.weight").unwrap());

    // BF16 products (the table rounds their inputs as tensor cores do): close to fp32, not equal.
    let bf16_config = model_config.device(Device::Cuda { index: 0 }).matmul_precision(MatmulPrecision::Bf16);
    assert_eq!(bf16_config.matmul_precision_kind(), Some(MatmulPrecision::Bf16));
    let mut bf16 = Model::new(&bf16_config).unwrap();
    let mut fp32 = Model::new(&model_config.device(Device::Cuda { index: 0 })).unwrap();
    let bf16_loss = bf16.forward(&tokens, Some(&targets), 2, 12, false).unwrap().0;
    let fp32_loss = fp32.forward(&tokens, Some(&targets), 2, 12, false).unwrap().0;
    assert_ne!(bf16_loss, fp32_loss);
    assert!((bf16_loss - fp32_loss).abs() <= 1e-3 * fp32_loss, "{bf16_loss} vs {fp32_loss}");
}

/// The whole-buffer gradient calls, backward_step and layer checkpoints move gradients, weights and Adam state
/// between host and device: over the CPU table they must match a CPU layer bit for bit.
#[test]
fn cuda_layer_gradients_backward_step_and_checkpoints_equal_the_cpu() {
    if !use_cpu_table() {
        return;
    }
    let config = LayerConfig::new().width(32).max_seq_len(16).threads(1).dropout(0.1).head_selection(
        HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        },
    );
    let cuda = Device::Cuda { index: 0 };
    let mut gpu = Layer::new(&config.device(cuda)).unwrap();
    let mut cpu = Layer::new(&config).unwrap();
    let weights =
        |l: &Layer| -> Vec<f32> { l.parameters().iter().flat_map(|p| l.parameter(&p.name).unwrap()).collect() };
    let adam = AdamW::rustgpt();
    let x = inputs(2 * 10 * 32, 7);
    let dy = inputs(x.len(), 8);

    for layer in [&mut gpu, &mut cpu] {
        layer.forward(&x, 2, 10, true).unwrap();
        layer.backward(&dy).unwrap();
    }
    let gradients = cpu.gradients().unwrap();
    assert_eq!(gpu.gradients().unwrap(), gradients);
    let halved: Vec<f32> = gradients.iter().map(|g| g * 0.5).collect();
    gpu.set_gradients(&halved).unwrap();
    cpu.set_gradients(&halved).unwrap();
    assert_eq!(gpu.gradients().unwrap(), halved, "the write reached the device");
    assert_eq!(gpu.step(&adam).unwrap(), cpu.step(&adam).unwrap());
    assert_eq!(weights(&gpu), weights(&cpu));

    let mut dx = (vec![0f32; x.len()], vec![0f32; x.len()]);
    for step in 0..2u64 {
        let x = inputs(x.len(), 20 + step);
        gpu.forward(&x, 2, 10, true).unwrap();
        cpu.forward(&x, 2, 10, true).unwrap();
        gpu.backward_step(&dy, &mut dx.0, 1e-2, &adam).unwrap();
        cpu.backward_step(&dy, &mut dx.1, 1e-2, &adam).unwrap();
        assert_eq!(dx.0, dx.1);
        assert!(gpu.gradients().unwrap().iter().all(|&g| g == 0.0));
    }
    assert_eq!(weights(&gpu), weights(&cpu));

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moas-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let (weights_path, optimizer_path) = (
        dir.join(format!("{}-cuda-layer.safetensors", std::process::id())),
        dir.join(format!("{}-cuda-layer-adam.safetensors", std::process::id())),
    );
    gpu.save(&weights_path, None).unwrap();
    gpu.optimizer_save(&optimizer_path).unwrap();
    let mut restored = Layer::from_file(&weights_path, Some(&LayerConfig::new().threads(1).device(cuda))).unwrap();
    assert_eq!(restored.config().device_kind(), Some(cuda));
    restored.optimizer_load(&optimizer_path).unwrap();
    assert_eq!(restored.optimizer_steps().unwrap(), 3);
    for step in 0..2u64 {
        let x = inputs(x.len(), 30 + step);
        for layer in [&mut restored, &mut cpu] {
            layer.forward(&x, 2, 10, true).unwrap();
            layer.backward_step(&dy, &mut dx.0, 1e-2, &adam).unwrap();
        }
    }
    assert_eq!(weights(&restored), weights(&cpu), "a device layer restored from files continues as the CPU one");
    for path in [weights_path, optimizer_path] {
        std::fs::remove_file(path).unwrap();
    }
}
