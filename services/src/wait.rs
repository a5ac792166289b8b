//! Waiting for a condition with a deadline: the one way the benchmarks and
//! the cluster tests synchronise with processes they started (never a sleep
//! as synchronisation).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is polled unless the caller says otherwise.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` every `every` until it returns `Ok(Some(v))`, or fails
/// once `timeout` has passed, naming `what` and the last observation (the
/// last error, or "condition not met").
pub async fn poll<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// [`poll`] every [`POLL`].
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    poll(what, timeout, POLL, check).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = poll("n to reach 3", Duration::from_secs(5), POLL, || {
            n += 1;
            let now = n;
            async move { Ok((now >= 3).then_some(now)) }
        })
        .await
        .expect("met");
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_after_the_deadline_naming_the_last_error() {
        let e = poll::<(), _, _>("nothing", Duration::from_millis(300), POLL, || async {
            anyhow::bail!("still down")
        })
        .await
        .expect_err("must time out");
        let text = format!("{e:#}");
        assert!(text.contains("waiting for nothing"), "{text}");
        assert!(text.contains("still down"), "{text}");
    }
}
