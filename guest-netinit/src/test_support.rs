//! Helpers shared by the unit tests: a readable `Write` and an empty report.

use guest_proto::{NetinitReport, Outcome};
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

/// A `Write` whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct Buf(pub Rc<RefCell<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.borrow().clone()).unwrap()
    }
}

pub fn empty_report() -> NetinitReport {
    NetinitReport {
        version: "test".into(),
        outcome: Outcome::Failed,
        started_at_ms: 0,
        duration_us: 0,
        interface: None,
        source: None,
        addresses: vec![],
        gateway: None,
        routes: vec![],
        dns: vec![],
        search_domains: vec![],
        mtu: None,
        mac: None,
        hostname: None,
        modules_loaded: vec![],
        conflicts: vec![],
        steps: vec![],
        probe: None,
        warnings: vec![],
        error: None,
        handoff_path: None,
    }
}
