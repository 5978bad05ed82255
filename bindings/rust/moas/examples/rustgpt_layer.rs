//! RustGPT's network shape with libmoas's native attention inside: every layer implements RustGPT's `Layer` trait
//! (`layer_type`, `forward`, `backward(grads, lr)` that also updates the layer's weights, `parameters`) on one
//! sequence at a time, a row-major [T, C] matrix. Embeddings, norms and the output projection are plain Rust with
//! their own Adam; attention is a `moas::Layer` (Mixture-of-Heads: 2 shared heads + the top 4 of 6 routed heads of 8,
//! over 4 kv heads, residual inside) whose `backward_step` is RustGPT's `backward(grads, lr)`: backward, the
//! library's Adam step with RustGPT's settings (`AdamW::rustgpt()`), and zeroing the gradients.
//!
//!     embeddings -> [layer norm -> native attention] x 2 -> layer norm -> output projection -> softmax
//!
//! It trains on a few built-in paragraphs with a character vocabulary, prints progress, checks that the loss fell
//! (exiting non-zero otherwise) and generates a line greedily.
//!
//!     cargo run --release --example rustgpt_layer

use moas::{AdamW, HeadSelectionStrategy, LayerConfig};
use std::error::Error;
use std::time::Instant;

const TEXT: &str = "The lighthouse keeper climbs the stairs at dusk and lights the lamp. The beam turns over the \
water all night, and the boats that pass see it and keep away from the rocks. In the morning the keeper puts out \
the lamp, cleans the glass, and writes the weather in a small book.

The baker opens the shop before the sun is up. She mixes flour, water and salt, and the dough rests while the oven \
warms. The first loaves come out brown and hot, and the street smells of bread. By noon the shelves are empty and \
the baker sweeps the floor.

The river runs past the mill and under the old stone bridge. Children throw sticks from one side of the bridge and \
run to the other side to see them come out. The water is slow in summer and fast in spring, when the snow melts in \
the hills.";

const EMBEDDING_DIM: usize = 128;
const HEADS: usize = 8;
const KV_HEADS: usize = 4;
const MAX_SEQ_LEN: usize = 64;
const BLOCKS: usize = 2;
const STEPS: usize = 2000;
const REPORT_EVERY: usize = 100;
const LEARNING_RATE: f32 = 2e-3;
const PROMPT: &str = "The baker ";
const GENERATE: usize = 70;

/// A row-major [rows, cols] matrix: one sequence's activations are [T, C].
#[derive(Clone, Debug)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    fn zeros(rows: usize, cols: usize) -> Matrix {
        Matrix { rows, cols, data: vec![0.0; rows * cols] }
    }

    fn random(rows: usize, cols: usize, std: f32, rng: &mut Rng) -> Matrix {
        Matrix { rows, cols, data: (0..rows * cols).map(|_| std * rng.normal()).collect() }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// self [n, k] x other [k, m] -> [n, m]
    fn matmul(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.cols, other.rows);
        let mut out = Matrix::zeros(self.rows, other.cols);
        for r in 0..self.rows {
            let out_row = &mut out.data[r * other.cols..(r + 1) * other.cols];
            for (k, &a) in self.row(r).iter().enumerate() {
                for (o, &b) in out_row.iter_mut().zip(other.row(k)) {
                    *o += a * b;
                }
            }
        }
        out
    }

    /// self^T x other for self [k, n], other [k, m] -> [n, m] (weight gradients: X^T dY)
    fn t_matmul(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.rows, other.rows);
        let mut out = Matrix::zeros(self.cols, other.cols);
        for k in 0..self.rows {
            for (i, &a) in self.row(k).iter().enumerate() {
                let out_row = &mut out.data[i * other.cols..(i + 1) * other.cols];
                for (o, &b) in out_row.iter_mut().zip(other.row(k)) {
                    *o += a * b;
                }
            }
        }
        out
    }

    /// self [n, k] x other^T, other [m, k] -> [n, m] (input gradients: dY W^T)
    fn matmul_t(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.cols, other.cols);
        let mut out = Matrix::zeros(self.rows, other.rows);
        for r in 0..self.rows {
            for m in 0..other.rows {
                out.data[r * other.rows + m] = self.row(r).iter().zip(other.row(m)).map(|(a, b)| a * b).sum();
            }
        }
        out
    }
}

