//! `kind = "replay"`: frames from an `.npy` stack or a TIFF series, read whole when the
//! source opens; frame id k gets frame k mod frames.

use super::{ContentFrames, SuppliedFrame};
use crate::pattern::{FrameContent, NpyStack, TiffSeries};
use crate::ring::Dtype;
use std::path::{Path, PathBuf};

/// The frames of an `.npy` stack, as `ny` × `nx` pixels of `dtype`.
pub fn npy(path: &Path, dtype: Dtype, ny: u32, nx: u32) -> Result<ContentFrames, String> {
    let content = FrameContent::Npy(NpyStack::open(path)?);
    Ok(ContentFrames::new(
        content,
        SuppliedFrame::image(0, dtype, ny, nx),
    ))
}

/// The frames of a TIFF series, one file each.
pub fn tiff(paths: &[PathBuf], dtype: Dtype, ny: u32, nx: u32) -> Result<ContentFrames, String> {
    let content = FrameContent::Tiff(TiffSeries::from_paths(paths)?);
    Ok(ContentFrames::new(
        content,
        SuppliedFrame::image(0, dtype, ny, nx),
    ))
}
