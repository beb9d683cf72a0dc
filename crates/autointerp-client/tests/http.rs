//! `OpenAiClient` against scripted local servers: an axum app whose answer to each request is
//! scripted, and a raw TCP server that drops connections mid-response.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;
use autointerp_client::{ChatRequest, Client, Error, HttpSettings, OpenAiClient};
use autointerp_core::Message;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY_VAR: &str = "AUTOINTERP_CLIENT_TEST_KEY";
const SECRET: &str = "sk-test-0123456789-do-not-print";

/// Sets the key variable once, before any test reads the environment.
fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(KEY_VAR, SECRET));
}

/// What the server does with one request.
#[derive(Clone, Debug)]
enum Step {
    /// A normal answer with logprobs and prompt logprobs.
    Ok,
    /// The normal answer after a pause.
    Delayed(Duration),
    /// 429 with this `Retry-After` value.
    RateLimited(&'static str),
    /// This status with a short JSON error.
    Status(u16),
    /// 500 whose body echoes the Authorization header back.
    EchoAuth,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with JSON cut off mid-way (a complete HTTP response).
    Truncated,
    /// 200 whose body is an error object with this code, as OpenRouter sends.
    ApiError(i64),
}

#[derive(Default)]
struct Server {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Option<Step>>,
    auth: Mutex<Vec<Option<String>>>,
    bodies: Mutex<Vec<Value>>,
}

impl Server {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn next_step(&self) -> Step {
        let scripted = self.script.lock().unwrap().pop_front();
        scripted
            .or_else(|| self.default.lock().unwrap().clone())
            .unwrap_or(Step::Ok)
    }
}

/// Counts a request out of flight even when the client hangs up and the handler is dropped.
struct InFlight(Arc<Server>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A normal answer, as text: vLLM's prompt-logprob objects are ordered (the prompt token first),
/// which a `serde_json::Value` would not keep.
const OK_BODY: &str = r#"{
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "test-model",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello"},
        "finish_reason": "stop",
        "logprobs": {"content": [
            {"token": "Hel", "logprob": -0.25, "bytes": [72, 101, 108],
             "top_logprobs": [{"token": "Hel", "logprob": -0.25}, {"token": "Hi", "logprob": -1.5}]},
            {"token": "lo", "logprob": -0.5, "bytes": [108, 111],
             "top_logprobs": [{"token": "lo", "logprob": -0.5}, {"token": "p", "logprob": -2.0}]}
        ]}
    }],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    "prompt_logprobs": [
        null,
        {"17": {"logprob": -3.0, "rank": 4, "decoded_token": " cat"},
         "9": {"logprob": -0.5, "rank": 1, "decoded_token": " the"},
         "12": {"logprob": -1.0, "rank": 2, "decoded_token": " a"}}
    ]
}"#;

fn ok_response() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OK_BODY).into_response()
}

async fn handle(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    server.requests.fetch_add(1, Ordering::SeqCst);
    let now = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    server.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(server.clone());
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("<binary>").to_owned());
    server.auth.lock().unwrap().push(auth.clone());
    server
        .bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));

    match server.next_step() {
        Step::Ok => ok_response(),
        Step::Delayed(d) => {
            tokio::time::sleep(d).await;
            ok_response()
        }
        Step::RateLimited(after) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, after)],
            axum::Json(json!({"error": {"message": "slow down"}})),
        )
            .into_response(),
        Step::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            (
                status,
                axum::Json(json!({"error": {"message": "server trouble"}})),
            )
                .into_response()
        }
        Step::EchoAuth => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("you sent {}", auth.unwrap_or_default()),
        )
            .into_response(),
        Step::Malformed => (
            [(header::CONTENT_TYPE, "application/json")],
            "<html>Bad gateway</html>",
        )
            .into_response(),
        Step::Truncated => {
            let half = &OK_BODY[..OK_BODY.len() / 2];
            ([(header::CONTENT_TYPE, "application/json")], half).into_response()
        }
        Step::ApiError(code) => {
            axum::Json(json!({"error": {"message": "upstream said no", "code": code}}))
                .into_response()
        }
    }
}