/// A fixed-seed generator (64-bit LCG): initial weights and training windows are reproducible run to run.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    fn below(&mut self, bound: usize) -> usize {
        self.next_u32() as usize % bound
    }

    fn uniform(&mut self) -> f32 {
        (self.next_u32() as f32 + 0.5) / 4294967296.0
    }

    /// Box-Muller; uniform() never returns 0, so the logarithm is finite.
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
}

/// Adam moments for one parameter tensor, with RustGPT's settings: the same ones the native attention's step uses.
struct Adam {
    settings: AdamW,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(len: usize) -> Adam {
        Adam { settings: AdamW::rustgpt(), m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        let AdamW { beta1, beta2, eps, .. } = self.settings;
        self.t += 1;
        let (correction1, correction2) = (1.0 - beta1.powi(self.t), 1.0 - beta2.powi(self.t));
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *p -= lr * (*m / correction1) / ((*v / correction2).sqrt() + eps);
        }
    }
}

/// RustGPT's layer interface: `backward` returns the input gradient and updates the layer's own weights.
trait Layer {
    fn layer_type(&self) -> &str;
    fn forward(&mut self, input: &Matrix) -> Matrix;
    fn backward(&mut self, grads: &Matrix, lr: f32) -> Matrix;
    fn parameters(&self) -> usize;
}

/// Learned token and position embeddings. As in RustGPT, its input is the token ids as a [1, T] matrix.
struct Embeddings {
    token: Matrix,    // [V, C]
    position: Matrix, // [MAX_SEQ_LEN, C]
    token_adam: Adam,
    position_adam: Adam,
    ids: Vec<usize>,
}

impl Embeddings {
    fn new(vocab_size: usize, rng: &mut Rng) -> Embeddings {
        Embeddings {
            token: Matrix::random(vocab_size, EMBEDDING_DIM, 0.02, rng),
            position: Matrix::random(MAX_SEQ_LEN, EMBEDDING_DIM, 0.02, rng),
            token_adam: Adam::new(vocab_size * EMBEDDING_DIM),
            position_adam: Adam::new(MAX_SEQ_LEN * EMBEDDING_DIM),
            ids: Vec::new(),
        }
    }
}

impl Layer for Embeddings {
    fn layer_type(&self) -> &str {
        "Embeddings"
    }

    fn forward(&mut self, input: &Matrix) -> Matrix {
        self.ids = input.data.iter().map(|&id| id as usize).collect();
        let mut out = Matrix::zeros(self.ids.len(), EMBEDDING_DIM);
        for (t, &id) in self.ids.iter().enumerate() {
            for ((o, a), b) in out.row_mut(t).iter_mut().zip(self.token.row(id)).zip(self.position.row(t)) {
                *o = a + b;
            }
        }
        out
    }

    fn backward(&mut self, grads: &Matrix, lr: f32) -> Matrix {
        let mut token_grad = Matrix::zeros(self.token.rows, EMBEDDING_DIM);
        let mut position_grad = Matrix::zeros(MAX_SEQ_LEN, EMBEDDING_DIM);
        for (t, &id) in self.ids.iter().enumerate() {
            for (g, d) in token_grad.row_mut(id).iter_mut().zip(grads.row(t)) {
                *g += d;
            }
            position_grad.row_mut(t).copy_from_slice(grads.row(t));
        }
        self.token_adam.step(&mut self.token.data, &token_grad.data, lr);
        self.position_adam.step(&mut self.position.data, &position_grad.data, lr);
        grads.clone() // nothing lies before the embeddings
    }

    fn parameters(&self) -> usize {
        self.token.data.len() + self.position.data.len()
    }
}

/// LayerNorm over each row (eps 1e-5) with a learned scale and shift.
struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    gamma_adam: Adam,
    beta_adam: Adam,
    normalized: Matrix, // x-hat of the last forward
    inv_std: Vec<f32>,  // per row
}

