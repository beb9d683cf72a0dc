//! Telling a Hugging Face Hub repo id from a local path: the model, sparse-coder and dataset
//! loaders all take either.

/// Whether `s` reads as a Hub repo id, `owner/name`, each part of the characters the Hub allows
/// (ASCII letters, digits, `-`, `_`, `.`) and not starting with `.` or `-`. Paths with more
/// parts (`a/b/c`), relative paths (`./x`) and bare names (`gpt2`) are not.
///
/// ```
/// use autointerp_core::is_hub_repo_id;
/// assert!(is_hub_repo_id("HuggingFaceTB/SmolLM2-135M"));
/// assert!(!is_hub_repo_id("./models/x"));
/// ```
pub fn is_hub_repo_id(s: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_from_paths() {
        for id in [
            "HuggingFaceTB/SmolLM2-135M",
            "google/gemma-2-2b",
            "EleutherAI/sae-pythia-70m-32k",
            "google/gemma-scope-2b-pt-res",
            "EleutherAI/SmolLM2-135M-10B",
            "o/n.v2",
        ] {
            assert!(is_hub_repo_id(id), "{id}");
        }
        for not in [
            "gpt2",
            "sae",
            "text.txt",
            "./models/x",
            "./x",
            "./a",
            "../x",
            "/abs/path",
            "/abs/x",
            "a/b/c",
            "some/local/path",
            "a/",
            "a b/c",
            "-a/b",
            "a/.b",
        ] {
            assert!(!is_hub_repo_id(not), "{not}");
        }
    }
}
