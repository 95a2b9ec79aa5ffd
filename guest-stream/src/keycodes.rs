//! Spare keycodes for keysyms the keyboard mapping lacks (a viewer typing é, ß or CJK on a
//! US map). Each binding rewrites the X server's mapping and every X client reloads it, so
//! the pool is small and fixed: at most [`MAX_SPARE`] keycodes that had no keysym at startup,
//! reused least-recently-used first. A keycode that is held down is never rebound (its
//! release would then go to another keysym and the first key would stay stuck); when every
//! spare is held the press is refused.

/// Most keycodes the injector ever rebinds.
pub const MAX_SPARE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    code: u8,
    keysym: Option<u32>,
    last_used: u64,
}

/// The pool of spare keycodes and what each is bound to.
#[derive(Debug, Clone, Default)]
pub struct SpareKeycodes {
    slots: Vec<Slot>,
    tick: u64,
}

/// What [`SpareKeycodes::bind`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Already bound to this keycode.
    Bound(u8),
    /// Map the keysym onto this keycode (the X mapping must be changed), replacing `evicted`.
    Rebind { code: u8, evicted: Option<u32> },
    /// Every spare keycode is held down (or there is none).
    Exhausted,
}

impl SpareKeycodes {
    /// The pool from the keycodes that have no keysym, highest first (where X servers and
    /// xdotool leave room), at most [`MAX_SPARE`].
    pub fn new(unused: impl IntoIterator<Item = u8>) -> Self {
        let mut codes: Vec<u8> = unused.into_iter().collect();
        codes.sort_unstable_by(|a, b| b.cmp(a));
        codes.dedup();
        codes.truncate(MAX_SPARE);
        SpareKeycodes {
            slots: codes
                .into_iter()
                .map(|code| Slot {
                    code,
                    keysym: None,
                    last_used: 0,
                })
                .collect(),
            tick: 0,
        }
    }

    /// The spare keycode bound to `keysym`, if any (no use recorded).
    pub fn lookup(&self, keysym: u32) -> Option<u8> {
        self.slots
            .iter()
            .find(|s| s.keysym == Some(keysym))
            .map(|s| s.code)
    }

    /// The keycode for `keysym`: its current binding, else the least recently used spare
    /// that is not held (`held(code)`). Records the use; a `Rebind` is recorded as done, so
    /// call [`SpareKeycodes::unbind`] if changing the X mapping fails.
    pub fn bind(&mut self, keysym: u32, held: impl Fn(u8) -> bool) -> Binding {
        self.tick += 1;
        let tick = self.tick;
        if let Some(s) = self.slots.iter_mut().find(|s| s.keysym == Some(keysym)) {
            s.last_used = tick;
            return Binding::Bound(s.code);
        }
        let Some(s) = self
            .slots
            .iter_mut()
            .filter(|s| !held(s.code))
            .min_by_key(|s| s.last_used)
        else {
            return Binding::Exhausted;
        };
        let evicted = s.keysym.replace(keysym);
        s.last_used = tick;
        Binding::Rebind {
            code: s.code,
            evicted,
        }
    }

    /// Forgets the binding of `code` (its mapping change failed).
    pub fn unbind(&mut self, code: u8) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.code == code) {
            s.keysym = None;
        }
    }

    /// Keycodes in the pool.
    pub fn codes(&self) -> Vec<u8> {
        self.slots.iter().map(|s| s.code).collect()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_capped_and_takes_the_highest_unused_codes() {
        let p = SpareKeycodes::new(100..=255);
        assert_eq!(p.len(), MAX_SPARE);
        assert_eq!(p.codes()[0], 255);
        assert_eq!(p.codes()[MAX_SPARE - 1], 240);
        assert!(SpareKeycodes::new([]).is_empty());
    }

    #[test]
    fn many_keysyms_reuse_the_pool_least_recently_used_first() {
        let mut p = SpareKeycodes::new([200, 201, 202]);
        let mut used = std::collections::BTreeSet::new();
        for k in 0..500u32 {
            match p.bind(0x100_4e00 + k, |_| false) {
                Binding::Rebind { code, .. } => {
                    used.insert(code);
                }
                other => panic!("keysym {k}: {other:?}"),
            }
        }
        assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![200, 201, 202]);
        // A, B, C bound; using A again makes B the least recent.
        let mut p = SpareKeycodes::new([200, 201, 202]);
        let code = |b: Binding| match b {
            Binding::Bound(c) | Binding::Rebind { code: c, .. } => c,
            Binding::Exhausted => 0,
        };
        let a = code(p.bind(0xa, |_| false));
        let b = code(p.bind(0xb, |_| false));
        code(p.bind(0xc, |_| false));
        assert_eq!(p.bind(0xa, |_| false), Binding::Bound(a));
        assert_eq!(
            p.bind(0xd, |_| false),
            Binding::Rebind {
                code: b,
                evicted: Some(0xb)
            }
        );
        assert_eq!(p.lookup(0xb), None);
        assert_eq!(p.lookup(0xd), Some(b));
    }

    #[test]
    fn held_codes_are_never_rebound() {
        let mut p = SpareKeycodes::new([200, 201]);
        let Binding::Rebind { code: held, .. } = p.bind(0xa, |_| false) else {
            panic!("first bind")
        };
        for k in 0..50u32 {
            match p.bind(0x1000 + k, |c| c == held) {
                Binding::Rebind { code, .. } => assert_ne!(code, held),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(p.lookup(0xa), Some(held));
        assert_eq!(p.bind(0xb, |_| true), Binding::Exhausted);
        p.unbind(held);
        assert_eq!(p.lookup(0xa), None);
    }
}
