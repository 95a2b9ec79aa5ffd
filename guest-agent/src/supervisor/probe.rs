//! The HTTP liveness probe: one GET, any 2xx is alive. hyper (already in the tree for
//! axum) over a plain TCP connection; no pooling, a probe is one request.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::time::Duration;

/// One GET of `url` within `timeout`; `Err` says why it failed in words.
pub async fn http_get_ok(url: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, get(url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn get(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let req = hyper::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string());
    let out = match res {
        Ok(res) if res.status().is_success() => {
            let _ = res.into_body().collect().await;
            Ok(())
        }
        Ok(res) => Err(format!("HTTP {}", res.status())),
        Err(e) => Err(e),
    };
    conn.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_and_ok_and_http_errors() {
        // A port that nothing listens on: bind, learn the port, close.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = http_get_ok(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(2),
        )
        .await;
        assert!(e.unwrap_err().contains("refused"));

        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "fine" }))
            .route(
                "/bad",
                axum::routing::get(|| async { (hyper::StatusCode::SERVICE_UNAVAILABLE, "no") }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        http_get_ok(&format!("http://{addr}/ok"), Duration::from_secs(5))
            .await
            .unwrap();
        let e = http_get_ok(&format!("http://{addr}/bad"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("503"), "{e}");
    }
}
