//! A database described by a spec file (`torture run --target-spec FILE.toml`): command
//! templates to start its nodes, a readiness command, its log's files, and a client program of
//! the user's that speaks JSON lines (one request, one reply), in any language.
//!
//! Templates are run by `sh -c` after these are replaced: `{id}` (1-based), `{ip}`, `{addr}`
//! (ip:client_port), `{data_dir}`, `{peers}` (every node's ip:client_port, comma-separated,
//! node 1 first) and `{spec_dir}` (the spec file's directory).
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
};

use super::{NodePlace, Outcome};

/// The spec file, as the user writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Short, for logs and the report (`redis`).
    pub name: String,
    /// One line for the report.
    #[serde(default)]
    pub description: String,
    /// The port clients use on every node's address.
    pub client_port: u16,
    /// Starts (and, on the same data directory, restarts) one node; must stay in the
    /// foreground.
    pub start: String,
    /// Exits 0 once the node serves (default: its client port accepts a connection).
    #[serde(default)]
    pub ready: Option<String>,
    /// The node that takes writes, for a primary-replica database with a fixed primary (the
    /// checks that need a leader use it); without one or `status`, a single node leads itself.
    #[serde(default)]
    pub primary: Option<u64>,
    /// Prints what the node at `{addr}` says of itself, one JSON object in the harness's words:
    /// `leader` (the node id it follows), and if it can `state` ("Leader"), `term`,
    /// `commit_index`, `applied_index`. For a database that elects its leader.
    #[serde(default)]
    pub status: Option<String>,
    /// Prints `{"applied_index": N, "digest": "..."}` for the node at `{addr}`: nodes that
    /// applied the same entries print the same (for "nodes converge").
    #[serde(default)]
    pub digest: Option<String>,
    /// The database's log files: a glob relative to its data directory (`appendonlydir/*`).
    pub log: String,
    /// The client program: reads one JSON request a line on stdin, answers one JSON line on
    /// stdout (see docs/targets.md).
    pub client: String,
    /// Whether the harness makes the data directory before the first start, as a package
    /// would (default true); false leaves it to the database.
    #[serde(default = "yes")]
    pub data_dir_made_by_installer: bool,
}

fn yes() -> bool {
    true
}

/// Why a spec file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the target spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the target spec {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A loaded spec, with the pool of client programs it runs.
pub struct SpecTarget {
    pub spec: Spec,
    pub dir: PathBuf,
    /// Idle client programs; each call takes one, and gives it back unless it misbehaved.
    idle: Mutex<Vec<ClientProgram>>,
    /// The first reply no request could be paired with: the run stops on it.
    pub broken: Arc<Mutex<Option<String>>>,
}

struct ClientProgram {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl SpecTarget {
    pub fn load(path: &Path) -> Result<SpecTarget, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| SpecError::Invalid {
            path: path.to_owned(),
            message,
        };
        let spec: Spec = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        if spec.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        if spec.log.starts_with('/') {
            return Err(invalid(format!(
                "`log` = {:?} must be relative to the data directory (e.g. \"wal/*\")",
                spec.log
            )));
        }
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default()
            .canonicalize()
            .map_err(|e| invalid(format!("its directory: {e}")))?;
        Ok(SpecTarget {
            spec,
            dir,
            idle: Mutex::default(),
            broken: Arc::default(),
        })
    }

    /// `template` with the node's values in place.
    pub fn fill(&self, template: &str, node: &NodePlace) -> String {
        let port = self.spec.client_port;
        let peers: Vec<String> = node.peers.iter().map(|ip| format!("{ip}:{port}")).collect();
        template
            .replace("{id}", &node.id.to_string())
            .replace("{ip}", node.ip)
            .replace("{addr}", &format!("{}:{port}", node.ip))
            .replace("{data_dir}", &node.data_dir.display().to_string())
            .replace("{peers}", &peers.join(","))
            .replace("{spec_dir}", &self.dir.display().to_string())
    }

    pub fn start_command(&self, node: &NodePlace) -> std::process::Command {
        let mut command = std::process::Command::new("sh");
        // `exec`: the node is the shell's own process, so a kill or a pause reaches it.
        command
            .arg("-c")
            .arg(format!("exec {}", self.fill(&self.spec.start, node)));
        command
    }

