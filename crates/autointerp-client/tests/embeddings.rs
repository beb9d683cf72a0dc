//! `OpenAiEmbedder` against a scripted local `/v1/embeddings` server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use autointerp_client::{Embedder, Error, OpenAiEmbedder};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
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
