//! The VM's pointer in the viewer, on real parts: Xvfb, the streamer in-process, headless
//! chromium playing `/viewer`, and an X client of the test's own setting the root window's
//! cursor (core cursors made from pixmaps, shapes known to the pixel) and warping the pointer.
//! - the page gets the shape (size, hotspot, pixels) and the position, makes the shape its
//!   CSS cursor over the video, and draws it as an overlay where the VM's pointer is;
//! - a shape goes to a viewer once: back to a shape it has, only the position naming it
//!   comes, and the streamer fetched each image from X once; a pointer the VM hides shows no
//!   overlay and leaves the page's own pointer a plain arrow;
//! - while the page's own pointer moves the VM's, the overlay is hidden (the CSS cursor is
//!   the pointer); a VM program warping it elsewhere shows the overlay there;
//! - positions come at most about once per frame interval however fast the pointer moves;
//! - nobody watching: no polling, no CPU, no X connection; a reload leaves no subscription;
//! - the login case: a (non-headless) chromium in the VM sets the pointer as its page says,
//!   and the viewer, moving the VM's pointer through the stream, gets the page's own CSS
//!   cursor to the pixel, the link hand and the text I-beam, and none of them twice.
//!
//! Fails (does not skip) when Xvfb or chromium is missing.

mod webrtc_common;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use webrtc_common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::*;
use x11rb::rust_connection::RustConnection;

const W: u16 = 1280;
const H: u16 = 720;

/// One test at a time: each runs a streamer in this process, and the CPU figures read the
/// cursor thread by its name.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test's X client: the VM's programs as far as the pointer goes.
struct Vm {
    conn: RustConnection,
    root: Window,
}

impl Vm {
    fn connect(display: &str) -> Vm {
        let (conn, screen) = x11rb::connect(Some(display)).expect("connect test client");
        let root = conn.setup().roots[screen].root;
        Vm { conn, root }
    }

    /// A core cursor `w` x `h`, hotspot `hot`: the top half red (source bit set), the bottom
    /// half blue (source clear), the last column transparent (mask clear); all transparent
    /// when not `visible` (how programs hide the pointer).
    fn cursor(&self, w: u16, h: u16, hot: (u16, u16), visible: bool) -> u32 {
        let c = &self.conn;
        let (src, mask, cur) = (
            c.generate_id().expect("id"),
            c.generate_id().expect("id"),
            c.generate_id().expect("id"),
        );
        for p in [src, mask] {
            c.create_pixmap(1, p, self.root, w, h).expect("pixmap");
        }
        let gc = c.generate_id().expect("id");
        c.create_gc(gc, src, &CreateGCAux::new().foreground(0))
            .expect("gc");
        // (pixmap, colour, x, width, height) from the top left.
        let fill = |p: u32, colour: u32, x: u16, width: u16, height: u16| {
            c.change_gc(gc, &ChangeGCAux::new().foreground(colour))
                .expect("gc colour");
            let r = Rectangle {
                x: x as i16,
                y: 0,
                width,
                height,
            };
            c.poly_fill_rectangle(p, gc, &[r]).expect("fill");
        };
        fill(src, 0, 0, w, h);
        fill(src, 1, 0, w, h / 2);
        fill(mask, u32::from(visible), 0, w, h);
        fill(mask, 0, w - 1, 1, h);
        c.create_cursor(cur, src, mask, 0xffff, 0, 0, 0, 0, 0xffff, hot.0, hot.1)
            .expect("cursor");
        c.free_gc(gc).expect("free gc");
        for p in [src, mask] {
            c.free_pixmap(p).expect("free pixmap");
        }
        c.flush().expect("flush");
        cur
    }

    /// The root window's cursor (what `xsetroot -cursor` sets): shown wherever no window
    /// under the pointer has its own.
    fn set_root_cursor(&self, cursor: u32) {
        self.conn
            .change_window_attributes(self.root, &ChangeWindowAttributesAux::new().cursor(cursor))
            .expect("set cursor");
        self.conn.flush().expect("flush");
    }

    fn warp(&self, x: i16, y: i16) {
        self.conn
            .warp_pointer(x11rb::NONE, self.root, 0, 0, 0, 0, x, y)
            .expect("warp");
        self.conn.flush().expect("flush");
    }

    fn pointer(&self) -> (i16, i16) {
        let r = self
            .conn
            .query_pointer(self.root)
            .expect("query")
            .reply()
            .expect("pointer");
        (r.root_x, r.root_y)
    }
}

