//! `--trace FILE`: every operation as a JSON line (time, op, path, offset, length, result, and
//! whether what it did is durable), for reading what a program did just before a power loss.
use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    sync::Mutex,
    time::Instant,
};

use serde::Serialize;

#[derive(Serialize)]
pub struct Record<'a> {
    /// Nanoseconds since the mount started.
    pub time_ns: u64,
    pub op: &'a str,
    pub path: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// `ok` or the errno name.
    pub result: &'a str,
    /// True when the operation made something durable (fsync); false when it only changed
    /// volatile state.
    pub durable: bool,
}

pub struct Tracer {
    started: Instant,
    out: Mutex<BufWriter<File>>,
}

impl Tracer {
    pub fn create(path: &Path) -> std::io::Result<Tracer> {
        Ok(Tracer {
            started: Instant::now(),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn write(&self, record: &Record<'_>) {
        let mut out = self.out.lock().expect("trace poisoned");
        let _ = serde_json::to_writer(&mut *out, record);
        let _ = out.write_all(b"\n");
        // Flushed per line: the trace matters most when faultfs or the machine is killed.
        let _ = out.flush();
    }
}
