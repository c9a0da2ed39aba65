from __future__ import annotations

from bot.results import Preformatted, Text
from bot.service import OutcomeKind
from tests.harness.calls import run_as


def _pods(kube):  # type: ignore[no-untyped-def]
    return kube.list("Pod", "aia-production")


def _crashing(kube):  # type: ignore[no-untyped-def]
    return next(p["metadata"]["name"] for p in _pods(kube)
                if any(cs.get("restartCount", 0) > 0 for cs in p["status"].get("containerStatuses", [])))


def test_pod_log_with_grep(core, kube) -> None:  # type: ignore[no-untyped-def]
    pod = next(p["metadata"]["name"] for p in _pods(kube) if p["metadata"]["name"].startswith("aia-api-green"))
    outcome = run_as(core, "viewer", f"logs {pod} --grep error --since 1d")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    assert text and all("error" in line.lower() for line in text.splitlines())


def test_previous_log_of_crashed_container(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", f"logs {_crashing(kube)} --previous --grep memory|oom")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    parts = outcome.result.parts
    assert any(isinstance(p, Preformatted) for p in parts)


def test_previous_log_that_does_not_exist_is_a_user_error(core, kube) -> None:  # type: ignore[no-untyped-def]
    pod = next(p["metadata"]["name"] for p in _pods(kube) if p["metadata"]["name"].startswith("aia-api-green"))
    outcome = run_as(core, "viewer", f"logs {pod} --previous")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "previous terminated container" in outcome.message


def test_app_wide_search_reads_every_pod(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", 'logs --app --since 1d --grep "(ERROR|WARN|unauthorized|failed)"')
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    pods_seen = {line.split("/", 1)[0] for line in text.splitlines()}
    assert len(pods_seen) >= 3
    log_requests = [r for r in kube.requests if r.path.endswith("/log")]
    running = [p for p in _pods(kube) if p["status"].get("phase") in ("Running", "Pending", "Failed")]
    assert len(log_requests) >= len(running)


def test_app_search_with_no_match(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "logs --app --grep zzzz-never-zzzz")
    assert outcome.kind is OutcomeKind.OK
    assert any(isinstance(p, Text) and "No matching" in p.text for p in outcome.result.parts)


def test_bad_regex_changes_nothing_and_calls_no_api(core, kube) -> None:  # type: ignore[no-untyped-def]
    before = len(kube.requests)
    outcome = run_as(core, "viewer", "logs --app --grep (unclosed")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "does not compile" in outcome.message
    assert len(kube.requests) == before


def test_pod_xor_app(core) -> None:  # type: ignore[no-untyped-def]
    assert "either a POD or --app" in run_as(core, "viewer", "logs p-1 --app").message
    assert "POD is missing" in run_as(core, "viewer", "logs").message


def test_secret_values_in_app_logs_are_redacted(core, kube) -> None:  # type: ignore[no-untyped-def]
    pod = _pods(kube)[0]
    container = pod["spec"]["containers"][0]["name"]
    kube.set_pod_log("aia-production", pod["metadata"]["name"], container,
                     "2026-11-27T03:00:00Z ERROR connect postgresql://aia:Sup3rS3cret@db:5432/aia failed\n")
    outcome = run_as(core, "viewer", f"logs {pod['metadata']['name']} --container {container} --grep failed --since 7d")
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    assert "Sup3rS3cret" not in text and "failed" in text
