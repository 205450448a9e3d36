//! Waiting for something the cluster reaches in its own time (a leader, the same digest on every
//! node, a process gone): one loop for every such wait, so each tries at least once, tries once
//! more at its deadline, and reports what it last saw.
use std::{future::Future, ops::ControlFlow, time::Duration};

use tokio::time::Instant;

/// Runs `attempt` every `every` until it breaks with a result, or until `within` has passed
/// (the last attempt starts at or after the deadline, so a zero `within` tries once). On time
/// out, what the last attempt saw. (A closure returning a future, not an async closure: the
/// future of an async closure is not `Send` for every lifetime, so a task could not hold it.)
pub async fn poll_until<T, L, F: Future<Output = ControlFlow<T, L>>>(
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, L> {
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            ControlFlow::Break(done) => return Ok(done),
            ControlFlow::Continue(last) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(last);
                }
                tokio::time::sleep(every.min(deadline - now)).await;
            }
        }
    }
}

/// [`poll_until`] for a yes-or-no condition: whether it held by the deadline.
pub async fn wait_for<F: Future<Output = bool>>(
    within: Duration,
    every: Duration,
    mut condition: impl FnMut() -> F,
) -> bool {
    poll_until(within, every, || {
        let held = condition();
        async move {
            if held.await {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    })
    .await
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tries_until_done_and_returns_the_result() {
        let mut tries = 0;
        let done = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
            tries += 1;
            let tries = tries;
            async move {
                if tries == 3 {
                    ControlFlow::Break(tries * 10)
                } else {
                    ControlFlow::Continue(tries)
                }
            }
        })
        .await;
        assert_eq!(done, Ok(30));
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_what_it_last_saw_after_trying_at_the_deadline() {
        let started = Instant::now();
        let mut tries = 0;
        let outcome: Result<(), u32> = poll_until(
            Duration::from_millis(250),
            Duration::from_millis(100),
            || {
                tries += 1;
                std::future::ready(ControlFlow::Continue(tries))
            },
        )
        .await;
        // At 0, 100, 200 and 250 ms: the last one at the deadline.
        assert_eq!(outcome, Err(4));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_tries_once() {
        let mut tries = 0;
        let held = wait_for(Duration::ZERO, Duration::from_millis(100), || {
            tries += 1;
            async { false }
        })
        .await;
        assert!(!held);
        assert_eq!(tries, 1);
    }
}