/// Starts the scripted server; `script` is played in order, then `default` forever.
async fn serve(script: Vec<Step>, default: Step) -> Result<(String, Arc<Server>)> {
    let server = Arc::new(Server::default());
    *server.script.lock().unwrap() = script.into();
    *server.default.lock().unwrap() = Some(default);
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .with_state(server.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/v1"), server))
}

/// A client with tiny backoff delays, so that retries cost milliseconds.
fn client(base_url: &str) -> Result<OpenAiClient> {
    Ok(OpenAiClient::new(base_url, "test-model")?
        .with_backoff(Duration::from_millis(1), Duration::from_millis(10))
        .with_timeout(Duration::from_secs(5)))
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![
        Message::system("Be brief."),
        Message::user("Say hello"),
    ])
}

#[tokio::test]
async fn normal_answer_carries_logprobs_usage_cost_and_extra_params() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Ok).await?;
    let c = client(&url)?
        .with_api_key_env(KEY_VAR)?
        .with_price(2.0, 10.0);
    let req = request()
        .with_max_tokens(32)
        .with_temperature(0.0)
        .with_seed(7)
        .with_stop("\n\n")
        .with_logprobs(2)
        .with_prompt_logprobs(2)
        .with_extra("top_k", 20)
        .with_extra("chat_template_kwargs", json!({"enable_thinking": false}));
    let r = c.chat(req).await?;

    assert_eq!(r.text, "Hello");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    let lp = r.logprobs.expect("logprobs");
    assert_eq!(lp.len(), 2);
    assert_eq!((lp[0].token.as_str(), lp[0].logprob), ("Hel", -0.25));
    assert_eq!(
        lp[0].top,
        vec![("Hel".to_owned(), -0.25), ("Hi".to_owned(), -1.5)]
    );
    let plp = r.prompt_logprobs.expect("prompt logprobs");
    assert_eq!(plp.len(), 2);
    assert!(plp[0].is_none());
    let p1 = plp[1].as_ref().expect("second prompt position");
    // The prompt token comes first in vLLM's object; `top` keeps the best `k` = 2 by rank.
    assert_eq!((p1.token.as_str(), p1.logprob), (" cat", -3.0));
    assert_eq!(
        p1.top,
        vec![(" the".to_owned(), -0.5), (" a".to_owned(), -1.0)]
    );
    assert_eq!(
        (r.usage.prompt_tokens, r.usage.completion_tokens),
        (1000, 500)
    );
    let cost = r.usage.cost.expect("cost");
    assert!(
        (cost - (1000.0 * 2.0 + 500.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    assert_eq!(server.requests(), 1);
    let body = server.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Say hello"})
    );
    assert_eq!(body["max_tokens"], 32);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["seed"], 7);
    assert_eq!(body["stop"], json!(["\n\n"]));
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 2);
    assert_eq!(body["prompt_logprobs"], 2);
    assert_eq!(body["top_k"], 20);
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert!(body.get("top_p").is_none());
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_until_success() -> Result<()> {
    init();
    let (url, server) = serve(vec![Step::Status(500), Step::Status(503)], Step::Ok).await?;
    let r = client(&url)?.with_max_attempts(5).chat(request()).await?;
    assert_eq!(r.text, "Hello");
    assert_eq!(server.requests(), 3);
    Ok(())
}

