//! What a processor's calls fail with: [`Refused`] for what is set up before frames flow
//! (an argument, the wiring, the surroundings) and [`ProcessError`] for what happens
//! while they do. Each displays as the one sentence the user reads.

use super::outputs::OutputError;
use crate::ring::FrameError;

/// A processor refused an argument (`configure`), the way its stage is connected
/// (`check_wiring`) or what it needs outside the pipeline (`prepare`). The sentence says
/// what is wrong with the key, the value or the folder, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl From<String> for Refused {
    fn from(reason: String) -> Refused {
        Refused(reason)
    }
}

impl From<&str> for Refused {
    fn from(reason: &str) -> Refused {
        Refused(reason.to_string())
    }
}

/// A processor failed while frames flow: starting, on a frame or a metadata record,
/// polling, syncing, stopping, concluding. The worker counts it (a frame fails, the
/// stage goes on) and shows the sentence.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Publishing a result failed: the output ring, or what was put in it.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A frame's attributes could not be read or carried over.
    #[error(transparent)]
    Attributes(#[from] FrameError),
    /// The processor could not do it: a frame it cannot take, a file not written, an
    /// exception in a Python stage. The sentence says which.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ProcessError {
    fn from(reason: String) -> ProcessError {
        ProcessError::Failed(reason)
    }
}

impl From<&str> for ProcessError {
    fn from(reason: &str) -> ProcessError {
        ProcessError::Failed(reason.to_string())
    }
}

impl From<Refused> for ProcessError {
    /// An argument or a setting found wrong once frames flow (a Python class's start).
    fn from(refused: Refused) -> ProcessError {
        ProcessError::Failed(refused.0)
    }
}
