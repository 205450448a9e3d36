//! Gathers the client writes that reach the leader together into one log entry.
//!
//! openraft 0.9's core appends each `client_write` as its own entry and waits for that append's
//! fsync before it takes the next one, so without this every write cost one leader fsync in
//! series and the cluster topped out near one write per fsync, whatever the number of clients
//! (#20). Here a write waits only while an earlier batch is on its way; whatever arrived
//! meanwhile goes in the next entry, so batches grow with the load and a lone write goes out
//! at once. A batch also waits, for at most `LINGER`, for the clients the previous batch just
//! answered: closed-loop clients write again within a fraction of a millisecond, and without
//! the wait they split into two groups that take turns, each write waiting two rounds.
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use openraft::{BasicNode, Raft, error::ForwardToLeader, raft::ClientWriteResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::types::{NodeId, Request, Response, TypeConfig};

/// How many batches may be in openraft at once. More would let a batch's append overlap the
/// previous one's round trip, but each costs the core one more fsync in series and splits the
/// load into smaller batches: `torture bench-db`, 3 nodes, 64 clients (2026-12-07, before
/// `LINGER`): 11,185 puts/s with 1, 9,983 with 2, 9,008 with 4, 8,259 with 8; 16 clients:
/// 4,035, 3,619, 3,379, 3,017.
const IN_FLIGHT: usize = 1;

/// A batch stops growing past this many bytes of keys and values: a follower must take a
/// whole entry within openraft's append deadline (one heartbeat interval). One larger write
/// still goes alone.
const BATCH_BYTES: usize = 256 << 10;

/// What became of one write.
#[derive(Debug)]
pub enum Written {
    Applied {
        index: u64,
        response: Response,
    },
    NotLeader(ForwardToLeader<NodeId, BasicNode>),
    /// Definitely not applied: leadership is moving to another node.
    HandingOff,
    /// It may or may not take effect (the core stopped, or an error openraft did not explain).
    Unknown(String),
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Written>,
}

/// The handle the HTTP handlers write through.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the task that hands batches to `raft`; it ends when every handle is dropped.
    /// While `handing_off` is set, the writes still waiting are refused rather than appended:
    /// a hand-off waits for the target to hold a log that stands still.
    pub fn start(raft: Raft<TypeConfig>, handing_off: Arc<AtomicBool>) -> Batcher {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(hand_over(raft, handing_off, waiting));
        Batcher { queue }
    }

    /// Applies the write through Raft, in a batch with whatever other writes come meanwhile.
    pub async fn write(&self, request: Request) -> Written {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { request, reply }).is_err() {
            return Written::Unknown("the node is shutting down".to_owned());
        }
        answer
            .await
            .unwrap_or_else(|_| Written::Unknown("the node is shutting down".to_owned()))
    }
}

/// How long a batch may wait for the writes of clients the previous batch answered, counted
/// from that batch's answer (tokio's timers tick in milliseconds). Measured (`torture
/// bench-db`, 3 nodes, 2026-12-07): 16 clients 4,265 -> 6,194 puts/s, 4 clients 1,282 -> 1,914,
/// one client unchanged (it is the only one the previous batch answered).
const LINGER: Duration = Duration::from_millis(1);

/// The writes of the next batch, as they are gathered.
#[derive(Default)]
struct Gathering {
    writes: Vec<Pending>,
    clients: HashSet<u64>,
    bytes: usize,
}

impl Gathering {
    fn add(&mut self, write: Pending) {
        self.bytes += size(&write.request);
        self.clients.insert(write.request.client);
        self.writes.push(write);
    }

    fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES
    }

    /// Adds the writes already queued, while there is room.
    fn take_queued(&mut self, waiting: &mut mpsc::UnboundedReceiver<Pending>) {
        while !self.is_full() {
            let Ok(next) = waiting.try_recv() else { break };
            self.add(next);
        }
    }
}

fn size(request: &Request) -> usize {
    use crate::types::Op;
    match &request.op {
        Op::Put { key, value } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
        Op::Cas { key, from, to } => key.len() + from.as_ref().map_or(0, String::len) + to.len(),
    }
}

/// Takes the writes in arrival order, a batch at a time, and submits each batch before the
/// next is gathered, so the log holds them in that order too.
async fn hand_over(
    raft: Raft<TypeConfig>,
    handing_off: Arc<AtomicBool>,
    mut waiting: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut previous = HashSet::new();
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let freed = Instant::now();
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut batch = Gathering::default();
        batch.add(first);
        batch.take_queued(&mut waiting);
        // The clients the previous batch just answered are likely to write again at once:
        // give them a moment to join, so the load does not split into groups that take turns.
        let deadline = freed + LINGER;
        while !batch.is_full() && !previous.is_subset(&batch.clients) {
            match tokio::time::timeout_at(deadline.into(), waiting.recv()).await {
                Ok(Some(next)) => {
                    batch.add(next);
                    batch.take_queued(&mut waiting);
                }
                _ => break,
            }
        }
        previous = std::mem::take(&mut batch.clients);
        if handing_off.load(Ordering::SeqCst) {
            for write in batch.writes {
                let _ = write.reply.send(Written::HandingOff);
            }
            continue;
        }
        let batch = batch.writes;
        let (requests, replies): (Vec<Request>, Vec<oneshot::Sender<Written>>) = batch
            .into_iter()
            .map(|pending| (pending.request, pending.reply))
            .unzip();
        let submitted = raft.client_write_ff(crate::types::Batch(requests)).await;
        tokio::spawn(async move {
            let outcome = match submitted {
                Ok(answer) => answer
                    .await
                    .map_err(|_| "the Raft core stopped before the write was applied".to_owned()),
                Err(fatal) => Err(fatal.to_string()),
            };
            drop(slot);
            answer_each(replies, outcome);
        });
    }
}

type Outcome = Result<
    Result<ClientWriteResponse<TypeConfig>, openraft::error::ClientWriteError<NodeId, BasicNode>>,
    String,
>;

fn answer_each(replies: Vec<oneshot::Sender<Written>>, outcome: Outcome) {
    match outcome {
        Ok(Ok(written)) => {
            let index = written.log_id.index;
            for (reply, response) in replies.into_iter().zip(written.data.0) {
                let _ = reply.send(Written::Applied { index, response });
            }
        }
        Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(forward))) => {
            for reply in replies {
                let _ = reply.send(Written::NotLeader(forward.clone()));
            }
        }
        Ok(Err(error)) => {
            let error = error.to_string();
            for reply in replies {
                let _ = reply.send(Written::Unknown(error.clone()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Written::Unknown(error.clone()));
            }
        }
    }
}
