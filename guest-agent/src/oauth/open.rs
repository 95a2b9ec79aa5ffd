//! Opening a login's URL in the VM's browser for one generation of a session: a Firefox
//! already showing the session gets the URL handed over, anything else is (re)started; a
//! browser whose session ended meanwhile is closed rather than stored.

use super::*;

impl OAuth {
    /// Opens `url` for generation `seq` of session `id`, closing a browser it had open;
    /// `awaiting_user` on success. The browser runs as the login user.
    pub(super) async fn open_in_browser(
        &self,
        id: &str,
        seq: u64,
        url: &str,
    ) -> guest_proto::oauth::BrowserInfo {
        let (old, proxy) = match self.lock().get_mut(id).filter(|e| e.seq == seq) {
            Some(e) => (e.browser.take(), e.proxy.clone()),
            None => (None, None),
        };
        let (info, b) = match self.login_user() {
            Ok(user) => {
                let name = format!("{id}.{seq}.browser-{:016x}", fastrand::u64(..));
                let records = self.records_dir();
                let launch = browser::Launch {
                    display: &self.cfg.display,
                    user: &user,
                    home: &self.cfg.home,
                    session: id,
                    proxy: proxy.as_deref(),
                    track: pty::Track {
                        marker: &name,
                        what: "browser",
                        records: Some((&records, &name)),
                    },
                };
                // Firefox takes a new URL of the session into the window it has open.
                match old {
                    Some(b)
                        if firefox::is_firefox(&self.cfg.browser)
                            && firefox::open_in_running(&b, &self.cfg.browser, url, &launch)
                                .await =>
                    {
                        let info = guest_proto::oauth::BrowserInfo {
                            command: self.cfg.browser.first().cloned().unwrap_or_default(),
                            pid: Some(b.group.pid() as u32),
                            error: None,
                        };
                        (info, Some(b))
                    }
                    running => {
                        if let Some(b) = running {
                            b.close(Duration::from_secs(2)).await;
                        }
                        let (info, b) = browser::open(&self.cfg.browser, url, &launch);
                        (info, b.map(Arc::new))
                    }
                }
            }
            Err(e) => {
                if let Some(b) = old {
                    b.close(Duration::from_secs(2)).await;
                }
                let info = guest_proto::oauth::BrowserInfo {
                    command: self.cfg.browser.first().cloned().unwrap_or_default(),
                    pid: None,
                    error: Some(e.to_string()),
                };
                (info, None)
            }
        };
        match &info.error {
            Some(e) => tracing::warn!(session = id, error = %e, "browser did not start"),
            None => {
                tracing::info!(session = id, pid = ?info.pid, "login page opened in the browser")
            }
        }
        let stale = {
            let mut map = self.lock();
            let mut stale = None;
            match map.get_mut(id).filter(|e| e.seq == seq) {
                // The session ended while the browser was starting or being handed the URL
                // (a Firefox hand-over waits up to 15 s): its end closed nothing, so close it here.
                Some(e) if !e.session.is_live() => stale = b,
                Some(e) => {
                    e.session.browser = Some(info.clone());
                    e.opened = Some(url.to_string());
                    e.browser = b;
                    if info.error.is_none() {
                        let _ = e.session.transition(
                            SessionState::AwaitingUser,
                            SystemTime::now(),
                            None,
                        );
                    }
                }
                None => stale = b,
            }
            stale
        };
        if let Some(b) = stale {
            b.close(Duration::from_secs(2)).await;
        }
        self.touched();
        info
    }
}