#[tokio::test]
async fn retry_after_is_honoured() -> Result<()> {
    init();
    let (url, server) = serve(vec![Step::RateLimited("1")], Step::Ok).await?;
    let start = Instant::now();
    let r = client(&url)?.chat(request()).await?;
    let elapsed = start.elapsed();
    assert_eq!(r.text, "Hello");
    assert_eq!(server.requests(), 2);
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited only {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn retries_exhaust_into_typed_errors() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Status(502)).await?;
    let err = client(&url)?
        .with_max_attempts(3)
        .chat(request())
        .await
        .unwrap_err();
    match &err {
        Error::RetriesExhausted { attempts: 3, last } => {
            assert!(
                matches!(**last, Error::Http { status: 502, .. }),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(server.requests(), 3);

    // A long Retry-After is capped by the configured maximum.
    let (url, server) = serve(vec![], Step::RateLimited("30")).await?;
    let start = Instant::now();
    let err = client(&url)?
        .with_max_attempts(3)
        .with_max_retry_after(Duration::from_millis(20))
        .chat(request())
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    match err {
        Error::RetriesExhausted { attempts: 3, last } => match *last {
            Error::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(30)))
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests(), 3);

    // With a single attempt there is nothing to exhaust: the error comes back as it is.
    let (url, server) = serve(vec![], Step::Status(500)).await?;
    let err = client(&url)?
        .with_max_attempts(1)
        .chat(request())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 500, .. }), "{err:?}");
    assert_eq!(server.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn client_errors_are_not_retried() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Status(400)).await?;
    let err = client(&url)?.chat(request()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http { status: 400, body } if body.contains("server trouble")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(server.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn timeouts_fire_and_are_retried() -> Result<()> {
    init();
    let slow = Step::Delayed(Duration::from_secs(3));
    let (url, server) = serve(vec![slow.clone()], Step::Ok).await?;
    let c = client(&url)?.with_timeout(Duration::from_millis(300));
    let r = c.chat(request()).await?;
    assert_eq!(r.text, "Hello");
    assert_eq!(server.requests(), 2);

    let (url, server) = serve(vec![], slow).await?;
    let c = client(&url)?
        .with_timeout(Duration::from_millis(200))
        .with_max_attempts(2);
    let start = Instant::now();
    let err = c.chat(request()).await.unwrap_err();
    assert!(
        start.elapsed() >= Duration::from_millis(380),
        "{:?}",
        start.elapsed()
    );
    match err {
        Error::RetriesExhausted { attempts: 2, last } => {
            assert!(
                matches!(*last, Error::Timeout { after } if after == Duration::from_millis(200)),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests(), 2);
    Ok(())
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_typed_errors() -> Result<()> {
    init();
    for step in [Step::Malformed, Step::Truncated] {
        let (url, server) = serve(vec![], step.clone()).await?;
        let err = client(&url)?.chat(request()).await.unwrap_err();
        match &err {
            Error::MalformedResponse { problem, body } => {
                assert!(problem.contains("JSON"), "{step:?}: {problem}");
                assert!(!body.is_empty());
            }
            other => panic!("{step:?}: unexpected {other:?}"),
        }
        assert_eq!(server.requests(), 1, "{step:?} is not retried");
    }
    Ok(())
}

#[tokio::test]
async fn api_error_objects_are_typed_and_retried_when_transient() -> Result<()> {
    init();
    let (url, server) = serve(vec![Step::ApiError(502)], Step::Ok).await?;
    assert_eq!(client(&url)?.chat(request()).await?.text, "Hello");
    assert_eq!(server.requests(), 2);

    let (url, server) = serve(vec![], Step::ApiError(400)).await?;
    let err = client(&url)?.chat(request()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { code: Some(400), message } if message == "upstream said no"),
        "{err:?}"
    );
    assert_eq!(server.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn api_key_reaches_the_server_but_is_never_shown() -> Result<()> {
    init();
    let (url, server) = serve(vec![Step::EchoAuth], Step::EchoAuth).await?;
    let c = client(&url)?
        .with_api_key_env(KEY_VAR)?
        .with_max_attempts(2);
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(
        debug.contains(KEY_VAR),
        "the variable's name may be shown: {debug}"
    );
    assert!(!format!("{:?}", c.clone()).contains(SECRET));

    let err = c.chat(request()).await.unwrap_err();
    let (shown, debugged) = (err.to_string(), format!("{err:?}"));
    assert!(
        !shown.contains(SECRET) && !debugged.contains(SECRET),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"), "{shown}");
    let auth = server.auth.lock().unwrap().clone();
    assert_eq!(auth.len(), 2);
    assert!(
        auth.iter()
            .all(|a| a.as_deref() == Some(&format!("Bearer {SECRET}") as &str)),
        "{auth:?}"
    );

    // Without a key, no Authorization header is sent.
    let (url, server) = serve(vec![], Step::Ok).await?;
    client(&url)?.chat(request()).await?;
    assert_eq!(server.auth.lock().unwrap().clone(), vec![None]);
    Ok(())
}

#[tokio::test]
async fn missing_key_variable_is_a_config_error_naming_it() {
    init();
    let var = "AUTOINTERP_CLIENT_TEST_SURELY_UNSET_VAR";
    let err = OpenAiClient::new("http://127.0.0.1:9/v1", "m")
        .unwrap()
        .with_api_key_env(var)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(msg) if msg.contains(var)),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrency_limit_is_shared_across_clones() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Delayed(Duration::from_millis(100))).await?;
    let c = client(&url)?.with_max_concurrency(3);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.chat(request()).await }));
    }
    for t in tasks {
        assert_eq!(t.await??.text, "Hello");
    }
    let max = server.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} requests in flight");
    assert!(
        max >= 2,
        "the limit should still allow parallel requests, saw {max}"
    );
    assert_eq!(server.requests(), 12);
    Ok(())
}

