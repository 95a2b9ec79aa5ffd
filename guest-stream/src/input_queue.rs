//! The bounded queue between the viewers' data channels and the injector thread. A viewer
//! holding the token is only semi-trusted: it can send input faster than XTEST injects it, and
//! the queue must not grow with that. So:
//! - consecutive pointer moves collapse into the latest position, consecutive wheel turns into
//!   their sum (a flood of either never fills the queue);
//! - past [`CAPACITY`] queued events, presses, wheel turns and a move after a non-move are
//!   dropped and counted;
//! - a release whose press was queued is never dropped (a dropped release would leave a key or
//!   button held in the VM); the release of a press that was dropped is dropped with it;
//! - at most [`MAX_HELD_KEYS`] distinct keys count as held at once, so the releases that may
//!   pass the capacity are bounded too: the queue never holds more than [`MAX_QUEUED`] events.

use super::input::InputEvent;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex};

/// Queued events past which new presses, wheel turns and moves are dropped.
pub const CAPACITY: usize = 256;
/// Distinct keys held at once (nobody holds more; a press beyond it is dropped).
pub const MAX_HELD_KEYS: usize = 32;
/// Buttons the input format allows (1..=9).
const MAX_BUTTONS: usize = 9;
/// Hard bound on queued events: the capacity plus one release per held key and button plus
/// one release-all.
pub const MAX_QUEUED: usize = CAPACITY + MAX_HELD_KEYS + MAX_BUTTONS + 1;
/// Largest wheel turn one merged event carries (the injector clicks at most 20 per event).
const MAX_WHEEL: i16 = 20;

/// Counters of the queue (part of `/webrtc/status` → `input`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Events waiting for the injector now.
    pub queued: usize,
    /// Most events ever waiting at once (≤ [`MAX_QUEUED`]).
    pub queued_max: usize,
    /// Events merged into a queued move or wheel turn.
    pub coalesced: u64,
    /// Events discarded because the queue was full (or their press was).
    pub dropped: u64,
}

/// The queue's logic without locking (unit-tested as is).
#[derive(Debug, Default)]
pub struct QueueState {
    events: VecDeque<InputEvent>,
    /// Keys (keysyms) and buttons whose press was queued and not yet released.
    held_keys: BTreeSet<u32>,
    held_buttons: u16,
    stats: QueueStats,
}

impl QueueState {
    /// Queues one event by the rules in the module doc.
    pub fn push(&mut self, e: InputEvent) {
        let room = self.events.len() < CAPACITY;
        let queued = match e {
            InputEvent::Move { .. } => {
                if let Some(InputEvent::Move { .. }) = self.events.back() {
                    self.events.pop_back();
                    self.stats.coalesced += 1;
                    true
                } else {
                    room
                }
            }
            InputEvent::Wheel { dx, dy } => {
                if let Some(InputEvent::Wheel { dx: px, dy: py }) = self.events.back_mut() {
                    let sum = |a: i16, b: i16| a.saturating_add(b).clamp(-MAX_WHEEL, MAX_WHEEL);
                    (*px, *py) = (sum(*px, dx), sum(*py, dy));
                    self.stats.coalesced += 1;
                    return;
                }
                room
            }
            InputEvent::KeyDown(sym) => {
                // A repeat of a held key is as droppable as any press; a new key also needs
                // a free held slot.
                let ok =
                    room && (self.held_keys.contains(&sym) || self.held_keys.len() < MAX_HELD_KEYS);
                if ok {
                    self.held_keys.insert(sym);
                }
                ok
            }
            InputEvent::KeyUp(sym) => self.held_keys.remove(&sym),
            InputEvent::ButtonDown(b) => {
                if room {
                    self.held_buttons |= 1 << b;
                }
                room
            }
            InputEvent::ButtonUp(b) => {
                let held = self.held_buttons & (1 << b) != 0;
                self.held_buttons &= !(1 << b);
                held
            }
            InputEvent::ReleaseAll => {
                self.held_keys.clear();
                self.held_buttons = 0;
                if let Some(InputEvent::ReleaseAll) = self.events.back() {
                    return;
                }
                true
            }
        };
        if queued {
            self.events.push_back(e);
            self.stats.queued_max = self.stats.queued_max.max(self.events.len());
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Everything queued, oldest first.
    pub fn take(&mut self) -> Vec<InputEvent> {
        self.events.drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queued: self.events.len(),
            ..self.stats
        }
    }
}

/// [`QueueState`] shared between the network tasks (producers, never blocked) and the
/// injector thread (the consumer, blocked while there is nothing to do).
#[derive(Debug, Default)]
pub struct InputQueue {
    state: Mutex<(QueueState, bool)>,
    ready: Condvar,
}

impl InputQueue {
    /// Queues events; never blocks on the injector.
    pub fn push_all(&self, events: impl IntoIterator<Item = InputEvent>) {
        if let Ok(mut g) = self.state.lock() {
            for e in events {
                g.0.push(e);
            }
            if !g.0.is_empty() {
                self.ready.notify_one();
            }
        }
    }

