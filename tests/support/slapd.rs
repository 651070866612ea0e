//! A real OpenLDAP `slapd` for the LDAP directory tests (DESIGN §11): started on 127.0.0.1 on a
//! free port, with a `slapd.conf` and an mdb database in a temp dir, the `memberof` and `refint`
//! overlays loaded, and killed on drop. `.ci/install-ldap` installs it.

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
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Slapd {
    /// Starts slapd, or fails the test (never skips) when it is not installed.
    pub fn start() -> Slapd {
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
        let mut conf = format!(
            "include {SCHEMA}/core.schema\ninclude {SCHEMA}/cosine.schema\ninclude {SCHEMA}/inetorgperson.schema\n\
             modulepath {MODULES}\nmoduleload back_mdb\n{overlays}\
             pidfile {path}/slapd.pid\nargsfile {path}/slapd.args\n\
             database mdb\nmaxsize 67108864\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\n\
             directory {path}/db\nindex objectClass eq\nindex uid,mail,cn,member eq\n"
        );
        if overlays.contains("memberof") {
            conf.push_str("overlay memberof\n");
        }
        if overlays.contains("refint") {
            conf.push_str("overlay refint\nrefint_attributes member\n");
        }
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let mut slapd = Slapd {
            dir,
            port: free_port(),
            child: None,
        };
        slapd.spawn();
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// A file holding the admin password, as the backend's `bindPasswordFile`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
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
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                let log = std::fs::read_to_string(self.dir.path().join("slapd.log"))
                    .unwrap_or_default();
                panic!("slapd exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen on 127.0.0.1:{} within 15s",
                self.port
            );
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
        self.spawn();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
