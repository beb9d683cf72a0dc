//! `OpenAiClient` against scripted local servers: an axum app whose answer to each request is
//! scripted, and a raw TCP server that drops connections mid-response.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;
use autointerp_client::{ChatRequest, Client, Error, OpenAiClient};
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
