//! Reports: a self-contained HTML page of a history and its check results, for a person; JUnit
//! XML of a run's seeds, for a CI system.
mod html;
mod junit;
mod over_time;

pub use html::{RunSummary, render_html};
pub use junit::render_junit;
