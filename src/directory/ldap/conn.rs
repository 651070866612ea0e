//! One reused, bound LDAP connection: opened lazily, reopened after it drops, every operation
//! (each page of a paged search) under a timeout, and errors sorted into transient and
//! permanent. A call that gets no answer on a connection opened before it (an idle flow a
//! firewall may have forgotten) is retried once on a fresh connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Scope, SearchEntry};
use tokio::sync::Mutex;

use super::config::LdapConfig;
use super::rules::PERMISSIVE_MODIFY_OID;
use crate::directory::DirectoryError;

/// LDAP result codes this backend acts on (RFC 4511 §A.1).
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const TIME_LIMIT_EXCEEDED: u32 = 3;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const ATTRIBUTE_OR_VALUE_EXISTS: u32 = 20;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
    pub const OBJECT_CLASS_VIOLATION: u32 = 65;
    pub const ENTRY_ALREADY_EXISTS: u32 = 68;
    pub const OTHER: u32 = 80;
}

/// After a bind is refused, new binds wait this long, so a wrong password costs the server
/// one bind per interval rather than one per reconcile.
pub const BIND_FAILURE_HOLD: Duration = Duration::from_secs(30);

/// How an operation failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection is gone or hung: reconnect, then the operation may be retried once.
    Connection(String),
    /// No answer within the operation timeout: the connection may be hung.
    TimedOut(Duration),
    /// The server answered with this result.
    Result(LdapResult),
    /// Anything else (TLS, URL, protocol): not worth a retry.
    Other(String),
}

impl From<LdapError> for Failure {
    fn from(error: LdapError) -> Self {
        match error {
            LdapError::LdapResult { result } => Failure::Result(result),
            // A certificate the CA does not vouch for will not get better by retrying.
            LdapError::Io { source }
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                Failure::Other(format!("TLS: {source}"))
            }
            LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::EndOfStream
            | LdapError::Timeout { .. } => Failure::Connection(error.to_string()),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// The directory error for a failed operation.
pub fn classify(operation: &'static str, failure: Failure) -> DirectoryError {
    match failure {
        Failure::Connection(message) => DirectoryError::transient(operation, message),
        Failure::TimedOut(limit) => {
            DirectoryError::transient(operation, format!("no answer within {limit:?}"))
        }
        Failure::Other(message) => DirectoryError::permanent(operation, message),
        Failure::Result(result) => {
            let message = describe(&result);
            match result.rc {
                rc::BUSY
                | rc::UNAVAILABLE
                | rc::UNWILLING_TO_PERFORM
                | rc::TIME_LIMIT_EXCEEDED
                | rc::OTHER => DirectoryError::transient(operation, message),
                _ => DirectoryError::permanent(operation, message),
            }
        }
    }
}

/// `rc 32 (noSuchObject): text, matched …` — the result in words.
pub fn describe(result: &LdapResult) -> String {
    let name = match result.rc {
        rc::TIME_LIMIT_EXCEEDED => "timeLimitExceeded",
        rc::SIZE_LIMIT_EXCEEDED => "sizeLimitExceeded",
        rc::NO_SUCH_ATTRIBUTE => "noSuchAttribute",
        rc::ATTRIBUTE_OR_VALUE_EXISTS => "attributeOrValueExists",
        rc::NO_SUCH_OBJECT => "noSuchObject",
        rc::INVALID_CREDENTIALS => "invalidCredentials",
        rc::BUSY => "busy",
        rc::UNAVAILABLE => "unavailable",
        rc::UNWILLING_TO_PERFORM => "unwillingToPerform",
        rc::OBJECT_CLASS_VIOLATION => "objectClassViolation",
        rc::ENTRY_ALREADY_EXISTS => "entryAlreadyExists",
        50 => "insufficientAccessRights",
        21 => "invalidAttributeSyntax",
        34 => "invalidDNSyntax",
        _ => "error",
    };
    let mut text = format!("LDAP result {} ({name})", result.rc);
    if !result.text.is_empty() {
        text.push_str(": ");
        text.push_str(&result.text);
    }
    text
}

/// `fut` under `limit`: one step of an operation (a page of a paged search, or the whole of a
/// single request).
pub async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut(limit)),
    }
}

