//! One LISTEN connection per process and channel, shared by every stream
//! that waits for the channel's notifications. A `PgListener` per stream
//! holds one of the pool's connections for as long as the stream is open:
//! a tenant with a few dozen open streams would then hold the whole pool
//! and starve every other tenant's calls. The hub holds one connection,
//! whatever the number of streams, and broadcasts each payload.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::shutdown::Shutdown;

/// The payload subscribers receive when notifications may have been missed
/// (the connection was lost, or a subscriber fell behind): check everything.
pub const ANY: &str = "";

/// A channel's notifications, for any number of subscribers.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<String>,
}

impl Hub {
    /// Listens on `channel` through one connection of `pool` until
    /// `shutdown`, reconnecting with backoff when the connection is lost.
    pub fn start(pool: PgPool, channel: &'static str, shutdown: Shutdown) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        tokio::spawn(listen(pool, channel, tx.clone(), shutdown));
        Arc::new(Self { tx })
    }

    /// A receiver of the payloads notified from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription(self.tx.subscribe())
    }
}

/// One subscriber's notifications.
#[derive(Debug)]
pub struct Subscription(broadcast::Receiver<String>);

impl Subscription {
    /// The next payload; [`ANY`] when some may have been missed. Pending
    /// forever once the hub has stopped (pair it with a timer).
    pub async fn next(&mut self) -> String {
        match self.0.recv().await {
            Ok(payload) => payload,
            Err(broadcast::error::RecvError::Lagged(_)) => ANY.to_string(),
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

async fn listen(
    pool: PgPool,
    channel: &'static str,
    tx: broadcast::Sender<String>,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_triggered() {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            l = connected => l,
            _ = shutdown.wait() => return,
        };
        match &mut listener {
            Ok(listener) => {
                backoff = Duration::from_millis(100);
                // Whatever happened while no one listened.
                let _ = tx.send(ANY.to_string());
                loop {
                    tokio::select! {
                        n = listener.try_recv() => match n {
                            Ok(Some(n)) => {
                                let _ = tx.send(n.payload().to_string());
                            }
                            // The connection was lost; the next receive
                            // reconnects. Notifications may have been missed.
                            Ok(None) => {
                                let _ = tx.send(ANY.to_string());
                            }
                            Err(e) => {
                                tracing::warn!(channel, error = %e, "notification listener interrupted; reconnecting");
                                break;
                            }
                        },
                        _ = shutdown.wait() => return,
                    }
                }
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot listen for notifications yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
