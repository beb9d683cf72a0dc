//! `OpenAiEmbedder` against a scripted local `/v1/embeddings` server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use autointerp_client::{Embedder, Error, HttpSettings, OpenAiEmbedder};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

#[derive(Default)]
struct Server {
    /// Statuses to answer with before answering normally.
    script: Mutex<VecDeque<u16>>,
    bodies: Mutex<Vec<Value>>,
    auth: Mutex<Vec<Option<String>>>,
}

/// Embeds each input as `[length of the text, its position in the request]`, listed in reverse
/// order so that the client must sort by `index`.
async fn handle(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    server.auth.lock().unwrap().push(
        headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    server.bodies.lock().unwrap().push(body.clone());
    if let Some(status) = server.script.lock().unwrap().pop_front() {
        return (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"error": {"message": "trouble"}})),
        )
            .into_response();
    }
    let inputs = body["input"].as_array().unwrap();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| {
            json!({"object": "embedding", "index": i,
                   "embedding": [t.as_str().unwrap().len() as f32, i as f32]})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "usage": {"prompt_tokens": 3}})).into_response()
}

async fn serve(script: Vec<u16>) -> Result<(String, Arc<Server>)> {
    let server = Arc::new(Server::default());
    *server.script.lock().unwrap() = script.into();
    let app = Router::new()
        .route("/v1/embeddings", post(handle))
        .with_state(server.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/v1"), server))
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| "x".repeat(i + 1)).collect()
}

#[tokio::test]
async fn batches_keep_the_order_of_the_texts() -> Result<()> {
    let (url, server) = serve(vec![]).await?;
    let embedder = OpenAiEmbedder::new(&url, "mini")?
        .with_batch_size(2)
        .with_dimensions(2)
        .with_api_key("sk-embed")?;
    let vectors = embedder.embed(&texts(5)).await?;
    assert_eq!(
        vectors,
        vec![
            vec![1.0, 0.0],
            vec![2.0, 1.0],
            vec![3.0, 0.0],
            vec![4.0, 1.0],
            vec![5.0, 0.0]
        ]
    );
    let bodies = server.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["model"], "mini");
    assert_eq!(bodies[0]["dimensions"], 2);
    assert_eq!(bodies[2]["input"], json!(["xxxxx"]));
    assert_eq!(
        server.auth.lock().unwrap()[0].as_deref(),
        Some("Bearer sk-embed")
    );
    assert!(embedder.embed(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() -> Result<()> {
    let (url, server) = serve(vec![503, 500]).await?;
    let embedder = OpenAiEmbedder::new(&url, "mini")?
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5));
    assert_eq!(embedder.embed(&texts(1)).await?, vec![vec![1.0, 0.0]]);
    assert_eq!(server.bodies.lock().unwrap().len(), 3);

    let (url, server) = serve(vec![400]).await?;
    let embedder = OpenAiEmbedder::new(&url, "mini")?;
    let err = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 400, .. }), "{err}");
    assert_eq!(server.bodies.lock().unwrap().len(), 1);

    let (url, _) = serve(vec![500, 500, 500]).await?;
    let embedder = OpenAiEmbedder::new(&url, "mini")?
        .with_max_attempts(2)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5));
    let err = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 2, .. }),
        "{err}"
    );
    Ok(())
}

/// Through the trait, as the latents crate calls it: a plain thread with no tokio runtime drives
/// the future with `block_on`, and a server error keeps its type behind the box.
#[test]
fn the_trait_works_without_a_runtime() -> Result<()> {
    let server_rt = tokio::runtime::Runtime::new()?;
    let (url, _server) = server_rt.block_on(serve(vec![400]))?;
    let embedder: Arc<dyn Embedder> = Arc::new(OpenAiEmbedder::new(&url, "mini")?);
    let err = std::thread::spawn({
        let embedder = Arc::clone(&embedder);
        move || futures::executor::block_on(embedder.embed(&texts(1))).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(
        matches!(
            err.downcast_ref::<Error>(),
            Some(Error::Http { status: 400, .. })
        ),
        "{err}"
    );
    let vectors =
        std::thread::spawn(move || futures::executor::block_on(embedder.embed(&texts(2))))
            .join()
            .unwrap()
            .map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(vectors, vec![vec![1.0, 0.0], vec![2.0, 1.0]]);
    Ok(())
}

/// An `/embeddings` route whose 200 answer streams spaces for ever (chunked).
async fn serve_endless() -> Result<String> {
    async fn endless() -> Response {
        let spaces = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(spaces.clone()));
        (
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response()
    }
    let app = Router::new().route("/v1/embeddings", post(endless));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/v1"))
}

/// #15 item 17, embeddings: an endless answer stops at the size limit with an error naming it
/// and the URL.
#[tokio::test]
async fn endless_answers_stop_at_the_size_limit() -> Result<()> {
    let url = serve_endless().await?;
    let settings = HttpSettings {
        max_response_bytes: 256 * 1024,
        ..HttpSettings::embeddings()
    };
    let embedder = OpenAiEmbedder::new(&url, "mini")?.with_settings(&settings)?;
    let err = embedder.embed(&texts(1)).await.unwrap_err();
    match &err {
        Error::ResponseTooLarge {
            url: shown,
            limit: 262_144,
            declared: None,
        } => assert_eq!(shown, &format!("{url}/embeddings")),
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}

/// #15 items 11 and 14, embeddings: the settings apply (one request in flight, its timeout,
/// `extra_body` in every body) and the fields the embedder writes are refused.
#[tokio::test]
async fn settings_apply_to_embedders() -> Result<()> {
    let (url, server) = serve(vec![]).await?;
    let serde_json::Value::Object(extra) = json!({"dimensions": 2, "user": "run-7"}) else {
        unreachable!()
    };
    let settings = HttpSettings {
        max_requests_in_flight: 1,
        request_timeout: Duration::from_secs(30),
        extra_body: extra.clone(),
        ..HttpSettings::embeddings()
    };
    let embedder = OpenAiEmbedder::new(&url, "mini")?
        .with_dimensions(512)
        .with_settings(&settings)?;
    assert_eq!(embedder.settings(), settings);
    assert_eq!(
        OpenAiEmbedder::new(&url, "mini")?.settings(),
        HttpSettings::embeddings()
    );
    embedder.embed(&texts(2)).await?;
    let body = server.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["dimensions"], 2, "extra_body replaces our field");
    assert_eq!(body["user"], "run-7");
    assert_eq!(body["encoding_format"], "float");
    assert_eq!(body["input"], json!(["x", "xx"]));

    for key in ["model", "input", "encoding_format"] {
        let mut bad = extra.clone();
        bad.insert(key.into(), json!("x"));
        let err = OpenAiEmbedder::new(&url, "mini")?
            .with_extra_body(bad)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains(&format!("`{key}`"))),
            "{key}: {err}"
        );
    }
    // `messages` is a chat field: an embedder has no reason to refuse it.
    let mut chatty = Map::new();
    chatty.insert("messages".into(), json!([]));
    assert!(OpenAiEmbedder::new(&url, "mini")?
        .with_extra_body(chatty)
        .is_ok());
    Ok(())
}
