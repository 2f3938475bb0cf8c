"""Failure facts from task events and the words that explain them: no I/O."""

from __future__ import annotations

from datetime import timedelta

from services.watcher.explain import (
    REDACTED,
    allocation_failure,
    complete_lines,
    describe_evidence,
    failure_reason,
    log_tail,
)
from services.watcher.failures import gather_evidence, task_failures
from services.watcher.nomad_model import CheckResult

from .builders import NOW, alloc, crash, event


def test_exit_code_is_named_with_the_count() -> None:
    a = alloc(crash(NOW - timedelta(seconds=1), 3) + crash(NOW, 3))
    assert describe_evidence(gather_evidence([a])) == "task app exited with code 3 (2 times)"


def test_oom_kill_is_explained_as_memory() -> None:
    a = alloc([event("Started", NOW - timedelta(seconds=1)),
               event("Terminated", NOW, 'Exit Code: 137, Exit Message: "OOM Killed"',
                     ExitCode=137, Details={"oom_killed": "true"})])
    [failure] = task_failures(a)
    assert failure.kind == "oom"
    text = describe_evidence(gather_evidence([a]))
    assert text is not None and "more memory" in text and "137" in text


def test_image_pull_failure() -> None:
    a = alloc([event("Driver Failure", NOW, "Failed to pull `x`: manifest unknown")])
    [failure] = task_failures(a)
    assert failure.kind == "image" and failure.unfixable


def test_generic_driver_failure_is_fixable() -> None:
    a = alloc([event("Driver Failure", NOW, "failed to create container: device busy")])
    [failure] = task_failures(a)
    assert failure.kind == "driver" and not failure.unfixable


def test_template_failure_without_secrets_is_a_template_failure() -> None:
    a = alloc([event("Killing", NOW, "Template failed: parse error at line 3", FailsTask=True)])
    [failure] = task_failures(a)
    assert failure.kind == "template" and failure.unfixable


def test_events_before_since_are_ignored() -> None:
    a = alloc(crash(NOW - timedelta(seconds=10)) + crash(NOW))
    assert len(task_failures(a, since_ns=int((NOW - timedelta(seconds=5)).timestamp() * 1e9))) == 1


def test_unhealthy_allocation_without_task_failures_is_evidence() -> None:
    a = alloc([event("Started", NOW),
               event("Alloc Unhealthy", NOW, "Services not healthy by deadline: web")],
              healthy=False)
    evidence = gather_evidence([a])
    assert evidence.failures == [] and evidence.unhealthy_allocs == [a]
    assert describe_evidence(evidence) == (
        "allocations of group web unhealthy: Services not healthy by deadline: web")


def test_allocation_failure_carries_events_exit_code_check_and_log_tail() -> None:
    a = alloc(crash(NOW, 2))
    checks = [CheckResult(Check="web-http", Status="failure", Output="HTTP 500: boom",
                          StatusCode=500)]
    stderr = "starting\n\nTraceback (most recent call last):\nValueError: PORT unset\n"
    af = allocation_failure(a, task_failures(a), checks, stderr=stderr, stdout="hi\n")
    assert af.summary == "exited with code 2"
    assert af.exit_code == 2
    assert af.task == "app"
    assert af.check_output == "HTTP 500: boom"
    assert af.log_tail[-1] == "ValueError: PORT unset"
    assert af.task_events[:2] == ["Started: Task started by client", "Terminated: Exit Code: 2"]


def test_check_failure_is_the_summary_when_no_task_failed() -> None:
    a = alloc([event("Started", NOW)], healthy=False)
    checks = [CheckResult(Check="web-http", Status="failure",
                          Output="simulated check failing", StatusCode=500)]
    af = allocation_failure(a, [], checks)
    assert af.summary == "health check web-http failing: HTTP 500: simulated check failing"
    reason = failure_reason("allocations were unhealthy (Nomad)",
                            gather_evidence([alloc([event("Started", NOW)])]), [af])
    assert reason == ("health check web-http failing: HTTP 500: simulated check failing "
                      "(allocations were unhealthy (Nomad))")


def test_stdout_is_the_tail_when_stderr_is_empty() -> None:
    af = allocation_failure(alloc(crash(NOW)), [], stdout="a\nb\n")
    assert af.log_tail == ["a", "b"]


def test_log_tail_keeps_the_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    assert log_tail(text, 3) == ["line 97", "line 98", "line 99"]


def test_reason_without_any_evidence_is_the_trigger() -> None:
    assert failure_reason("no progress", gather_evidence([]), []) == "no progress"


def test_log_tail_scrubs_what_looks_like_a_credential() -> None:
    text = "\n".join([
        "DATABASE_PASSWORD=hunter2 connecting",
        'config: {"api_key": "abc123", "port": 8080}',
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "dial postgres://app:s3cret@db:5432/app failed",
        "plain line stays",
    ])
    tail = log_tail(text)
    joined = "\n".join(tail)
    for secret in ("hunter2", "abc123", "eyJhbGciOiJIUzI1NiJ9", "s3cret"):
        assert secret not in joined
    assert tail[-1] == "plain line stays"
    assert "port" in tail[1] and "8080" in tail[1]


def test_task_events_check_output_and_the_reason_are_scrubbed_too() -> None:
    # Nomad's words quote the app's (a driver error naming its environment), and a health
    # check's output is the app's own: both are scrubbed like the log lines.
    said = "DB_PASSWORD=hunter2-canary rejected; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y"
    a = alloc([event("Driver Failure", NOW, f"failed to create container: {said}")],
              healthy=False)
    checks = [CheckResult(Check="web-http", Status="failure", Output=f"HTTP 500: {said}",
                          StatusCode=500)]
    af = allocation_failure(a, task_failures(a), checks)
    reason = failure_reason("failed early by Shaman", gather_evidence([a]), [af])
    for text in (repr(af), reason, describe_evidence(gather_evidence([a])) or ""):
        assert "hunter2-canary" not in text and "eyJhbGciOiJIUzI1NiJ9" not in text
    blanked = f"DB_PASSWORD={REDACTED} rejected; Authorization: Bearer {REDACTED}"
    assert reason == (f"task app could not be started by the driver: failed to create "
                      f"container: {blanked} (failed early by Shaman)")
    assert af.task_events == [f"Driver Failure: failed to create container: {blanked}"]
    assert af.check_output == f"HTTP 500: {blanked}"


def test_a_credential_is_scrubbed_before_the_line_is_clipped() -> None:
    # Clipped first, the line would end in "Bearer abcdef…", too short to look like a
    # token any more: a fragment of it would go out.
    line = "x" * 285 + " Bearer abcdefghijklmnop"
    [clipped] = log_tail(line)
    assert "abcdef" not in clipped


def test_a_value_printed_bare_is_not_recognised() -> None:
    # The watcher does not read the app's secret values (platform components must not be
    # able to), so a value with no credential-like name around it goes out as printed.
    assert log_tail("connecting with zq81xk9ab failed") == ["connecting with zq81xk9ab failed"]


def test_a_log_read_from_its_end_loses_its_first_line_when_it_may_be_cut() -> None:
    assert complete_lines("WORD=hunter2 rest\nline 2\n", read_bytes=25) == "line 2\n"
    assert complete_lines("whole log\nline 2\n", read_bytes=4096) == "whole log\nline 2\n"
    assert complete_lines("no newline at all", read_bytes=5) == ""
