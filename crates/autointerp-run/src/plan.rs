//! Resume planning: what is left to do of each phase, from the files that exist. A score file
//! is finished only when none of its items failed; one with failed items is completed by asking
//! for those items again.

use std::collections::{BTreeMap, BTreeSet};

use autointerp_core::layout::Layout;
use autointerp_core::LatentId;

use crate::layout::load_explanations;
use crate::pipeline::{Plan, Retry, ScorerTask};
use crate::{Event, Progress, Result, RunConfig};

/// What scorer `index` (named `name`) still has to do for `id`; `None` when its file is
/// finished. With `redo`, everything. A file that cannot be read is scored anew and replaced.
fn task(
    layout: &Layout,
    (index, name): (usize, &str),
    id: &LatentId,
    control: bool,
    redo: bool,
) -> Option<ScorerTask> {
    let path = layout.score_file(name, id, control);
    let anew = Some(ScorerTask { index, retry: None });
    if redo || !path.is_file() {
        return anew;
    }
    match autointerp_score::read_score_file(&path, name) {
        Ok(details) => {
            let failed = details.n_failed();
            (failed > 0).then_some(ScorerTask {
                index,
                retry: Some(Retry { path, failed }),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable score file: scoring it anew");
            anew
        }
    }
}

/// Whether `name`'s score file for `id` exists and none of its items failed.
pub(crate) fn finished(layout: &Layout, name: &str, id: &LatentId, control: bool) -> bool {
    task(layout, (0, name), id, control, false).is_none()
}

/// What is left to do of the main phase.
pub(crate) struct Todo {
    pub plans: BTreeMap<LatentId, Plan>,
    /// Latents whose explanation and every score exist.
    pub finished: usize,
    /// Latents without an explanation, when none is to be written.
    pub unexplained: usize,
}

/// The latents of `selection` still to explain or score: those without a usable explanation
/// (when `explains`), or without one of the scores `names` finished. `redo` is (scores, explanations).
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
        let scorers: Vec<ScorerTask> = (names.iter().copied().enumerate())
            .filter_map(|s| task(layout, s, id, false, fresh || redo_scores))
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
        let scorers: Vec<ScorerTask> = (names.iter().copied().enumerate())
            .filter(|&(i, _)| reads_explanation[i])
            .filter_map(|s| task(layout, s, &e.latent, true, redo_scores))
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
