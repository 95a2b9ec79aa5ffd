//! Helpers shared by the unit tests: a readable `Write` and an empty report.

use guest_proto::NetinitReport;
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
    crate::report::blank_report(0)
}
