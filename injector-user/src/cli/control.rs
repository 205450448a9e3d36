//! `injector ctl --pid PID | --cgroup PATH list | add RULE | remove ID`: change the rules of a running
//! `injector attach`, and `injector ctl --net PID list | set ...` the link of a running
//! `injector net`, over a Unix socket in a root-only directory; each answer comes after the
//! change took effect.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

const DIR: &str = "/run/faultline-injector";

/// What an injector is attached to, as its control socket and its messages name it.
pub struct Addressee {
    /// The socket's file name: the pid, or `cgroup-ID`.
    pub name: String,
    /// For messages: `pid 42`, `cgroup /sys/fs/cgroup/unified/db`.
    pub what: String,
    /// The `attach`/`ctl` option that names it: `--pid 42`.
    pub option: String,
}

impl Addressee {
    pub fn pid(pid: u32) -> Addressee {
        Addressee {
            name: pid.to_string(),
            what: format!("pid {pid}"),
            option: format!("--pid {pid}"),
        }
    }

    /// A running `injector net`, by its own pid.
    pub fn net(pid: u32) -> Addressee {
        Addressee {
            name: format!("net-{pid}"),
            what: format!("injector net {pid}"),
            option: format!("--net {pid}"),
        }
    }

    pub fn cgroup(cgroup: &injector_user::cgroup::Cgroup) -> Addressee {
        let path = cgroup.path.display();
        Addressee {
            name: format!("cgroup-{}", cgroup.id),
            what: format!("cgroup {path}"),
            option: format!("--cgroup {path}"),
        }
    }

    fn start_hint(&self) -> String {
        match self.name.strip_prefix("net-") {
            Some(_) => "net --between A --and B ...".to_owned(),
            None => format!("attach {}", self.option),
        }
    }

    fn socket_path(&self) -> PathBuf {
        PathBuf::from(DIR).join(format!("{}.sock", self.name))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    List,
    Add {
        rule: String,
    },
    Remove {
        id: usize,
    },
    /// `injector net` only: what is done to packets from now on.
    Set {
        impairment: injector_user::net::impairment::Impairment,
    },
}

/// The listening socket; removed when dropped.
pub struct Listener {
    pub socket: UnixListener,
    path: PathBuf,
}

impl Listener {
    pub fn bind(to: &Addressee) -> Result<Listener> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(DIR)?;
        std::fs::set_permissions(DIR, std::fs::Permissions::from_mode(0o700))?;
        let path = to.socket_path();
        if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!(
                "another injector is already attached to {} (its control socket {} answers)",
                to.what,
                path.display()
            );
        }
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        Ok(Listener { socket, path })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from a connection; the caller answers with [`answer`].
pub async fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let mut line = String::new();
    BufReader::new(&mut *stream).read_line(&mut line).await?;
    serde_json::from_str(&line).with_context(|| format!("bad request: {line}"))
}

pub async fn answer(stream: &mut UnixStream, answer: &Value) -> Result<()> {
    stream.write_all(format!("{answer}\n").as_bytes()).await?;
    Ok(())
}

/// The client side: one request, the answer printed.
pub async fn call(to: &Addressee, request: Request) -> Result<Value> {
    let path = to.socket_path();
    let what = &to.what;
    let mut stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("the control sockets in {DIR} are root's: run it with sudo")
        }
        Err(error) => {
            return Err(error).with_context(|| {
                format!("no injector is attached to {what} (no control socket at {}); start one with `injector {}`", path.display(), to.start_hint())
            });
        }
    };
    stream
        .write_all(format!("{}\n", serde_json::to_string(&request)?).as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    if line.is_empty() {
        bail!("the injector attached to {what} stopped before answering (its target exited?)");
    }
    let answer: Value = serde_json::from_str(&line).context("bad answer")?;
    if let Some(error) = answer["error"].as_str() {
        return Err(injector_user::rules::RuleError::Refused(error.to_owned()).into());
    }
    Ok(answer)
}

/// A control request and where its answer goes.
pub type Call = (Request, tokio::sync::oneshot::Sender<serde_json::Value>);

/// How long a control client may take to send its request.
const CONTROL_REQUEST_WITHIN: Duration = Duration::from_secs(10);

/// Reads one request from a control client, has the command's loop handle it, and answers.
pub async fn serve_client(
    mut stream: tokio::net::UnixStream,
    requests: tokio::sync::mpsc::Sender<Call>,
) {
    let read = tokio::time::timeout(CONTROL_REQUEST_WITHIN, read_request(&mut stream)).await;
    let reply = match read {
        Err(_) => serde_json::json!({"error": format!(
            "no request within {} s", CONTROL_REQUEST_WITHIN.as_secs()
        )}),
        Ok(Err(error)) => serde_json::json!({"error": error.to_string()}),
        Ok(Ok(request)) => {
            let (reply, answered) = tokio::sync::oneshot::channel();
            if requests.send((request, reply)).await.is_err() {
                return;
            }
            match answered.await {
                Ok(answer) => answer,
                Err(_) => return,
            }
        }
    };
    answer(&mut stream, &reply).await.ok();
}
