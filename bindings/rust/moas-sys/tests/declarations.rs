//! The header's functions and constants against this crate's declarations, and the loaded library's ABI version.

use moas_sys::*;
use std::collections::BTreeMap;
use std::ffi::CStr;

const SYS_SOURCE: &str = include_str!("../src/lib.rs");

fn header_text() -> String {
    let path = std::path::Path::new(env!("MOAS_SYS_INCLUDE_DIR")).join("moas.h");
    let header = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut text = String::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/*") {
        text.push_str(&rest[..start]);
        rest = &rest[start + rest[start..].find("*/").expect("unterminated comment") + 2..];
    }
    text + rest
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits a parameter list (the text between the parentheses) into parameters; `(void)` and `()` have none.
fn parameter_count(list: &str) -> usize {
    let list = list.trim();
    if list.is_empty() || list == "void" {
        return 0;
    }
    list.split(',').filter(|p| !p.trim().is_empty()).count()
}

/// `MOAS_API` functions of the header: name -> number of parameters.
fn header_functions(header: &str) -> BTreeMap<String, usize> {
    let mut functions = BTreeMap::new();
    for (at, _) in header.match_indices("MOAS_API") {
        let line_start = header[..at].rfind('\n').map_or(0, |i| i + 1);
        if header[line_start..at].trim_start().starts_with('#') {
            continue; // the macro's own definition
        }
        let declaration = &header[at..at + header[at..].find(';').expect("declaration without ;")];
        let open = declaration.find('(').expect("function without (");
        let name: String = declaration[..open]
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| is_ident_char(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let close = declaration.rfind(')').expect("function without )");
        functions.insert(name, parameter_count(&declaration[open + 1..close]));
    }
    functions
}

/// `pub fn` declarations of moas-sys: name -> number of parameters.
fn rust_functions() -> BTreeMap<String, usize> {
    let mut functions = BTreeMap::new();
    for (at, _) in SYS_SOURCE.match_indices("pub fn ") {
        let rest = &SYS_SOURCE[at + "pub fn ".len()..];
        let open = rest.find('(').unwrap();
        let close = rest.find(')').unwrap();
        functions.insert(rest[..open].trim().to_string(), parameter_count(&rest[open + 1..close]));
    }
    functions
}

/// Integer constants of the header (`#define MOAS_X 4u` and enumerators `MOAS_X = 4`): name -> value.
fn header_constants(header: &str) -> BTreeMap<String, u64> {
    let mut constants = BTreeMap::new();
    for line in header.lines() {
        let line = line.trim();
        let (name, value) = if let Some(define) = line.strip_prefix("#define ") {
            let mut words = define.split_whitespace();
            match (words.next(), words.next()) {
                (Some(name), Some(value)) => (name, value),
                _ => continue,
            }
        } else if let Some((name, value)) = line.split_once('=') {
            (name.trim(), value.trim().trim_end_matches(','))
        } else {
            continue;
        };
        if !name.starts_with("MOAS_") || !name.chars().all(is_ident_char) {
            continue;
        }
        if let Ok(value) = value.trim_end_matches(['u', 'U']).parse::<u64>() {
            constants.insert(name.to_string(), value);
        }
    }
    constants
}

/// `pub const MOAS_X: T = value;` of moas-sys: name -> value.
fn rust_constants() -> BTreeMap<String, u64> {
    let mut constants = BTreeMap::new();
    for line in SYS_SOURCE.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else { continue };
        let (name, rest) = rest.split_once(':').unwrap();
        let value = rest.split_once('=').unwrap().1.trim().trim_end_matches(';');
        constants.insert(name.trim().to_string(), value.parse().unwrap());
    }
    constants
}