    /// Ends [`InputQueue::wait_batch`] once the queue is empty.
    pub fn close(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.1 = true;
            self.ready.notify_all();
        }
    }

    /// Blocks until events are queued and takes them all; None once closed and drained.
    pub fn wait_batch(&self) -> Option<Vec<InputEvent>> {
        let mut g = self.state.lock().ok()?;
        loop {
            if !g.0.is_empty() {
                return Some(g.0.take());
            }
            if g.1 {
                return None;
            }
            g = self.ready.wait(g).ok()?;
        }
    }

    pub fn stats(&self) -> QueueStats {
        self.state.lock().map(|g| g.0.stats()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use InputEvent::*;

    fn pushed(events: &[InputEvent]) -> QueueState {
        let mut q = QueueState::default();
        for &e in events {
            q.push(e);
        }
        q
    }

    #[test]
    fn consecutive_moves_keep_the_latest_and_drags_keep_their_ends() {
        let mut q = pushed(&[
            Move { x: 1, y: 1 },
            Move { x: 2, y: 2 },
            ButtonDown(1),
            Move { x: 3, y: 3 },
            Move { x: 4, y: 4 },
            ButtonUp(1),
        ]);
        assert_eq!(
            q.take(),
            vec![
                Move { x: 2, y: 2 },
                ButtonDown(1),
                Move { x: 4, y: 4 },
                ButtonUp(1)
            ]
        );
        assert_eq!(q.stats().coalesced, 2);
    }

    #[test]
    fn a_move_flood_is_one_event() {
        let mut q = QueueState::default();
        for i in 0..100_000u32 {
            q.push(Move {
                x: (i % 1000) as u16,
                y: 7,
            });
        }
        assert_eq!(q.take(), vec![Move { x: 999, y: 7 }]);
        assert_eq!(q.stats().dropped, 0);
    }

    #[test]
    fn wheel_turns_add_up_to_a_bound() {
        let mut q = pushed(&[Wheel { dx: 0, dy: 1 }, Wheel { dx: 0, dy: 2 }]);
        assert_eq!(q.take(), vec![Wheel { dx: 0, dy: 3 }]);
        let q = pushed(&vec![Wheel { dx: -1, dy: 1 }; 1000]);
        assert_eq!(q.events, [Wheel { dx: -20, dy: 20 }]);
    }

    #[test]
    fn full_queue_drops_presses_but_not_the_releases_of_queued_presses() {
        let mut q = QueueState::default();
        q.push(KeyDown(0xffe3)); // Control_L, queued
        q.push(ButtonDown(1));
        for i in 0..CAPACITY as u32 {
            q.push(KeyDown(0x61 + i % 26));
            q.push(KeyUp(0x61 + i % 26));
        }
        assert_eq!(q.len(), CAPACITY);
        let before = q.stats().dropped;
        q.push(KeyDown(0x7a)); // dropped: full
        q.push(KeyUp(0x7a)); // and its release with it
        q.push(ButtonDown(3));
        q.push(ButtonUp(3));
        q.push(KeyUp(0xffe3)); // kept past the capacity
        q.push(ButtonUp(1));
        assert_eq!(q.stats().dropped, before + 4);
        let evs = q.take();
        assert_eq!(evs.len(), CAPACITY + 2);
        assert_eq!(&evs[CAPACITY..], &[KeyUp(0xffe3), ButtonUp(1)]);
        assert!(!evs.contains(&ButtonDown(3)));
    }

    #[test]
    fn held_keys_are_bounded() {
        let mut q = QueueState::default();
        for k in 0..100 {
            q.push(KeyDown(0x1000_0000 + k));
        }
        assert_eq!(q.len(), MAX_HELD_KEYS);
        assert_eq!(q.stats().dropped, 100 - MAX_HELD_KEYS as u64);
        // A release-all frees the slots.
        q.push(ReleaseAll);
        q.push(ReleaseAll);
        q.push(KeyDown(0x61));
        assert_eq!(q.len(), MAX_HELD_KEYS + 2);
    }

    #[test]
    fn queue_wakes_the_consumer_and_closes() {
        let q = std::sync::Arc::new(InputQueue::default());
        let q2 = std::sync::Arc::clone(&q);
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(b) = q2.wait_batch() {
                got.extend(b);
            }
            got
        });
        q.push_all([KeyDown(0x61), KeyUp(0x61)]);
        q.close();
        assert_eq!(t.join().ok(), Some(vec![KeyDown(0x61), KeyUp(0x61)]));
    }

