//! The conformance suite on the embedded backend, in both modes.

use std::sync::Arc;

use tidings::embedded::Embedded;
use tidings::{Backend, Mode};

use crate::conformance::conformance;
use crate::support::Harness;

/// A broker on a fresh data directory.
pub(crate) struct EmbeddedHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    _dir: tempfile::TempDir,
}

impl Harness for EmbeddedHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn attempts_are_durable(&self) -> bool {
        self.mode == Mode::Queue
    }

    async fn restart(&self) -> bool {
        false
    }
}

pub(crate) async fn embedded(mode: Mode) -> Option<EmbeddedHarness> {
    let dir = tempfile::tempdir().unwrap();
    let backend = Embedded::open(dir.path()).await.unwrap();
    Some(EmbeddedHarness {
        backend: Arc::new(backend),
        mode,
        _dir: dir,
    })
}

mod queue {
    use super::*;
    conformance!(embedded(Mode::Queue));
}

mod stream {
    use super::*;
    conformance!(embedded(Mode::Stream));
}
