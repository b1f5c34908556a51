//! The server's background task: heartbeats on one timer shared by every connection, and sweeps
//! of expired history and resume records on their own schedule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use crate::history::LocalHistory;
use crate::hub::Hub;
use crate::sync::lock;

/// How often expired messages and resume records are dropped, whatever the heartbeat.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps one background task running for a server: started by the first connect made on a tokio
/// runtime, and started again on the next one's runtime if the runtime it ran on ended.
#[derive(Debug)]
pub(crate) struct Upkeep {
    heartbeat: Duration,
    /// Whether the task runs: set when it is spawned, cleared when it is dropped (its runtime
    /// shut down), so a connect checks it with one load.
    running: Arc<AtomicBool>,
    starting: Mutex<()>,
}

/// Clears the running flag when the task ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Upkeep {
    pub(crate) fn new(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            running: Arc::default(),
            starting: Mutex::new(()),
        }
    }

    /// Starts the task on the current tokio runtime unless it runs already. Outside a runtime
    /// it does nothing: the next connect made on one starts it.
    pub(crate) fn ensure_running(&self, hub: &Arc<Hub>, history: &Arc<LocalHistory>) {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let _starting = lock(&self.starting);
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("sseio: no tokio runtime yet, heartbeats start with the next connect");
            return;
        };
        self.running.store(true, Ordering::Release);
        let running = Running(self.running.clone());
        let task = run(
            Arc::downgrade(hub),
            Arc::downgrade(history),
            self.heartbeat,
            running,
        );
        runtime.spawn(task);
    }
}

/// Beats every connection every `heartbeat` (none when it is zero), one part of them at a time
/// spread evenly over the interval, and every [`SWEEP_INTERVAL`] sweeps expired history and
/// closes the streams past their lifetime, until the server is gone.
async fn run(hub: Weak<Hub>, history: Weak<LocalHistory>, heartbeat: Duration, _running: Running) {
    let start = tokio::time::Instant::now();
    let ticker = |period: Duration| {
        let mut ticker = tokio::time::interval_at(start + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    };
    let parts = Hub::BEAT_PARTS;
    let mut beats = (!heartbeat.is_zero()).then(|| ticker(heartbeat / parts as u32));
    let mut part = 0;
    let mut sweeps = ticker(SWEEP_INTERVAL);
    loop {
        let due = std::future::poll_fn(|cx| {
            if let Some(beats) = &mut beats
                && beats.poll_tick(cx).is_ready()
            {
                return Poll::Ready(Due::Beat);
            }
            sweeps.poll_tick(cx).map(|_| Due::Sweep)
        })
        .await;
        let Some(hub) = hub.upgrade() else {
            break;
        };
        match due {
            Due::Beat => {
                hub.beat_part(part);
                part = (part + 1) % parts;
            }
            Due::Sweep => {
                if let Some(history) = history.upgrade() {
                    history.sweep();
                }
                hub.close_expired(tokio::time::Instant::now());
            }
        }
    }
}

/// What the background task is to do now.
enum Due {
    Beat,
    Sweep,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Recalled;
    use crate::history::History;
    use crate::metrics::Metrics;
    use crate::notify::Notifier;

    /// Expired history was kept forever without heartbeats.
    ///
    /// Expired messages and resume records were dropped by the heartbeat, so a server built
    /// with `heartbeat_interval(Duration::ZERO)` (heartbeats off, say behind a proxy that sends
    /// its own) kept every message it ever recorded.
    #[tokio::test(start_paused = true)]
    async fn history_expires_without_heartbeats() {
        let history = Arc::new(LocalHistory::new());
        let hub = Arc::new(Hub::new(
            Arc::new(Notifier::new(1)),
            Arc::new(Metrics::new(false)),
            None,
            history.clone(),
            Duration::from_secs(60),
            1024,
            None,
        ));
        let settings = History::new(10).with_ttl(Duration::from_millis(100));
        history
            .log()
            .record(&Arc::from("e"), "room", "old", settings);
        history.remember(
            Arc::from("gone"),
            Recalled::At(history.log().now()),
            Duration::from_millis(100),
        );
        let upkeep = Upkeep::new(Duration::ZERO);
        upkeep.ensure_running(&hub, &history);
        tokio::time::sleep(SWEEP_INTERVAL * 2).await;
        assert_eq!(history.log().room_logs(), 0, "the expired room log is gone");
        assert_eq!(history.remembered(), 0, "the expired resume record is gone");
    }
}
