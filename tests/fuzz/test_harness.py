"""The fuzz invariant itself must be able to fail: each rule rejects what it is meant to."""

from __future__ import annotations

from tests.fuzz.harness import Answer, allowed_models, dialect_of, upstream_violations, violations

JSON = [("content-type", "application/json")]
OPENAI_400 = b'{"error":{"message":"messages: required","type":"invalid_request_error","param":null,"code":null}}'
ANTHROPIC_400 = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}'
GEMINI_400 = b'{"error":{"code":400,"message":"contents: required","status":"INVALID_ARGUMENT"}}'


def test_dialect_shaped_answers_pass() -> None:
    assert violations(Answer(200, JSON, b"{}"), "openai") == []
    assert violations(Answer(200, [("content-type", "text/event-stream")], b"data: {}\n\n"), "gemini") == []
    assert violations(Answer(400, JSON, OPENAI_400), "openai") == []
    assert violations(Answer(400, JSON, ANTHROPIC_400), "anthropic") == []
    assert violations(Answer(400, JSON, GEMINI_400), "gemini") == []
    assert violations(Answer(429, [*JSON, ("retry-after", "2")], OPENAI_400), "openai") == []


def test_what_the_invariant_rejects() -> None:
    assert violations(Answer(500, [("content-type", "text/plain")], b"Internal Server Error"), "openai")
    assert violations(Answer(500, JSON, OPENAI_400), "openai")  # a 5xx from keywheel, however shaped
    assert violations(Answer(504, JSON, OPENAI_400), "openai")
    assert violations(Answer(400, JSON, ANTHROPIC_400), "openai")  # another dialect's shape
    assert violations(Answer(400, JSON, OPENAI_400), "gemini")
    assert violations(Answer(429, JSON, OPENAI_400), "openai")  # no retry-after
    assert violations(Answer(503, JSON, OPENAI_400), "openai")
    assert violations(Answer(400, [("content-type", "text/plain")], b"bad"), "openai")
    assert violations(Answer(200, [("content-type", "text/html")], b"<html>"), "openai")
    assert violations(Answer(501, JSON, OPENAI_400), "openai")
    assert violations(Answer(501, JSON, OPENAI_400), "openai", frozenset({501})) == []
    assert violations(Answer(405, JSON, b""), "openai", head=True) == []  # HEAD: no body to shape
    assert violations(Answer(500, JSON, b""), "openai", head=True)


def test_upstream_paths() -> None:
    allowed = allowed_models("gemini/gemini-2.5-pro", {"gemini-2.5-flash"})
    ok = ["/v1/messages", "/api/v1/chat/completions", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"]
    assert upstream_violations([*ok, "/v1beta/models/gemini-2.5-flash:generateContent"], allowed) == []
    steered = allowed_models("gemini/x/../../v1beta/models/EVIL", {"gemini-2.5-flash"})
    assert upstream_violations(["/v1beta/models/EVIL:generateContent"], steered)
    assert upstream_violations(["/v1beta/EVIL:generateContent"], steered)
    assert upstream_violations(["/v1beta/models/x%2F..%2FEVIL:generateContent"], allowed)
    assert upstream_violations(["/v1beta/models/gemini-2.5-flash:generateContent?key=x"], allowed)
    assert upstream_violations(["/v1/files"], allowed)


def test_dialect_by_path() -> None:
    assert dialect_of("/v1beta/models/x:generateContent?key=k") == "gemini"
    assert dialect_of("/v1/models/x:generateContent") == "gemini"
    assert dialect_of("/v1/%6Dessages") == "anthropic"
    assert dialect_of("/v1/models", [("anthropic-version", "2023-06-01")]) == "anthropic"
    assert dialect_of("http://evil.example/v1/chat/completions") == "openai"
    assert dialect_of("*") == "openai"
