//! Reports: a self-contained HTML page of a history and its check results, and an index page
//! of a campaign's seeds, for a person; JUnit XML of a run's seeds, for a CI system.
mod html;
mod index;
mod junit;
mod markup;
mod over_time;
mod timeline;

pub use html::{CheckLine, RunSummary, render_html};
pub use index::render_index;
pub use junit::render_junit;