#[tokio::test]
async fn arc_and_references_are_clients() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Ok).await?;
    async fn ask(c: impl Client) -> autointerp_client::Result<String> {
        Ok(c.chat(request()).await?.text)
    }
    let c = Arc::new(client(&url)?);
    assert_eq!(ask(&c).await?, "Hello");
    assert_eq!(ask(c.clone()).await?, "Hello");
    assert_eq!(ask(&*c).await?, "Hello");
    assert_eq!(server.requests(), 3);
    Ok(())
}

#[tokio::test]
async fn requests_per_minute_spaces_requests() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Ok).await?;
    // 1200 per minute = one every 50 ms.
    let c = client(&url)?.with_requests_per_minute(1200);
    let start = Instant::now();
    let answers = futures_join(&c, 5).await;
    assert!(answers
        .iter()
        .all(|a| a.as_ref().is_ok_and(|r| r.text == "Hello")));
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.requests(), 5);
    Ok(())
}

async fn futures_join(
    c: &OpenAiClient,
    n: usize,
) -> Vec<autointerp_client::Result<autointerp_client::ChatResponse>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.chat(request()).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

/// Reads one HTTP request (head and `Content-Length` body) from `stream`.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A raw server whose first `drops` connections get a response head and half a body, then a
/// closed connection; later ones get the normal answer.
async fn dropping_server(drops: usize) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                read_request(&mut stream).await?;
                let body = OK_BODY;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                if n <= drops {
                    stream.write_all(&body.as_bytes()[..body.len() / 2]).await?;
                    stream.flush().await?;
                    // Dropping the stream here closes the connection mid-body.
                } else {
                    stream.write_all(body.as_bytes()).await?;
                    stream.shutdown().await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    Ok((format!("http://{addr}/v1"), count))
}

#[tokio::test]
async fn dropped_connections_are_retried() -> Result<()> {
    init();
    let (url, connections) = dropping_server(2).await?;
    let r = client(&url)?.chat(request()).await?;
    assert_eq!(r.text, "Hello");
    assert_eq!(connections.load(Ordering::SeqCst), 3);

    let (url, connections) = dropping_server(usize::MAX).await?;
    let err = client(&url)?
        .with_max_attempts(2)
        .chat(request())
        .await
        .unwrap_err();
    match err {
        Error::RetriesExhausted { attempts: 2, last } => {
            assert!(matches!(*last, Error::Connection { .. }), "{last:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn refused_connections_are_connection_errors() -> Result<()> {
    init();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let err = client(&format!("http://127.0.0.1:{port}/v1"))?
        .with_max_attempts(2)
        .chat(request())
        .await
        .unwrap_err();
    assert!(matches!(err.root(), Error::Connection { .. }), "{err:?}");
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    Ok(())
}

/// What an endless server sends after the response head.
#[derive(Clone, Copy, Debug)]
enum Endless {
    /// `Content-Length: 1 GiB`, then spaces (valid JSON whitespace) for as long as anyone reads.
    Declared,
    /// Chunked transfer encoding whose chunks of spaces never end.
    Chunked,
}

/// A raw server that answers 200 with a body that never ends, counting connections.
async fn endless_server(kind: Endless) -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                read_request(&mut stream).await?;
                let framing = match kind {
                    Endless::Declared => "content-length: 1073741824",
                    Endless::Chunked => "transfer-encoding: chunked",
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await?;
                let spaces = vec![b' '; 64 * 1024];
                let chunk = match kind {
                    Endless::Declared => spaces,
                    Endless::Chunked => {
                        let mut c = format!("{:x}\r\n", spaces.len()).into_bytes();
                        c.extend_from_slice(&spaces);
                        c.extend_from_slice(b"\r\n");
                        c
                    }
                };
                // Until the client hangs up, which makes this write fail.
                loop {
                    stream.write_all(&chunk).await?;
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            });
        }
    });
    Ok((port, count))
}

