//! Telling a Hugging Face Hub repo id from a local path (the model, sparse-coder and dataset
//! loaders all take either), and reading the Hub's metadata answers with a bound.

use std::io::Read;

/// The most bytes read from a Hub metadata answer (a repo's file listing). Real listings are
/// kilobytes, a few MiB for repos of thousands of files; a broken or hostile endpoint
/// (`HF_ENDPOINT` names any host) must not fill memory however long a body it declares.
pub const MAX_HUB_METADATA_BYTES: u64 = 32 << 20;

/// Reads JSON from `body`, refusing it once it passes `limit` bytes: the error says how much was
/// allowed, whatever length the server declared.
///
/// ```
/// use autointerp_core::read_json_bounded;
/// let v: Vec<u32> = read_json_bounded(&b"[1, 2]"[..], 16).unwrap();
/// assert_eq!(v, [1, 2]);
/// let endless = std::io::repeat(b' ');
/// let err = read_json_bounded::<Vec<u32>>(endless, 1 << 10).unwrap_err();
/// assert!(err.contains("more than 1024 bytes"), "{err}");
/// ```
pub fn read_json_bounded<T: serde::de::DeserializeOwned>(
    body: impl Read,
    limit: u64,
) -> Result<T, String> {
    let mut bytes = Vec::new();
    body.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the answer holds more than {limit} bytes; refused (a listing is far smaller)"
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not the expected JSON: {e}"))
}

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
    fn endless_and_malformed_answers_are_errors() {
        let err = read_json_bounded::<serde_json::Value>(std::io::repeat(b' '), 1 << 20);
        assert!(err.unwrap_err().contains("more than 1048576 bytes"));
        let err = read_json_bounded::<Vec<u32>>(&b"{\"a\": 1}"[..], 1 << 20).unwrap_err();
        assert!(err.contains("not the expected JSON"), "{err}");
        // Exactly at the limit is fine.
        let v: Vec<u8> = read_json_bounded(&b"[7]"[..], 3).unwrap();
        assert_eq!(v, [7]);
    }

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
