//! Run with: cargo run -p autointerp-pipeline --example pipeline_stages
//!
//! Stages, combinators and the bounded runner on a toy problem: "explain" each latent (an async
//! step that sometimes fails), then "score" the explanation twice at once with `FanOut`, and
//! post-process with `map`. `run` keeps at most 4 latents in flight and hands every result,
//! success or failure, to one writer. Pure Rust: no model, no server.

use std::num::NonZeroUsize;
use std::time::Duration;

use autointerp_pipeline::{from_fn, run, BoxError, FanOut, StageExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // An explainer that takes a little while and fails on every seventh latent.
    let explain = from_fn(|latent: u32| async move {
        tokio::time::sleep(Duration::from_millis(u64::from(latent % 3) * 5)).await;
        if latent % 7 == 6 {
            return Err::<String, BoxError>(
                format!("latent {latent}: the LLM answered nothing").into(),
            );
        }
        Ok(format!("tokens divisible by {}", latent + 1))
    });
    // Two scorers of one explanation, run concurrently on clones of it.
    let detection = from_fn(|text: String| async move { Ok(text.len() as f64 / 40.0) });
    let fuzzing = from_fn(|text: String| async move { Ok(text.split(' ').count() as f64 / 5.0) });

    let pipeline = explain
        .then(FanOut(detection, fuzzing))
        .map(|(detection, fuzzing)| (detection + fuzzing) / 2.0);

    let limit = NonZeroUsize::new(4).ok_or("the limit is not zero")?;
    let mut scores = Vec::new();
    let summary = run(0..14u32, pipeline, limit, |latent, result| {
        match result {
            Ok(score) => scores.push((latent, score)),
            Err(e) => println!("failed: {e}"),
        }
        Ok(())
    })
    .await?;

    scores.sort_by_key(|&(latent, _)| latent);
    for (latent, score) in &scores {
        println!("latent {latent:>2}: score {score:.3}");
    }
    println!("{} succeeded, {} failed", summary.succeeded, summary.failed);
    Ok(())
}
