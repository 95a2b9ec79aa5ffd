//! Injects viewer input into the X display with the XTEST extension (`xtest_fake_input`).
//! Keysyms are mapped to keycodes through the server's keyboard mapping; a keysym with no
//! keycode is bound to one of a few spare (unused) keycodes first ([`super::keycodes`]).
//! Everything pressed is remembered so it can be released when the viewer goes away (a stuck
//! Ctrl would poison the VM's session).
//!
//! Firefox: core XTEST events (`deviceid` 0) reach it. As far as the X.Org server's xtest.c
//! goes, core fake input is delivered through its "Virtual core XTEST keyboard/pointer"
//! slave devices whatever `deviceid` says (read for extension events only), as xdotool's is.
//! Measured with Debian's Firefox ESR 153 on Xvfb (xorg 21.1):
//! text, Shift, and keysyms bound to spare keycodes on the fly (é € ß) all become a text
//! field's value (`tests/webrtc_firefox_input.rs`).

use super::input::InputEvent;
use super::keycodes::{Binding, SpareKeycodes};
use std::collections::{BTreeSet, HashMap};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, ConnectionExt as _, Window};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot connect to X display: {0}")]
    Connect(#[from] x11rb::errors::ConnectError),
    #[error("X server has no XTEST extension")]
    NoXtest,
    #[error("X request failed: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
    #[error("X connection failed: {0}")]
    Connection(#[from] x11rb::errors::ConnectionError),
}

/// An XTEST connection to the display with the keyboard map it needs.
pub struct Injector {
    conn: RustConnection,
    root: Window,
    min_keycode: u8,
    per_keycode: u8,
    /// The mapping at startup (first two columns): keysym → keycode.
    keymap: HashMap<u32, u8>,
    spare: SpareKeycodes,
    keys_down: BTreeSet<u8>,
    buttons_down: BTreeSet<u8>,
    counters: InjectCounters,
}

/// What the injector did with keysyms (part of `/webrtc/status` → `input`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InjectCounters {
    /// Keycodes available for keysyms the mapping lacks (at most `keycodes::MAX_SPARE`).
    pub spare_keycodes: usize,
    /// Times a spare keycode was (re)bound to a keysym.
    pub remaps: u64,
    /// Key presses refused because every spare keycode was held down.
    pub no_keycode: u64,
}

