//! A full disk does not stop the node: records wait in a backlog, in order, and a task writes
//! them once space returns.
use super::*;

impl LogStore {
    /// A full disk is not the end: the node keeps serving reads while this task writes the
    /// backlog as soon as there is room for it.
    pub(super) fn retry_until_space_returns(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SPACE_RETRY).await;
                let mut inner = store.inner.lock().await;
                match inner.write_backlog() {
                    Ok(false) => continue,
                    Ok(true) => {
                        tracing::info!("space returned: the write-ahead log caught up");
                        let written = inner.backlogged;
                        store.progress.send_modify(|p| p.written = written);
                    }
                    Err(error) => {
                        store
                            .progress
                            .send_modify(|p| p.failed = Some(error.to_string()));
                    }
                }
                inner.retrying = false;
                return;
            }
        });
    }
}

impl Inner {
    /// Whether the disk filled up and has not been found to have room again.
    pub(super) fn short_of_space(&self) -> bool {
        !self.backlog.is_empty() || self.wal.stats().disk_full()
    }

    pub(super) fn add_to_backlog(
        &mut self,
        records: Vec<Journal>,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Written {
        self.backlogged += records.len() as u64;
        self.backlog.extend(records.iter().map(encode_journal));
        self.backlog_callbacks.extend(callback);
        self.apply_in_memory(records);
        Written::Backlogged {
            ticket: self.backlogged,
        }
    }

    /// Once the space reserve can be taken back, writes the whole backlog as one append, and
    /// the newest commit point after it. True once all of it is on disk.
    pub(super) fn write_backlog(&mut self) -> Result<bool, StorageError<NodeId>> {
        // A write failed meanwhile (a vote that went ahead): nothing more is written.
        if let Some(reason) = &self.failed {
            return Err(io_error(std::io::Error::other(reason.clone())));
        }
        match self.wal.restore_reserve() {
            Ok(()) => {}
            Err(WalError::NoSpace { .. }) => return Ok(false),
            Err(error) => return Err(self.fail(error)),
        }
        if self.committed > self.committed_on_disk
            && let Some(committed) = self.committed
        {
            self.backlog
                .push(encode_journal(&Journal::Committed(committed)));
        }
        let refs: Vec<&[u8]> = self.backlog.iter().map(Vec::as_slice).collect();
        match self.wal.append(&refs) {
            Ok(()) => {
                self.backlog.clear();
                self.set_committed_on_disk(self.committed);
                self.durable_last_entry = self.entries.keys().next_back().copied();
                self.staged_written();
                self.mark_durable();
                self.wal.stats().set_disk_full(false);
                for callback in self.backlog_callbacks.drain(..) {
                    callback.log_io_completed(Ok(()));
                }
                self.rotate_if_full()?;
                Ok(self.backlog.is_empty())
            }
            Err(WalError::NoSpace { .. }) => {
                if self.committed > self.committed_on_disk {
                    self.backlog.pop();
                }
                Ok(false)
            }
            Err(error) => Err(self.fail(error)),
        }
    }
}
