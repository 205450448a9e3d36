//! Reports a person reads: a self-contained HTML page of a history and its check results.
mod html;

pub use html::render_html;
