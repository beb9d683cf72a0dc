//! Failed items inside a score (a judge answering some requests with HTTP 400 or with
//! unparseable text) are not silent: the run's tally and `failures.jsonl` count them, and the
//! same run started again asks for exactly those items, keeps the score file unless the new
//! result has fewer failed items, and ends, against a healthy judge, with the files a healthy
//! judge would have written from the start.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use autointerp_client::{ChatRequest, ChatResponse, Client};
use autointerp_run::{ExplainerKind, Failure, Run, RunConfig, RunSummary, ScorerKind};
use autointerp_score::{read_score_file, INTRUDER_MARKER};
use support::write_cache;

const SCORERS: [&str; 3] = ["detection", "fuzz", "intruder"];

fn config(root: &Path) -> RunConfig {
    RunConfig {
        explainer: ExplainerKind::Tokens,
        explainer_model: "judge".into(),
        scorers: vec![
            ScorerKind::Detection,
            ScorerKind::Fuzz,
            ScorerKind::Intruder,
        ],
        num_examples_per_scorer_prompt: 2,
        random_control: true,
        example_ctx_len: 8,
        min_examples: 8,
        n_examples_train: 4,
        n_examples_test: 4,
        n_non_activating: 4,
        n_quantiles: 2,
        max_concurrency: 3,
        results_dir: root.into(),
        name: "run".into(),
        ..RunConfig::default()
    }
}

/// FNV-1a: a deterministic choice of the requests that fail.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A judge that answers every prompt in a form the scorers read (all 1 for a classifier, the
/// first excerpt for an intruder trial), except that a request whose text hashes to 0 modulo
/// `fail_mod` gets HTTP 400 when the hash is even and an unparseable answer when it is odd
/// (`fail_mod` 0: never). It keeps the text of every request and of those it failed.
struct Judge {
    fail_mod: u64,
    asked: Mutex<Vec<String>>,
    failed: Mutex<Vec<String>>,
}

impl Judge {
    fn new(fail_mod: u64) -> Arc<Self> {
        Arc::new(Self {
            fail_mod,
            asked: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
        })
    }

    /// The requests' texts, sorted: the same prompt may be sent twice (two identical trials).
    fn asked(&self) -> Vec<String> {
        let mut asked = self.asked.lock().unwrap().clone();
        asked.sort();
        asked
    }

    fn failed(&self) -> Vec<String> {
        let mut failed = self.failed.lock().unwrap().clone();
        failed.sort();
        failed
    }
}

impl Client for Judge {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let text: Vec<&str> = req.messages.iter().map(|m| m.content.as_str()).collect();
        let text = text.join("\n");
        self.asked.lock().unwrap().push(text.clone());
        let h = hash(&text);
        if self.fail_mod > 0 && h.is_multiple_of(self.fail_mod) {
            self.failed.lock().unwrap().push(text);
            if (h / self.fail_mod).is_multiple_of(2) {
                return Err(autointerp_client::Error::Http {
                    status: 400,
                    body: "bad request".into(),
                });
            }
            return Ok(ChatResponse {
                text: "I would rather not say.".into(),
                ..ChatResponse::default()
            });
        }
        let last = &req.messages.last().unwrap().content;
        let n = last.lines().filter(|l| l.starts_with("Excerpt ")).count();
        let answer = if req.messages[0].content.contains(INTRUDER_MARKER) {
            format!("{INTRUDER_MARKER} 1")
        } else {
            format!("[{}]", vec!["1"; n].join(","))
        };
        Ok(ChatResponse {
            text: answer,
            ..ChatResponse::default()
        })
    }
}

async fn run(root: &Path, judge: &Arc<Judge>) -> RunSummary {
    Run::new(config(root))
        .unwrap()
        .cache_dir(root)
        .with_client(Arc::clone(judge) as _)
        .execute(&())
        .await
        .unwrap()
}

/// Every score file: its failed items and its inode (a new one after each atomic write).
fn score_files(root: &Path) -> BTreeMap<PathBuf, (usize, u64)> {
    let mut out = BTreeMap::new();
    for dir in [root.join("run/scores"), root.join("run/scores/random")] {
        for scorer in SCORERS {
            let Ok(entries) = std::fs::read_dir(dir.join(scorer)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let details = read_score_file(&path, scorer).unwrap();
                let ino = std::fs::metadata(&path).unwrap().ino();
                out.insert(path, (details.n_failed(), ino));
            }
        }
    }
    out
}

