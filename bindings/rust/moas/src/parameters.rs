//! Named parameter tensors, handled alike for a [`Model`](crate::Model) and a [`Layer`](crate::Layer): the list is
//! read once at creation, and reads and writes size their buffers from it, so a wrong slice length is an error
//! rather than a call with a mismatched length.

use crate::error::{check, Error, Result, Status};
use moas_sys as sys;
use std::ffi::{c_char, CStr, CString};
use std::mem::size_of;

/// One named parameter tensor, in checkpoint order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    /// The reference PyTorch model's name, e.g. `transformer.h.0.attn.wg.weight` (a layer's lack the
    /// `transformer.h.{l}.` prefix: `attn.wg.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    pub numel: usize,
}

/// The parameter list of a handle, through its `*_parameter_count` and `*_parameter_info_at` calls.
pub(crate) fn read_infos(
    count: impl FnOnce(&mut usize) -> sys::moas_status,
    info_at: impl Fn(usize, &mut sys::moas_parameter_info) -> sys::moas_status,
) -> Result<Vec<ParameterInfo>> {
    let mut n = 0usize;
    check(count(&mut n))?;
    (0..n)
        .map(|index| {
            let mut raw = sys::moas_parameter_info {
                struct_size: size_of::<sys::moas_parameter_info>() as u32,
                ..Default::default()
            };
            check(info_at(index, &mut raw))?;
            let ndim = usize::try_from(raw.ndim).unwrap_or(0).min(sys::MOAS_MAX_DIMS as usize);
            Ok(ParameterInfo {
                // Borrowed from the handle, which outlives this copy.
                name: unsafe { CStr::from_ptr(raw.name) }.to_string_lossy().into_owned(),
                shape: raw.shape[..ndim].iter().map(|&d| d as usize).collect(),
                numel: raw.numel as usize,
            })
        })
        .collect()
}

fn name_to_c(name: &str) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::new(Status::UnknownParameter, format!("parameter name {name:?} contains a NUL byte")))
}

/// A copy of tensor `name` (a parameter or its gradient) through `read(name, out, len)`. An unknown name gets a
/// zero-length buffer, so the library reports it with its own message.
pub(crate) fn read(
    infos: &[ParameterInfo],
    name: &str,
    read: impl FnOnce(*const c_char, *mut f32, usize) -> sys::moas_status,
) -> Result<Vec<f32>> {
    let c_name = name_to_c(name)?;
    let mut values = vec![0f32; infos.iter().find(|p| p.name == name).map_or(0, |p| p.numel)];
    check(read(c_name.as_ptr(), values.as_mut_ptr(), values.len()))?;
    Ok(values)
}

/// Writes tensor `name` (a parameter or its gradient) through `write(name, values, len)`, after checking that
/// `values` holds exactly its elements.
pub(crate) fn write(
    infos: &[ParameterInfo],
    name: &str,
    values: &[f32],
    write: impl FnOnce(*const c_char, *const f32, usize) -> sys::moas_status,
) -> Result<()> {
    if let Some(info) = infos.iter().find(|p| p.name == name).filter(|p| p.numel != values.len()) {
        return Err(Error::new(
            Status::SizeMismatch,
            format!("parameter \"{name}\" has {} elements but {} values were given", info.numel, values.len()),
        ));
    }
    let c_name = name_to_c(name)?;
    check(write(c_name.as_ptr(), values.as_ptr(), values.len()))
}
