//! What every page section shares: HTML escaping, and the time span a timeline covers.
use crate::history::{FaultEvent, Operation};

/// Text made safe to put in HTML, attributes included.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The earliest and latest moment of these operations and faults, if there is any.
pub(super) fn time_span<'a>(
    ops: impl Iterator<Item = &'a Operation>,
    faults: &[FaultEvent],
) -> Option<(u64, u64)> {
    ops.flat_map(|op| [Some(op.invoke), op.complete])
        .chain(faults.iter().flat_map(|f| [Some(f.time), f.end]))
        .flatten()
        .fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((t.min(lo), t.max(hi))),
        })
}
