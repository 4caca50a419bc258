//! How the worker names a step: the leaf every step module shares.
//!
//! The worker holds no per-builder state, so a step is known only by its
//! (build, step) pair. It lives here, not beside `Steps`, so that the
//! sender and the transfer code can name a step without importing the step
//! table that drives them (see docs/architecture.md, "Layers and imports").

use crate::protocol::{BuildId, StepIndex};

/// Identifies a step on this worker: its build and its index in the build.
pub(crate) type StepKey = (BuildId, StepIndex);
