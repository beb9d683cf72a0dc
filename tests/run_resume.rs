//! A run killed mid-way (SIGKILL) or interrupted (Ctrl-C) resumes: the rerun asks nothing about
//! the latents already done and ends with the same files as a run never stopped.

mod run_support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use run_support::*;

const N: usize = 24;
const SCORERS: [&str; 2] = ["detection", "fuzz"];

fn args(tok: &Path, results: &Path, name: &str, url: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        tok.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
        "--name",
        name,
        "--explainer-model",
        "m",
        "--explainer-base-url",
        url,
        "--scorers",
        "detection,fuzz",
        "--max-concurrency",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(RECORD_FLAGS.iter().map(|s| s.to_string()));
    args
}

fn spawn(args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_to_end(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&autointerp(&args));
}

/// Waits until at least `n` latents are complete in `run_dir` (and not all of them).
fn wait_for_complete(child: &mut Child, run_dir: &Path, n: usize) -> Vec<usize> {
    let start = Instant::now();
    loop {
        let done: Vec<usize> = (0..N).filter(|&i| complete(run_dir, i, &SCORERS)).collect();
        if done.len() >= n {
            assert!(
                done.len() < N,
                "the run finished before it could be stopped; slow the server down"
            );
            return done;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The outputs a run is judged by: records, explanations, scores.
fn outputs(run_dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    files(run_dir)
        .into_iter()
        .filter(|(p, _)| {
            p.starts_with("explanations")
                || p.starts_with("scores")
                || (p.starts_with("latents")
                    && p.extension().is_some_and(|e| e == "json")
                    && p.components().count() == 2)
        })
        .collect()
}

fn no_temp_files(run_dir: &Path) {
    for path in files(run_dir).into_keys() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains(".tmp"), "left behind: {}", path.display());
    }
}

fn fixture(root: &Path, names: &[&str]) -> std::path::PathBuf {
    let tok = root.join("tok");
    write_tokenizer(&tok);
    for name in names {
        write_cache(&root.join("results").join(name), N, &tok);
    }
    tok
}

#[test]
fn a_killed_run_resumes_without_asking_again_and_ends_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let tok = fixture(dir.path(), &["reference", "killed"]);
    let results = dir.path().join("results");
    let server = Server::start(Faults {
        delay: Duration::from_millis(40),
        ..Faults::default()
    });

    run_to_end(&args(&tok, &results, "reference", &server.url));
    let reference = outputs(&results.join("reference"));
    assert_eq!(
        reference
            .keys()
            .filter(|p| p.starts_with("explanations"))
            .count(),
        N
    );

    let run_dir = results.join("killed");
    let args = args(&tok, &results, "killed", &server.url);
    let mut child = spawn(&args);
    wait_for_complete(&mut child, &run_dir, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    let done: Vec<usize> = (0..N)
        .filter(|&i| complete(&run_dir, i, &SCORERS))
        .collect();
    assert!(done.len() < N);

    server.clear();
    run_to_end(&args);
    let seen = server.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        let i = WORDS
            .iter()
            .position(|w| *w == s.word)
            .unwrap_or_else(|| panic!("unknown word in {s:?}"));
        assert!(
            !done.contains(&i),
            "asked again about finished latent {i}: {s:?}"
        );
    }
    // Each unfinished latent was explained at most once more.
    let explains: Vec<&str> = seen
        .iter()
        .filter(|s| s.kind == "explain")
        .map(|s| s.word.as_str())
        .collect();
    let mut unique = explains.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), explains.len(), "{explains:?}");

    no_temp_files(&run_dir);
    assert_eq!(outputs(&run_dir), reference);
    assert!(failures(&run_dir).is_empty());
}

#[cfg(unix)]
#[test]
fn ctrl_c_finishes_the_latents_in_flight_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let tok = fixture(dir.path(), &["interrupted"]);
    let results = dir.path().join("results");
    let run_dir = results.join("interrupted");
    let server = Server::start(Faults {
        delay: Duration::from_millis(40),
        ..Faults::default()
    });
    let args = args(&tok, &results, "interrupted", &server.url);

    let mut child = spawn(&args);
    wait_for_complete(&mut child, &run_dir, 3);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    no_temp_files(&run_dir);
    // Whatever was written is whole: every latent with an explanation was also scored (the
    // latents in flight were finished, not cut off).
    for i in 0..N {
        let explained = run_dir
            .join("explanations")
            .join(format!("{}.txt", latent(i)))
            .is_file();
        assert_eq!(explained, complete(&run_dir, i, &SCORERS), "latent {i}");
    }
    let done = (0..N).filter(|&i| complete(&run_dir, i, &SCORERS)).count();
    assert!(done < N, "the run finished before Ctrl-C");

    server.clear();
    run_to_end(&args);
    assert!((0..N).all(|i| complete(&run_dir, i, &SCORERS)));
    let explains = server.seen().iter().filter(|s| s.kind == "explain").count();
    assert_eq!(explains, N - done);
}

#[cfg(unix)]
#[test]
fn a_second_ctrl_c_aborts_the_latents_in_flight_and_writes_nothing_of_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let tok = fixture(dir.path(), &["aborted"]);
    let results = dir.path().join("results");
    let run_dir = results.join("aborted");
    // Slow enough that finishing the latents in flight would take many seconds.
    let server = Server::start(Faults {
        delay: Duration::from_millis(2500),
        ..Faults::default()
    });
    let args = args(&tok, &results, "aborted", &server.url);

    let mut child = spawn(&args);
    wait_for_complete(&mut child, &run_dir, 1);
    let interrupt = || {
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    interrupt();
    std::thread::sleep(Duration::from_millis(200));
    interrupt();
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(2000),
        "{:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("latents in flight aborted"), "{stderr}");
    no_temp_files(&run_dir);
    for i in 0..N {
        let explained = run_dir
            .join("explanations")
            .join(format!("{}.txt", latent(i)))
            .is_file();
        assert_eq!(explained, complete(&run_dir, i, &SCORERS), "latent {i}");
    }
}
