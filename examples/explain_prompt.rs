//! Run with: cargo run --release -p autointerp-explain --example explain_prompt
//!
//! Prints the default explainer prompt (with activations and chain of thought) for a hand-built
//! latent record, then parses a made-up answer the way the pipeline parses an LLM's.

use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_explain::{default_prompt, explanation_from_answer, ExplainerConfig};

fn example(tokens: &[&str], activations: &[f32], quantile: u8) -> Example {
    let max = activations.iter().copied().fold(0.0, f32::max);
    Example {
        tokens: (0..tokens.len() as u32).collect(),
        str_tokens: tokens.iter().map(|t| t.to_string()).collect(),
        activations: activations.to_vec(),
        normalized: activations
            .iter()
            .map(|a| (10.0 * a / max).floor() as u8)
            .collect(),
        quantile: Some(quantile),
        distance: None,
    }
}

fn main() -> anyhow::Result<()> {
    let record = LatentRecord {
        id: LatentId::new(HookPoint::Residual(6), 1234),
        train: vec![
            example(
                &["The", " river", " Thames", " flooded", " again"],
                &[0.0, 0.3, 4.1, 0.2, 0.0],
                1,
            ),
            example(
                &["We", " sailed", " down", " the", " Rhine"],
                &[0.0, 0.0, 0.0, 0.1, 3.0],
                1,
            ),
            example(
                &["Fishing", " on", " the", " Mississippi", " River"],
                &[0.0, 0.0, 0.0, 2.2, 1.4],
                2,
            ),
        ],
        test: vec![],
        non_activating: vec![],
        stats: LatentStats {
            n_activations: 3,
            n_tokens: 15,
            max_activation: 4.1,
        },
        logits: None,
    };
    let cfg = ExplainerConfig::default().with_cot(true);
    for message in default_prompt(&record, &cfg) {
        println!("===== {:?} =====\n{}\n", message.role, message.content);
    }

    let answer = "Step 1. Marked tokens: \" Thames\", \" Rhine\", \" Mississippi River\".\n\
                  [EXPLANATION]: Names of rivers.";
    let explanation = explanation_from_answer(record.id, answer)?;
    println!("parsed: {} -> {:?}", explanation.latent, explanation.text);
    Ok(())
}