/// What the page knows of the cursor, the overlay as laid out, and where the page's own
/// mapping (scale, letterbox) says the overlay belongs.
const CURSOR_JS: &str = r#"(() => {
  const c = viewer.cursor, sh = viewer.cursorShape(), o = document.getElementById('cursor');
  const r = viewer.video.getBoundingClientRect(), vw = viewer.video.videoWidth, vh = viewer.video.videoHeight;
  const s = Math.min(r.width / vw, r.height / vh);
  const ox = r.left + (r.width - vw * s) / 2, oy = r.top + (r.height - vh * s) / 2;
  return { shapes: c.shapes, positions: c.positions, serial: c.serial, x: c.x, y: c.y, at: c.at,
           overlay: c.overlay, css: viewer.video.style.cursor, s,
           shape: sh && { w: sh.w, h: sh.h, xhot: sh.xhot, yhot: sh.yhot, hidden: sh.hidden,
                          top: sh.pixel(0, 0), bottom: sh.pixel(0, sh.h - 1), clear: sh.pixel(sh.w - 1, 0) },
           box: { display: o.style.display, left: parseFloat(o.style.left), top: parseFloat(o.style.top),
                  width: parseFloat(o.style.width), height: parseFloat(o.style.height),
                  pixel: o.style.display === 'block' ? [...o.getContext('2d').getImageData(0, 0, 1, 1).data] : null },
           want: sh && { left: ox + (c.x - sh.xhot) * s, top: oy + (c.y - sh.yhot) * s,
                         width: sh.w * s, height: sh.h * s } };
})()"#;

fn cursor(b: &mut Browser) -> Value {
    b.eval(CURSOR_JS)
}

fn cursor_stats(addr: SocketAddr) -> Value {
    streamer_status(addr).expect("status")["input"]["cursor"].clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CPU ticks (user + system, 1/100 s) of this process's thread named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    let mut found = false;
    for t in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        found = true;
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: state is 3rd, utime 14th, stime 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    // No such thread would read as "no CPU": the figure must measure something.
    assert!(found, "no thread named {name:?} in this process");
    total
}

