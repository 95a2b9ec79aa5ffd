//! The X side of the clipboard thread: our window, the selections we own with the latest
//! text, and reads of the VM's CLIPBOARD in progress (ICCCM's requests and notifications).
//! [`super`] runs it in its own thread and hands it the viewers' requests.

use super::note;
use super::{ClipboardStats, READ_TIMEOUT};
use crate::input::{ClipboardReply, MAX_CLIPBOARD};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::oneshot;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    self, Atom, AtomEnum, ConnectionExt as _, CreateWindowAux, EventMask, PropMode,
    SelectionNotifyEvent, SelectionRequestEvent, Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{CURRENT_TIME, NONE};

x11rb::atom_manager! {
    Atoms: AtomsCookie {
        CLIPBOARD,
        UTF8_STRING,
        TARGETS,
        TEXT,
        INCR,
        GUESTKIT_CLIPBOARD,
    }
}

/// Text of a STRING property (ISO 8859-1).
fn latin1_decode(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Text as STRING (ISO 8859-1), `?` for what Latin-1 lacks.
fn latin1_encode(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// A read of CLIPBOARD waiting for its owner's `SelectionNotify`.
pub(super) struct Pending {
    replies: Vec<oneshot::Sender<ClipboardReply>>,
    pub(super) deadline: Instant,
    target: Atom,
}

/// The thread's X state: our window, the text we own and a read in progress.
pub(super) struct Owner {
    pub(super) conn: RustConnection,
    win: Window,
    atoms: Atoms,
    text: Option<String>,
    /// We own CLIPBOARD, PRIMARY.
    pub(super) owns: [bool; 2],
    pub(super) pending: Option<Pending>,
}

pub(super) type XResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Owner {
    pub(super) fn connect(display: Option<&str>) -> XResult<Owner> {
        let (conn, screen) = x11rb::connect(display)?;
        let root = conn.setup().roots[screen].root;
        let atoms = Atoms::new(&conn)?.reply()?;
        let win = conn.generate_id()?;
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            win,
            root,
            -10,
            -10,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new(),
        )?;
        conn.flush()?;
        Ok(Owner {
            conn,
            win,
            atoms,
            text: None,
            owns: [false; 2],
            pending: None,
        })
    }

    pub(super) fn set(&mut self, text: String) -> XResult<bool> {
        self.text = Some(text);
        for sel in [self.atoms.CLIPBOARD, AtomEnum::PRIMARY.into()] {
            self.conn.set_selection_owner(self.win, sel, CURRENT_TIME)?;
        }
        let owner = self
            .conn
            .get_selection_owner(self.atoms.CLIPBOARD)?
            .reply()?;
        self.owns = [owner.owner == self.win; 2];
        Ok(owner.owner == self.win)
    }

    /// Starts (or joins) a read of CLIPBOARD; answers at once when we own it or nobody does.
    pub(super) fn get(&mut self, reply: oneshot::Sender<ClipboardReply>) -> XResult<()> {
        if self.owns[0] {
            let t = self.text.clone().unwrap_or_default();
            let _ = reply.send(ClipboardReply::Text(t));
            return Ok(());
        }
        if let Some(p) = &mut self.pending {
            p.replies.push(reply);
            return Ok(());
        }
        let owner = self
            .conn
            .get_selection_owner(self.atoms.CLIPBOARD)?
            .reply()?;
        if owner.owner == NONE {
            let _ = reply.send(ClipboardReply::Empty);
            return Ok(());
        }
        self.convert(self.atoms.UTF8_STRING)?;
        self.pending = Some(Pending {
            replies: vec![reply],
            deadline: Instant::now() + READ_TIMEOUT,
            target: self.atoms.UTF8_STRING,
        });
        Ok(())
    }

    fn convert(&self, target: Atom) -> XResult<()> {
        self.conn.convert_selection(
            self.win,
            self.atoms.CLIPBOARD,
            target,
            self.atoms.GUESTKIT_CLIPBOARD,
            CURRENT_TIME,
        )?;
        self.conn.flush()?;
        Ok(())
    }

    pub(super) fn finish(&mut self, r: ClipboardReply) {
        if let Some(p) = self.pending.take() {
            for tx in p.replies {
                let _ = tx.send(r.clone());
            }
        }
    }

    /// The owner's answer to our read.
    fn notified(&mut self, ev: &SelectionNotifyEvent) -> XResult<()> {
        if ev.requestor != self.win || ev.selection != self.atoms.CLIPBOARD {
            return Ok(());
        }
        let Some(target) = self.pending.as_ref().map(|p| p.target) else {
            // A late answer to a read that timed out: just drop its property.
            self.conn
                .delete_property(self.win, self.atoms.GUESTKIT_CLIPBOARD)?;
            return Ok(());
        };
        if ev.property == NONE {
            if target == self.atoms.UTF8_STRING {
                self.convert(AtomEnum::STRING.into())?;
                if let Some(p) = &mut self.pending {
                    p.target = AtomEnum::STRING.into();
                }
            } else {
                self.finish(ClipboardReply::Empty); // the owner has no text
            }
            return Ok(());
        }
        let prop = self
            .conn
            .get_property(
                true,
                self.win,
                ev.property,
                AtomEnum::ANY,
                0,
                (MAX_CLIPBOARD / 4 + 1) as u32,
            )?
            .reply()?;
        let r = if prop.type_ == self.atoms.INCR
            || prop.bytes_after > 0
            || prop.value.len() > MAX_CLIPBOARD
        {
            ClipboardReply::TooLarge
        } else if prop.type_ == u32::from(AtomEnum::STRING) {
            ClipboardReply::Text(latin1_decode(&prop.value))
        } else {
            ClipboardReply::Text(String::from_utf8_lossy(&prop.value).into_owned())
        };
        self.finish(r);
        Ok(())
    }

    /// A VM program asks for our text.
    fn request(&mut self, req: &SelectionRequestEvent) -> XResult<bool> {
        let a = &self.atoms;
        let which = if req.selection == a.CLIPBOARD {
            Some(0)
        } else if req.selection == u32::from(AtomEnum::PRIMARY) {
            Some(1)
        } else {
            None
        };
        let ours = req.owner == self.win && which.is_some_and(|i| self.owns[i]);
        // Obsolete requesters give no property: the target names it (ICCCM).
        let property = if req.property == NONE {
            req.target
        } else {
            req.property
        };
        let text = self.text.as_deref().filter(|_| ours);
        let served = match text {
            None => false,
            Some(_) if req.target == a.TARGETS => {
                let targets = [a.TARGETS, a.UTF8_STRING, a.TEXT, AtomEnum::STRING.into()];
                self.conn.change_property32(
                    PropMode::REPLACE,
                    req.requestor,
                    property,
                    AtomEnum::ATOM,
                    &targets,
                )?;
                true
            }
            Some(t) if req.target == a.UTF8_STRING || req.target == a.TEXT => {
                self.conn.change_property8(
                    PropMode::REPLACE,
                    req.requestor,
                    property,
                    a.UTF8_STRING,
                    t.as_bytes(),
                )?;
                true
            }
            Some(t) if req.target == u32::from(AtomEnum::STRING) => {
                self.conn.change_property8(
                    PropMode::REPLACE,
                    req.requestor,
                    property,
                    AtomEnum::STRING,
                    &latin1_encode(t),
                )?;
                true
            }
            Some(_) => false,
        };
        let notify = SelectionNotifyEvent {
            response_type: xproto::SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: req.time,
            requestor: req.requestor,
            selection: req.selection,
            target: req.target,
            property: if served { property } else { NONE },
        };
        self.conn
            .send_event(false, req.requestor, EventMask::NO_EVENT, notify)?;
        self.conn.flush()?;
        Ok(served)
    }

    /// Handles one X event; errors of our own requests (a requester window gone) are
    /// reported, not fatal.
    pub(super) fn event(&mut self, ev: Event, stats: &Mutex<ClipboardStats>) -> XResult<()> {
        match ev {
            Event::SelectionRequest(req) => {
                let served = self.request(&req)?;
                if let Ok(mut s) = stats.lock() {
                    if served {
                        s.served += 1;
                    } else {
                        s.refused += 1;
                    }
                }
            }
            Event::SelectionClear(c) => {
                if c.selection == self.atoms.CLIPBOARD {
                    self.owns[0] = false;
                } else if c.selection == u32::from(AtomEnum::PRIMARY) {
                    self.owns[1] = false;
                }
                if self.owns == [false; 2] {
                    self.text = None;
                }
            }
            Event::SelectionNotify(n) => self.notified(&n)?,
            Event::Error(e) => note(stats, format!("X error: {e:?}")),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_both_ways() {
        assert_eq!(latin1_decode(&[0x61, 0xe9, 0xff]), "aéÿ");
        assert_eq!(latin1_encode("aé€🔑"), [0x61, 0xe9, b'?', b'?']);
    }
}
