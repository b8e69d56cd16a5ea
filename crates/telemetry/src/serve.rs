//! Serving HTTP so that hostile clients cannot hold a service open: `axum::serve` has no timer,
//! so a client that connects and sends nothing, or sends its headers one byte at a time, keeps
//! its connection (and a task) forever, before any authentication. Here every listener has a
//! connection limit (connections past it are closed at once), a deadline for a connection's
//! first bytes and for its request headers, and one for reading each request body.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};

/// Bounds on what a client may hold before it has said anything useful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most; more are closed as they arrive.
    pub max_connections: usize,
    /// A new connection must send its first bytes, and each request its headers, within this.
    pub header_timeout: Duration,
    /// Each request body must be read within this.
    pub body_timeout: Duration,
    /// Request bodies are read to this many bytes at most: one that announces more is refused
    /// (`413`) on its headers, one without a length fails when it gets there. One bound for
    /// every route, whatever limit (if any) each handler's extractor or SDK keeps.
    pub max_body: usize,
}

impl ConnLimits {
    /// What every service listener uses: generous for people and agents, short for idlers.
    pub const DEFAULT: Self = Self {
        max_connections: 1024,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        // gRPC's default message limit: the largest request any front end has a use for.
        max_body: 4 * 1024 * 1024,
    };
}

/// Waits for `stream`'s first bytes for at most `limit`: a connection that says nothing is
/// dropped before any protocol work is spent on it.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.peek(&mut one)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// A connection let in under [`ConnLimits`]: it sent its first bytes in time, and holds one of
/// the listener's places until it is dropped.
#[derive(Debug)]
pub struct Admitted {
    /// The connection, with `TCP_NODELAY` (small responses must not wait for delayed ACKs,
    /// about 40 ms each on loopback).
    pub stream: TcpStream,
    /// Its peer.
    pub peer: SocketAddr,
    /// Its place under the connection limit.
    pub permit: OwnedSemaphorePermit,
}

/// Connections from `listener` that pass `limits`: past the connection limit they are closed
/// on arrival, and one that sends nothing within the header deadline is closed then. The
/// second value counts the places in use (all returned once every admitted one is dropped).
/// The listener closes when the receiver is dropped.
pub fn admit(
    listener: TcpListener,
    limits: ConnLimits,
) -> (mpsc::Receiver<Admitted>, Arc<Semaphore>) {
    let (tx, rx) = mpsc::channel(64);
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let permits = places.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "connection limit reached; closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            tokio::spawn(async move {
                if first_bytes(&stream, limits.header_timeout).await {
                    let _ = tx
                        .send(Admitted {
                            stream,
                            peer,
                            permit,
                        })
                        .await;
                }
            });
        }
    });
    (rx, places)
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then lets open
/// requests finish (for up to the body timeout).
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto::Builder,
        service::TowerToHyperService,
    };
    let router = router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_timeout,
        ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let (mut admitted, places) = admit(listener, limits);
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            next = admitted.recv() => match next {
                Some(c) => c,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let (builder, router, mut stop) = (builder.clone(), router.clone(), stop.clone());
        tokio::spawn(async move {
            let Admitted {
                stream,
                peer,
                permit,
            } = conn;
            let serving = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(router),
            );
            tokio::pin!(serving);
            let ended = tokio::select! {
                r = serving.as_mut() => r,
                _ = stop.changed() => {
                    serving.as_mut().graceful_shutdown();
                    serving.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    // No more connections: the listener closes with the receiver.
    drop(admitted);
    let _ = stopping.send(true);
    // Open requests finish (each connection returns its place), for a bounded time.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.body_timeout, places.acquire_many(all)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads until the server closes the connection, for at most `limit`.
    async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 256];
        let started = Instant::now();
        loop {
            match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf))
                .await
            {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn idlers_and_trickles_are_closed_and_the_limit_holds() {
        let limits = ConnLimits {
            max_connections: 3,
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_secs(5),
            ..ConnLimits::DEFAULT
        };
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_http(l, router, limits, std::future::pending()));
        let connect = || tokio::net::TcpStream::connect(addr);

        // Three silent connections take every slot; a fourth is closed at once (connections
        // are accepted in the order they arrive, so it is always the fourth).
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(connect().await.unwrap());
        }
        let mut over = connect().await.unwrap();
        assert!(
            closed_within(&mut over, Duration::from_millis(250)).await,
            "a connection past the limit was kept"
        );
        // The silent ones are closed once the deadline for their first bytes passes.
        for s in &mut idle {
            assert!(
                closed_within(s, Duration::from_secs(5)).await,
                "an idler was kept"
            );
        }
        // Headers sent a byte at a time are cut off at the header deadline.
        let mut trickle = connect().await.unwrap();
        trickle.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut cut = false;
        for _ in 0..40 {
            if trickle.write_all(b"X").await.is_err() {
                cut = true;
                break;
            }
            let mut b = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut b)).await
            {
                cut = true;
                break;
            }
        }
        assert!(cut, "trickled headers were read for 4 s");
        // And a real request is served.
        let mut s = connect().await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("ok"),
            "{body}"
        );
    }
}
