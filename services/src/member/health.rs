//! What a pair member tells its raft group about itself, every 100 ms: its
//! NATS link (a member that cannot publish must not hold the role) and its
//! PLC link (failover on field health), with the last life-sign value read.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Reports this member's health to `pair` until `cancel`.
pub async fn report(
    pair: raft::Pair,
    client: async_nats::Client,
    plc: Option<watch::Receiver<Option<bool>>>,
    poller: Option<adapters::poller::PollerHandle>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let ready = client.connection_state() == async_nats::connection::State::Connected;
        let plc_ok = plc.as_ref().and_then(|p| *p.borrow());
        let life_sign = poller.as_ref().and_then(|p| p.stats().life_sign_seen);
        pair.report_health(raft::Health {
            plc_ok,
            life_sign,
            ready,
        });
    }
}