impl Injector {
    pub fn connect(display: Option<&str>) -> Result<Self, InjectError> {
        let (conn, screen) = x11rb::connect(display)?;
        let root = conn.setup().roots[screen].root;
        if conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Err(InjectError::NoXtest);
        }
        conn.xtest_get_version(2, 2)?.reply()?;
        let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let map = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        let per = map.keysyms_per_keycode.max(1);
        let mut keymap = HashMap::new();
        let mut unused = Vec::new();
        for (i, syms) in map.keysyms.chunks(per as usize).enumerate() {
            let code = min + i as u8;
            if syms.iter().all(|&s| s == 0) {
                unused.push(code);
            }
            for &s in syms.iter().take(2) {
                if s != 0 {
                    keymap.entry(s).or_insert(code);
                }
            }
        }
        let spare = SpareKeycodes::new(unused);
        Ok(Injector {
            conn,
            root,
            min_keycode: min,
            per_keycode: per,
            keymap,
            counters: InjectCounters {
                spare_keycodes: spare.len(),
                ..Default::default()
            },
            spare,
            keys_down: BTreeSet::new(),
            buttons_down: BTreeSet::new(),
        })
    }

    /// The keycode that types `keysym`, binding a spare keycode when none does; None when
    /// every spare is held down.
    fn keycode(&mut self, keysym: u32) -> Result<Option<u8>, InjectError> {
        if let Some(&c) = self.keymap.get(&keysym) {
            return Ok(Some(c));
        }
        let held = &self.keys_down;
        match self.spare.bind(keysym, |c| held.contains(&c)) {
            Binding::Bound(code) => Ok(Some(code)),
            Binding::Exhausted => {
                self.counters.no_keycode += 1;
                Ok(None)
            }
            Binding::Rebind { code, .. } => {
                debug_assert!(code >= self.min_keycode);
                let syms = vec![keysym; self.per_keycode as usize];
                let r = self
                    .conn
                    .change_keyboard_mapping(1, code, self.per_keycode, &syms)
                    .map_err(InjectError::from)
                    .and_then(|c| c.check().map_err(InjectError::from));
                if let Err(e) = r {
                    self.spare.unbind(code);
                    return Err(e);
                }
                self.counters.remaps += 1;
                Ok(Some(code))
            }
        }
    }

    /// The keycode `keysym` was pressed on (startup mapping or its spare binding).
    fn bound_keycode(&self, keysym: u32) -> Option<u8> {
        self.keymap
            .get(&keysym)
            .copied()
            .or_else(|| self.spare.lookup(keysym))
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), InjectError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }

    /// Applies a batch of events and flushes once.
    pub fn apply(&mut self, events: &[InputEvent]) -> Result<(), InjectError> {
        for e in events {
            match *e {
                InputEvent::Move { x, y } => self.fake(
                    xproto::MOTION_NOTIFY_EVENT,
                    0,
                    x.min(i16::MAX as u16) as i16,
                    y.min(i16::MAX as u16) as i16,
                )?,
                InputEvent::Wheel { dx, dy } => {
                    let steps = |n: i16, neg: u8, pos: u8| {
                        let b = if n < 0 { neg } else { pos };
                        std::iter::repeat_n(b, n.unsigned_abs().min(20) as usize)
                    };
                    for b in steps(dy, 4, 5).chain(steps(dx, 6, 7)) {
                        self.fake(xproto::BUTTON_PRESS_EVENT, b, 0, 0)?;
                        self.fake(xproto::BUTTON_RELEASE_EVENT, b, 0, 0)?;
                    }
                }
                InputEvent::KeyDown(sym) => {
                    if let Some(code) = self.keycode(sym)? {
                        self.fake(xproto::KEY_PRESS_EVENT, code, 0, 0)?;
                        self.keys_down.insert(code);
                    } else {
                        tracing::debug!("keysym {sym:#x}: every spare keycode is held down");
                    }
                }
                InputEvent::KeyUp(sym) => {
                    if let Some(code) = self.bound_keycode(sym) {
                        self.fake(xproto::KEY_RELEASE_EVENT, code, 0, 0)?;
                        self.keys_down.remove(&code);
                    }
                }
                InputEvent::ButtonDown(b) => {
                    self.fake(xproto::BUTTON_PRESS_EVENT, b, 0, 0)?;
                    self.buttons_down.insert(b);
                }
                InputEvent::ButtonUp(b) => {
                    self.fake(xproto::BUTTON_RELEASE_EVENT, b, 0, 0)?;
                    self.buttons_down.remove(&b);
                }
                InputEvent::ReleaseAll => self.release_all_unflushed()?,
            }
        }
        self.conn.flush()?;
        Ok(())
    }

    fn release_all_unflushed(&mut self) -> Result<(), InjectError> {
        for code in std::mem::take(&mut self.keys_down) {
            self.fake(xproto::KEY_RELEASE_EVENT, code, 0, 0)?;
        }
        for b in std::mem::take(&mut self.buttons_down) {
            self.fake(xproto::BUTTON_RELEASE_EVENT, b, 0, 0)?;
        }
        Ok(())
    }

    /// Releases every key and button still held (viewer disconnected).
    pub fn release_all(&mut self) -> Result<(), InjectError> {
        self.release_all_unflushed()?;
        self.conn.flush()?;
        Ok(())
    }

    /// Keys and buttons currently held (tests, /health).
    pub fn held(&self) -> (usize, usize) {
        (self.keys_down.len(), self.buttons_down.len())
    }

    pub fn counters(&self) -> InjectCounters {
        self.counters
    }

    /// The spare keycodes this injector may rebind (tests).
    pub fn spare_keycodes(&self) -> Vec<u8> {
        self.spare.codes()
    }
}
