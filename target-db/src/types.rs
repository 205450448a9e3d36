//! What the cluster agrees on: client requests with their client id and sequence number, so a
//! retried write is applied once (the types are the client API's, in `target-db-client`).
use std::io::Cursor;

pub use target_db_client::{NodeId, Op, Request, Response};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests {
    use openraft::Vote;

    /// openraft's `single-term-leader` feature: a node that voted in a term grants no other
    /// candidate of that term, so a term has one leader, as in Raft and etcd. Without the
    /// feature a candidate with a higher node id may win a term another node already leads:
    /// the torture's "at most one leader per term" failed once with `--stage-writes` (CI,
    /// torn-wal-tail, seed 5), where a restarted leader that lost its staged entries holds no
    /// entry newer than such a candidate's and grants it.
    #[test]
    fn a_vote_in_a_term_refuses_another_candidate_of_that_term() {
        let candidate = Vote::new(2, 3);
        for voted in [Vote::new(2, 2), Vote::new_committed(2, 2)] {
            assert!(
                candidate.partial_cmp(&voted).is_none_or(|o| o.is_lt()),
                "{candidate} would be granted over {voted}"
            );
        }
        assert!(Vote::new(3, 3) > Vote::new_committed(2, 2));
    }
}
