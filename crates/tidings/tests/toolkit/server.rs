//! The conformance suite on the server backend (a real `tidings serve`
//! child process per check), in both modes.

use std::sync::{Arc, Mutex};

use tidings::server::Server;
use tidings::{Backend, Mode};

use crate::conformance::conformance;
use crate::support::{Harness, ServerProcess};

/// A server on a fresh data directory, and the backend that reaches it.
pub(crate) struct ServerHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    process: Mutex<ServerProcess>,
    dir: tempfile::TempDir,
}

impl Harness for ServerHarness {
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
        tokio::task::block_in_place(|| self.process.lock().unwrap().restart(self.dir.path()));
        true
    }
}

pub(crate) async fn server(mode: Mode) -> Option<ServerHarness> {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start(dir.path(), None);
    let backend = Server::connect(&format!("http://{}", process.http)).unwrap();
    Some(ServerHarness {
        backend: Arc::new(backend),
        mode,
        process: Mutex::new(process),
        dir,
    })
}

mod queue {
    use super::*;
    conformance!(server(Mode::Queue));
}

mod stream {
    use super::*;
    conformance!(server(Mode::Stream));
}
