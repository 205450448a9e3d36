//! The cluster token: a shared secret that every request to the routes peers and operators use
//! (Raft messages, campaign and election holds, `/init`, `/admin/*`) must carry, so a process
//! that can reach a node's port but does not hold the token cannot vote, append entries,
//! install a snapshot or change the membership. Without one, target-db trusts whatever reaches
//! those routes: run it on loopback or a private network only.
//!
//! The token is read from a file (not from the command line, which any local user can read in
//! /proc), and sent in the `x-cluster-token` header.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use reqwest::header::HeaderMap;
use thiserror::Error;

pub const HEADER: &str = target_db_client::api::CLUSTER_TOKEN_HEADER;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("reading the cluster token from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} holds no cluster token: put one line of random text in it, the same file on every node (e.g. `head -c 32 /dev/urandom | base64 > {path}`)"
    )]
    Empty { path: PathBuf },
    #[error(
        "the cluster token in {path} is not one line of visible ASCII (it goes in an HTTP header): use base64 or hex text"
    )]
    NotHeaderText { path: PathBuf },
}

#[derive(Clone)]
pub struct ClusterToken(Arc<str>);

impl ClusterToken {
    /// Reads the token: the file's text without surrounding whitespace.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderText {
                path: path.to_owned(),
            });
        }
        let readable_by_others = std::fs::metadata(path)
            .map(|meta| meta.permissions().mode() & 0o077 != 0)
            .unwrap_or(false);
        if readable_by_others {
            tracing::warn!(path = %path.display(), "the cluster token file can be read by other users: chmod 600 it");
        }
        Ok(Self(token.into()))
    }

    /// Whether `presented` is the token. Compares every byte whatever the first difference,
    /// so the time taken does not tell how much of a guess was right.
    pub fn admits(&self, presented: Option<&[u8]>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }

    /// The token itself, for a client to send.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The headers a request to a peer carries.
    pub fn headers(&self) -> HeaderMap {
        let (name, value) = target_db_client::api::cluster_token_header(&self.0)
            .expect("checked to be visible ASCII when read");
        HeaderMap::from_iter([(name, value)])
    }
}

/// The headers for requests to peers: the token's, or none.
pub fn headers(token: Option<&ClusterToken>) -> HeaderMap {
    token.map(ClusterToken::headers).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_in(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn only_the_exact_token_is_admitted() {
        let (_dir, path) = token_in("s3cret-token\n");
        let token = ClusterToken::read(&path).unwrap();
        assert!(token.admits(Some(b"s3cret-token")));
        assert!(!token.admits(Some(b"s3cret-tokeN")));
        assert!(!token.admits(Some(b"s3cret")));
        assert!(!token.admits(Some(b"")));
        assert!(!token.admits(None));
    }

    #[test]
    fn an_empty_or_unsendable_token_is_refused_with_the_fix() {
        let (_dir, path) = token_in("  \n");
        let error = ClusterToken::read(&path).err().unwrap().to_string();
        assert!(error.contains("holds no cluster token"), "{error}");
        let (_dir, path) = token_in("two words");
        let error = ClusterToken::read(&path).err().unwrap().to_string();
        assert!(error.contains("base64 or hex"), "{error}");
        let error = ClusterToken::read(Path::new("/nonexistent/token"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("/nonexistent/token"), "{error}");
    }
}