fn failures(root: &Path) -> Vec<Failure> {
    let text = std::fs::read_to_string(root.join("run/failures.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Failed items of the run's phases.
fn failed_items(s: &RunSummary) -> usize {
    s.main.failed_items + s.control.as_ref().map_or(0, |c| c.failed_items)
}

/// The tally, `failures.jsonl` and the score files agree on the failed items.
fn check_counts(root: &Path, summary: &RunSummary) -> BTreeMap<PathBuf, (usize, u64)> {
    let files = score_files(root);
    let in_files: usize = files.values().map(|(n, _)| n).sum();
    let partial = files.values().filter(|(n, _)| *n > 0).count();
    let logged: Vec<Failure> = failures(root)
        .into_iter()
        .filter(|f| f.items.is_some())
        .collect();
    assert_eq!(failed_items(summary), in_files, "{:?}", summary.main);
    assert_eq!(logged.len(), partial, "{logged:?}");
    assert_eq!(
        logged.iter().filter_map(|f| f.items).sum::<usize>(),
        in_files
    );
    for f in &logged {
        let scorer = f.stage.split_once('/').map(|(_, s)| s).unwrap();
        assert!(SCORERS.contains(&scorer), "{f:?}");
        assert!(f.latent.is_some() && !f.error.is_empty(), "{f:?}");
    }
    // Each latent with a partial score is failed, not done.
    let partial_latents = |control: bool| -> BTreeSet<String> {
        let scores = if control {
            "run/scores/random"
        } else {
            "run/scores"
        };
        files
            .iter()
            .filter(|(p, (n, _))| {
                *n > 0 && p.parent().unwrap().parent().unwrap() == root.join(scores)
            })
            .map(|(p, _)| p.file_stem().unwrap().to_string_lossy().to_string())
            .collect()
    };
    assert_eq!(summary.main.incomplete, partial_latents(false).len());
    let control = summary.control.as_ref().map_or(0, |c| c.incomplete);
    assert_eq!(control, partial_latents(true).len());
    assert!(summary.main.failed >= summary.main.incomplete);
    files
}

#[tokio::test]
async fn failed_items_are_counted_and_a_rerun_asks_only_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_cache(root);

    // A judge failing about one request in three.
    let faulty = Judge::new(3);
    let first = run(root, &faulty).await;
    let files = check_counts(root, &first);
    assert!(first.main.incomplete > 0, "{:?}", first.main);
    assert!(failed_items(&first) > 0);
    assert!(first.main.done < 4, "{:?}", first.main);
    let failed_first = faulty.failed();
    assert!(!failed_first.is_empty() && failed_first.len() < faulty.asked().len());

    // The same judge again: exactly the failed requests, failing again; no file is rewritten.
    let same = Judge::new(3);
    let second = run(root, &same).await;
    assert_eq!(same.asked(), failed_first);
    assert_eq!(
        second.already_done + second.main.done + second.main.failed,
        4
    );
    assert_eq!(failed_items(&second), failed_items(&first));
    let unchanged = check_counts(root, &second);
    for (path, (n, ino)) in &unchanged {
        // Files whose every request failed were never written: those are scored anew.
        if let Some(before) = files.get(path) {
            assert_eq!((n, ino), (&before.0, &before.1), "{}", path.display());
        }
    }

    // A judge failing half as often (a subset of the same requests): each file whose failed
    // items now partly succeed is rewritten with fewer; the others stay as they were.
    let better = Judge::new(6);
    let third = run(root, &better).await;
    assert_eq!(better.asked(), failed_first);
    let improved = check_counts(root, &third);
    assert!(failed_items(&third) < failed_items(&second));
    let mut rewritten = 0;
    for (path, (n, ino)) in &improved {
        let Some((before, before_ino)) = unchanged.get(path) else {
            continue;
        };
        assert!(n <= before, "{}", path.display());
        if n < before {
            rewritten += 1;
            assert_ne!(ino, before_ino, "{}", path.display());
        } else {
            assert_eq!(ino, before_ino, "{}", path.display());
        }
    }
    assert!(rewritten > 0);

    // A healthy judge: only what still failed, and complete files, as a healthy judge writes
    // them from the start.
    let healthy = Judge::new(0);
    let fourth = run(root, &healthy).await;
    assert_eq!(healthy.asked(), better.failed());
    assert_eq!((fourth.main.failed, fourth.main.incomplete), (0, 0));
    assert_eq!(failed_items(&fourth), 0);
    assert!(failures(root).is_empty(), "{:?}", failures(root));
    let done = score_files(root);
    assert!(done.values().all(|(n, _)| *n == 0));

    let fresh_dir = tempfile::tempdir().unwrap();
    write_cache(fresh_dir.path());
    run(fresh_dir.path(), &Judge::new(0)).await;
    let fresh = score_files(fresh_dir.path());
    assert_eq!(fresh.len(), done.len());
    for path in fresh.keys() {
        let here = root.join(path.strip_prefix(fresh_dir.path()).unwrap());
        assert_eq!(
            std::fs::read(&here).unwrap(),
            std::fs::read(path).unwrap(),
            "{}",
            here.display()
        );
    }

    // Nothing is left: no request at all.
    let idle = Judge::new(0);
    let fifth = run(root, &idle).await;
    assert!(idle.asked().is_empty());
    assert_eq!(fifth.already_done, 4);
}
