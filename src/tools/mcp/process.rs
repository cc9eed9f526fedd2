//! A stdio MCP server's process: started with an empty environment (only the table's
//! `env`), in its own process group, stdin and stdout for the MCP session, stderr
//! logged at debug level (its last lines are kept to explain a failed start). [`ServerProcess`] owns it: [`ServerProcess::stop`] is the MCP
//! stdio shutdown (stdin is closed by the session first; then a grace period, SIGTERM
//! to the group, SIGKILL to the group) and always ends with SIGKILL to the group, so a
//! wrapper script's children do not outlive it; dropping it SIGKILLs the group at
//! once (synchronously: it works while the runtime itself is shutting down).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// How long the server gets to exit after its stdin is closed, and again after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);
/// SIGTERM's number (the same on every Unix); process-wrap takes a raw signal.
#[cfg(unix)]
const SIGTERM: i32 = 15;
/// Lines of stderr kept, and characters kept of each.
const TAIL_LINES: usize = 5;
const TAIL_LINE_CHARS: usize = 300;

type Tail = Arc<Mutex<VecDeque<String>>>;

pub struct ServerProcess {
    child: Box<dyn ChildWrapper>,
    pid: Option<u32>,
    /// The last lines of its stderr.
    tail: Tail,
    /// The group was swept by `stop`: nothing left to kill on drop.
    stopped: bool,
}

/// What the session reads and writes.
pub type Pipes = (ChildStdout, ChildStdin);

impl ServerProcess {
    /// Start `program args` for server `server`.
    pub fn spawn(
        server: &str,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, secrecy::SecretString>,
        cwd: Option<&PathBuf>,
    ) -> Result<(ServerProcess, Pipes), String> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| {
                use secrecy::ExposeSecret;
                (k, v.expose_secret())
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut command = CommandWrap::from(command);
        command.wrap(KillOnDrop);
        #[cfg(unix)]
        command.wrap(process_wrap::tokio::ProcessGroup::leader());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let process = ServerProcess {
            pid: child.id(),
            tail: Tail::default(),
            stopped: false,
            child,
        };
        if let Some(stderr) = stderr {
            tokio::spawn(log_stderr(server.to_owned(), stderr, process.tail.clone()));
        }
        match (stdout, stdin) {
            (Some(stdout), Some(stdin)) => Ok((process, (stdout, stdin))),
            _ => Err(format!("`{program}` started without stdin or stdout pipes")),
        }
    }

    pub fn id(&self) -> Option<u32> {
        self.pid
    }

    /// The last lines it wrote to stderr, joined by ` | ` (for a failed start only:
    /// later they may hold a call's arguments or results).
    pub fn stderr_tail(&self) -> Option<String> {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        (!tail.is_empty()).then(|| Vec::from(tail.clone()).join(" | "))
    }

    /// Wait until the process (the group leader) exits; says how.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => format!("its process exited ({status})"),
            Err(e) => format!("its process could not be waited for ({e})"),
        }
    }

    /// End the process group, once the session has closed the process's stdin.
    pub async fn stop(&mut self) {
        if tokio::time::timeout(GRACE, self.child.wait())
            .await
            .is_err()
        {
            #[cfg(unix)]
            {
                let _ = self.child.signal(SIGTERM);
                let _ = tokio::time::timeout(GRACE, self.child.wait()).await;
            }
        }
        // Whatever is left of the group (the leader if it ignored SIGTERM, a wrapper's
        // children): killed, then the leader reaped.
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(GRACE, self.child.wait()).await;
        self.stopped = true;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.stopped {
            // SIGKILL to the group, synchronous; the leader is reaped by tokio.
            let _ = self.child.start_kill();
        }
    }
}

/// The child's stderr, line by line, at debug level (it may hold arguments or results),
/// the last lines kept in `tail`.
async fn log_stderr(server: String, stderr: ChildStderr, tail: Tail) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "sluice::tools::mcp::stderr", server = %server, "{line}");
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
    }
}
