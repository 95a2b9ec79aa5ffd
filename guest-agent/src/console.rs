//! Console event lines (`GUESTKIT: {...}`) on stdout: the unit sends stdout to
//! journal+console, so the host sees them on the serial console (failure F4).

use guest_proto::{Component, ConsoleEvent, Event, Level};
use std::io::Write;

/// Prints one event line and flushes (stdout may be a pipe to the supervisor).
pub fn emit(lvl: Level, event: Event) {
    let line = ConsoleEvent::new(Component::Agent, lvl, event).to_line();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
