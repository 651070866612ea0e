//! The `fake-apiserver` binary as `hack/kind-e2e.sh --fake-apiserver` runs it: it writes a
//! kubeconfig once it listens, and answers as an API server there. (Having a test here also
//! makes `cargo test` build the binary before any test runs, for `tests/it/kind_e2e.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_binary_writes_a_kubeconfig_and_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let server = loop {
        let text = std::fs::read_to_string(&kubeconfig).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server:")) {
            break line
                .trim_start()
                .trim_start_matches("server:")
                .trim()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "no kubeconfig written");
        std::thread::sleep(Duration::from_millis(50));
    };
    let address = server.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /version HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    assert!(response.contains("gitVersion"), "{response}");
}
