//! Creates a small model through the safe API and prints one line; its only job is to start and link.
use moas::{Config, Model};

fn main() {
    let config = Config::new().vocab_size(13).block_size(8).layers(1).heads(2).kv_heads(2).width(16).threads(1);
    let mut model = Model::new(&config).expect("create a model");
    let tokens: Vec<i32> = (0..8).map(|i| i * 5 % 13).collect();
    let (loss, _) = model.forward(&tokens, Some(&tokens), 1, 8, false).expect("forward");
    println!("dependant-check: {} parameters, loss {loss:.3}", model.num_parameters().expect("parameter count"));
}
