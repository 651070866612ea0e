//! The harness's fake API server: in this process (CI's smoke run), or a process of its own
//! (`fake_apiserver::process`), so that this process's memory and CPU are the operator's.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::LoadError;
use super::usage;
use crate::clock::ManualClock;
use crate::fake_apiserver::FakeApiServer;

/// How to start the API server process: a program that takes `fake-apiserver`'s options
/// (`fake_apiserver::process`), after `args`.
#[derive(Debug, Clone)]
pub struct ServerProgram {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// What the server logged, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Writes logged so far.
    pub writes: usize,
    /// Requests served so far.
    pub requests: u64,
    /// The writes after the first `skip`, by [`crate::fake_apiserver::WriteRecord::label`].
    pub by: BTreeMap<String, usize>,
}

pub enum Server {
    InProcess(FakeApiServer),
    Process(ServerProcess),
}

impl Server {
    /// Starts the server, on `clock`'s timeline.
    pub async fn start(
        program: Option<&ServerProgram>,
        clock: Arc<ManualClock>,
    ) -> Result<Server, LoadError> {
        use crate::clock::Clock;
        match program {
            None => {
                let server = FakeApiServer::start()
                    .await
                    .map_err(|e| LoadError::Server(e.to_string()))?;
                server.handle().set_clock(clock);
                Ok(Server::InProcess(server))
            }
            Some(program) => {
                let server = Server::Process(ServerProcess::spawn(program)?);
                server.set_clock(clock.now())?;
                Ok(server)
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Server::InProcess(server) => server.url(),
            Server::Process(process) => &process.url,
        }
    }

    /// A client configuration for this server.
    pub fn config(&self) -> Result<kube::Config, LoadError> {
        let uri: http::Uri = self
            .url()
            .parse()
            .map_err(|_| LoadError::Server(format!("{:?} is not a URL", self.url())))?;
        Ok(kube::Config::new(uri))
    }

    /// The server's clock moved to `at`. In this process it shares the harness's clock.
    pub fn set_clock(&self, at: Timestamp) -> Result<(), LoadError> {
        match self {
            Server::InProcess(_) => Ok(()),
            Server::Process(process) => process.command(&format!("clock {at}")).map(drop),
        }
    }

    /// What the server logged; `by` counts the writes after the first `skip`.
    pub fn observe(&self, skip: usize) -> Result<Observed, LoadError> {
        match self {
            Server::InProcess(server) => {
                let writes = server.handle().writes();
                let mut by = BTreeMap::new();
                for write in writes.iter().skip(skip) {
                    *by.entry(write.label()).or_default() += 1;
                }
                Ok(Observed {
                    writes: writes.len(),
                    requests: server.handle().requests().total(),
                    by,
                })
            }
            Server::Process(process) => {
                let answer = process.command(&format!("observe {skip}"))?;
                let count = |key: &str| answer.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
                let by = answer
                    .get("by")
                    .cloned()
                    .map(serde_json::from_value::<BTreeMap<String, usize>>)
                    .transpose()
                    .map_err(|e| LoadError::Server(format!("observe: {e}")))?
                    .unwrap_or_default();
                Ok(Observed {
                    writes: usize::try_from(count("writes")).unwrap_or(usize::MAX),
                    requests: count("requests"),
                    by,
                })
            }
        }
    }

    /// The server process's peak and current resident memory in MB and its CPU seconds; `None`
    /// in this process.
    pub fn usage(&self) -> Option<(f64, f64, f64)> {
        match self {
            Server::InProcess(_) => None,
            Server::Process(process) => {
                let pid = process.pid.to_string();
                let (peak, now) = usage::rss_mb_of(&pid);
                Some((peak, now, usage::cpu_seconds_of(&pid)))
            }
        }
    }

    pub async fn shutdown(self) {
        match self {
            Server::InProcess(server) => server.shutdown().await,
            Server::Process(process) => drop(process),
        }
    }
}

/// A fake API server process, and the pipes it takes commands on.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    url: String,
    pipes: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
}

impl ServerProcess {
    fn spawn(program: &ServerProgram) -> Result<ServerProcess, LoadError> {
        let failed = |what: &str, e: std::io::Error| {
            LoadError::Server(format!("{} {what}: {e}", program.program.display()))
        };
        let mut child = Command::new(&program.program)
            .args(&program.args)
            .arg("--control-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed("did not start", e))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LoadError::Server("no pipes to the server process".into()));
        };
        let mut stdout = BufReader::new(stdout);
        // The first line is its URL, printed once it serves.
        let mut url = String::new();
        let read = stdout.read_line(&mut url);
        // From here on, an early return drops `process`, which ends the child.
        let mut process = ServerProcess {
            child,
            pid,
            url: url.trim().to_owned(),
            pipes: Mutex::new((stdin, stdout)),
        };
        read.map_err(|e| failed("printed no URL", e))?;
        if !process.url.starts_with("http://") {
            // Say how it ended, when it did (an old build refuses --control-stdin).
            let ended = match process.child.try_wait() {
                Ok(Some(status)) => format!(" and exited ({status})"),
                _ => String::new(),
            };
            return Err(LoadError::Server(format!(
                "{} printed {:?}, not its URL{ended}",
                program.program.display(),
                process.url
            )));
        }
        Ok(process)
    }

    /// Sends one command and reads its answer, a JSON line. Blocks for the round trip (well
    /// under a millisecond on an idle server); the harness sends a few per run, between phases.
    fn command(&self, line: &str) -> Result<serde_json::Value, LoadError> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        let (stdin, stdout) = &mut *pipes;
        let gone = |e: std::io::Error| LoadError::Server(format!("server process: {e}"));
        writeln!(stdin, "{line}").map_err(gone)?;
        stdin.flush().map_err(gone)?;
        let mut answer = String::new();
        stdout.read_line(&mut answer).map_err(gone)?;
        let answer: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| LoadError::Server(format!("{line}: answer {answer:?}: {e}")))?;
        match answer.get("error").and_then(|e| e.as_str()) {
            Some(error) => Err(LoadError::Server(error.to_owned())),
            None => Ok(answer),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // It would stop on its own once stdin closes; a kill does not wait for that.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