/// #15 item 17: a body is read up to the limit and no further, whatever the server declares or
/// streams; the error names the limit and the URL (credentials redacted), and is not retried.
#[tokio::test]
async fn endless_bodies_stop_at_the_size_limit() -> Result<()> {
    init();
    for kind in [Endless::Declared, Endless::Chunked] {
        let (port, connections) = endless_server(kind).await?;
        let url = format!("http://bob:hunter2@127.0.0.1:{port}/v1");
        let err = client(&url)?
            .with_timeout(Duration::from_secs(60))
            .with_max_response_bytes(1024 * 1024)
            .chat(request())
            .await
            .unwrap_err();
        match &err {
            Error::ResponseTooLarge {
                url,
                limit,
                declared,
            } => {
                assert_eq!(*limit, 1024 * 1024, "{kind:?}");
                assert_eq!(
                    url,
                    &format!("http://bob:[redacted]@127.0.0.1:{port}/v1/chat/completions")
                );
                let want = match kind {
                    Endless::Declared => Some(1 << 30),
                    Endless::Chunked => None,
                };
                assert_eq!(*declared, want, "{kind:?}");
            }
            other => panic!("{kind:?}: unexpected {other:?}"),
        }
        let shown = err.to_string();
        assert!(
            shown.contains("1048576 bytes") && shown.contains("max_response_bytes"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "{kind:?}: not retried"
        );
    }

    // The default limit (32 MiB) holds too: the stream is cut, not read for ever.
    let (port, _) = endless_server(Endless::Chunked).await?;
    let err = client(&format!("http://127.0.0.1:{port}/v1"))?
        .with_timeout(Duration::from_secs(120))
        .chat(request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit, .. } if limit == 32 * 1024 * 1024),
        "{err:?}"
    );
    Ok(())
}

/// #15 item 11: the request timeout runs from sending, not from joining the queue, so requests
/// queued behind a one-slot client all succeed although together they take several timeouts.
#[tokio::test]
async fn queued_requests_do_not_spend_their_request_timeout() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Delayed(Duration::from_millis(250))).await?;
    let settings = HttpSettings {
        max_requests_in_flight: 1,
        request_timeout: Duration::from_millis(1000),
        ..HttpSettings::default()
    };
    // One attempt: a request that timed out would fail the test rather than be retried.
    let c = client(&url)?.with_settings(&settings)?.with_max_attempts(1);
    assert_eq!(c.settings(), settings);
    let n = 8; // 8 × 250 ms = 2 s of server time, twice the timeout.
    let answers = futures_join(&c, n).await;
    for a in &answers {
        assert_eq!(
            a.as_ref().map(|r| r.text.as_str()).ok(),
            Some("Hello"),
            "{a:?}"
        );
    }
    assert_eq!(server.requests(), n);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 1);
    Ok(())
}

