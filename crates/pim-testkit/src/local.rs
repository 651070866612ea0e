//! Loopback helpers for the tests that run real processes: a free port, a plain HTTP probe, and
//! the pinned kubectl.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET on loopback, returning the status line.
pub fn http_status(port: u16, path: &str) -> Option<String> {
    http_get(port, path)?.lines().next().map(str::to_owned)
}

/// A plain HTTP GET on loopback, returning the whole response (status line, headers, body).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The pinned kubectl that `.ci/install-deploy-tools` installs, else one on PATH.
pub fn kubectl() -> PathBuf {
    let pinned = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/pim-operator/bin/kubectl"));
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .collect::<Vec<_>>()
    });
    pinned
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kubectl not found: run .ci/install-deploy-tools"))
}
