//! `faultfs ctl`: a Unix socket in a root-only directory, one JSON request per line, and one
//! JSON answer sent only after the command took effect.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{Arc, OnceLock, atomic::Ordering},
};

use fault_rules::SplitMix64;
use fuser::{INodeNo, Notifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use crate::{
    fs::Shared,
    power_loss::{PowerLossMode, plan},
    state::{Survival, Unsynced},
};

const SOCKET_DIR: &str = "/run/faultfs";

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(
        "no faultfs is serving {0} (no control socket at {1}); mount one with `faultfs mount BACKING {0}`"
    )]
    NotServed(String, String),
    #[error("the control socket is for root only: run with sudo")]
    NotRoot,
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer from faultfs: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Sync,
    PowerLoss { mode: PowerLossMode },
    FaultAdd { rule: String },
    FaultRemove { id: u64 },
    FaultList,
    Capacity { bytes: u64 },
}

/// Where the control socket of the mount at `mountpoint` lives: a short, fixed-length name (a
/// socket path is limited to 108 bytes) derived from the canonical mount path.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_owned());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.as_os_str().as_encoded_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(SOCKET_DIR).join(format!("{hash:016x}.sock"))
}

/// Sends one request to the faultfs serving `mountpoint` and returns its answer.
pub fn call(mountpoint: &Path, request: &Request) -> Result<Value, ControlError> {
    let path = socket_path(mountpoint);
    let stream = UnixStream::connect(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::PermissionDenied => ControlError::NotRoot,
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotServed(mountpoint.display().to_string(), path.display().to_string())
        }
        _ => ControlError::Io(error),
    })?;
    let mut writer = &stream;
    writeln!(
        writer,
        "{}",
        serde_json::to_string(request).expect("serialisable")
    )?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let answer: Value =
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol(format!("{e}: {line}")))?;
    if answer["ok"] == true {
        Ok(answer)
    } else {
        Err(ControlError::Refused(
            answer["error"].as_str().unwrap_or("refused").to_owned(),
        ))
    }
}

/// The listening side; removes its socket when dropped.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    pub fn start(
        mountpoint: &Path,
        shared: Arc<Shared>,
        notifier: Arc<OnceLock<Notifier>>,
        seed: u64,
    ) -> std::io::Result<ControlServer> {
        std::fs::create_dir_all(SOCKET_DIR)?;
        std::fs::set_permissions(SOCKET_DIR, std::fs::Permissions::from_mode(0o700))?;
        let path = socket_path(mountpoint);
        // A socket left by a faultfs that was killed: nobody answers on it any more.
        if path.exists() && UnixStream::connect(&path).is_err() {
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let handler = Handler {
            shared,
            notifier,
            seed,
            power_losses: 0,
        };
        std::thread::Builder::new()
            .name("faultfs-control".into())
            .spawn(move || serve(listener, handler))?;
        Ok(ControlServer { path })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a connection may sit without sending a request before it is closed.
const IDLE_CLIENT: std::time::Duration = std::time::Duration::from_secs(30);

/// Each connection on its own thread, so one client that connects and says nothing cannot hold
/// up another's `power-loss` or `status`; requests take turns on the handler.
fn serve(listener: UnixListener, handler: Handler) {
    let handler = Arc::new(std::sync::Mutex::new(handler));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        let spawned = std::thread::Builder::new()
            .name("faultfs-control-client".into())
            .spawn(move || serve_client(&stream, &handler));
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread for a control client; it is turned away");
        }
    }
}

fn serve_client(stream: &UnixStream, handler: &std::sync::Mutex<Handler>) {
    let _ = stream.set_read_timeout(Some(IDLE_CLIENT));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handler
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .handle(request),
            Err(error) => Err(format!("unknown request ({error}): {}", line.trim())),
        };
        let answer = match answer {
            Ok(Value::Object(mut fields)) => {
                fields.insert("ok".into(), true.into());
                Value::Object(fields)
            }
            Ok(other) => json!({"ok": true, "result": other}),
            Err(error) => json!({"ok": false, "error": error}),
        };
        let mut writer = stream;
        if writeln!(writer, "{answer}").is_err() {
            break;
        }
        line.clear();
    }
}