    /// `template` filled for the node at `addr`, run by `sh -c`: its stdout if it exits 0
    /// within 2 s.
    async fn ask(&self, template: &str, addr: &str) -> Option<String> {
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
        let command = template
            .replace("{ip}", ip)
            .replace("{addr}", addr)
            .replace("{spec_dir}", &self.dir.display().to_string());
        let output = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(2), output).await {
            Ok(Ok(output)) if output.status.success() => {
                Some(String::from_utf8_lossy(&output.stdout).into_owned())
            }
            _ => None,
        }
    }

    /// Whether the node at `addr` serves: its readiness command exits 0, or its port accepts.
    pub async fn ready(&self, addr: &str) -> bool {
        match &self.spec.ready {
            Some(template) => self.ask(template, addr).await.is_some(),
            None => matches!(
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await,
                Ok(Ok(_))
            ),
        }
    }

    /// What a node says of itself: its `status` command's answer, or else (when it serves)
    /// only its fixed primary, or itself when alone.
    pub async fn status(&self, addr: &str, node_count: usize) -> Option<Value> {
        if let Some(template) = &self.spec.status {
            let answer: Value = serde_json::from_str(&self.ask(template, addr).await?).ok()?;
            return answer.is_object().then_some(answer);
        }
        if !self.ready(addr).await {
            return None;
        }
        let leader = self.spec.primary.or((node_count == 1).then_some(1))?;
        Some(json!({ "leader": leader }))
    }

    /// The node's digest, from the spec's `digest` command.
    pub async fn digest(&self, addr: &str) -> Option<(u64, String)> {
        let answer: Value =
            serde_json::from_str(&self.ask(self.spec.digest.as_deref()?, addr).await?).ok()?;
        let digest = &answer["digest"];
        Some((answer["applied_index"].as_u64()?, digest.to_string())).filter(|_| !digest.is_null())
    }

    /// Why a cluster of `nodes` cannot name a leader with this spec, if it cannot.
    pub fn leaderless(&self, nodes: usize) -> Option<String> {
        (nodes > 1 && self.spec.primary.is_none() && self.spec.status.is_none()).then(|| {
            format!(
                "{} nodes of {}: the spec gives neither `primary` (a fixed primary) nor `status` \
                 (a command that names each node's leader), so no check can tell who leads; add \
                 one, or run --nodes 1",
                nodes, self.spec.name
            )
        })
    }

    fn spawn_client(&self) -> std::io::Result<ClientProgram> {
        let command = self
            .spec
            .client
            .replace("{spec_dir}", &self.dir.display().to_string());
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(ClientProgram {
            child,
            stdin,
            stdout,
            next_id: 1,
        })
    }

    /// One request to a client program, answered within `timeout`. A program that does not
    /// answer in time is killed (its request may still land: unknown); one that answers
    /// nonsense stops the run.
    pub async fn call(&self, mut request: Value, timeout: Duration) -> Outcome {
        let taken = self.idle.lock().expect("pool poisoned").pop();
        let mut program = match taken {
            Some(program) => program,
            None => match self.spawn_client() {
                Ok(program) => program,
                Err(error) => {
                    self.break_with(format!(
                        "the client program `{}` of the target spec does not start: {error}",
                        self.spec.client
                    ));
                    return Outcome::Fail;
                }
            },
        };
        let id = program.next_id;
        program.next_id += 1;
        request["id"] = json!(id);
        let exchange = async {
            let mut line = request.to_string();
            line.push('\n');
            program.stdin.write_all(line.as_bytes()).await?;
            program.stdin.flush().await?;
            let mut reply = String::new();
            program.stdout.read_line(&mut reply).await?;
            Ok::<String, std::io::Error>(reply)
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) if !reply.is_empty() => reply,
            Ok(Ok(_)) | Ok(Err(_)) => {
                let status = program.child.try_wait().ok().flatten();
                self.break_with(format!(
                    "the client program `{}` exited ({}) instead of answering {request}",
                    self.spec.client,
                    status.map_or("still running".into(), |s| s.to_string())
                ));
                return Outcome::Unknown;
            }
            // Dropped, so killed: its request may still reach the database.
            Err(_) => return Outcome::Unknown,
        };
        match parse_reply(&reply, id) {
            Ok(outcome) => {
                self.idle.lock().expect("pool poisoned").push(program);
                outcome
            }
            Err(why) => {
                self.break_with(format!(
                    "the client program `{}` answered {request} with {:?}: {why}",
                    self.spec.client,
                    reply.trim_end()
                ));
                Outcome::Unknown
            }
        }
    }

    fn break_with(&self, message: String) {
        let mut broken = self.broken.lock().expect("broken poisoned");
        if broken.is_none() {
            *broken = Some(message);
        }
    }
}

