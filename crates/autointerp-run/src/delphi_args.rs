//! delphi's command lines, pasted: `python -m delphi MODEL SPARSE --n_tokens 10_000_000
//! --hookpoints layers.5 layers.6 --filter_bos --scorers fuzz detection` runs as
//! `autointerp run` with the same settings.
//!
//! Before clap parses, [`normalize_args`] rewrites every flag spelled with underscores into its dashed
//! form (`--n_tokens=5` → `--n-tokens=5`; values are left untouched), joins a boolean flag and a
//! separate `true`/`false` (`--filter_bos False` → `--filter-bos=false`, as delphi's parser
//! reads it), and refuses delphi's flags that have no counterpart here with an error naming the
//! flag and what to use instead. Lists (`--hookpoints a b`), numbers with digit groups
//! (`10_000_000`) and delphi's other names (`--dataset-repo`, `--cache-ctx-len`,
//! `--pipeline-num-proc`, `--faiss-embedding-model`) are the flags' own aliases and parsers.

use std::ffi::OsString;

/// delphi's flags that autointerp does not take (dashed spelling), and what to do instead.
const UNSUPPORTED: [(&str, &str); 6] = [
    ("num-gpus", "autointerp uses one device, see --device"),
    (
        "load-in-8bit",
        "autointerp loads models in f32, bf16 or f16, see --dtype",
    ),
    (
        "max-memory",
        "the in-process engine's memory is bounded by --engine-max-batch-tokens and \
         --engine-prefix-cache-bytes",
    ),
    (
        "hf-token",
        "put the token in the HF_TOKEN environment variable (it never reaches run_config.json)",
    ),
    (
        "faiss-embedding-cache-dir",
        "autointerp keeps the embeddings of --non-activating-source embedding in memory, for \
         one run",
    ),
    (
        "faiss-embedding-cache-enabled",
        "autointerp keeps the embeddings of --non-activating-source embedding in memory, for \
         one run",
    ),
];

/// delphi's flags that autointerp accepts and has nothing to do for: flatten it into a command's
/// arguments; it is parsed, then never read.
#[derive(Debug, Clone, clap::Args)]
#[allow(dead_code)]
pub struct DelphiArgs {
    /// Accepted for delphi's command lines: the run's summary is always printed (more with
    /// RUST_LOG=info).
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    verbose: Option<bool>,
    /// Accepted for delphi's command lines: test examples are always drawn by quantile,
    /// delphi's only `test_type`.
    #[arg(long, hide = true, value_parser = ["quantiles"])]
    test_type: Option<String>,
}

/// `args` (the program name first) with delphi's spellings made autointerp's, for `cmd`;
/// an error naming the flag for one of delphi's flags autointerp does not take.
pub fn normalize_args(
    args: impl IntoIterator<Item = OsString>,
    cmd: &clap::Command,
) -> Result<Vec<OsString>, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut out = Vec::with_capacity(args.len());
    // The (sub)command the flags seen so far belong to.
    let mut current = cmd;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if out.is_empty() {
            out.push(arg.clone());
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            continue;
        };
        if text == "--" {
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        let Some(flag) = text.strip_prefix("--") else {
            if let Some(sub) = current.find_subcommand(text) {
                current = sub;
            }
            out.push(arg.clone());
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let name = name.replace('_', "-");
        if let Some((_, instead)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
            return Err(format!("--{}: not supported; {instead}", flag_name(flag)));
        }
        let joined = match value {
            Some(v) => Some(v.to_string()),
            None if takes_optional_bool(current, &name) => {
                let next = args.get(i).and_then(|a| a.to_str()).map(str::to_lowercase);
                match next.as_deref() {
                    Some(b @ ("true" | "false")) => {
                        i += 1;
                        Some(b.to_string())
                    }
                    _ => None,
                }
            }
            None => None,
        };
        out.push(match joined {
            Some(v) => format!("--{name}={v}").into(),
            None => format!("--{name}").into(),
        });
    }
    Ok(out)
}

/// The flag as the user wrote it, without its value.
fn flag_name(flag: &str) -> &str {
    flag.split_once('=').map_or(flag, |(n, _)| n)
}

