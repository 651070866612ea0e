//! A real OpenLDAP `slapd` for the LDAP directory tests (DESIGN §11): started on 127.0.0.1 on a
//! free port, with a `slapd.conf` and an mdb database in a temp dir, the `memberof` and `refint`
//! overlays loaded, and killed on drop. `.ci/install-ldap` installs it.

// Test support: a failure here is a failing test, said as plainly as it can be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const MODULES: &str = "/usr/lib/ldap";
pub const SCHEMA: &str = "/etc/ldap/schema";
pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "pim-test-secret";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";
pub const PLACEHOLDER: &str = "cn=pim-placeholder,ou=groups,dc=example,dc=org";

pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    /// With TLS: the ldaps:// port (StartTLS works on `port` too).
    tls_port: Option<u16>,
    child: Option<Child>,
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

/// A CA (`{name}-ca.pem`) and, signed by it, a server certificate for 127.0.0.1
/// (`{name}-cert.pem`, `{name}-key.pem`), in `dir`.
pub fn make_ca_and_server_cert(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca-key.pem");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}-cert.pem");
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &ca_key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-subj",
            &format!("/CN=pim test CA {name}"),
            "-days",
            "2",
            "-out",
            &ca,
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Slapd {
    /// Starts slapd, or fails the test (never skips) when it is not installed.
    pub fn start() -> Slapd {
        Slapd::start_with(false, false)
    }

    /// Starts slapd whose memberof overlay refuses member values naming no entry
    /// (`memberof-dangling error`, slapo-memberof(5); the refusal is constraintViolation, 19),
    /// as servers with referential integrity on members do.
    pub fn start_refusing_dangling_members() -> Slapd {
        Slapd::start_with(false, true)
    }

    /// Starts slapd with a server certificate from a fresh test CA ([`Slapd::ca_file`]):
    /// StartTLS on [`Slapd::url`], LDAPS on [`Slapd::ldaps_url`].
    pub fn start_tls() -> Slapd {
        Slapd::start_with(true, false)
    }

    fn start_with(tls: bool, refuse_dangling: bool) -> Slapd {
        if !Path::new(SLAPD).exists() || !Path::new(MODULES).join("back_mdb.la").exists() {
            panic!(
                "OpenLDAP slapd is not installed ({SLAPD}, modules in {MODULES}): run .ci/install-ldap (Debian packages slapd, ldap-utils)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("password"), format!("{ADMIN_PASSWORD}\n")).unwrap();
        let mut overlays = String::new();
        for overlay in ["memberof", "refint"] {
            if Path::new(MODULES).join(format!("{overlay}.la")).exists() {
                overlays.push_str(&format!("moduleload {overlay}\n"));
            }
        }
        let path = dir.path().display();
        let tls_conf = if tls {
            make_ca_and_server_cert(dir.path(), "server");
            format!(
                "TLSCACertificateFile {path}/server-ca.pem\nTLSCertificateFile {path}/server-cert.pem\nTLSCertificateKeyFile {path}/server-key.pem\n"
            )
        } else {
            String::new()
        };
        let mut conf = format!(
            "{tls_conf}\
             include {SCHEMA}/core.schema\ninclude {SCHEMA}/cosine.schema\ninclude {SCHEMA}/inetorgperson.schema\n\
             modulepath {MODULES}\nmoduleload back_mdb\n{overlays}\
             pidfile {path}/slapd.pid\nargsfile {path}/slapd.args\n\
             database mdb\nmaxsize 67108864\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\n\
             directory {path}/db\ndbnosync\nindex objectClass eq\nindex uid,mail,cn,member eq\n"
        );
        if overlays.contains("memberof") {
            conf.push_str("overlay memberof\n");
            if refuse_dangling {
                conf.push_str("memberof-dangling error\n");
            }
        } else if refuse_dangling {
            panic!("the memberof overlay is not installed in {MODULES}: run .ci/install-ldap");
        }
        if overlays.contains("refint") {
            conf.push_str("overlay refint\nrefint_attributes member\n");
        }
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let mut slapd = Slapd {
            dir,
            port: free_port(),
            tls_port: tls.then(free_port),
            child: None,
        };
        slapd.spawn(true);
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds or modifies entries in one `ldapmodify -a` run (ldap-utils), for big fixtures: one
    /// process and one connection, not one call per entry.
    pub fn ldapmodify(&self, ldif: &str) {
        let path = self.dir.path().join("batch.ldif");
        std::fs::write(&path, ldif).unwrap();
        let out = Command::new("ldapmodify")
            .args([
                "-a",
                "-x",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ldapmodify (run .ci/install-ldap): {e}"));
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port.unwrap())
    }

    /// The CA that signed the server certificate (with [`Slapd::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server-ca.pem")
    }

    /// A file holding the admin password, as the backend's `bindPasswordFile`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts slapd and waits until it listens; on the ports of a first start, a failure
    /// (another process took a port) is retried on fresh ports.
    fn spawn(&mut self, fresh_ports_on_failure: bool) {
        for attempt in 1..=3 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(why) if attempt < 3 => {
                    eprintln!("slapd attempt {attempt} failed, retrying: {why}");
                    if fresh_ports_on_failure {
                        self.port = free_port();
                        self.tls_port = self.tls_port.map(|_| free_port());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("slapd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(match self.tls_port {
                Some(tls) => format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{tls}/", self.port),
                None => format!("ldap://127.0.0.1:{}/", self.port),
            })
            // Any debug level keeps slapd in the foreground, where drop can kill it.
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SLAPD}: {e} (run .ci/install-ldap)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "slapd exited with {status} before listening:\n{log}"
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "slapd did not listen on 127.0.0.1:{} within 15s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills slapd (the database stays); connections to it drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts slapd on the same port and database.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(false);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