#[test]
fn every_header_function_is_declared_with_its_arity() {
    let header = header_functions(&header_text());
    assert!(header.len() >= 52, "parsed only {} MOAS_API functions from moas.h", header.len());
    let rust = rust_functions();
    let mut problems = Vec::new();
    for (name, arity) in &header {
        match rust.get(name) {
            None => problems.push(format!("{name} is in moas.h but not declared in moas-sys")),
            Some(r) if r != arity => problems.push(format!("{name}: {arity} parameters in moas.h, {r} in moas-sys")),
            Some(_) => {}
        }
    }
    for name in rust.keys().filter(|n| !header.contains_key(*n)) {
        problems.push(format!("{name} is declared in moas-sys but not in moas.h"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_header_constant_has_its_value() {
    let header = header_constants(&header_text());
    assert!(header.contains_key("MOAS_ABI_VERSION") && header.contains_key("MOAS_ERR_INTERNAL"));
    let rust = rust_constants();
    let mut problems = Vec::new();
    for (name, value) in &header {
        match rust.get(name) {
            None => problems.push(format!("{name} is in moas.h but not in moas-sys")),
            Some(r) if r != value => problems.push(format!("{name} is {value} in moas.h, {r} in moas-sys")),
            Some(_) => {}
        }
    }
    for name in rust.keys().filter(|n| !header.contains_key(*n)) {
        problems.push(format!("{name} is in moas-sys but not in moas.h"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn loaded_library_has_this_abi_version() {
    assert_eq!(unsafe { moas_abi_version() }, MOAS_ABI_VERSION);
    let version = unsafe { CStr::from_ptr(moas_version_string()) }.to_str().unwrap();
    assert!(version.split('.').count() == 3, "version string {version:?}");
}

#[test]
fn status_strings_name_the_constants() {
    let header = header_constants(&header_text());
    for (name, value) in header.iter().filter(|(n, _)| *n == "MOAS_OK" || n.starts_with("MOAS_ERR_")) {
        let text = unsafe { CStr::from_ptr(moas_status_string(*value as moas_status)) }.to_str().unwrap();
        assert!(text.starts_with(name.as_str()), "status {value}: {text:?} does not start with {name}");
    }
}

#[test]
fn config_default_fills_the_mirrored_struct() {
    let mut config =
        moas_model_config { struct_size: std::mem::size_of::<moas_model_config>() as u32, ..Default::default() };
    assert_eq!(unsafe { moas_model_config_default(&mut config) }, MOAS_OK);
    assert_eq!(config.abi_version, MOAS_ABI_VERSION);
    assert_eq!(config.struct_size as usize, std::mem::size_of::<moas_model_config>());
    assert!(config.n_head > 0 && config.n_embd % config.n_head == 0);
    assert_eq!(config.head_selection.strategy, MOAS_HEADS_ALL as i32);

    // A struct_size too small to hold anything is refused, and the message says what to fix.
    let mut tiny = moas_model_config::default();
    assert_eq!(unsafe { moas_model_config_default(&mut tiny) }, MOAS_ERR_ABI_MISMATCH);
    let message = unsafe { CStr::from_ptr(moas_last_error()) }.to_string_lossy();
    assert!(message.contains("struct_size"), "{message}");
}

#[test]
fn layer_config_default_fills_the_mirrored_struct() {
    let mut config =
        moas_layer_config { struct_size: std::mem::size_of::<moas_layer_config>() as u32, ..Default::default() };
    assert_eq!(unsafe { moas_layer_config_default(&mut config) }, MOAS_OK);
    assert_eq!(config.abi_version, MOAS_ABI_VERSION);
    assert_eq!(config.struct_size as usize, std::mem::size_of::<moas_layer_config>());
    // RustGPT's attention shape, and the fields after the embedded head_selection (where a stale mirror would
    // shift them) read back as documented.
    assert_eq!((config.n_embd, config.n_head, config.n_kv_head, config.max_seq_len), (128, 8, 4, 80));
    assert_eq!((config.position, config.cope_max_pos, config.window_size), (MOAS_POSITION_LEARNED as i32, 64, 0));
    assert_eq!((config.residual, config.seed, config.device), (1, 1337, MOAS_DEVICE_CPU as i32));

    let mut layer = std::ptr::null_mut();
    config.n_kv_head = 3;
    assert_eq!(unsafe { moas_layer_create(&config, &mut layer) }, MOAS_ERR_INVALID_CONFIG);
    assert!(layer.is_null());
    config.n_kv_head = 4;
    config.n_embd = 16;
    assert_eq!(unsafe { moas_layer_create(&config, &mut layer) }, MOAS_OK);
    unsafe { moas_layer_destroy(layer) };
}

#[test]
fn whole_buffer_gradients_match_the_per_tensor_calls() {
    let mut config =
        moas_layer_config { struct_size: std::mem::size_of::<moas_layer_config>() as u32, ..Default::default() };
    assert_eq!(unsafe { moas_layer_config_default(&mut config) }, MOAS_OK);
    config.n_embd = 16;
    config.n_threads = 1;
    let mut layer = std::ptr::null_mut();
    assert_eq!(unsafe { moas_layer_create(&config, &mut layer) }, MOAS_OK);

    let mut count = 0usize;
    assert_eq!(unsafe { moas_layer_parameter_count(layer, &mut count) }, MOAS_OK);
    let mut infos = Vec::new();
    for index in 0..count {
        let mut info = moas_parameter_info {
            struct_size: std::mem::size_of::<moas_parameter_info>() as u32,
            ..Default::default()
        };
        assert_eq!(unsafe { moas_layer_parameter_info_at(layer, index, &mut info) }, MOAS_OK);
        infos.push(info);
    }
    let mut total = 0u64;
    assert_eq!(unsafe { moas_layer_num_parameters(layer, &mut total) }, MOAS_OK);
    assert_eq!(total, infos.iter().map(|i| i.numel).sum::<u64>());

    // Distinct values per tensor, written one tensor at a time, read back as one buffer in info order.
    let mut want = Vec::new();
    for (k, info) in infos.iter().enumerate() {
        let values: Vec<f32> = (0..info.numel).map(|i| k as f32 + i as f32 * 1e-3).collect();
        assert_eq!(unsafe { moas_layer_gradient_write(layer, info.name, values.as_ptr(), values.len()) }, MOAS_OK);
        want.extend(values);
    }
    let mut all = vec![0f32; total as usize];
    assert_eq!(unsafe { moas_layer_gradients_read(layer, all.as_mut_ptr(), all.len()) }, MOAS_OK);
    assert_eq!(all, want);
    assert_eq!(unsafe { moas_layer_gradients_read(layer, all.as_mut_ptr(), all.len() - 1) }, MOAS_ERR_SIZE_MISMATCH);
    assert_eq!(unsafe { moas_layer_gradients_write(layer, all.as_ptr(), all.len() + 1) }, MOAS_ERR_SIZE_MISMATCH);
    unsafe { moas_layer_destroy(layer) };

    let mut adam =
        moas_adamw_config { struct_size: std::mem::size_of::<moas_adamw_config>() as u32, ..Default::default() };
    assert_eq!(unsafe { moas_adamw_config_rustgpt(&mut adam) }, MOAS_OK);
    assert_eq!((adam.beta2, adam.weight_decay, adam.grad_clip), (0.999, 0.0, 0.0));
}
