//! `Device::Cuda` where no GPU exists: MOAS_CUDA_LIBRARY points libmoas at the test build's table of CPU functions
//! (tests/cuda/cpu_backend_table.hpp), so the CUDA layer and model run their device orchestration over the CPU kernels
//! and must reproduce the CPU exactly. Its own test binary: the library picks its CUDA backend once per process.
use moas::{AdamW, Config, Device, HeadSelectionStrategy, Layer, LayerConfig, MatmulPrecision, Model, Position};
use std::path::PathBuf;

fn cpu_table() -> Option<PathBuf> {
    let table = PathBuf::from(std::env::var_os("MOAS_LIB_DIR")?).join("tests").join("libmoas_cuda_cpu.so");
    table.exists().then_some(table)
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
    let Some(table) = cpu_table() else {
        eprintln!("skipped: libmoas_cuda_cpu.so not built (MOAS_LIB_DIR/tests)");
        return;
    };
    std::env::set_var("MOAS_CUDA_LIBRARY", table);

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
