//! Grabbing the X display as BGRA frames (DESIGN.md §6). MIT-SHM (`shm_create_segment`: the
//! server makes the segment and hands us its fd, so no SysV permissions between users matter) is
//! ~15x cheaper than plain `GetImage`, which stays as the fallback for servers without the
//! extension. Frames are returned as tightly packed BGRX rows (`width * 4` bytes each), what
//! a 24/32-bit TrueColor ZPixmap is on little-endian machines.
//!
//! Changes are learnt from the X DAMAGE extension (one `DamageNotify` each time the screen
//! goes from unchanged to changed, re-armed by `DamageSubtract` before each grab), so the
//! pipeline grabs as soon as something was drawn instead of at the next tick of a clock
//! (issue 15 item 2); a server without DAMAGE falls back to ticks.

use std::os::fd::AsRawFd;
use x11rb::connection::Connection;
use x11rb::protocol::damage::{ConnectionExt as _, ReportLevel};
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot connect to X display {display:?}: {source}")]
    Connect {
        display: String,
        source: x11rb::errors::ConnectError,
    },
    #[error(
        "X display {display:?} is {screen_w}x{screen_h}, smaller than the configured {width}x{height}"
    )]
    TooSmall {
        display: String,
        screen_w: u16,
        screen_h: u16,
        width: u16,
        height: u16,
    },
    #[error("X display has {bpp} bits per pixel at depth {depth}; only 32-bit BGRX is supported")]
    Format { depth: u8, bpp: u8 },
    #[error("X request failed: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
    #[error("X connection failed: {0}")]
    Connection(#[from] x11rb::errors::ConnectionError),
    #[error("X id allocation failed: {0}")]
    Id(#[from] x11rb::errors::ReplyOrIdError),
    #[error("GetImage returned {got} bytes, expected {want}")]
    ShortImage { got: usize, want: usize },
}

/// A mapped MIT-SHM segment attached on the server side.
struct ShmSegment {
    seg: u32,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the segment and only read through &mut Capturer.
unsafe impl Send for ShmSegment {}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap of exactly this length.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A connection to the display that grabs the top-left `width` x `height` of the root window.
pub struct Capturer {
    conn: RustConnection,
    root: Window,
    width: u16,
    height: u16,
    shm: Option<ShmSegment>,
    buf: Vec<u8>,
    /// The DAMAGE object on the root window, when the server has the extension.
    damage: Option<u32>,
    /// The server timestamp (ms) of the report the last `wait_change` returned for.
    damaged_at: Option<u32>,
    /// Grab on a clock even with DAMAGE (`--capture clock`, the benchmark's baseline): reports
    /// are still read, for the latency figures, but never waited for.
    clock: bool,
}

/// CLOCK_MONOTONIC in ms, truncated like X server timestamps (Xorg and Xvfb stamp events
/// with the monotonic clock).
fn monotonic_ms() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

impl Capturer {
    /// Connects to `display` (None: `$DISPLAY`) and sets up MIT-SHM when the server offers it.
    pub fn connect(display: Option<&str>, width: u16, height: u16) -> Result<Self, CaptureError> {
        let name = display
            .map(str::to_string)
            .or_else(|| std::env::var("DISPLAY").ok())
            .unwrap_or_default();
        let (conn, screen_num) =
            x11rb::connect(display).map_err(|source| CaptureError::Connect {
                display: name.clone(),
                source,
            })?;
        let screen = &conn.setup().roots[screen_num];
        let (root, sw, sh, depth) = (
            screen.root,
            screen.width_in_pixels,
            screen.height_in_pixels,
            screen.root_depth,
        );
        if sw < width || sh < height {
            return Err(CaptureError::TooSmall {
                display: name,
                screen_w: sw,
                screen_h: sh,
                width,
                height,
            });
        }
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        if bpp != 32 {
            return Err(CaptureError::Format { depth, bpp });
        }
        let mut c = Capturer {
            conn,
            root,
            width,
            height,
            shm: None,
            buf: Vec::new(),
            damage: None,
            damaged_at: None,
            clock: false,
        };
        match c.setup_shm() {
            Ok(seg) => c.shm = Some(seg),
            Err(e) => tracing::warn!("MIT-SHM unavailable, using plain GetImage: {e}"),
        }
        match c.setup_damage() {
            Ok(d) => c.damage = Some(d),
            Err(e) => tracing::warn!("DAMAGE unavailable, capturing on a clock: {e}"),
        }
        Ok(c)
    }

    fn setup_damage(&self) -> Result<u32, CaptureError> {
        self.conn.damage_query_version(1, 1)?.reply()?;
        let d = self.conn.generate_id()?;
        self.conn
            .damage_create(d, self.root, ReportLevel::NON_EMPTY)?
            .check()?;
        Ok(d)
    }

    /// How long ago the change the last [`Capturer::wait_change`] reported was drawn, by the
    /// server's clock; `None` without DAMAGE or when the server's clock is not ours.
    pub fn damage_age(&self) -> Option<std::time::Duration> {
        let age = monotonic_ms().wrapping_sub(self.damaged_at?);
        (age < 10_000).then(|| std::time::Duration::from_millis(u64::from(age)))
    }

    /// Whether changes come from DAMAGE (else [`Capturer::wait_change`] is a clock).
    pub fn uses_damage(&self) -> bool {
        self.damage.is_some() && !self.clock
    }

    /// Grab on the caller's clock instead of waiting for reports (see the `clock` field).
    pub fn set_clock(&mut self, clock: bool) {
        self.clock = clock;
    }

    /// Waits at most `timeout` for the screen to change; `true` when it did (or when the
    /// server has no DAMAGE and the caller must look). Re-arms the report, so a change drawn
    /// from now on is announced again; the grab that follows sees everything before it.
    pub fn wait_change(&mut self, timeout: std::time::Duration) -> Result<bool, CaptureError> {
        let Some(damage) = self.damage else {
            return Ok(true);
        };
        self.damaged_at = None;
        let timeout = if self.clock {
            std::time::Duration::ZERO
        } else {
            timeout
        };
        let end = std::time::Instant::now() + timeout;
        loop {
            let mut changed = false;
            while let Some(ev) = self.conn.poll_for_event()? {
                if let Event::DamageNotify(n) = ev {
                    if !changed {
                        self.damaged_at = Some(n.timestamp);
                    }
                    changed = true;
                }
            }
            if changed {
                self.conn.damage_subtract(damage, 0u32, 0u32)?;
                self.conn.flush()?;
                return Ok(true);
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(self.clock);
            }
            let mut pfd = libc::pollfd {
                fd: self.conn.stream().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    fn setup_shm(&self) -> Result<ShmSegment, CaptureError> {
        self.conn.shm_query_version()?.reply()?;
        let len = self.frame_len();
        let seg = self.conn.generate_id()?;
        let reply = self
            .conn
            .shm_create_segment(seg, len as u32, false)?
            .reply()?;
        // SAFETY: mapping a fresh shared-memory fd the server created for `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                reply.shm_fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let _ = self.conn.shm_detach(seg);
            return Err(CaptureError::ShortImage { got: 0, want: len });
        }
        Ok(ShmSegment {
            seg,
            ptr: ptr.cast(),
            len,
        })
    }

    /// Bytes in one frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn height(&self) -> u16 {
        self.height
    }

    /// Whether frames come through MIT-SHM.
    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// Grabs one frame (BGRX, `width * 4` bytes per row).
    pub fn capture(&mut self) -> Result<&[u8], CaptureError> {
        let want = self.frame_len();
        if let Some(shm) = &self.shm {
            self.conn
                .shm_get_image(
                    self.root,
                    0,
                    0,
                    self.width,
                    self.height,
                    !0,
                    ImageFormat::Z_PIXMAP.into(),
                    shm.seg,
                    0,
                )?
                .reply()?;
            // SAFETY: the server finished writing (we waited for the reply); len == want.
            return Ok(unsafe { std::slice::from_raw_parts(shm.ptr, want) });
        }
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                0,
                0,
                self.width,
                self.height,
                !0,
            )?
            .reply()?;
        if reply.data.len() < want {
            return Err(CaptureError::ShortImage {
                got: reply.data.len(),
                want,
            });
        }
        self.buf = reply.data;
        self.buf.truncate(want);
        Ok(&self.buf)
    }
}

impl Drop for Capturer {
    fn drop(&mut self) {
        if let Some(shm) = &self.shm {
            let _ = self.conn.shm_detach(shm.seg);
            let _ = self.conn.flush();
        }
    }
}