#[test]
fn the_viewer_sees_the_vms_pointer() {
    let _one = one_at_a_time();
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let vm = Vm::connect(&x.display);
    let arrow = vm.cursor(16, 16, (3, 5), true);
    vm.set_root_cursor(arrow);
    let streamer = start_streamer(&x.display, W, H);
    assert_eq!(
        cursor_stats(streamer.addr)["active"],
        json!(false),
        "idle before a viewer"
    );
    let mut b = viewer_playing(streamer.addr);

    // (a) Shape and position reach the page.
    vm.warp(300, 200);
    let c = wait_for(
        "the pointer at (300,200) in the page",
        Duration::from_secs(10),
        || {
            let c = cursor(&mut b);
            (c["x"] == json!(300) && c["y"] == json!(200) && c["shape"].is_object()).then_some(c)
        },
    );
    // Warp → the page's position message, on the wall clock both share: the poll interval
    // (33 ms at 30 fps) plus the data channel.
    let mut lat: Vec<i64> = (0..20)
        .map(|i| {
            let t = now_ms();
            vm.warp(301 + i, 200);
            let c = wait_for("a warp in the page", Duration::from_secs(10), || {
                let c = cursor(&mut b);
                (c["x"] == json!(301 + i)).then_some(c)
            });
            c["at"].as_i64().unwrap_or(0) - t
        })
        .collect();
    lat.sort_unstable();
    eprintln!(
        "cursor: warp → page position p50 {} ms, max {} ms (20 warps)",
        lat[10], lat[19]
    );
    assert!(lat[19] < 1000, "{lat:?}");
    vm.warp(300, 200);
    let sh = &c["shape"];
    assert_eq!(
        (sh["w"].clone(), sh["h"].clone()),
        (json!(16), json!(16)),
        "{c}"
    );
    assert_eq!(
        (sh["xhot"].clone(), sh["yhot"].clone()),
        (json!(3), json!(5)),
        "{c}"
    );
    assert_eq!(
        sh["top"],
        json!([255, 0, 0, 255]),
        "source bit set: red; {c}"
    );
    assert_eq!(
        sh["bottom"],
        json!([0, 0, 255, 255]),
        "source bit clear: blue; {c}"
    );
    assert_eq!(sh["clear"][3], json!(0), "mask clear: transparent; {c}");
    let arrow_serial = c["serial"].clone();
    // The local pointer is nowhere near the video: the overlay shows the VM's, in place.
    assert_eq!(c["overlay"], json!(true), "{c}");
    assert_eq!(c["box"]["display"], json!("block"), "{c}");
    for k in ["left", "top", "width", "height"] {
        let (got, want) = (c["box"][k].as_f64(), c["want"][k].as_f64());
        assert!(
            got.zip(want).is_some_and(|(g, w)| (g - w).abs() < 0.5),
            "overlay {k}: {got:?}, want {want:?}; {c}"
        );
    }
    assert_eq!(c["box"]["pixel"], json!([255, 0, 0, 255]), "{c}");
    // The CSS cursor over the video is the VM's shape, hotspot at the video's scale.
    let s = c["s"].as_f64().unwrap_or(0.0);
    let css = c["css"].as_str().unwrap_or("");
    let hot = format!(") {} {}, auto", (3.0 * s).round(), (5.0 * s).round());
    assert!(
        css.starts_with("url(\"data:image/png;base64,") && css.ends_with(&hot),
        "{css}"
    );

    // (b) Another shape, then back: the second shape comes once, the first is not resent.
    let bar = vm.cursor(24, 8, (20, 1), true);
    vm.set_root_cursor(bar);
    let c = wait_for("the bar shape in the page", Duration::from_secs(10), || {
        let c = cursor(&mut b);
        (c["shape"]["w"] == json!(24)).then_some(c)
    });
    assert_eq!(
        (c["shape"]["h"].clone(), c["shape"]["xhot"].clone()),
        (json!(8), json!(20))
    );
    assert_eq!(c["shapes"], json!(2), "{c}");
    vm.set_root_cursor(arrow);
    let c = wait_for("the arrow again", Duration::from_secs(10), || {
        let c = cursor(&mut b);
        (c["serial"] == arrow_serial).then_some(c)
    });
    assert_eq!(c["shapes"], json!(2), "the arrow is not sent twice; {c}");
    assert_eq!(c["shape"]["w"], json!(16), "{c}");
    // A pointer the VM hides: no overlay, and the local pointer stays a plain arrow.
    vm.set_root_cursor(vm.cursor(8, 8, (0, 0), false));
    let c = wait_for(
        "the hidden pointer in the page",
        Duration::from_secs(10),
        || {
            let c = cursor(&mut b);
            (c["shape"]["hidden"] == json!(true)).then_some(c)
        },
    );
    assert_eq!(
        (c["overlay"].clone(), c["css"].clone()),
        (json!(false), json!("default")),
        "{c}"
    );
    vm.set_root_cursor(arrow);
    wait_for("the arrow once more", Duration::from_secs(10), || {
        let c = cursor(&mut b);
        (c["serial"] == arrow_serial && c["overlay"] == json!(true)).then_some(c)
    });
    let st = cursor_stats(streamer.addr);
    assert_eq!(
        (st["images"].clone(), st["shapes_sent"].clone()),
        (json!(3), json!(3)),
        "{st}"
    );

    // (c) The page's own pointer moves the VM's: no overlay over it; a VM program moving
    // the pointer elsewhere shows the overlay there.
    let (vx, vy) = (500, 400);
    let p = b.eval(&format!(
        "(() => {{ const r = viewer.video.getBoundingClientRect(), vw = viewer.video.videoWidth, vh = viewer.video.videoHeight;
           const s = Math.min(r.width / vw, r.height / vh);
           return [r.left + (r.width - vw * s) / 2 + {vx} * s + s / 2, r.top + (r.height - vh * s) / 2 + {vy} * s + s / 2]; }})()"
    ));
    b.call(
        "Input.dispatchMouseEvent",
        json!({"type": "mouseMoved", "x": p[0], "y": p[1]}),
    );
    // (The page's mapping rounds to whole pixels: within one of the point aimed at.)
    let (px, py) = wait_for(
        "the VM's pointer under the page's",
        Duration::from_secs(10),
        || {
            let (x, y) = vm.pointer();
            ((x - 500).abs() <= 1 && (y - 400).abs() <= 1).then_some((x, y))
        },
    );
    let c = wait_for("the page told where it is", Duration::from_secs(10), || {
        let c = cursor(&mut b);
        (c["x"] == json!(px) && c["y"] == json!(py)).then_some(c)
    });
    assert_eq!(
        c["overlay"],
        json!(false),
        "the CSS cursor is the pointer here; {c}"
    );
    assert_eq!(c["box"]["display"], json!("none"), "{c}");
    std::thread::sleep(Duration::from_millis(400));
    vm.warp(100, 100);
    let c = wait_for(
        "the overlay where a VM program put the pointer",
        Duration::from_secs(10),
        || {
            let c = cursor(&mut b);
            (c["x"] == json!(100) && c["overlay"] == json!(true)).then_some(c)
        },
    );
    let want = c["want"]["left"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (c["box"]["left"].as_f64().unwrap_or(0.0) - want).abs() < 0.5,
        "{c}"
    );

    // (d) A pointer moving fast: positions come about once per frame interval, not per move.
    let (n0, ticks0, t0) = (
        cursor(&mut b)["positions"].as_u64().unwrap_or(0),
        thread_ticks("webrtc-cursor"),
        Instant::now(),
    );
    let mut moves = 0u32;
    while t0.elapsed() < Duration::from_secs(3) {
        vm.warp(200 + (moves % 400) as i16, 300);
        moves += 1;
        std::thread::sleep(Duration::from_millis(4));
    }
    std::thread::sleep(Duration::from_millis(200));
    let secs = t0.elapsed().as_secs_f64();
    let n = cursor(&mut b)["positions"].as_u64().unwrap_or(0) - n0;
    let busy = thread_ticks("webrtc-cursor") - ticks0;
    let rate = n as f64 / secs;
    eprintln!(
        "cursor: {moves} warps in {secs:.1} s → {n} position messages ({rate:.1}/s); \
         cursor thread CPU {:.1} % of a core while moving",
        busy as f64 / secs
    );
    assert!(
        (10.0..=40.0).contains(&rate),
        "{rate}/s for a 30 fps stream"
    );
    // Watched but still: a poll per frame interval, nothing sent.
    let (n0, ticks0) = (
        cursor(&mut b)["positions"].clone(),
        thread_ticks("webrtc-cursor"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cursor(&mut b)["positions"], n0, "nothing sent while still");
    eprintln!(
        "cursor: watched, still, 3 s: {} CPU ticks (1/100 s) for the cursor thread",
        thread_ticks("webrtc-cursor") - ticks0
    );

    // (e) Nobody watching: the thread goes idle, polls nothing, costs nothing.
    b.eval("viewer.send(viewer.enc.cursorWatch(0)); true");
    let st = wait_for("the cursor thread idle", Duration::from_secs(5), || {
        let st = cursor_stats(streamer.addr);
        (st["viewers"] == json!(0) && st["active"] == json!(false)).then_some(st)
    });
    let ticks = thread_ticks("webrtc-cursor");
    vm.warp(10, 10);
    std::thread::sleep(Duration::from_secs(3));
    let idle = cursor_stats(streamer.addr);
    assert_eq!(idle["polls"], st["polls"], "no polling while idle: {idle}");
    assert_eq!(thread_ticks("webrtc-cursor"), ticks, "no CPU while idle");
    eprintln!("cursor: idle 3 s: 0 polls, 0 CPU ticks; stats {idle}");
    // Watching again: a new connection, so the shape is sent again, and where it is now.
    let before = cursor(&mut b)["shapes"].as_u64().unwrap_or(0);
    b.eval("viewer.send(viewer.enc.cursorWatch(1)); true");
    let c = wait_for("the cursor again", Duration::from_secs(10), || {
        let c = cursor(&mut b);
        (c["x"] == json!(10) && c["shapes"].as_u64() > Some(before)).then_some(c)
    });
    assert_eq!(c["serial"], arrow_serial, "{c}");

    // (f) A reload: the old page's subscription ends with its channel, the new page has one.
    b.eval("location.reload(), true");
    std::thread::sleep(Duration::from_millis(500));
    wait_for("the reloaded viewer", Duration::from_secs(30), || {
        (b.try_eval("typeof viewer") == Some(json!("object"))).then_some(())
    });
    wait_for("the new page's cursor", Duration::from_secs(60), || {
        b.try_eval("viewer.cursor.positions > 0")
            .filter(|v| *v == json!(true))
    });
    let st = wait_for(
        "one subscription after the reload",
        Duration::from_secs(30),
        || {
            let st = cursor_stats(streamer.addr);
            (st["viewers"] == json!(1)).then_some(st)
        },
    );
    assert_eq!(st["last_error"], Value::Null, "{st}");
}

