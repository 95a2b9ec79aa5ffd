//! Grabbing the X display as BGRA frames (DESIGN.md §6). MIT-SHM (`shm_create_segment`: the
//! server makes the segment and hands us its fd, so no SysV permissions between users matter) is
//! ~15x cheaper than plain `GetImage`, which stays as the fallback for servers without the
//! extension. Frames are returned as tightly packed BGRX rows (`width * 4` bytes each), what
//! a 24/32-bit TrueColor ZPixmap is on little-endian machines.

use std::os::fd::AsRawFd;
use x11rb::connection::Connection;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
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
        };
        match c.setup_shm() {
            Ok(seg) => c.shm = Some(seg),
            Err(e) => tracing::warn!("MIT-SHM unavailable, using plain GetImage: {e}"),
        }
        Ok(c)
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
