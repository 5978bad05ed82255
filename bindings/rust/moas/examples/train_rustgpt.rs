//! Trains a RustGPT-sized model (3 layers, width 128, 8 heads over 4 kv heads, MLP hidden 256, context 80) whose
//! attention is RustGPT's `HeadSelectionStrategy::MixtureOfHeads` (2 shared heads + the top 4 of 6 routed heads per
//! token) on a built-in paragraph with a character vocabulary, then prints each layer's router statistics and
//! generates a short line greedily with a KV cache.
//!
//!     cargo run --release --example train_rustgpt

use moas::{AdamW, Config, HeadSelectionStrategy, KvCache, Model};

const TEXT: &str = "The sun rises over the mountains and the valley wakes. Rivers carry snow water down to the sea, \
where the tide pulls it back and forth along the sand. Birds cross the sky in long lines, and farmers walk out to \
their fields before the heat of the day. In the evening the wind turns cold, the stars come out one by one, and \
the valley sleeps again under the quiet mountains. The sun rises, the rivers run, the birds fly, and the days go \
on like the tide.";

const CONTEXT: usize = 80;
const BATCH: usize = 4;
const STEPS: usize = 20;
const PROMPT: &str = "The sun ";
const GENERATE: usize = 60;

/// The sorted distinct characters of the text.
fn vocabulary(text: &str) -> Vec<char> {
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    chars
}

/// A small linear congruential generator: the example needs reproducible window offsets, not good randomness.
struct Offsets(u64);

impl Offsets {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

fn main() -> moas::Result<()> {
    let vocab = vocabulary(TEXT);
    let ids: Vec<i32> = TEXT.chars().map(|c| vocab.binary_search(&c).unwrap() as i32).collect();

    let config = Config::new()
        .vocab_size(vocab.len())
        .block_size(CONTEXT)
        .layers(3)
        .width(128)
        .heads(8)
        .kv_heads(4)
        .mlp_hidden(256)
        .dropout(0.0)
        .threads(2)
        .seed(42)
        .head_selection(HeadSelectionStrategy::MixtureOfHeads {
            num_shared_heads: 2,
            num_active_routed_heads: 4,
            load_balance_weight: 0.01,
        });
    let mut model = Model::new(&config)?;
    println!(
        "{} | {} parameters | vocab {} characters | batch {BATCH} x {CONTEXT} | MoH 2 shared + 4 of 6 routed",
        moas::build_info(),
        model.num_parameters()?,
        vocab.len()
    );

    let adamw = AdamW { lr: 3e-3, weight_decay: 0.0, ..AdamW::default() };
    let mut offsets = Offsets(7);
    let (mut tokens, mut targets) = (Vec::with_capacity(BATCH * CONTEXT), Vec::with_capacity(BATCH * CONTEXT));
    for step in 1..=STEPS {
        tokens.clear();
        targets.clear();
        for _ in 0..BATCH {
            let start = offsets.next(ids.len() - CONTEXT);
            tokens.extend_from_slice(&ids[start..start + CONTEXT]);
            targets.extend_from_slice(&ids[start + 1..start + CONTEXT + 1]);
        }
        let (loss, aux) = model.forward(&tokens, Some(&targets), BATCH, CONTEXT, true)?;
        model.backward()?;
        let grad_norm = model.step(&adamw)?;
        model.zero_grad()?;
        println!("step {step:2}  loss {loss:.4}  aux {aux:.4}  grad norm {grad_norm:.3}");
    }

    println!("router statistics of the last forward (routed heads 2..7):");
    for (layer, stats) in model.router_stats_all()?.iter().enumerate() {
        let shares: Vec<String> = stats.share.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "  layer {layer}: share [{}]  balance {:.3}  max/mean {:.2}  entropy {:.3}  aux {:.4}  \
             a1 {:.3}  a2 {:.3}{}",
            shares.join(" "),
            stats.balance,
            stats.max_over_mean,
            stats.entropy,
            stats.aux_loss,
            stats.mean_shared_weight,
            stats.mean_routed_weight,
            if stats.collapsed { "  COLLAPSED" } else { "" }
        );
    }

    // Greedy decoding: prefill the prompt, then one character at a time through the cache.
    let mut cache = KvCache::new(&model, 1, CONTEXT)?;
    let prompt: Vec<i32> = PROMPT.chars().map(|c| vocab.binary_search(&c).unwrap() as i32).collect();
    let mut logits = model.prefill(&mut cache, &prompt, prompt.len())?;
    let mut line = String::from(PROMPT);
    while cache.len() < (prompt.len() + GENERATE).min(cache.capacity()) {
        let next = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
        line.push(vocab[next]);
        logits = model.decode_step(&mut cache, &[next as i32])?;
    }
    println!("greedy sample ({} KV-cache bytes per token): {line:?}", cache.bytes_per_token());
    Ok(())
}
