//! Loading the engines a checker runs: pv's APR reference engine on the test's model
//! (converting it first when absent) and an external engine by name, each with the input
//! record of the files it trusted.

use std::path::{Path, PathBuf};

use super::context::{CheckError, Context, Input, bytes_input, file_input};
use super::params::{CanonicalModel, ModelPin};
use crate::apr::AprFile;
use crate::gguf::GgufFile;
use crate::model::{AprTransformer, write_apr};
use crate::trace::engine::{Engine as EngineRef, ExternalModel};

/// The APR reference of the test's GGUF model: the pinned `reference`, else its sibling;
/// converted (streamed, atomically, in the model's `apr_dtype`) when absent.
pub(super) fn apr_path(
    ctx: &Context,
    m: &CanonicalModel,
    reference: Option<&ModelPin>,
    gguf: &Path,
) -> Result<PathBuf, CheckError> {
    let apr = ctx
        .models
        .join(reference.map_or_else(|| m.apr_file(), |r| r.file.clone()));
    if !apr.is_file() {
        let dtype = m.apr_dtype();
        (ctx.progress)(&format!(
            "converting {} to {} ({dtype:?}; pv convert)",
            gguf.display(),
            apr.display()
        ));
        let file = GgufFile::open(gguf).map_err(|e| CheckError::Input(e.to_string()))?;
        write_apr(&file, dtype, &apr, &mut |_, _| {})
            .map_err(|e| CheckError::Input(format!("{}: {e}", apr.display())))?;
    }
    Ok(apr)
}

/// Loads the APR engine of the test's model, on the pinned `reference` if there is one.
pub(super) fn load_apr(
    ctx: &Context,
    m: &CanonicalModel,
    reference: Option<&ModelPin>,
    gguf: &Path,
) -> Result<(AprTransformer, Input), CheckError> {
    let path = apr_path(ctx, m, reference, gguf)?;
    (ctx.progress)(&format!("loading and hashing {}", path.display()));
    let file =
        std::sync::Arc::new(AprFile::open(&path).map_err(|e| CheckError::Input(e.to_string()))?);
    // Checked first (cheap: nothing is decoded), then hashed from the mapped bytes, which the
    // engine then reads in place: one read of the file from disk.
    let model = AprTransformer::load(file.clone())?;
    for note in &model.notes {
        (ctx.progress)(&format!("note: {}: {note}", path.display()));
    }
    let input = bytes_input(&path, file.bytes());
    if let Some(pin) = reference
        && input.digest.get("sha256") != Some(&pin.sha256)
    {
        (ctx.progress)(&format!(
            "note: {} is not the contract's pinned reference (sha256 {}): this run is not \
             canonical; remove the file to have pv convert it again",
            path.display(),
            pin.sha256
        ));
    }
    Ok((model, input))
}

/// The external engine `name` (its adapter found as `pv trace --engine` finds it) on
/// `file`, and the adapter executable as an input of the run: a record names the build of
/// the engine it trusted by its sha256.
pub(super) fn external(
    ctx: &Context,
    name: &str,
    file: &std::path::Path,
) -> Result<(ExternalModel, Input), CheckError> {
    let resolved = EngineRef::resolve(name).map_err(|e| CheckError::Input(e.to_string()))?;
    let EngineRef::External { program, .. } = &resolved else {
        return Err(CheckError::Input(format!(
            "{name} is not an external engine"
        )));
    };
    (ctx.progress)(&format!("hashing engine {name} ({})", program.display()));
    let (input, _) = file_input(program)?;
    let m = ExternalModel::new(resolved, file).expect("an external engine");
    Ok((m, input))
}
