//! A reference ticket checker for the suites (docs/approval.md, "Tickets"): the protocol's
//! other end, `POST {"ticket": "<id>"}` → `{"open": bool}`, on loopback, whose tickets the test
//! opens and closes, and which the test can take down (it then drops every connection without
//! an answer, as an unreachable tracker would look). Tickets it was never told of are closed.
//! It lives in the harness, not in the product: lapse ships no checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct State {
    open: HashMap<String, bool>,
    /// Every ticket asked about, and when.
    asked: Vec<(String, Instant)>,
}

/// A running reference checker; stops when dropped.
#[derive(Debug)]
pub struct TicketChecker {
    port: u16,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TicketChecker {
    /// Listens on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (st, dn) = (state.clone(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (st, dn) = (st.clone(), dn.clone());
                tokio::spawn(async move {
                    if dn.load(Ordering::SeqCst) {
                        // Unreachable: the connection closes without an answer.
                        drop(conn);
                        return;
                    }
                    let _ = serve(conn, &st).await;
                });
            }
        });
        Ok(Self {
            port,
            state,
            down,
            task,
        })
    }

    /// The URL to configure the operator with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/check", self.port)
    }

    /// Opens or closes a ticket.
    pub fn set(&self, ticket: &str, open: bool) {
        lock(&self.state).open.insert(ticket.to_owned(), open);
    }

    /// Takes the checker down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// When each ticket was asked about, in order.
    pub fn asked(&self) -> Vec<(String, Instant)> {
        lock(&self.state).asked.clone()
    }

    /// Writes this checker as `name` into `dir`, the layout of the operator's
    /// `--ticket-checkers-dir` (a mounted Secret: one file per checker holding its URL).
    pub fn write_to(&self, dir: &std::path::Path, name: &str) -> anyhow::Result<()> {
        std::fs::write(dir.join(name), self.url())?;
        Ok(())
    }
}

impl Drop for TicketChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request: headers up to the blank line, a `Content-Length` body, one answer.
async fn serve(mut conn: TcpStream, state: &Mutex<State>) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("closed before the headers ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "headers too long");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: serde_json::Value =
        serde_json::from_slice(buf.get(head_end..head_end + len).unwrap_or_default())
            .unwrap_or_default();
    let (status, answer) = match body.get("ticket").and_then(|t| t.as_str()) {
        Some(ticket) if head.starts_with("post ") => {
            let mut st = lock(state);
            st.asked.push((ticket.to_owned(), Instant::now()));
            let open = st.open.get(ticket).copied().unwrap_or(false);
            ("200 OK", serde_json::json!({ "open": open }).to_string())
        }
        _ => (
            "400 Bad Request",
            r#"{"error":"POST {\"ticket\": \"<id>\"}"}"#.to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    conn.write_all(reply.as_bytes()).await?;
    conn.shutdown().await?;
    Ok(())
}
