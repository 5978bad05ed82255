//! Struct layouts: the C compiler's view of moas.h against this crate's `#[repr(C)]` mirrors (LESSONS 8: stale
//! mirrors shift fields silently). The C program is generated from the header's own struct definitions, so a field
//! appended to the header and forgotten here fails the test rather than going unchecked.

use moas_sys::*;
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size, alignment and (offset, size) of each field, by name.
#[derive(Debug, Default, PartialEq)]
struct Layout {
    size: usize,
    align: usize,
    fields: BTreeMap<String, (usize, usize)>,
}

fn field_size<T, F>(_project: impl for<'a> Fn(&'a T) -> &'a F) -> usize {
    size_of::<F>()
}

macro_rules! rust_layouts {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {{
        let mut layouts = BTreeMap::new();
        $(
            let fields = [$((
                stringify!($field).to_string(),
                (offset_of!($ty, $field), field_size(|s: &$ty| &s.$field)),
            )),*];
            layouts.insert(
                stringify!($ty).to_string(),
                Layout { size: size_of::<$ty>(), align: align_of::<$ty>(), fields: fields.into_iter().collect() },
            );
        )*
        layouts
    }};
}

fn rust_side() -> BTreeMap<String, Layout> {
    rust_layouts! {
        moas_head_selection {
            strategy, num_shared_heads, num_active_routed_heads, num_active_heads, load_balance_weight,
            gate_variant,
        }
        moas_model_config {
            struct_size, abi_version, vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd, mlp_hidden, norm,
            mlp, position, attention, bias, dropout, attn_dropout, rope_base, seed, n_threads, device, device_index,
            reserved0, moas_mode, moas_n_branches, moas_branch_kv_heads, moas_aux_weight, head_selection, reserved1,
            cope_max_pos, window_size, matmul_precision, reserved2,
        }
        moas_adamw_config { struct_size, lr, beta1, beta2, eps, weight_decay, grad_clip }
        moas_parameter_info { struct_size, ndim, name, shape, numel }
        moas_layer_router_stats {
            struct_size, n_routes, share, mean_gate, balance, max_over_mean, collapsed, entropy, aux_loss, top_share,
            mean_shared_weight, mean_routed_weight, attention,
        }
        moas_layer_config {
            struct_size, abi_version, n_embd, n_head, n_kv_head, max_seq_len, attention, position, rope_base,
            cope_max_pos, window_size, residual, bias, dropout, moas_mode, moas_n_branches, moas_branch_kv_heads,
            moas_aux_weight, head_selection, n_threads, seed, device, device_index, matmul_precision, reserved0,
        }
    }
}

fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        let end = rest[start + 2..].find("*/").expect("unterminated comment in moas.h");
        rest = &rest[start + 2 + end + 2..];
    }
    out.push_str(rest);
    out.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `typedef struct NAME { ... } NAME;` of the header with its field names, in declaration order.