/// A reply: `{"id": N, "outcome": "ok"|"fail"|"unknown", ...}`; for ok, the answer fields
/// (`value` for a get, `ok` for a cas, `previous` when the database tells it).
fn parse_reply(reply: &str, id: u64) -> Result<Outcome, String> {
    let reply: Value =
        serde_json::from_str(reply).map_err(|e| format!("not one JSON object a line ({e})"))?;
    if reply["id"].as_u64() != Some(id) {
        return Err(format!("its `id` is {}, the request's {id}", reply["id"]));
    }
    match reply["outcome"].as_str() {
        Some("ok") => Ok(Outcome::Ok(reply)),
        Some("fail") => Ok(Outcome::Fail),
        Some("unknown") => Ok(Outcome::Unknown),
        _ => Err(format!(
            "`outcome` is {}, expected \"ok\", \"fail\" or \"unknown\"",
            reply["outcome"]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_paired_by_id_and_names_what_is_wrong() {
        assert!(matches!(
            parse_reply(r#"{"id": 3, "outcome": "ok", "value": "v"}"#, 3),
            Ok(Outcome::Ok(_))
        ));
        assert!(matches!(
            parse_reply(r#"{"id": 3, "outcome": "unknown"}"#, 3),
            Ok(Outcome::Unknown)
        ));
        let Err(why) = parse_reply(r#"{"id": 2, "outcome": "ok"}"#, 3) else {
            panic!("a reply to another request must be refused");
        };
        assert!(why.contains("`id` is 2"), "{why}");
        let Err(why) = parse_reply(r#"{"id": 3, "outcome": "maybe"}"#, 3) else {
            panic!("an unknown outcome word must be refused");
        };
        assert!(why.contains("`outcome`"), "{why}");
        assert!(parse_reply("OK\n", 3).is_err());
    }

    /// A spec whose `status` and `digest` commands print fixed answers.
    fn answering(status: &str, digest: &str) -> SpecTarget {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.toml");
        let text = format!(
            "name = \"x\"\nclient_port = 1\nstart = \"true\"\nlog = \"wal/*\"\nclient = \"c\"\n\
             status = {status:?}\ndigest = {digest:?}\n"
        );
        std::fs::write(&path, text).unwrap();
        SpecTarget::load(&path).unwrap()
    }

    #[tokio::test]
    async fn status_and_digest_come_from_the_specs_commands_filled_for_the_node() {
        let spec = answering(
            r#"echo '{"leader": 2, "state": "Leader", "term": 7, "addr": "{addr}"}'"#,
            r#"echo '{"applied_index": 40, "digest": "ab"}'"#,
        );
        let status = spec.status("127.0.0.12:9", 3).await.unwrap();
        assert_eq!(status["leader"], 2);
        assert_eq!(status["term"], 7);
        assert_eq!(status["addr"], "127.0.0.12:9");
        assert_eq!(
            spec.digest("127.0.0.12:9").await,
            Some((40, "\"ab\"".to_owned()))
        );
        assert!(spec.leaderless(3).is_none());
        let silent = answering("exit 1", "echo nonsense");
        assert_eq!(silent.status("127.0.0.12:9", 3).await, None);
        assert_eq!(silent.digest("127.0.0.12:9").await, None);
    }

    #[test]
    fn a_spec_missing_a_field_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.toml");
        std::fs::write(
            &path,
            "name = \"x\"\nclient_port = 1\nlog = \"wal/*\"\nclient = \"c\"\n",
        )
        .unwrap();
        let Err(error) = SpecTarget::load(&path) else {
            panic!("a spec without `start` must be refused");
        };
        assert!(
            error.to_string().contains("missing field `start`"),
            "{error}"
        );
    }
}
