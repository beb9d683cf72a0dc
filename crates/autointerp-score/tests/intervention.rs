//! The causal scorers' arithmetic and bookkeeping with a scripted intervener, judge and base
//! model (the real steering is tested end to end in autointerp-engine/tests/intervention.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use autointerp_client::{
    ChatRequest, ChatResponse, Client, Intervener, Intervention, SteeredPair, TokenScorer,
};
use autointerp_core::{Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_score::files::parse_score_details;
use autointerp_score::{
    surprisal_intervention_value, InterventionScorer, ScoreDetails, Scorer,
    SurprisalInterventionScorer,
};
use futures::executor::block_on;

/// Steering makes the model talk about rivers; the third prompt's text breaks the base model.
struct Rivers {
    calls: AtomicUsize,
}

impl Intervener for Rivers {
    async fn intervene(&self, _latent: LatentId) -> autointerp_client::Result<Arc<Intervention>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let pair = |prompt: &str, clean: &str, steered: &str| SteeredPair {
            prompt: prompt.into(),
            clean: clean.into(),
            steered: steered.into(),
        };
        Ok(Arc::new(Intervention {
            strength: 12.5,
            target_kl: 0.5,
            kl: 0.5,
            converged: true,
            pairs: vec![
                pair("I think", " that is fine", " the river flows"),
                pair("We", " went home", " crossed a river"),
                pair("broken", " x", " river"),
                pair("Yesterday", " it rained", " the river rose"),
            ],
            promoted: vec![(" river".into(), 0.4)],
        }))
    }
}

/// −1 per target word the passage contains, −3 per word it does not; fails on "broken".
struct Reader;

impl TokenScorer for Reader {
    async fn logprobs(&self, prefix: &str, text: &str) -> autointerp_client::Result<Vec<f32>> {
        if prefix.contains("broken") {
            return Err(autointerp_client::Error::Config("cannot read".into()));
        }
        assert!(prefix.starts_with("Passage: "), "{prefix}");
        Ok(text
            .split_whitespace()
            .map(|w| if prefix.contains(w) { -1.0 } else { -3.0 })
            .collect())
    }
}

/// Names the continuation containing the explanation's word (1 on a tie); "???" for prompts
/// starting "We".
struct Judge;

impl Client for Judge {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let prompt = &req.messages.last().unwrap().content;
        let field = |label: &str| {
            prompt
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .unwrap()
                .to_owned()
        };
        let word = field("Feature: ");
        let text = if field("Text: ") == "We" {
            "???".to_owned()
        } else if field("Continuation 2: ").contains(&word)
            && !field("Continuation 1: ").contains(&word)
        {
            "2".to_owned()
        } else {
            "1".to_owned()
        };
        Ok(ChatResponse {
            text,
            ..ChatResponse::default()
        })
    }
}

fn record() -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(3), 9),
        train: vec![],
        test: vec![],
        non_activating: vec![],
        stats: LatentStats::default(),
        logits: None,
    }
}

fn explain(r: &LatentRecord, text: &str) -> Explanation {
    Explanation {
        latent: r.id,
        text: text.into(),
    }
}

#[test]
fn surprisal_intervention_is_the_mean_gain_per_nat_of_kl() {
    let rivers = Rivers {
        calls: AtomicUsize::new(0),
    };
    let scorer = SurprisalInterventionScorer::new(Reader, &rivers);
    assert_eq!(scorer.name(), "surprisal-intervention");
    let r = record();
    // "river" is in every steered passage and in no clean one: a gain of 2 nats per prompt,
    // over a KL of 0.5; the broken prompt is a failed item.
    let good = block_on(Scorer::score(&scorer, &r, &explain(&r, "river"))).unwrap();
    assert_eq!(good.score.value, 4.0);
    assert_eq!(good.n_failed(), 1);
    assert_eq!(good.failures.len(), 1);
    // A word in neither passage gains nothing.
    let none = block_on(Scorer::score(&scorer, &r, &explain(&r, "bank"))).unwrap();
    assert_eq!(none.score.value, 0.0);
    // The score file reads back to the same value.
    let ScoreDetails::SurprisalIntervention { outcomes } = &good.details else {
        panic!("{:?}", good.details)
    };
    let json = serde_json::to_vec(outcomes).unwrap();
    let back = parse_score_details("surprisal-intervention", &json).unwrap();
    assert_eq!(back, good.details);
    let ScoreDetails::SurprisalIntervention { outcomes } = back else {
        unreachable!()
    };
    assert_eq!(surprisal_intervention_value(&outcomes), 4.0);
    assert_eq!(outcomes[0].intervention.strength, 12.5);
    // A calibration that missed its target gives no score (no division by a stray KL).
    let mut missed = outcomes.clone();
    for o in &mut missed {
        o.intervention.converged = false;
    }
    assert!(surprisal_intervention_value(&missed).is_nan());
}

#[test]
fn the_judged_intervention_score_is_the_share_of_steered_continuations_named() {
    let rivers = Rivers {
        calls: AtomicUsize::new(0),
    };
    let scorer = InterventionScorer::new(Judge, &rivers, 3);
    assert_eq!(scorer.name(), "intervention");
    let r = record();
    let good = block_on(Scorer::score(&scorer, &r, &explain(&r, "river"))).unwrap();
    let ScoreDetails::Intervention { trials } = &good.details else {
        panic!("{:?}", good.details)
    };
    // Three readable answers, all naming the steered continuation; "???" is a failed trial.
    assert_eq!((good.score.value, good.n_failed()), (1.0, 1));
    assert!(trials
        .iter()
        .filter(|t| t.correct.is_some())
        .all(|t| t.correct == Some(true)));
    assert!(good.failures[0].contains("???"), "{:?}", good.failures);
    // Under an absent word every answer is 1: right exactly where the steered one came first.
    let wrong = block_on(Scorer::score(&scorer, &r, &explain(&r, "bank"))).unwrap();
    let ScoreDetails::Intervention { trials } = &wrong.details else {
        unreachable!()
    };
    let answered: Vec<_> = trials.iter().filter(|t| t.correct.is_some()).collect();
    let first = answered.iter().filter(|t| t.steered_first).count() as f64;
    assert_eq!(wrong.score.value, first / answered.len() as f64);
    // The same seed orders the same latent's pairs the same way.
    let again = block_on(Scorer::score(&scorer, &r, &explain(&r, "bank"))).unwrap();
    assert_eq!(again.details, wrong.details);
    let json = serde_json::to_vec(trials).unwrap();
    assert_eq!(
        parse_score_details("intervention", &json).unwrap(),
        wrong.details
    );
    assert_eq!(rivers.calls.load(Ordering::SeqCst), 3);
}
