//! One moto server: the emulated AWS of one partition, on a free loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// One moto server; killed when dropped.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
}

impl Emulator {
    /// Starts a server logging to `log`, and waits until it answers.
    pub fn start(log: &Path) -> Self {
        Self::start_with(log, &[])
    }

    /// As [`Emulator::start`], with moto settings from `env` (such as
    /// `S3_UPLOAD_PART_MIN_SIZE`).
    pub fn start_with(log: &Path, env: &[(&str, &str)]) -> Self {
        let python = moto_python();
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/moto_server.py");
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(log).expect("create the emulator's log");
            let mut child = std::process::Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("AWS_CA_BUNDLE")
                .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
            let endpoint = format!("http://127.0.0.1:{port}");
            if answers(&mut child, &endpoint, log) {
                return Self { child, endpoint };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the emulator did not start; see {}", log.display());
    }
}

/// Waits up to a minute for `child` to serve `endpoint`; false if it exited or
/// never did.
fn answers(child: &mut Child, endpoint: &str, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // lost the port to another process: try another
        }
        // Ours, not another test's server that took the port first: werkzeug
        // says it is running only once it has bound the port itself.
        let bound = std::fs::read_to_string(log)
            .is_ok_and(|text| text.contains(&format!("Running on {endpoint}")));
        if bound
            && ureq::get(format!("{endpoint}/moto-api/data.json"))
                .call()
                .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the project's virtual environment holding moto (scripts/setup-emulators).
pub fn moto_python() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_PYTHON") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    let path = cache.join("xpsync/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-emulators first (or set MOTO_PYTHON)",
        path.display()
    );
    path
}

/// A loopback port no one listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
