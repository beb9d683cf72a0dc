//! Resume planning: what is left to do of each phase, from the files that exist.

use std::collections::{BTreeMap, BTreeSet};

use autointerp_core::layout::Layout;
use autointerp_core::LatentId;

use crate::layout::load_explanations;
use crate::pipeline::Plan;
use crate::{Event, Progress, Result, RunConfig};

/// What is left to do of the main phase.
pub(crate) struct Todo {
    pub plans: BTreeMap<LatentId, Plan>,
    /// Latents whose explanation and every score exist.
    pub finished: usize,
    /// Latents without an explanation, when none is to be written.
    pub unexplained: usize,
}

/// The latents of `selection` still to explain or score: those without a usable explanation
/// (when `explains`), or without one of the scores `names`. `redo` is (scores, explanations).
pub(crate) fn plan(
    layout: &Layout,
    selection: &BTreeSet<LatentId>,
    explains: bool,
    names: &[&'static str],
    (redo_scores, redo_explanations): (bool, bool),
) -> Result<Todo> {
    let existing = load_explanations(layout, false)?;
    let mut todo = Todo {
        plans: BTreeMap::new(),
        finished: 0,
        unexplained: 0,
    };
    for id in selection {
        let explanation = match existing.get(id) {
            Some(e) if !redo_explanations => Some(e.clone()),
            _ if explains => None,
            _ => {
                todo.unexplained += 1;
                continue;
            }
        };
        // A new explanation is scored by every scorer.
        let fresh = explanation.is_none();
        let scorers: Vec<usize> = (0..names.len())
            .filter(|&i| fresh || redo_scores || !layout.has_score(names[i], id, false))
            .collect();
        if !fresh && scorers.is_empty() {
            todo.finished += 1;
            continue;
        }
        todo.plans.insert(
            *id,
            Plan {
                explanation,
                scorers,
            },
        );
    }
    Ok(todo)
}

/// The random-control plans: each latent of `selection` with an explanation is scored with the
/// explanation of another latent, drawn as a seeded derangement of all explanations, or the one
/// an earlier run drew (kept in `random_explanations/`) unless the explanations are redone.
/// `redo` is (scores, explanations).
pub(crate) fn control_plans(
    progress: &dyn Progress,
    cfg: &RunConfig,
    layout: &Layout,
    selection: &BTreeSet<LatentId>,
    names: &[&'static str],
    reads_explanation: &[bool],
    (redo_scores, redo_explanations): (bool, bool),
) -> Result<BTreeMap<LatentId, Plan>> {
    let all: Vec<_> = load_explanations(layout, false)?.into_values().collect();
    if all.len() < 2 {
        progress.event(Event::Notice(
            "random control skipped: it needs the explanations of at least two latents",
        ));
        return Ok(BTreeMap::new());
    }
    let drawn = autointerp_explain::random_control(&all, cfg.seed)?;
    let used = load_explanations(layout, true)?;
    let mut plans = BTreeMap::new();
    for e in drawn {
        if !selection.contains(&e.latent) {
            continue;
        }
        let scorers: Vec<usize> = (0..names.len())
            .filter(|&i| {
                reads_explanation[i]
                    && (redo_scores || !layout.has_score(names[i], &e.latent, true))
            })
            .collect();
        if scorers.is_empty() {
            continue;
        }
        let explanation = match used.get(&e.latent) {
            Some(u) if !redo_explanations => u.clone(),
            _ => e,
        };
        plans.insert(
            explanation.latent,
            Plan {
                explanation: Some(explanation),
                scorers,
            },
        );
    }
    Ok(plans)
}
