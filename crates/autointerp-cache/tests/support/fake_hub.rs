//! A local stand-in for the few Hugging Face Hub endpoints `hf-hub` calls for datasets, so no
//! test reaches the internet:
//! `GET /api/datasets/{owner}/{name}/revision/{rev}` (the file listing) and
//! `GET /datasets/{owner}/{name}/resolve/{rev}/{file}` (downloads, with `Range` as the Hub answers
//! it: `206`, `Content-Range`, `ETag`, `X-Repo-Commit`).
//! Shared by autointerp-cache's and autointerp-cli's tests (`#[path]`).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// A revision's commit and its files, name → bytes.
type Snapshot = (String, BTreeMap<String, Vec<u8>>);

#[derive(Default)]
struct Hub {
    /// (repo, revision) → snapshot.
    repos: HashMap<(String, String), Snapshot>,
    /// Answer every download with this status.
    fail_downloads: Option<u16>,
    /// Paths requested, in order.
    seen: Vec<String>,
    /// `Authorization` headers received, in order.
    auth: Vec<String>,
}

/// A running fake Hub on 127.0.0.1; it stops with the test process.
pub struct FakeHub {
    /// Base URL, for `HF_ENDPOINT`.
    pub url: String,
    hub: Arc<Mutex<Hub>>,
}

impl FakeHub {
    /// Starts a server with no datasets.
    pub fn start() -> Self {
        let hub = Arc::new(Mutex::new(Hub::default()));
        let app = Router::new().fallback(answer).with_state(hub.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            hub,
        }
    }

    /// Publishes `files` as revision `rev` of dataset `repo`.
    pub fn add(&self, repo: &str, rev: &str, files: &[(&str, Vec<u8>)]) {
        let commit = format!("{:040x}", fnv(format!("{repo}@{rev}").as_bytes()));
        let files = files
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect();
        self.hub
            .lock()
            .unwrap()
            .repos
            .insert((repo.into(), rev.into()), (commit, files));
    }

    /// Makes every download answer `status` (`None`: serve files again).
    pub fn fail_downloads(&self, status: Option<u16>) {
        self.hub.lock().unwrap().fail_downloads = status;
    }

    /// The `Authorization` headers received since the last call.
    pub fn take_auth(&self) -> Vec<String> {
        std::mem::take(&mut self.hub.lock().unwrap().auth)
    }

    /// The request paths seen since the last call.
    pub fn take_seen(&self) -> Vec<String> {
        std::mem::take(&mut self.hub.lock().unwrap().seen)
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "{\"error\":\"Repository not found\"}",
    )
        .into_response()
}

async fn answer(State(hub): State<Arc<Mutex<Hub>>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let mut hub = hub.lock().unwrap();
    hub.seen.push(path.clone());
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        hub.auth.push(auth.to_string());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "datasets", owner, name, "revision", rev] => {
            let rev = rev.replace("%2F", "/");
            let Some((commit, files)) = hub.repos.get(&(format!("{owner}/{name}"), rev)) else {
                return not_found();
            };
            let siblings: Vec<_> = files
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            axum::Json(serde_json::json!({
                "id": format!("{owner}/{name}"),
                "sha": commit,
                "siblings": siblings,
            }))
            .into_response()
        }
        ["datasets", owner, name, "resolve", rev, file @ ..] => {
            if let Some(code) = hub.fail_downloads {
                return StatusCode::from_u16(code).unwrap().into_response();
            }
            let rev = rev.replace("%2F", "/");
            let Some((commit, files)) = hub.repos.get(&(format!("{owner}/{name}"), rev)) else {
                return not_found();
            };
            let Some(bytes) = files.get(&file.join("/")) else {
                return (StatusCode::NOT_FOUND, "Entry not found").into_response();
            };
            let len = bytes.len();
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .map(|(a, b)| {
                    let a: usize = a.parse().unwrap_or(0);
                    let b: usize = b.parse().map_or(len - 1, |b: usize| b.min(len - 1));
                    (a, b)
                });
            let builder = Response::builder()
                .header("x-repo-commit", commit.as_str())
                .header(header::ETAG, format!("\"{:016x}\"", fnv(bytes)))
                .header(header::ACCEPT_RANGES, "bytes");
            match range {
                Some((a, b)) => builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
                    .body(Body::from(bytes[a..=b].to_vec()))
                    .unwrap(),
                None => builder
                    .status(StatusCode::OK)
                    .body(Body::from(bytes.clone()))
                    .unwrap(),
            }
        }
        _ => not_found(),
    }
}