/// #15 item 11: waiting to be admitted has its own allowance; past it the call fails with a
/// typed error, unsent and not retried.
#[tokio::test]
async fn the_queue_allowance_bounds_waiting_for_a_slot() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Delayed(Duration::from_secs(2))).await?;
    let c = client(&url)?
        .with_max_concurrency(1)
        .with_queue_timeout(Duration::from_millis(100));
    let answers = futures_join(&c, 2).await;
    let (ok, failed): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.is_ok());
    assert_eq!(ok.len(), 1);
    let err = failed
        .into_iter()
        .next()
        .and_then(|a| a.err())
        .expect("one failure");
    assert!(
        matches!(err, Error::QueueTimeout { waited, max_in_flight: 1 } if waited == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("queue_timeout_secs"), "{err}");
    assert_eq!(server.requests(), 1, "the queued request was never sent");
    Ok(())
}

/// #15 item 14: `extra_body` reaches every request, replacing the client's own fields; a
/// request's `extra` replaces it in turn; the fields that make the request are refused.
#[tokio::test]
async fn extra_body_fields_reach_every_request() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Ok).await?;
    let serde_json::Value::Object(extra) = json!({
        "top_k": 20,
        "temperature": 0.7,
        "provider": {"order": ["a", "b"]},
    }) else {
        unreachable!()
    };
    let c = client(&url)?.with_extra_body(extra.clone())?;
    c.chat(request().with_temperature(0.0).with_max_tokens(5))
        .await?;
    c.chat(request().with_extra("top_k", 5)).await?;
    let bodies = server.bodies.lock().unwrap().clone();
    assert_eq!(bodies[0]["top_k"], 20);
    assert_eq!(
        bodies[0]["temperature"], 0.7,
        "extra_body replaces our field"
    );
    assert_eq!(bodies[0]["max_tokens"], 5);
    assert_eq!(bodies[0]["provider"], json!({"order": ["a", "b"]}));
    assert_eq!(bodies[0]["model"], "test-model");
    assert_eq!(bodies[1]["top_k"], 5, "the request's extra wins");
    assert_eq!(bodies[1]["provider"], json!({"order": ["a", "b"]}));

    for key in ["model", "messages", "stream"] {
        let mut bad = extra.clone();
        bad.insert(key.into(), json!(true));
        let err = client(&url)?.with_extra_body(bad.clone()).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains(&format!("`{key}`"))),
            "{key}: {err}"
        );
        let settings = HttpSettings {
            extra_body: bad,
            ..HttpSettings::default()
        };
        assert!(client(&url)?.with_settings(&settings).is_err(), "{key}");
    }
    Ok(())
}

/// A `tracing` writer into a shared buffer, to read what a test logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// #15 item 19: credentials in the base URL (user info, `?key=`) reach the server but never an
/// error, a retry log line or `Debug`.
#[tokio::test]
async fn credentials_in_the_url_are_redacted_from_errors_logs_and_debug() -> Result<()> {
    init();
    let (url, server) = serve(vec![], Step::Status(503)).await?;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/v1");
    let secret_url = format!("http://bob:hunter2@127.0.0.1:{port}/v1?key=sk-query-secret");
    let c = client(&secret_url)?.with_max_attempts(2);

    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let err = {
        let _guard = tracing::subscriber::set_default(subscriber);
        c.chat(request()).await.unwrap_err()
    };
    assert_eq!(server.requests(), 2, "the query reached the right path");
    let logs = String::from_utf8(logs.0.lock().unwrap().clone())?;
    assert!(logs.contains("retrying"), "{logs}");
    assert!(
        logs.contains(&format!(
            "http://bob:[redacted]@127.0.0.1:{port}/v1/chat/completions?key=[redacted]"
        )),
        "{logs}"
    );
    let debug = format!("{c:?}");
    for shown in [logs, err.to_string(), format!("{err:?}"), debug] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("sk-query-secret"),
            "{shown}"
        );
    }

    // The HTTP stack's own messages name the URL too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let err = client(&format!(
        "http://bob:hunter2@127.0.0.1:{closed}/v1?api_key=sk-query-secret"
    ))?
    .with_max_attempts(1)
    .chat(request())
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("sk-query-secret"),
        "{shown}"
    );
    Ok(())
}
