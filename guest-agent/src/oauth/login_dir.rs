//! The login directory (see the module doc of [`super`]): beside the state directory,
//! root's, 0750 with the login user's group. It holds the shim's socket (0660), which the
//! CLI's `$BROWSER` reaches through `guest-agent open-url`, and each session's shim
//! scripts (`s/<id>.<seq>/bin`). The state directory itself stays closed to that user.

use super::session::UrlSource;
use super::{shim, user, OAuth};
use guest_proto::oauth::{OpenUrlRequest, OpenUrlResponse};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};

/// The login directory beside `state_dir`: `/run/guest-agent` → `/run/guest-agent-login`.
pub fn login_dir_of(state_dir: &Path) -> PathBuf {
    match (state_dir.parent(), state_dir.file_name()) {
        (Some(parent), Some(name)) => {
            let mut n = name.to_os_string();
            n.push("-login");
            parent.join(n)
        }
        _ => state_dir.join("login"),
    }
}

impl OAuth {
    /// The login directory: root's, 0750 with `u`'s group (0700 when not switching), and
    /// the socket in it 0660 (0600).
    pub(super) fn prepare_login_dir(&self, u: &user::LoginUser) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.login_dir)?;
        let (dmode, smode) = if u.switch {
            (0o750, 0o660)
        } else {
            (0o700, 0o600)
        };
        let gid = u.switch.then_some(u.gid);
        std::os::unix::fs::lchown(&self.login_dir, None, gid)?;
        std::fs::set_permissions(&self.login_dir, std::fs::Permissions::from_mode(dmode))?;
        let sock = self.socket_path();
        if std::fs::symlink_metadata(&sock).is_ok() {
            std::os::unix::fs::lchown(&sock, None, gid)?;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(smode))?;
        }
        Ok(())
    }

    /// Serves the shim's socket until the runtime stops (call inside the runtime). Binding
    /// replaces a stale socket. Only root and the login user's group may connect.
    pub fn listen_shim(self: &Arc<Self>) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = self.socket_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.login_dir)?;
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        match user::LoginUser::resolve(&self.cfg.run_as) {
            Ok(u) => self.prepare_login_dir(&u)?,
            // Said when a login is started; the socket stays root's until then.
            Err(e) => tracing::warn!(error = %e, "OAuth logins cannot start"),
        }
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let _ = me.shim_conn(stream).await;
                });
            }
        });
        Ok(())
    }

    async fn shim_conn(self: &Arc<Self>, stream: tokio::net::UnixStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut line = String::new();
        let mut r = BufReader::new(r.take(shim::MAX_LINE as u64));
        r.read_line(&mut line).await?;
        let resp = match serde_json::from_str::<OpenUrlRequest>(line.trim()) {
            Ok(mut req) => {
                // The shim says `id/generation` (see `shim::SESSION_ENV`).
                let seq = req.session_id.as_deref().and_then(|s| {
                    let (id, seq) = s.rsplit_once('/')?;
                    Some((id.to_string(), seq.parse::<u64>().ok()?))
                });
                if let Some((id, _)) = &seq {
                    req.session_id = Some(id.clone());
                }
                match self
                    .open_url_for(&req, UrlSource::Shim, seq.map(|s| s.1))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => refused(e.to_string()),
                }
            }
            Err(e) => refused(format!("bad request line: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        out.push(b'\n');
        w.write_all(&out).await
    }
}

fn refused(why: String) -> OpenUrlResponse {
    OpenUrlResponse {
        success: false,
        session_id: None,
        opened: false,
        browser_error: Some(why),
    }
}