impl LayerNorm {
    fn new() -> LayerNorm {
        LayerNorm {
            gamma: vec![1.0; EMBEDDING_DIM],
            beta: vec![0.0; EMBEDDING_DIM],
            gamma_adam: Adam::new(EMBEDDING_DIM),
            beta_adam: Adam::new(EMBEDDING_DIM),
            normalized: Matrix::zeros(0, EMBEDDING_DIM),
            inv_std: Vec::new(),
        }
    }
}

impl Layer for LayerNorm {
    fn layer_type(&self) -> &str {
        "LayerNorm"
    }

    fn forward(&mut self, input: &Matrix) -> Matrix {
        let width = input.cols as f32;
        self.normalized = Matrix::zeros(input.rows, input.cols);
        self.inv_std.clear();
        let mut out = Matrix::zeros(input.rows, input.cols);
        for r in 0..input.rows {
            let row = input.row(r);
            let mean = row.iter().sum::<f32>() / width;
            let variance = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / width;
            let inv_std = 1.0 / (variance + 1e-5).sqrt();
            self.inv_std.push(inv_std);
            for (c, x) in row.iter().enumerate() {
                let x_hat = (x - mean) * inv_std;
                self.normalized.data[r * input.cols + c] = x_hat;
                out.data[r * input.cols + c] = x_hat * self.gamma[c] + self.beta[c];
            }
        }
        out
    }

    fn backward(&mut self, grads: &Matrix, lr: f32) -> Matrix {
        let width = grads.cols as f32;
        let (mut gamma_grad, mut beta_grad) = (vec![0.0; grads.cols], vec![0.0; grads.cols]);
        let mut input_grad = Matrix::zeros(grads.rows, grads.cols);
        for r in 0..grads.rows {
            let (dy, x_hat) = (grads.row(r), self.normalized.row(r));
            let d_x_hat: Vec<f32> = dy.iter().zip(&self.gamma).map(|(d, g)| d * g).collect();
            let sum = d_x_hat.iter().sum::<f32>();
            let dot = d_x_hat.iter().zip(x_hat).map(|(d, x)| d * x).sum::<f32>();
            for c in 0..grads.cols {
                gamma_grad[c] += dy[c] * x_hat[c];
                beta_grad[c] += dy[c];
                input_grad.data[r * grads.cols + c] =
                    self.inv_std[r] / width * (width * d_x_hat[c] - sum - x_hat[c] * dot);
            }
        }
        self.gamma_adam.step(&mut self.gamma, &gamma_grad, lr);
        self.beta_adam.step(&mut self.beta, &beta_grad, lr);
        input_grad
    }

    fn parameters(&self) -> usize {
        self.gamma.len() + self.beta.len()
    }
}

/// libmoas's attention block with the residual inside: y = x + Attn(x).
struct NativeAttention {
    layer: moas::Layer,
    /// RustGPT's Adam (lr 1e-3, beta2 0.999, no weight decay, no clipping); `backward_step` takes the learning rate
    /// from RustGPT's `backward(grads, lr)` instead of `adam.lr`. Not `AdamW::default()`, which is AdamW with weight
    /// decay 0.1 and clipping.
    adam: AdamW,
}

impl NativeAttention {
    fn new(seed: u64) -> moas::Result<NativeAttention> {
        let config = LayerConfig::new()
            .width(EMBEDDING_DIM)
            .heads(HEADS)
            .kv_heads(KV_HEADS)
            .max_seq_len(MAX_SEQ_LEN)
            .head_selection(HeadSelectionStrategy::MixtureOfHeads {
                num_shared_heads: 2,
                num_active_routed_heads: 4,
                load_balance_weight: 0.01,
            })
            // RustGPT calls the layer on one short sequence at a time: a [64, 128] call is too little work to split,
            // and small calls run best on the calling thread (two threads took twice as long on 2 cores).
            .threads(1)
            .seed(seed);
        Ok(NativeAttention { layer: moas::Layer::new(&config)?, adam: AdamW::rustgpt() })
    }
}