struct Handler {
    shared: Arc<Shared>,
    notifier: Arc<OnceLock<Notifier>>,
    seed: u64,
    power_losses: u64,
}

impl Handler {
    fn handle(&mut self, request: Request) -> Result<Value, String> {
        match request {
            Request::Status => {
                let status = self.shared.lock().status();
                Ok(json!({
                    "status": status,
                    "power_losses": self.power_losses,
                    "capacity": self.shared.capacity.load(Ordering::Relaxed),
                    "faults": self.shared.faults.list(),
                    "crashed": self.shared.crash_point(),
                    "killed": self.shared.kills(),
                }))
            }
            Request::Sync => {
                self.shared.lock().sync_all().map_err(|errno| {
                    format!("sync failed: {}", std::io::Error::from_raw_os_error(errno))
                })?;
                tracing::info!("everything made durable (sync)");
                Ok(json!({}))
            }
            Request::PowerLoss { mode } => self.power_loss(mode),
            Request::FaultAdd { rule } => {
                let id = self.shared.faults.add(&rule).map_err(|e| e.to_string())?;
                Ok(json!({"id": id}))
            }
            Request::FaultRemove { id } => {
                if self.shared.faults.remove(id) {
                    Ok(json!({}))
                } else {
                    Err(format!(
                        "no fault rule with id {id}; `faultfs ctl MOUNTPOINT fault list` shows them"
                    ))
                }
            }
            Request::FaultList => Ok(json!({"faults": self.shared.faults.list()})),
            Request::Capacity { bytes } => {
                self.shared.capacity.store(bytes, Ordering::Relaxed);
                Ok(json!({}))
            }
        }
    }

    fn power_loss(&mut self, mode: PowerLossMode) -> Result<Value, String> {
        let mut state = self.shared.lock();
        if mode == PowerLossMode::Keep {
            // Everything reached the disk: unsynced chmods and chowns too.
            state
                .sync_all_attributes()
                .map_err(|errno| format!("power loss failed: errno {errno}"))?;
        }
        // Each power loss of a run draws from its own stream, so replays line up.
        let mut rng = SplitMix64::new(self.seed ^ self.power_losses.wrapping_mul(0x9e37_79b9));
        let unchanged = state.unchanged_prefixes();
        let survival = plan(mode, state.unsynced(), &unchanged, &mut rng);
        let unsynced = survival.len();
        let survived = survival.iter().filter(|s| **s != Survival::Dropped).count();
        // Files a write was kept in part in: where the program's recovery meets a torn record.
        let torn: std::collections::BTreeSet<String> = state
            .unsynced()
            .iter()
            .zip(&survival)
            .filter_map(|(op, fate)| match (op, fate) {
                (Unsynced::Write { ino, .. }, Survival::Parts(_)) => {
                    Some(state.path_of(*ino).display().to_string())
                }
                _ => None,
            })
            // A file removed since has no name to report.
            .filter(|path| !path.is_empty())
            .collect();
        let old_inodes = state.inode_numbers();
        let old_entries = state.live_entries();
        state
            .power_loss(&survival)
            .map_err(|error| format!("power loss failed: {error}"))?;
        drop(state);
        self.shared.clear_crash();
        self.power_losses += 1;
        // Make the kernel forget every name, attribute and cached page of the state before:
        // surviving files have new inode numbers, so it looks them up again. Done without the
        // state lock, which the kernel's own requests may need meanwhile.
        if let Some(notifier) = self.notifier.get() {
            for (parent, name) in &old_entries {
                let _ = notifier.inval_entry(INodeNo(*parent), name);
            }
            for ino in old_inodes {
                let _ = notifier.inval_inode(INodeNo(ino), 0, -1);
            }
        }
        tracing::warn!(?mode, unsynced, survived, ?torn, "power loss");
        Ok(json!({"unsynced_operations": unsynced, "survived": survived, "torn": torn}))
    }
}