/// A page for a browser in the VM: a box with a custom CSS cursor (a red 20x20 square,
/// hotspot 4,6, made in a canvas), a link (hand) and a textarea (I-beam), side by side.
const VM_PAGE: &str = r##"<!doctype html><html><body style="margin:0">
<div id="own" style="position:absolute;left:0;top:0;width:400px;height:100%"></div>
<a href="#" style="position:absolute;left:440px;top:0;width:400px;height:100%;display:block;background:#eef">a link</a>
<textarea style="position:absolute;left:880px;top:0;width:400px;height:100%;border:0"></textarea>
<script>
const c = document.createElement('canvas'); c.width = 20; c.height = 20;
const g = c.getContext('2d'); g.fillStyle = '#f00'; g.fillRect(0, 0, 20, 20);
document.getElementById('own').style.cursor = 'url(' + c.toDataURL() + ') 4 6, crosshair';
fetch('/loaded').catch(() => {});
</script></body></html>"##;

/// Serves [`VM_PAGE`]; the flag turns true once the page asked for `/loaded`.
fn vm_page_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let loaded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = loaded.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let mut first = String::new();
            let Ok(c) = conn.try_clone() else { continue };
            if BufReader::new(c).read_line(&mut first).is_err() {
                continue;
            }
            let path = first.split(' ').nth(1).unwrap_or("");
            if path == "/loaded" {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let body = if path == "/" { VM_PAGE } else { "" };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, loaded)
}

