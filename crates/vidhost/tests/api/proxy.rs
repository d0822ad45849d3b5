//! A small TCP proxy that injects faults between a client and a server:
//! it can throttle the client→server direction, cut one connection once a
//! given number of bytes went through it, and play dead (`set_hung`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Upstream bytes per second per connection (0: unlimited).
    pub throttle_bps: u64,
    /// Cut the first connection that carries more than this many bytes upstream.
    pub drop_once_after: Option<u64>,
}

pub struct Proxy {
    pub url: String,
    drops: Arc<AtomicUsize>,
    hung: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Proxies to `target` (`http://host:port`).
    pub async fn start(target: &str, faults: Faults) -> Proxy {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let drops = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(faults.drop_once_after.is_some()));
        let d = drops.clone();
        let hung = Arc::new(AtomicBool::new(false));
        let h = hung.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, armed, drops) = (target.clone(), armed.clone(), d.clone());
                let hung = h.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    let mut poisoned = false;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Hung: what the client sends goes nowhere and no
                        // answer comes; after the hang the connection is
                        // closed, so nothing sent during it arrives late.
                        if hung.load(Ordering::SeqCst) {
                            poisoned = true;
                            continue;
                        }
                        if poisoned {
                            break;
                        }
                        total += n as u64;
                        if let Some(limit) = faults.drop_once_after {
                            if total > limit && armed.swap(false, Ordering::SeqCst) {
                                drops.fetch_add(1, Ordering::SeqCst);
                                down.abort();
                                return; // both halves drop: the connection is cut mid-request
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if faults.throttle_bps > 0 {
                            tokio::time::sleep(Duration::from_secs_f64(
                                n as f64 / faults.throttle_bps as f64,
                            ))
                            .await;
                        }
                    }
                    let _ = sw.shutdown().await;
                    let _ = down.await;
                });
            }
        });
        Proxy {
            url,
            drops,
            hung,
            task,
        }
    }

    /// Stops (or resumes) passing anything on: the server looks alive (it
    /// accepts connections) but never answers.
    pub fn set_hung(&self, hung: bool) {
        self.hung.store(hung, Ordering::SeqCst);
    }

    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