impl Layer for NativeAttention {
    fn layer_type(&self) -> &str {
        "NativeAttention (libmoas, MoH)"
    }

    // RustGPT's layers keep what backward needs on every forward; with dropout 0 training mode changes nothing else.
    fn forward(&mut self, input: &Matrix) -> Matrix {
        let data = self.layer.forward(&input.data, 1, input.rows, true).unwrap_or_else(|e| panic!("attention: {e}"));
        Matrix { rows: input.rows, cols: input.cols, data }
    }

    // The library accumulates gradients over backwards until zero_grad; backward_step zeroes them after its step,
    // so each call applies its own gradient once, as RustGPT's layers do.
    fn backward(&mut self, grads: &Matrix, lr: f32) -> Matrix {
        let mut data = vec![0.0; grads.data.len()];
        self.layer
            .backward_step(&grads.data, &mut data, lr, &self.adam)
            .unwrap_or_else(|e| panic!("attention backward_step: {e}"));
        Matrix { rows: grads.rows, cols: grads.cols, data }
    }

    fn parameters(&self) -> usize {
        self.layer.num_parameters()
    }
}

/// The vocabulary logits: x W + b, W [C, V].
struct OutputProjection {
    weight: Matrix,
    bias: Vec<f32>,
    weight_adam: Adam,
    bias_adam: Adam,
    input: Matrix,
}

impl OutputProjection {
    fn new(vocab_size: usize, rng: &mut Rng) -> OutputProjection {
        OutputProjection {
            weight: Matrix::random(EMBEDDING_DIM, vocab_size, (2.0 / EMBEDDING_DIM as f32).sqrt(), rng),
            bias: vec![0.0; vocab_size],
            weight_adam: Adam::new(EMBEDDING_DIM * vocab_size),
            bias_adam: Adam::new(vocab_size),
            input: Matrix::zeros(0, EMBEDDING_DIM),
        }
    }
}

impl Layer for OutputProjection {
    fn layer_type(&self) -> &str {
        "OutputProjection"
    }

    fn forward(&mut self, input: &Matrix) -> Matrix {
        self.input = input.clone();
        let mut logits = input.matmul(&self.weight);
        for r in 0..logits.rows {
            for (l, b) in logits.row_mut(r).iter_mut().zip(&self.bias) {
                *l += b;
            }
        }
        logits
    }

    fn backward(&mut self, grads: &Matrix, lr: f32) -> Matrix {
        let weight_grad = self.input.t_matmul(grads);
        let mut bias_grad = vec![0.0; self.bias.len()];
        for r in 0..grads.rows {
            for (b, g) in bias_grad.iter_mut().zip(grads.row(r)) {
                *b += g;
            }
        }
        let input_grad = grads.matmul_t(&self.weight);
        self.weight_adam.step(&mut self.weight.data, &weight_grad.data, lr);
        self.bias_adam.step(&mut self.bias, &bias_grad, lr);
        input_grad
    }

    fn parameters(&self) -> usize {
        self.weight.data.len() + self.bias.len()
    }
}

struct Llm {
    network: Vec<Box<dyn Layer>>,
}

impl Llm {
    fn logits(&mut self, tokens: &[usize]) -> Matrix {
        let mut x = Matrix { rows: 1, cols: tokens.len(), data: tokens.iter().map(|&t| t as f32).collect() };
        for layer in &mut self.network {
            x = layer.forward(&x);
        }
        x
    }

    /// One forward and backward on one sequence; returns its mean cross-entropy.
    fn train_step(&mut self, tokens: &[usize], targets: &[usize], lr: f32) -> f32 {
        let mut grads = self.logits(tokens);
        let mut loss = 0.0;
        let scale = 1.0 / tokens.len() as f32;
        // Softmax cross-entropy: the gradient of the mean loss w.r.t. the logits is (softmax - one_hot) / T.
        for (t, &target) in targets.iter().enumerate() {
            let row = grads.row_mut(t);
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for x in row.iter_mut() {
                *x = (*x - max).exp();
            }
            let sum: f32 = row.iter().sum();
            for x in row.iter_mut() {
                *x /= sum;
            }
            loss -= row[target].max(f32::MIN_POSITIVE).ln();
            row[target] -= 1.0;
            for x in row.iter_mut() {
                *x *= scale;
            }
        }
        for layer in self.network.iter_mut().rev() {
            grads = layer.backward(&grads, lr);
        }
        loss * scale
    }