/// The live handle and which connection it is, so only one caller replaces a broken one.
struct Slot {
    ldap: Option<(u64, Ldap)>,
    generation: u64,
    /// A refused bind and when, to hold off new binds for [`BIND_FAILURE_HOLD`].
    refused: Option<(Instant, DirectoryError)>,
}

pub struct Connection {
    config: LdapConfig,
    slot: Mutex<Slot>,
    binds: AtomicU64,
    operation_timeout: Duration,
    /// Whether the server's rootDSE lists the permissive-modify control, as read at the last
    /// connect.
    permissive_modify: AtomicBool,
}

impl Connection {
    pub fn new(config: LdapConfig) -> Self {
        Connection {
            operation_timeout: config.operation_timeout(),
            config,
            slot: Mutex::new(Slot {
                ldap: None,
                generation: 0,
                refused: None,
            }),
            binds: AtomicU64::new(0),
            permissive_modify: AtomicBool::new(false),
        }
    }

    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Whether modifies should carry the permissive-modify control: with `activeDirectory`,
    /// or where the server's rootDSE lists it in `supportedControl`.
    pub fn permissive_modify(&self) -> bool {
        self.config.active_directory || self.permissive_modify.load(Ordering::Relaxed)
    }

    /// Reads the rootDSE's `supportedControl` on a fresh connection. A server that will not
    /// say is taken not to support the control.
    async fn read_root_dse(&self, ldap: &mut Ldap) {
        let search = ldap.search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"]);
        let found = match tokio::time::timeout(self.operation_timeout, search).await {
            Ok(Ok(ldap3::SearchResult(entries, _))) => entries
                .into_iter()
                .map(SearchEntry::construct)
                .any(|entry| {
                    entry
                        .attrs
                        .iter()
                        .filter(|(name, _)| name.eq_ignore_ascii_case("supportedControl"))
                        .flat_map(|(_, values)| values)
                        .any(|oid| oid == PERMISSIVE_MODIFY_OID)
                }),
            _ => false,
        };
        self.permissive_modify.store(found, Ordering::Relaxed);
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// Bind attempts so far (each connect binds once).
    pub fn binds(&self) -> u64 {
        self.binds.load(Ordering::Relaxed)
    }

    /// Drops the connection; the next operation opens a new one.
    pub async fn disconnect(&self) {
        let mut slot = self.slot.lock().await;
        if let Some((_, mut ldap)) = slot.ldap.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
        }
    }

    fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, DirectoryError> {
        let Some(path) = &self.config.ca_file else {
            return Ok(None);
        };
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let fail = |message: String| DirectoryError::permanent("connect", message);
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(format!("caFile {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| fail(format!("caFile {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| fail(format!("caFile {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(fail(format!(
                "caFile {}: no certificates in it",
                path.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    /// Opens and binds a connection. The password is read from its file now, so a rotated
    /// Secret takes effect at the next connect; it never appears in an error.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let config = &self.config;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.connect_timeout())
            .set_starttls(config.start_tls);
        if let Some(tls) = self.tls_config()? {
            settings = settings.set_config(tls);
        }
        let password = std::fs::read_to_string(&config.bind_password_file).map_err(|e| {
            DirectoryError::permanent(
                "bind",
                format!(
                    "cannot read the bind password file {}: {e}",
                    config.bind_password_file.display()
                ),
            )
        })?;
        let password = password.trim_end_matches(['\r', '\n']);
        let opened = tokio::time::timeout(
            config.connect_timeout() + self.operation_timeout,
            LdapConnAsync::with_settings(settings, &config.url),
        )
        .await
        .map_err(|_| {
            DirectoryError::transient("connect", format!("{}: connect timed out", config.url))
        })?;
        let (conn, mut ldap) = opened.map_err(|e| match Failure::from(e) {
            Failure::Connection(m) => {
                DirectoryError::transient("connect", format!("{}: {m}", config.url))
            }
            Failure::Other(m) => {
                DirectoryError::permanent("connect", format!("{}: {m}", config.url))
            }
            other => classify("connect", other),
        })?;
        let url = config.url.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(%url, %error, "LDAP connection closed");
            }
        });
        self.binds.fetch_add(1, Ordering::Relaxed);
        let bound = tokio::time::timeout(
            self.operation_timeout,
            ldap.simple_bind(&config.bind_dn, password),
        )
        .await;
        let result = match bound {
            Err(_) => {
                return Err(DirectoryError::transient("bind", "bind timed out"));
            }
            Ok(Err(e)) => return Err(classify("bind", Failure::from(e))),
            Ok(Ok(result)) => result,
        };
        match result.rc {
            rc::SUCCESS => {
                self.read_root_dse(&mut ldap).await;
                Ok(ldap)
            }
            rc::INVALID_CREDENTIALS => Err(DirectoryError::permanent(
                "bind",
                format!(
                    "invalid credentials for bind DN {:?} (check bindPasswordFile {}); {}",
                    config.bind_dn,
                    config.bind_password_file.display(),
                    describe(&result)
                ),
            )),
            _ => Err(classify("bind", Failure::Result(result))),
        }
    }

    /// A bound handle, its generation, and whether it was opened just now (else it was idle
    /// since its last use), connecting when there is none.
    async fn handle(&self) -> Result<(u64, Ldap, bool), DirectoryError> {
        let mut slot = self.slot.lock().await;
        if let Some((generation, ldap)) = &mut slot.ldap {
            if !ldap.is_closed() {
                return Ok((*generation, ldap.clone(), false));
            }
            slot.ldap = None;
        }
        if let Some((at, error)) = &slot.refused {
            if at.elapsed() < BIND_FAILURE_HOLD {
                return Err(error.clone());
            }
            slot.refused = None;
        }
        match self.connect().await {
            Ok(ldap) => {
                slot.generation += 1;
                let generation = slot.generation;
                slot.ldap = Some((generation, ldap.clone()));
                Ok((generation, ldap, true))
            }
            Err(error) => {
                if !error.is_transient() {
                    slot.refused = Some((Instant::now(), error.clone()));
                }
                Err(error)
            }
        }
    }

    /// Forgets connection `generation` if it is still the current one.
    async fn drop_connection(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.ldap.as_ref().is_some_and(|(g, _)| *g == generation) {
            slot.ldap = None;
        }
    }

    /// Runs `op` on a bound connection under the operation timeout. A dropped connection is
    /// reopened and the operation run once more (every operation here is idempotent), and so
    /// is one that got no answer on a connection opened before the call; any other failure
    /// goes back to the caller as is.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let limit = self.operation_timeout;
        self.run_timed(|ldap| timed(limit, op(ldap))).await
    }

    /// [`Connection::run`] for an operation of several requests on one connection (a paged
    /// search), which times each request itself with [`timed`] and the operation timeout.
    pub async fn run_timed<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut last = None;
        for attempt in 0..2 {
            let (generation, ldap, fresh) = self.handle().await.map_err(|e| match e {
                DirectoryError::Transient { message, .. } => Failure::Connection(message),
                DirectoryError::Permanent { message, .. } => Failure::Other(message),
            })?;
            match op(ldap).await {
                Ok(value) => return Ok(value),
                Err(Failure::Connection(message)) => {
                    self.drop_connection(generation).await;
                    last = Some(Failure::Connection(message));
                }
                Err(Failure::TimedOut(limit)) => {
                    // A hung connection: never wait on it again. One that sat idle may have
                    // been forgotten on the way, so a fresh one gets one more try.
                    self.drop_connection(generation).await;
                    if fresh || attempt > 0 {
                        return Err(Failure::TimedOut(limit));
                    }
                    tracing::debug!(url = %self.config.url, "no answer on an idle LDAP connection; retrying on a fresh one");
                    last = Some(Failure::TimedOut(limit));
                }
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or_else(|| Failure::Connection("connection lost".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: u32) -> LdapResult {
        LdapResult {
            rc: code,
            matched: String::new(),
            text: "why".into(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn result_codes_sort_into_transient_and_permanent() {
        for code in [rc::BUSY, rc::UNAVAILABLE, rc::UNWILLING_TO_PERFORM] {
            assert!(classify("x", Failure::Result(result(code))).is_transient());
        }
        for code in [rc::INVALID_CREDENTIALS, rc::NO_SUCH_OBJECT, 50, 34] {
            assert!(!classify("x", Failure::Result(result(code))).is_transient());
        }
        let e = classify("list members", Failure::Result(result(rc::NO_SUCH_OBJECT)));
        assert_eq!(
            e.to_string(),
            "list members: LDAP result 32 (noSuchObject): why"
        );
        assert!(classify("x", Failure::Connection("reset".into())).is_transient());
    }
}
