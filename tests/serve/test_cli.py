"""``polymodal serve``: options reach the app, the bind warning, env API key, and clear errors (no tracebacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from polymodal.cli.main import app as cli

runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces uvicorn.run: records what would have been served instead of listening."""
    import uvicorn

    from polymodal.serve import safety

    calls: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(app=app, **kwargs))
    monkeypatch.setattr(safety, "listen_error", lambda host, port: None)  # nothing listens: the port may be taken
    return calls


def test_serve_loads_the_index_model_and_binds_loopback(started: dict, index_dir: Path, model) -> None:  # noqa: ANN001
    result = runner.invoke(
        cli,
        ["serve", "--index", str(index_dir), "--batch-size", "4", "--max-upload-mb", "1", "--max-video-seconds", "30"]
        + ["--max-generate-images", "4", "--max-generate-steps", "50", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["url"] == "http://127.0.0.1:8000/" and summary["identity"] == model.identity
    assert summary["index"]["items"] == 6 and summary["endpoints"]["/search"] is True and summary["warning"] is None
    assert started["host"] == "127.0.0.1" and started["port"] == 8000
    with TestClient(started["app"]) as client:
        limits = client.get("/health").json()["limits"]
        assert limits["batch_size"] == 4 and limits["max_upload_bytes"] == 1024 * 1024
        assert limits["max_video_seconds"] == 30 and limits["max_audio_seconds"] == 60
        assert limits["max_generate_images"] == 4 and limits["max_generate_steps"] == 50
        assert client.post("/search", json={"text": "a red circle", "k": 2}).status_code == 200


def test_binding_all_interfaces_warns_loudly(started: dict, tiny_dual_encoder_dir: Path) -> None:  # noqa: ANN001
    result = runner.invoke(cli, ["serve", "--model", str(tiny_dual_encoder_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.stderr and "WITHOUT AUTHENTICATION" in result.stderr
    assert started["host"] == "0.0.0.0"


def test_api_key_from_the_environment(started: dict, tiny_dual_encoder_dir: Path) -> None:  # noqa: ANN001
    result = runner.invoke(
        cli,
        ["serve", "--model", str(tiny_dual_encoder_dir), "--host", "0.0.0.0"],
        env={"POLYMODAL_API_KEY": "from-env"},
    )
    assert result.exit_code == 0 and "all network interfaces" in result.stderr
    assert "WITHOUT AUTHENTICATION" not in result.stderr
    with TestClient(started["app"]) as client:
        assert client.post("/embed", json={"texts": ["a"]}).status_code == 401
        assert client.post("/embed", json={"texts": ["a"]}, headers={"X-API-Key": "from-env"}).status_code == 200


@pytest.mark.parametrize(
    "args,needle,code",
    [
        (["--index", "{missing}"], "not an index directory", 1),
        (["--model", "{missing}"], "no such model directory", 1),
        (["--model", "{model}", "--max-upload-mb", "-1"], "--max-upload-mb must be > 0, got -1", 2),
        (["--model", "{model}", "--max-video-seconds", "0"], "max_video_seconds must be > 0", 2),
        (["--model", "{model}", "--max-generate-steps", "0"], "max_generate_steps must be >= 1", 2),
        (["--model", "{model}", "--precision", "fp16"], "fp16 needs a CUDA GPU", 1),
        (["--model", "{other}", "--index", "{index}"], "(identity ", 1),  # names both models, then "rebuild"
        (["--model", "{model}", "--export-towers", "some"], "--export-towers 'some': choose one of auto, all", 2),
    ],
)
def test_errors_are_one_clear_line(
    started: dict,
    args: list[str],
    needle: str,
    code: int,
    tmp_path: Path,  # noqa: ANN001
    tiny_dual_encoder_dir: Path,
    tiny_captioner_dir: Path,
    index_dir: Path,
) -> None:
    values = {
        "missing": tmp_path / "nope",
        "model": tiny_dual_encoder_dir,
        "other": tiny_captioner_dir,
        "index": index_dir,
    }
    result = runner.invoke(cli, ["serve", *[a.format(**values) for a in args], "--json"])
    assert result.exit_code == code, result.output
    assert needle in json.loads(result.stdout)["error"]
    assert "Traceback" not in result.output and not started


def test_a_port_in_use_or_an_unknown_host_is_said_before_the_model_loads(
    monkeypatch: pytest.MonkeyPatch, tiny_dual_encoder_dir: Path
) -> None:
    import socket

    import polymodal.api
    from polymodal.serve.safety import listen_error

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(polymodal.api, "load", no_load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert listen_error("127.0.0.1", port) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
        result = runner.invoke(cli, ["serve", "--model", str(tiny_dual_encoder_dir), "--port", str(port), "--json"])
    assert result.exit_code == 1 and "Address already in use" in json.loads(result.stdout)["error"]
    assert listen_error("127.0.0.1", port) is None  # free again
    assert (listen_error("no-such-host.invalid", 8000) or "").startswith(
        "cannot listen on --host 'no-such-host.invalid'"
    )
