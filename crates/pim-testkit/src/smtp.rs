//! A real SMTP server for the notification tests (DESIGN §11): aiosmtpd (PyPI, installed by
//! `.ci/install-smtp`) on 127.0.0.1, with STARTTLS on a certificate from a fresh test CA and
//! AUTH with a fixed user, started from a temp dir and killed on drop. Every message it accepts
//! is parsed by Python's `email` package and appended as one JSON line to a file the test reads.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "pim";
pub const PASSWORD: &str = "smtp-test-secret";

const SERVER: &str = r#"
import email, email.policy, json, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, out, user, password, cert, key = sys.argv[1:8]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        def part(kind):
            body = msg.get_body(preferencelist=(kind,))
            return body.get_content().replace("\r\n", "\n") if body is not None else None
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        record = {
            "mailFrom": envelope.mail_from,
            "rcptTos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "messageId": str(msg["Message-ID"]),
            "date": str(msg["Date"]),
            "text": part("plain"),
            "html": part("html"),
            "tls": session.ssl is not None,
            "login": login,
        }
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == user.encode() and auth_data.password == password.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

kwargs = {}
if cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    kwargs = dict(tls_context=context, require_starttls=True, authenticator=authenticator,
                  auth_required=True, auth_require_tls=True)
controller = Controller(Handler(), hostname=host, port=int(port), **kwargs)
controller.start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// One message as the server received it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub date: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The session was upgraded with STARTTLS.
    pub tls: bool,
    /// The user that logged in.
    pub login: Option<String>,
}

impl Received {
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or_default()
    }
}

/// The Python that has aiosmtpd: `PIM_SMTP_PYTHON`, the venv of `.ci/install-smtp`, or
/// `python3` when it has the module.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("PIM_SMTP_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = std::env::var_os("PIM_SMTP_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("pim-operator/smtp-venv"))
        });
    let candidates = venv
        .map(|v| v.join("bin/python"))
        .into_iter()
        .chain([PathBuf::from("python3")]);
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
    }
    panic!("aiosmtpd is not installed: run .ci/install-smtp (PyPI aiosmtpd, in its own venv)")
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (Debian package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`cert.pem`,
/// `key.pem`), in `dir`.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let genpkey = |out: &str| {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                out,
            ],
        )
    };
    genpkey("ca-key.pem");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/CN=pim smtp test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    genpkey("key.pem");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
    );
}

pub struct SmtpServer {
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
    child: Option<Child>,
}

impl SmtpServer {
    /// STARTTLS (required) and AUTH (required) as [`USER`] / [`PASSWORD`], on a free port.
    pub fn start() -> SmtpServer {
        Self::start_on(free_port(), true)
    }

    /// A plain server, no TLS and no AUTH.
    pub fn start_plain() -> SmtpServer {
        Self::start_on(free_port(), false)
    }

    /// Not started yet: `port` is reserved for [`SmtpServer::spawn`] (the test may occupy it
    /// with something else first).
    pub fn prepare(port: u16, tls: bool) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        if tls {
            make_certificates(dir.path());
        }
        std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        SmtpServer {
            dir,
            port,
            tls,
            child: None,
        }
    }

    pub fn start_on(port: u16, tls: bool) -> SmtpServer {
        let mut server = Self::prepare(port, tls);
        server.spawn();
        server
    }

    /// Starts aiosmtpd and waits until it accepts connections.
    pub fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let (cert, key) = if self.tls {
            (
                dir.join("cert.pem").display().to_string(),
                dir.join("key.pem").display().to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        let child = Command::new(python())
            .arg(dir.join("server.py"))
            .args(["127.0.0.1", &self.port.to_string()])
            .arg(dir.join("received.jsonl"))
            .args([USER, PASSWORD, &cert, &key])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd: {e} (run .ci/install-smtp)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                panic!(
                    "aiosmtpd exited with {status} before listening:\n{}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on 127.0.0.1:{} within 30s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server certificate, for the channel's `caFile`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file holding [`PASSWORD`], for the channel's `passwordFile`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let text =
            std::fs::read_to_string(self.dir.path().join("received.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