/// The login case: a browser in the VM sets the pointer as the page under it says, and the
/// viewer, moving the VM's pointer through the stream, gets each shape: a page's own cursor
/// image to the pixel, the link hand, the text I-beam, and none twice.
#[test]
fn a_browser_in_the_vm_changes_the_pointer_the_viewer_sees() {
    let _one = one_at_a_time();
    need("chromium", "chromium");
    let x = start_xvfb(W, H);
    let (page, loaded) = vm_page_server();
    let _vm_browser = start_vm_chromium(&x.display, &format!("http://{page}/"), W, H);
    wait_for(
        "the VM's browser to load the page",
        Duration::from_secs(60),
        || {
            loaded
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        },
    );
    let streamer = start_streamer(&x.display, W, H);
    let mut b = viewer_playing(streamer.addr);
    wait_for("the input data channel", Duration::from_secs(30), || {
        (b.eval("viewer.dc.readyState") == json!("open")).then_some(())
    });

    // Moves through the stream (as the viewer's mouse would) until the page shows a shape
    // other than `not` at that spot; its serial and shape.
    let over = |b: &mut Browser, x: u16, not: &[Value]| -> Value {
        wait_for(
            &format!("a new shape at ({x}, 360)"),
            Duration::from_secs(30),
            || {
                b.eval(&format!("viewer.send(viewer.enc.move({x}, 360)); true"));
                std::thread::sleep(Duration::from_millis(100));
                let c = cursor(b);
                (c["x"] == json!(x) && !not.contains(&c["serial"]) && c["shape"].is_object())
                    .then_some(c)
            },
        )
    };
    let own = over(&mut b, 200, &[]);
    let sh = &own["shape"];
    assert_eq!(
        [&sh["w"], &sh["h"], &sh["xhot"], &sh["yhot"]],
        [&json!(20), &json!(20), &json!(4), &json!(6)],
        "the page's own cursor image; {own}"
    );
    assert_eq!(sh["top"], json!([255, 0, 0, 255]), "{own}");
    let hand = over(&mut b, 640, &[own["serial"].clone()]);
    let beam = over(
        &mut b,
        1000,
        &[own["serial"].clone(), hand["serial"].clone()],
    );
    eprintln!(
        "cursor: the VM's chromium: own {}x{}, link {}x{} hot {},{}, text {}x{} hot {},{}",
        sh["w"],
        sh["h"],
        hand["shape"]["w"],
        hand["shape"]["h"],
        hand["shape"]["xhot"],
        hand["shape"]["yhot"],
        beam["shape"]["w"],
        beam["shape"]["h"],
        beam["shape"]["xhot"],
        beam["shape"]["yhot"]
    );
    // Back over the box: its serial again, not sent again.
    let shapes = beam["shapes"].clone();
    let again = wait_for("the page's cursor again", Duration::from_secs(30), || {
        b.eval("viewer.send(viewer.enc.move(200, 360)); true");
        std::thread::sleep(Duration::from_millis(100));
        let c = cursor(&mut b);
        (c["serial"] == own["serial"]).then_some(c)
    });
    assert_eq!(again["shapes"], shapes, "{again}");
    let st = cursor_stats(streamer.addr);
    assert_eq!(st["last_error"], Value::Null, "{st}");
}
