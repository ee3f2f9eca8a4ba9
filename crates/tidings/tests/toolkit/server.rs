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

/// A server with a user, and permissions for everything it does (so the
/// permissions are checked, not open), and the backend logged in as it.
pub(crate) async fn logged_in_server(mode: Mode) -> Option<ServerHarness> {
    let dir = tempfile::tempdir().unwrap();
    let tidings = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(crate::support::tidings_bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TIDINGS_NEW_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "tidings {args:?}");
    };
    tidings(&["users", "add", "app"], "app-pw\n");
    for resource in [&["--topic", "*"][..], &["--group", "*"], &["--cluster"]] {
        let mut args = vec!["acls", "add", "--principal", "app", "--operation", "All"];
        args.extend_from_slice(resource);
        tidings(&args, "");
    }
    let process = ServerProcess::start(dir.path(), None);
    let url = format!("http://{}", process.http);
    // Without logging in, nothing is done.
    let anonymous = Server::connect(&url).unwrap();
    let refused = anonymous
        .publish("t", vec![tidings_types::CloudEvent::new("/t", "x")])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("log in"), "{refused}");
    let backend = Server::connect_as(&url, "app", "app-pw").unwrap();
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

mod logged_in {
    use super::*;
    conformance!(logged_in_server(Mode::Queue));
}

mod stream {
    use super::*;
    conformance!(server(Mode::Stream));
}