    fn generate_greedy(&mut self, prompt: &[usize], count: usize) -> Vec<usize> {
        let mut tokens = prompt.to_vec();
        for _ in 0..count {
            let context = &tokens[tokens.len().saturating_sub(MAX_SEQ_LEN)..];
            let logits = self.logits(context);
            let last = logits.row(logits.rows - 1);
            let next = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap_or(0);
            tokens.push(next);
        }
        tokens
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut vocab: Vec<char> = TEXT.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let encode = |text: &str| -> Vec<usize> { text.chars().map(|c| vocab.binary_search(&c).unwrap()).collect() };
    let ids = encode(TEXT);

    let mut rng = Rng(2024);
    let mut network: Vec<Box<dyn Layer>> = vec![Box::new(Embeddings::new(vocab.len(), &mut rng))];
    for block in 0..BLOCKS {
        network.push(Box::new(LayerNorm::new()));
        network.push(Box::new(NativeAttention::new(42 + block as u64)?));
    }
    network.push(Box::new(LayerNorm::new()));
    network.push(Box::new(OutputProjection::new(vocab.len(), &mut rng)));
    let mut llm = Llm { network };

    println!("{}", moas::build_info());
    let layers: Vec<String> = llm.network.iter().map(|l| format!("{} ({})", l.layer_type(), l.parameters())).collect();
    println!("network: {}", layers.join(" -> "));
    println!(
        "vocabulary {} characters | {} characters of text | sequences of {MAX_SEQ_LEN} | {STEPS} steps",
        vocab.len(),
        ids.len()
    );

    let start = Instant::now();
    let mut report_losses = Vec::with_capacity(REPORT_EVERY);
    let (mut first_loss, mut last_loss) = (None, 0.0);
    for step in 1..=STEPS {
        let offset = rng.below(ids.len() - MAX_SEQ_LEN);
        let loss = llm.train_step(
            &ids[offset..offset + MAX_SEQ_LEN],
            &ids[offset + 1..offset + MAX_SEQ_LEN + 1],
            LEARNING_RATE,
        );
        if !loss.is_finite() {
            return Err(format!("step {step}: the loss is {loss}").into());
        }
        report_losses.push(loss);
        if step % REPORT_EVERY == 0 {
            // Single sequences give noisy losses: report the mean since the last line.
            let mean = report_losses.iter().sum::<f32>() / report_losses.len() as f32;
            report_losses.clear();
            first_loss.get_or_insert(mean);
            last_loss = mean;
            let elapsed = start.elapsed().as_secs_f64();
            let tokens_per_second = (step * MAX_SEQ_LEN) as f64 / elapsed;
            let eta = elapsed / step as f64 * (STEPS - step) as f64;
            println!(
                "step {step:4}/{STEPS}  loss {mean:.4}  {tokens_per_second:8.0} tokens/s  elapsed {elapsed:5.1}s  \
                 eta {eta:5.1}s"
            );
        }
    }
    let first_loss = first_loss.ok_or("no progress line was printed")?;
    println!("loss fell from {first_loss:.4} to {last_loss:.4} in {:.1}s", start.elapsed().as_secs_f64());

    let generated = llm.generate_greedy(&encode(PROMPT), GENERATE);
    println!("greedy: {:?}", generated.iter().map(|&id| vocab[id]).collect::<String>());

    // A clear margin, not noise: the mean loss of the last report must be well under that of the first.
    if last_loss >= 0.75 * first_loss {
        return Err(format!("the loss did not fall clearly: {first_loss:.4} -> {last_loss:.4}").into());
    }
    Ok(())
}
