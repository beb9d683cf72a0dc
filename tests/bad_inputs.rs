//! Malformed files × the commands that read them: each run must end in a one-line error that
//! names the file (or flag) and the problem, with exit code 1 or 2 — never a panic (101), never
//! success — and must leave no partial output behind.

mod cache_support;
mod run_support;

use std::path::{Path, PathBuf};

use cache_support::{cache_args, write_sae, D_MODEL};
use run_support::{autointerp, text, tiny_model, write_cache, write_tokenizer};

/// One malformed input: what to break, the command, and what the error must say.
struct Case {
    name: &'static str,
    /// Breaks something under the fixture; returns the command's arguments.
    setup: fn(&Fixture) -> Vec<String>,
    /// Every one of these must be in the error line.
    says: &'static [&'static str],
}

/// A valid model, SAE, dataset and cache, each in its own folder, and an output folder that
/// must stay empty.
struct Fixture {
    root: PathBuf,
    model: PathBuf,
    sae: PathBuf,
    dataset: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new(root: &Path) -> Self {
        let model = tiny_model(root);
        let sae = write_sae(&root.join("sae"), "layers.0", D_MODEL, 64, 4);
        let dataset = root.join("text.txt");
        std::fs::write(&dataset, text(4000)).unwrap();
        Self {
            root: root.to_path_buf(),
            model,
            sae,
            dataset,
            out: root.join("out"),
        }
    }

    fn cache(&self, model: &Path, sae: &Path, dataset: &Path) -> Vec<String> {
        cache_args(
            model,
            sae,
            dataset.to_str().unwrap(),
            &self.out,
            &["--n-tokens", "256", "--ctx-len", "32"],
        )
    }

    /// A copy of the model folder with `file` replaced by `bytes`.
    fn model_with(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let copy = self.root.join("model-copy");
        copy_dir(&self.model, &copy);
        std::fs::write(copy.join(file), bytes).unwrap();
        copy
    }

    /// A copy of the SAE folder with `file` (under `layers.0/`) replaced by `bytes`.
    fn sae_with(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let copy = self.root.join("sae-copy");
        copy_dir(&self.sae, &copy);
        std::fs::write(copy.join("layers.0").join(file), bytes).unwrap();
        copy
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn s(x: &Path) -> String {
    x.to_str().unwrap().to_string()
}

const CASES: &[Case] = &[
    Case {
        name: "model config.json is not JSON",
        setup: |f| {
            f.cache(
                &f.model_with("config.json", b"{\"model_type\": "),
                &f.sae,
                &f.dataset,
            )
        },
        says: &["config.json"],
    },
    Case {
        name: "model config.json names an unknown architecture",
        setup: |f| {
            let config = br#"{"model_type": "wormhole", "hidden_size": 32}"#;
            f.cache(&f.model_with("config.json", config), &f.sae, &f.dataset)
        },
        says: &["wormhole"],
    },
    Case {
        name: "model weights are truncated",
        setup: |f| {
            f.cache(
                &f.model_with("model.safetensors", b"\x10\x00\x00"),
                &f.sae,
                &f.dataset,
            )
        },
        says: &["model.safetensors"],
    },
    Case {
        name: "SAE cfg.json is not JSON",
        setup: |f| f.cache(&f.model, &f.sae_with("cfg.json", b"k = 4"), &f.dataset),
        says: &["cfg.json"],
    },
    Case {
        name: "SAE weights are garbage",
        setup: |f| {
            f.cache(
                &f.model,
                &f.sae_with("sae.safetensors", &[7u8; 64]),
                &f.dataset,
            )
        },
        says: &["sae.safetensors"],
    },
    Case {
        name: "SAE input width differs from the model's",
        setup: |f| {
            let sae = write_sae(&f.root.join("sae-16"), "layers.0", 16, 64, 4);
            f.cache(&f.model, &sae, &f.dataset)
        },
        says: &["16", "32"],
    },
    Case {
        name: "dataset file is missing",
        setup: |f| f.cache(&f.model, &f.sae, &f.root.join("nowhere.txt")),
        says: &["nowhere.txt"],
    },
    Case {
        name: "pre-tokenized dataset holds floats",
        setup: |f| {
            let path = f.root.join("tokens.safetensors");
            let floats = tch::Tensor::zeros([4, 32], (tch::Kind::Float, tch::Device::Cpu));
            tch::Tensor::write_safetensors(&[("tokens", floats)], &path).unwrap();
            f.cache(&f.model, &f.sae, &path)
        },
        says: &["tokens"],
    },
    Case {
        name: "a split file of the cache is garbage",
        setup: |f| {
            let tok = f.root.join("tok");
            write_tokenizer(&tok);
            let cache = f.root.join("broken-cache");
            write_cache(&cache, 4, &tok);
            let split = std::fs::read_dir(cache.join("latents/layers.0"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .unwrap();
            std::fs::write(&split, b"not a safetensors file").unwrap();
            [
                "latents",
                "show",
                "--cache",
                &s(&cache),
                "--hookpoint",
                "layers.0",
                "--latent",
                "1",
            ]
            .map(String::from)
            .to_vec()
        },
        says: &["0_3.safetensors"],
    },
    Case {
        name: "run --config is not TOML",
        setup: |f| {
            let config = f.root.join("run.toml");
            std::fs::write(&config, "n_tokens = = 3\n").unwrap();
            let results = s(&f.out);
            ["run", "--config", &s(&config), "--results-dir", &results]
                .map(String::from)
                .to_vec()
        },
        says: &["run.toml"],
    },
    Case {
        name: "report of a folder that does not exist",
        setup: |f| vec!["report".into(), s(&f.root.join("no-results"))],
        says: &["no-results"],
    },
    Case {
        name: "explain a folder without a cache",
        setup: |f| {
            let empty = f.root.join("empty");
            std::fs::create_dir_all(&empty).unwrap();
            let out = s(&f.out);
            [
                "explain",
                &s(&empty),
                "--out",
                &out,
                "--explainer-model",
                "m",
            ]
            .map(String::from)
            .to_vec()
        },
        says: &["empty"],
    },
];

#[test]
fn every_malformed_input_is_a_one_line_error_naming_it() {
    let mut failed = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Fixture::new(dir.path());
        let args = (case.setup)(&fixture);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = autointerp(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        let problems = [
            (!matches!(out.status.code(), Some(1 | 2)))
                .then(|| format!("exit status {:?}", out.status.code())),
            stderr.contains("panicked").then(|| "panicked".to_string()),
            (errors.len() != 1).then(|| format!("{} error lines", errors.len())),
            errors.first().and_then(|e| {
                let missing: Vec<&&str> = case.says.iter().filter(|w| !e.contains(**w)).collect();
                (!missing.is_empty()).then(|| format!("error does not name {missing:?}"))
            }),
            leftovers(&fixture.out).map(|f| format!("left {f} behind")),
        ];
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        if !problems.is_empty() {
            failed.push(format!("{}: {}\n{stderr}", case.name, problems.join("; ")));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// A file under `out` that a failed command left, if any (empty folders do not count).
fn leftovers(out: &Path) -> Option<String> {
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                return Some(e.path().display().to_string());
            }
        }
    }
    None
}
