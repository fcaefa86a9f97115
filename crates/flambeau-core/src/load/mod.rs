//! `load_state_dict`: PyTorch's matching rules, PyTorch's error text, and a diagnosis on top.
//!
//! The load is all or nothing: every key, shape, dtype cast and device move is checked and
//! prepared before the first tensor of the model is written.

pub mod diagnosis;
mod incompatible;
mod options;
mod report;
mod shape_mismatch;

use candle_core::{Tensor, Var};

pub use diagnosis::{find_prefix, Diagnosis, PrefixMatch, Remedy};
pub use incompatible::IncompatibleKeys;
pub use options::LoadOptions;
pub use report::{DtypeCast, LoadReport};
pub use shape_mismatch::{torch_size, ShapeMismatch};

use crate::error::TensorKind;
use crate::var_store::EntryKind;
use crate::{Error, Result, StateDict, VarStore};

/// The counter BatchNorm gained in PyTorch 1.2 (module version 2).
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

impl VarStore {
    /// Copies a state dict into the model, as PyTorch's `model.load_state_dict(sd, strict)`.
    ///
    /// On success the report lists what was loaded, cast, filled in and (non-strict) what did
    /// not match. On failure nothing in the model has changed, and the error's text is PyTorch's
    /// followed by the likely cause and the fix: [`Error::Incompatible`] (its key report is
    /// [`Error::incompatible`]) for keys and shapes, [`Error::Dtype`], [`Error::UnsupportedTensor`]
    /// or [`Error::Copy`] for a tensor, and a key rule's own error ([`Error::Regex`],
    /// [`Error::KeyCollision`]) when a rule cannot be applied.
    pub fn load_state_dict(&self, sd: &StateDict, opts: &LoadOptions) -> Result<LoadReport> {
        let model: Vec<_> = self
            .entries()
            .into_iter()
            .filter(|e| e.kind != (EntryKind::Buffer { persistent: false }))
            .collect();
        let model_keys: Vec<String> = model.iter().map(|e| e.name.clone()).collect();

        let mut sd = sd.clone();
        for rule in &opts.key_rules {
            sd = sd.map_keeping_raw(|sd| rule.apply(sd, &model_keys))?;
        }

        let mut report = LoadReport::default();
        let mut mismatches = Vec::new();
        let mut writes: Vec<(&str, Var, Tensor)> = Vec::new();
        for e in &model {
            let widened;
            let src = match sd.get_raw(&e.name) {
                // int8, bool and uint16 widen exactly; nothing else raw fits a model tensor.
                Some(raw) => match raw.to_tensor(e.var.device()) {
                    Some(Ok(t)) => {
                        widened = t;
                        Some(&widened)
                    }
                    Some(Err(_)) | None => {
                        return Err(Error::UnsupportedTensor {
                            key: e.name.clone(),
                            tensor: Box::new(TensorKind {
                                dtype: raw.dtype.clone(),
                                layout: raw.layout().to_string(),
                            }),
                        })
                    }
                },
                None => sd.get(&e.name),
            };
            let Some(src) = src else {
                if is_pre_1_2_batch_norm_counter(&e.name, &sd) {
                    report.filled.push(e.name.clone());
                } else {
                    report.missing_keys.push(e.name.clone());
                }
                continue;
            };
            if src.dims() != e.var.dims() {
                mismatches.push(ShapeMismatch {
                    key: e.name.clone(),
                    checkpoint: src.dims().to_vec(),
                    model: e.var.dims().to_vec(),
                });
                continue;
            }
            let (src, cast) = prepare(&e.name, src, &e.var, opts)?;
            if let Some(cast) = cast {
                report.dtype_casts.push(cast);
            }
            report.loaded.push(e.name.clone());
            writes.push((&e.name, e.var.clone(), src));
        }
        report.unexpected_keys = unexpected_keys(self, &sd);

        let failed_keys =
            opts.strict && !(report.missing_keys.is_empty() && report.unexpected_keys.is_empty());
        let failed_shapes = !mismatches.is_empty() && !opts.skip_shape_mismatch;
        report.diagnosis = diagnosis::diagnose(
            &report.missing_keys,
            &report.filled,
            &report.unexpected_keys,
            &mismatches,
        );
        if failed_keys || failed_shapes {
            return Err(Error::Incompatible(Box::new(IncompatibleKeys {
                model_name: self.model_name(),
                strict: opts.strict,
                missing_keys: report.missing_keys,
                unexpected_keys: report.unexpected_keys,
                shape_mismatches: mismatches,
                diagnosis: report.diagnosis,
            })));
        }
        report.skipped_shape_mismatches = mismatches;

        // Everything was checked above, so a failure here would be a device fault.
        for (key, var, src) in writes {
            var.set(&src).map_err(|source| Error::Copy {
                key: key.to_string(),
                source: Box::new(source),
            })?;
        }
        Ok(report)
    }
}

/// PyTorch's BatchNorm rule: a checkpoint whose BatchNorm module version is missing or < 2
/// predates `num_batches_tracked`; the model keeps its own counter instead of reporting it missing.
fn is_pre_1_2_batch_norm_counter(key: &str, sd: &StateDict) -> bool {
    let (module, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    leaf == NUM_BATCHES_TRACKED && sd.module_version(module).is_none_or(|v| v < 2)
}

/// Casts and moves `src` to the variable's dtype and device; copies it when it already shares
/// the variable's storage (loading a model's own state dict back into it).
fn prepare(
    key: &str,
    src: &Tensor,
    var: &Var,
    opts: &LoadOptions,
) -> Result<(Tensor, Option<DtypeCast>)> {
    let copy_err = |source| Error::Copy {
        key: key.to_string(),
        source: Box::new(source),
    };
    let mut cast = None;
    if src.dtype() != var.dtype() {
        if !opts.cast_dtype {
            return Err(Error::Dtype {
                key: key.to_string(),
                from: src.dtype(),
                to: var.dtype(),
            });
        }
        cast = Some(DtypeCast {
            key: key.to_string(),
            from: src.dtype(),
            to: var.dtype(),
        });
    }
    // Cast on the host first when the variable's device cannot hold the source's dtype (an
    // int32 checkpoint tensor for a CUDA float parameter).
    let mut t = crate::device_dtypes::cast_to(src, var.dtype(), var.device()).map_err(copy_err)?;
    if storage_ptr(&t) == storage_ptr(var.as_tensor()) {
        t = t.copy().map_err(copy_err)?;
    }
    Ok((t, cast))
}

/// Identity of a tensor's storage (each guard is dropped before the next is taken).
fn storage_ptr(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    &*storage as *const _ as usize
}

/// PyTorch's rule, module by module in pre-order: a checkpoint key under a module's prefix is
/// unexpected when its remainder has a dot but does not start with one of the module's children,
/// or has no dot and is not one of the module's parameters or persistent buffers.
fn unexpected_keys(store: &VarStore, sd: &StateDict) -> Vec<String> {
    let mut out = Vec::new();
    for m in store.modules() {
        for key in sd.keys() {
            let Some(rest) = key.strip_prefix(m.prefix.as_str()) else {
                continue;
            };
            let known = match rest.split_once('.') {
                Some((child, _)) => m.children.iter().any(|c| c == child),
                None => m.local_state.iter().any(|l| l == rest),
            };
            if !known {
                out.push(key.to_string());
            }
        }
    }
    out
}