/// Whether `cmd`'s flag `--name` (or an alias) is a boolean whose value is optional and given
/// with `=` (`--filter-bos`, `--filter-bos=false`).
fn takes_optional_bool(cmd: &clap::Command, name: &str) -> bool {
    cmd.get_arguments().any(|a| {
        let named = a.get_long() == Some(name)
            || a.get_all_aliases().is_some_and(|all| all.contains(&name));
        named
            && a.is_require_equals_set()
            && a.get_num_args().is_some_and(|n| n.min_values() == 0)
            && a.get_value_parser().type_id() == std::any::TypeId::of::<bool>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overrides::*;
    use clap::CommandFactory;

    /// A command line shaped like `autointerp`'s: `run` with every settings group, and a
    /// second command with a boolean flag of its own.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    #[allow(dead_code, clippy::large_enum_variant)]
    enum Command {
        Run {
            model: Option<String>,
            #[arg(long)]
            name: Option<String>,
            #[command(flatten)]
            cache: CacheOverrides,
            #[command(flatten)]
            device: DeviceOverrides,
            #[command(flatten)]
            latents: LatentOverrides,
            #[command(flatten)]
            explain: ExplainOverrides,
            #[command(flatten)]
            score: ScoreOverrides,
            #[command(flatten)]
            embedder: EmbedderOverrides,
            #[command(flatten)]
            client: ClientOverrides,
            #[command(flatten)]
            delphi: DelphiArgs,
        },
        Cache {
            #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
            skip_first_token: Option<bool>,
        },
    }

    fn norm(args: &[&str]) -> Result<Vec<String>, String> {
        let cmd = Cli::command();
        normalize_args(args.iter().map(OsString::from), &cmd)
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn underscores_become_dashes_in_flag_names_only() {
        assert_eq!(
            norm(&[
                "autointerp",
                "run",
                "my_model",
                "--n_tokens",
                "10_000_000",
                "--dataset_split=train[:1%]",
                "--name",
                "--x_y",
                "--",
                "--a_b"
            ])
            .unwrap(),
            [
                "autointerp",
                "run",
                "my_model",
                "--n-tokens",
                "10_000_000",
                "--dataset-split=train[:1%]",
                "--name",
                "--x-y",
                "--",
                "--a_b"
            ]
        );
    }

    #[test]
    fn a_separate_boolean_joins_its_flag() {
        assert_eq!(
            norm(&["autointerp", "run", "--filter_bos", "False", "m"]).unwrap(),
            ["autointerp", "run", "--filter-bos=false", "m"]
        );
        assert_eq!(
            norm(&["autointerp", "run", "--filter_bos", "m"]).unwrap(),
            ["autointerp", "run", "--filter-bos", "m"]
        );
        // Not a boolean flag: its value stays apart.
        assert_eq!(
            norm(&["autointerp", "run", "--name", "true"]).unwrap(),
            ["autointerp", "run", "--name", "true"]
        );
        // `cache`'s own boolean flags too.
        assert_eq!(
            norm(&["autointerp", "cache", "--skip_first_token", "TRUE"]).unwrap(),
            ["autointerp", "cache", "--skip-first-token=true"]
        );
    }

    /// Every numeric setting takes Python's digit groups (`10_000`).
    #[test]
    fn every_numeric_flag_takes_digit_groups() {
        use std::any::TypeId;
        fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
            let numeric = [
                TypeId::of::<usize>(),
                TypeId::of::<u8>(),
                TypeId::of::<u32>(),
                TypeId::of::<u64>(),
                TypeId::of::<i64>(),
                TypeId::of::<f32>(),
                TypeId::of::<f64>(),
            ];
            for arg in cmd.get_arguments() {
                let ty = arg.get_value_parser().type_id();
                if let Some(long) = arg.get_long() {
                    if numeric.iter().any(|t| ty == *t) {
                        let mut argv = path.to_vec();
                        argv.extend([format!("--{long}"), "1_0".into()]);
                        out.push(argv);
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                let mut deeper = path.to_vec();
                deeper.push(sub.get_name().into());
                walk(sub, &deeper, out);
            }
        }
        let mut lines = Vec::new();
        walk(&Cli::command(), &["autointerp".into()], &mut lines);
        assert!(lines.len() > 25, "{} numeric flags", lines.len());
        for argv in lines {
            if let Err(e) = Cli::command().try_get_matches_from(&argv) {
                assert!(
                    !matches!(
                        e.kind(),
                        clap::error::ErrorKind::ValueValidation
                            | clap::error::ErrorKind::InvalidValue
                    ),
                    "{argv:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn delphi_flags_without_a_counterpart_are_named() {
        let err = norm(&["autointerp", "run", "m", "--num_gpus", "2"]).unwrap_err();
        assert_eq!(
            err,
            "--num_gpus: not supported; autointerp uses one device, see --device"
        );
        let err = norm(&["autointerp", "run", "--load-in-8bit"]).unwrap_err();
        assert!(err.starts_with("--load-in-8bit: not supported") && err.contains("--dtype"));
        let err = norm(&["autointerp", "run", "--hf_token=abc"]).unwrap_err();
        assert!(err.starts_with("--hf_token: not supported") && !err.contains("abc"));
    }
}
