//! A crash state's id (`POINT:KEPT`, as in `12:prefix-3`), as reports print it and `--replay`
//! takes it back.
use super::states::{CrashState, Kept};

pub(super) fn state_id(state: &CrashState) -> String {
    let kept = match &state.kept {
        Kept::Nothing => "nothing".to_string(),
        Kept::Prefix(n) => format!("prefix-{n}"),
        Kept::AllBut(i) => format!("all-but-{i}"),
        Kept::Torn { before, bytes } => format!("torn-{before}-{bytes}"),
    };
    format!("{}:{kept}", state.point)
}

pub(super) fn parse_state_id(id: &str) -> Option<(usize, Kept)> {
    let (point, kept) = id.split_once(':')?;
    let point = point.parse().ok()?;
    let kept = if kept == "nothing" {
        Kept::Nothing
    } else if let Some(n) = kept.strip_prefix("prefix-") {
        Kept::Prefix(n.parse().ok()?)
    } else if let Some(i) = kept.strip_prefix("all-but-") {
        Kept::AllBut(i.parse().ok()?)
    } else {
        let (before, bytes) = kept.strip_prefix("torn-")?.split_once('-')?;
        Kept::Torn {
            before: before.parse().ok()?,
            bytes: bytes.parse().ok()?,
        }
    };
    Some((point, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_ids_round_trip() {
        for kept in [
            Kept::Nothing,
            Kept::Prefix(3),
            Kept::AllBut(0),
            Kept::Torn {
                before: 2,
                bytes: 512,
            },
        ] {
            let state = CrashState {
                point: 12,
                kept: kept.clone(),
                lost: 1,
            };
            assert_eq!(parse_state_id(&state_id(&state)), Some((12, kept)));
        }
        assert_eq!(parse_state_id("12:sideways"), None);
    }
}
