//! What a start finds in the log: each record replayed into memory, and the checks that refuse a
//! log missing entries it had (a gap, a commit point past the end, a lost segment).
use super::*;

impl Inner {
    /// Entries missing from the recovered log: a gap between entries, between the purge point
    /// and the first entry, or between the last entry and the commit point (each written only
    /// after the entries it covers were durable, so only lost data leaves one).
    pub(super) fn hole(&self) -> Option<String> {
        let mut indexes = self.entries.keys().copied();
        let first = indexes.next();
        // openraft's log starts at index 0 (the first membership), or after the purge point.
        let expected_first = self.last_purged.map_or(0, |purged| purged.index + 1);
        if let Some(first) = first
            && first > expected_first
        {
            let purged = self.last_purged.map_or("never purged".to_owned(), |p| {
                format!("purged up to {}", p.index)
            });
            return Some(format!(
                "the log is {purged} but its first entry is {first}: entries {expected_first} \
                 to {} are missing",
                first - 1
            ));
        }
        let mut previous = first;
        for index in indexes {
            if let Some(previous) = previous
                && index != previous + 1
            {
                return Some(format!(
                    "entries {} to {} are missing from the log",
                    previous + 1,
                    index - 1
                ));
            }
            previous = Some(index);
        }
        let end = previous.max(self.last_purged.map(|p| p.index));
        if let Some(committed) = self.committed
            && Some(committed.index) > end
        {
            return Some(format!(
                "the commit point on disk is {} but the log ends at {}: committed entries are \
                 missing",
                committed.index,
                end.map_or("its start".to_owned(), |e| e.to_string())
            ));
        }
        None
    }

    /// A gap in the segment numbering is harmless only when every entry before it was purged
    /// (a power loss kept an older purged segment and lost a newer one): those segments are left
    /// for the next purge to delete. Otherwise the missing segments held entries still needed.
    pub(super) fn unpurged_before_gap(&self, gaps: &[(u64, u64)]) -> Option<String> {
        let &(before, after) = gaps.last()?;
        let purged = self.last_purged.map(|p| p.index);
        let unpurged = self
            .segment_max_index
            .range(..=before)
            .find(|&(_, &max)| purged.is_none_or(|p| max > p));
        match unpurged {
            None => {
                tracing::warn!(
                    before = segment_file_name(before),
                    after = segment_file_name(after),
                    "segments missing from the write-ahead log, all of them purged: recovering"
                );
                None
            }
            Some((&segment, &max)) => Some(format!(
                "{} is followed by {}: the segments between are missing, and {} holds entries \
                 up to {max}, past the purge point ({})",
                segment_file_name(before),
                segment_file_name(after),
                segment_file_name(segment),
                purged.map_or("never purged".to_owned(), |p| format!("purged up to {p}")),
            )),
        }
    }

    pub(super) fn replay(&mut self, segment: u64, record: Journal) {
        match record {
            Journal::Entries(entries) => {
                for entry in entries {
                    let index = entry.log_id.index;
                    let max = self.segment_max_index.entry(segment).or_default();
                    *max = (*max).max(index);
                    self.entries.insert(index, entry);
                }
            }
            Journal::Vote(vote) => self.vote = Some(vote),
            Journal::Committed(log_id) => {
                if self.committed.is_none_or(|c| c < log_id) {
                    self.committed = Some(log_id);
                }
            }
            Journal::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Journal::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                if self.last_purged.is_none_or(|p| p < log_id) {
                    self.last_purged = Some(log_id);
                }
            }
        }
    }
}
