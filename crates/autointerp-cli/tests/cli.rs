//! The `autointerp` binary as a user runs it.
use std::process::Command;

fn autointerp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autointerp"))
        .args(args)
        .output()
        .expect("run autointerp")
}

#[test]
fn help_lists_the_commands() {
    let out = autointerp(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chat"), "{text}");
}

#[test]
fn a_server_that_is_down_is_a_clear_error() {
    // Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    let out = autointerp(&[
        "chat",
        "--model",
        "openai:http://127.0.0.1:9/v1/m",
        "--prompt",
        "hi",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: chat request failed"), "{err}");
}
