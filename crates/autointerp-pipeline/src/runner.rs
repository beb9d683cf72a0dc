use std::fmt::Debug;
use std::num::NonZeroUsize;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{BoxError, Stage};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Items whose stage succeeded.
    pub succeeded: usize,
    /// Items whose stage failed (each failure was handed to the writer).
    pub failed: usize,
}

/// Runs `stage` on every item with at most `limit` in flight, handing each `(item, result)` to
/// `write` in completion order. A failed item does not stop the run: its error goes to `write`,
/// which decides what to record. An error returned by `write` itself (e.g. a full disk) stops
/// the run.
///
/// Results travel over a channel to one writer loop, so a slow writer never stalls the
/// in-flight futures (futures-rs #2387), and `limit` is a `NonZeroUsize` because a limit of 0
/// would hang forever (futures-rs #2876).
pub async fn run<I, S, W>(
    items: I,
    stage: S,
    limit: NonZeroUsize,
    mut write: W,
) -> Result<Summary, BoxError>
where
    I: IntoIterator,
    I::Item: Clone + Debug + Send,
    S: Stage<I::Item>,
    W: FnMut(I::Item, Result<S::Out, BoxError>) -> Result<(), BoxError>,
{
    let (tx, mut rx) = mpsc::channel(limit.get() * 2);
    let stage = &stage;
    // `tx` lives in the producer: when the last item is sent it is dropped and the writer ends.
    let producer = async move {
        futures::stream::iter(items)
            .map(|item| async move {
                let result = stage.call(item.clone()).await;
                (item, result)
            })
            .buffer_unordered(limit.get())
            .for_each(|out| {
                let tx = tx.clone();
                async move {
                    // The receiver only goes away when the writer failed; the run is ending then.
                    let _ = tx.send(out).await;
                }
            })
            .await;
    };
    // The writer owns `rx`: if it fails, the channel closes and the producer's sends return at once.
    let writer = async move {
        let mut summary = Summary::default();
        while let Some((item, result)) = rx.recv().await {
            match &result {
                Ok(_) => summary.succeeded += 1,
                Err(e) => {
                    tracing::warn!(?item, error = %e, "item failed");
                    summary.failed += 1;
                }
            }
            write(item, result)?;
        }
        Ok::<_, BoxError>(summary)
    };
    let ((), summary) = tokio::join!(producer, writer);
    summary
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::from_fn;

    #[tokio::test]
    async fn failures_are_recorded_and_concurrency_is_bounded() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let stage = {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            from_fn(move |x: u32| {
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if x.is_multiple_of(5) {
                        Err::<u32, BoxError>("multiple of five".into())
                    } else {
                        Ok(x * 10)
                    }
                }
            })
        };
        let mut seen = Vec::new();
        let summary = run(0..20u32, stage, NonZeroUsize::new(3).unwrap(), |x, r| {
            seen.push((x, r.ok()));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            summary,
            Summary {
                succeeded: 16,
                failed: 4
            }
        );
        assert!(peak.load(Ordering::SeqCst) <= 3);
        seen.sort();
        assert_eq!(seen.len(), 20);
        assert_eq!(seen[7], (7, Some(70)));
        assert_eq!(seen[10], (10, None));
    }

    #[tokio::test]
    async fn a_failing_writer_stops_the_run() {
        let stage = from_fn(|x: u32| async move { Ok(x) });
        let err = run(0..100u32, stage, NonZeroUsize::new(4).unwrap(), |x, _| {
            if x == 2 {
                Err("disk full".into())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