fn header_structs(header: &str) -> Vec<(String, Vec<String>)> {
    let text = strip_comments(header);
    let mut structs = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("typedef struct ") {
        rest = &rest[at + "typedef struct ".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after_name = rest[name.len()..].trim_start();
        if !after_name.starts_with('{') {
            continue; // an opaque handle such as moas_model
        }
        let body_end = after_name.find('}').expect("unterminated struct in moas.h");
        let fields = after_name[1..body_end]
            .split(';')
            .map(str::trim)
            .filter(|decl| !decl.is_empty())
            .map(|decl| {
                let declarator = decl.split('[').next().unwrap();
                let ident: String = declarator
                    .chars()
                    .rev()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                assert!(!ident.is_empty(), "cannot read the field name of `{decl}` in struct {name}");
                ident
            })
            .collect();
        structs.push((name, fields));
    }
    structs
}

fn c_program(structs: &[(String, Vec<String>)]) -> String {
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n#include \"moas.h\"\nint main(void) {\n");
    for (name, fields) in structs {
        c += &format!("  printf(\"{name} %zu %zu\\n\", sizeof({name}), _Alignof({name}));\n");
        for field in fields {
            c += &format!(
                "  printf(\"{name}.{field} %zu %zu\\n\", offsetof({name}, {field}), sizeof(((const {name} *)0)->{field}));\n"
            );
        }
    }
    c + "  return 0;\n}\n"
}

fn c_side(include_dir: &Path) -> BTreeMap<String, Layout> {
    let header = std::fs::read_to_string(include_dir.join("moas.h")).expect("read moas.h");
    let structs = header_structs(&header);
    assert!(structs.len() >= 6, "found only {} structs in moas.h", structs.len());

    let work_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moas-sys-layout");
    std::fs::create_dir_all(&work_dir).unwrap();
    let source = work_dir.join("layout.c");
    let binary = work_dir.join("layout");
    std::fs::write(&source, c_program(&structs)).unwrap();

    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let compiled = Command::new(&compiler)
        .arg("-std=c11")
        .arg("-I")
        .arg(include_dir)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}`: {e}"));
    assert!(compiled.status.success(), "{compiler} failed:\n{}", String::from_utf8_lossy(&compiled.stderr));
    let run = Command::new(&binary).output().expect("run the layout program");
    assert!(run.status.success());

    let mut layouts: BTreeMap<String, Layout> = BTreeMap::new();
    for line in String::from_utf8(run.stdout).unwrap().lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (a, b) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        match parts[0].split_once('.') {
            None => {
                let layout = layouts.entry(parts[0].to_string()).or_default();
                layout.size = a;
                layout.align = b;
            }
            Some((name, field)) => {
                layouts.entry(name.to_string()).or_default().fields.insert(field.to_string(), (a, b));
            }
        }
    }
    layouts
}

#[test]
fn struct_layouts_match_the_c_compiler() {
    let c = c_side(Path::new(env!("MOAS_SYS_INCLUDE_DIR")));
    let rust = rust_side();

    let c_names: Vec<&String> = c.keys().collect();
    let rust_names: Vec<&String> = rust.keys().collect();
    assert_eq!(c_names, rust_names, "structs in moas.h vs structs mirrored in moas-sys");

    let mut mismatches = Vec::new();
    for (name, c_layout) in &c {
        let rust_layout = &rust[name];
        if (c_layout.size, c_layout.align) != (rust_layout.size, rust_layout.align) {
            mismatches.push(format!(
                "{name}: C size {} align {}, Rust size {} align {}",
                c_layout.size, c_layout.align, rust_layout.size, rust_layout.align
            ));
        }
        for (field, c_field) in &c_layout.fields {
            match rust_layout.fields.get(field) {
                None => mismatches.push(format!("{name}.{field} is in moas.h but not in moas-sys")),
                Some(r) if r != c_field => {
                    mismatches.push(format!("{name}.{field}: C (offset, size) {c_field:?}, Rust {r:?}"))
                }
                Some(_) => {}
            }
        }
        for field in rust_layout.fields.keys().filter(|f| !c_layout.fields.contains_key(*f)) {
            mismatches.push(format!("{name}.{field} is in moas-sys but not in moas.h"));
        }
    }
    assert!(mismatches.is_empty(), "layout mismatches:\n{}", mismatches.join("\n"));
}

#[test]
fn array_lengths_follow_the_header_constants() {
    let config = moas_model_config::default();
    let info = moas_parameter_info::default();
    let stats = moas_layer_router_stats::default();
    let layer = moas_layer_config::default();
    assert_eq!(config.moas_branch_kv_heads.len(), MOAS_MAX_BRANCHES as usize);
    assert_eq!(layer.moas_branch_kv_heads.len(), MOAS_MAX_BRANCHES as usize);
    assert_eq!(info.shape.len(), MOAS_MAX_DIMS as usize);
    assert_eq!(stats.share.len(), MOAS_MAX_ROUTES as usize);
    assert_eq!(stats.mean_gate.len(), MOAS_MAX_ROUTES as usize);
    assert_eq!(stats.top_share.len(), MOAS_MAX_ROUTES as usize);
}