    fn event() -> impl Strategy<Value = InputEvent> {
        prop_oneof![
            (0u16..4, 0u16..4).prop_map(|(x, y)| Move { x, y }),
            (-2i16..3, -2i16..3).prop_map(|(dx, dy)| Wheel { dx, dy }),
            (0u32..40).prop_map(KeyDown),
            (0u32..40).prop_map(KeyUp),
            (1u8..10).prop_map(ButtonDown),
            (1u8..10).prop_map(ButtonUp),
            Just(ReleaseAll),
        ]
    }

    /// Keys and buttons a stream of events leaves held.
    fn held_after(events: &[InputEvent]) -> (BTreeSet<u32>, BTreeSet<u8>) {
        let (mut k, mut b) = (BTreeSet::new(), BTreeSet::new());
        for e in events {
            match *e {
                KeyDown(s) => {
                    k.insert(s);
                }
                KeyUp(s) => {
                    k.remove(&s);
                }
                ButtonDown(x) => {
                    b.insert(x);
                }
                ButtonUp(x) => {
                    b.remove(&x);
                }
                ReleaseAll => {
                    k.clear();
                    b.clear();
                }
                _ => {}
            }
        }
        (k, b)
    }

    proptest! {
        /// Whatever a viewer sends, and however slowly the injector drains: the queue stays
        /// within its bound, and input that ends with everything released leaves nothing held
        /// in what the injector saw.
        #[test]
        fn bounded_and_never_leaves_a_key_held(
            events in proptest::collection::vec(event(), 0..3000),
            drain_every in 1usize..2000,
        ) {
            let mut q = QueueState::default();
            let mut delivered = Vec::new();
            let mut sent = Vec::new();
            for (i, e) in events.into_iter().enumerate() {
                q.push(e);
                sent.push(e);
                prop_assert!(q.len() <= MAX_QUEUED);
                if i % drain_every == 0 {
                    delivered.extend(q.take());
                }
            }
            // The viewer lets go of everything it pressed.
            let (keys, buttons) = held_after(&sent);
            for k in keys {
                q.push(KeyUp(k));
            }
            for b in buttons {
                q.push(ButtonUp(b));
            }
            prop_assert!(q.len() <= MAX_QUEUED);
            delivered.extend(q.take());
            let (k, b) = held_after(&delivered);
            prop_assert!(k.is_empty() && b.is_empty(), "held {k:?} {b:?}");
        }
    }
}
