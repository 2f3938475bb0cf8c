"""Blanking an app's secret values (and credential shapes) in what a failed task said."""

from __future__ import annotations

from services.watcher.explain import (
    allocation_failure,
    complete_lines,
    describe_evidence,
    failure_reason,
    log_tail,
)
from services.watcher.failures import gather_evidence, task_failures
from services.watcher.nomad_model import CheckResult
from services.watcher.redact import (
    MIN_SECRET_LEN,
    REDACTED,
    SHAPES_ONLY,
    TASK_TEXT_LEFT_OUT,
    VALUES_UNKNOWN,
    WITHHELD,
    Redactor,
    blank_values,
    substitutable,
)

from .builders import NOW, alloc, crash, event


def blank(text: str, *values: str) -> str:
    return blank_values(text, substitutable(values))


def test_a_value_is_blanked_wherever_it_is_and_the_rest_of_the_line_stays() -> None:
    assert blank("connect zq81xk9 to zq81xk9!", "zq81xk9") == (
        f"connect {REDACTED} to {REDACTED}!")


def test_the_longest_value_wins_over_one_it_contains() -> None:
    # "abcd" inside "abcdefgh": one marker for the whole, not "[REDACTED]efgh".
    assert blank("x abcdefgh y abcd z", "abcd", "abcdefgh") == (
        f"x {REDACTED} y {REDACTED} z")
    assert substitutable(["abcd", "abcdefgh"]) == ("abcdefgh", "abcd")


def test_overlapping_values_leave_no_fragment_of_either() -> None:
    assert blank("<abcdefghi>", "abcdef", "defghi") == f"<{REDACTED}>"
    assert blank("<defghiabc>", "abcdef", "defghi") == f"<{REDACTED}abc>"


def test_values_that_touch_become_one_marker() -> None:
    assert blank("aaaabbbb", "aaaa", "bbbb") == REDACTED


def test_overlapping_occurrences_of_one_value() -> None:
    assert blank("xabababay", "abab") == f"x{REDACTED}ay"


def test_a_marker_is_never_searched_for_another_value() -> None:
    # "ACTE" is inside the marker that replaced the first value: the marker stays whole.
    assert blank("s3cr3t-value and ACTE", "s3cr3t-value", "ACTE") == (
        f"{REDACTED} and {REDACTED}")


def test_values_shorter_than_the_minimum_are_not_substituted() -> None:
    assert MIN_SECRET_LEN == 4
    assert blank("on a dev box", "on", "dev", "") == "on a dev box"
    assert blank("xbeefx", "beef") == f"x{REDACTED}x"


def test_each_line_of_a_multi_line_value_is_blanked() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvgIBADANBgkq  \n-----END KEY-----"
    tail = log_tail("key is\n-----BEGIN KEY-----\nMIIEvgIBADANBgkq\n-----END KEY-----\n",
                    redactor=Redactor.for_values([pem]))
    assert tail == ["key is", REDACTED, REDACTED, REDACTED]


def test_values_then_shapes_in_the_apps_output() -> None:
    r = Redactor.for_values(["plainvalue99"])
    assert r.app_output("using plainvalue99 with password=hunter2") == (
        f"using {REDACTED} with password={REDACTED}")


def test_nomad_text_gets_values_blanked_but_not_shapes() -> None:
    r = Redactor.for_values(["plainvalue99"])
    # Nomad says "secret: ..." in its own messages; only values are blanked there.
    assert r.nomad_text("failed to read secret: plainvalue99 denied") == (
        f"failed to read secret: {REDACTED} denied")


def test_repr_never_shows_a_value() -> None:
    r = Redactor.for_values(["plainvalue99"])
    assert "plainvalue99" not in repr(r) and "plainvalue99" not in str(r)


def test_a_clip_never_cuts_a_value_in_two() -> None:
    value = "v" * 40 + "secretsuffix"
    line = "x" * 280 + value
    [clipped] = log_tail(line, redactor=Redactor.for_values([value]))
    assert "secretsuffix" not in clipped and "vvvv" not in clipped
    assert clipped.endswith(REDACTED)


def test_unknown_values_withhold_the_logs_and_the_check_output_but_keep_the_events() -> None:
    a = alloc(crash(NOW, 2))
    checks = [CheckResult(Check="web-http", Status="failure", Output="boom plainvalue99",
                          StatusCode=500)]
    af = allocation_failure(a, task_failures(a), checks, stderr="printed plainvalue99\n",
                            redactor=VALUES_UNKNOWN)
    assert af.log_tail == [WITHHELD]
    assert af.check_output == WITHHELD
    assert af.exit_code == 2 and af.summary == "exited with code 2"
    assert af.task_events[:2] == ["Started: Task started by client", "Terminated: Exit Code: 2"]
    assert allocation_failure(a, [], [], redactor=VALUES_UNKNOWN).log_tail == []


def test_known_values_are_blanked_in_every_field_and_the_reason() -> None:
    value = "qq-7f3a9c"
    a = alloc([event("Driver Failure", NOW, f"failed to create container: {value} rejected")],
              healthy=False)
    checks = [CheckResult(Check="web-http", Status="failure", Output=f"HTTP 500: {value}",
                          StatusCode=500)]
    r = Redactor.for_values([value])
    failures = task_failures(a)
    af = allocation_failure(a, failures, checks, stdout=f"booting with {value}\n", redactor=r)
    dumped = repr(af)
    assert value not in dumped
    assert af.log_tail == [f"booting with {REDACTED}"]
    assert af.summary == (
        f"could not be started by the driver: failed to create container: {REDACTED} rejected")
    reason = failure_reason("failed early by Shaman", gather_evidence([a]), [af], r)
    assert value not in reason and REDACTED in reason


def test_the_first_reason_names_no_task_text() -> None:
    a = alloc([event("Driver Failure", NOW, "Failed to pull `x`: manifest unknown")])
    assert describe_evidence(gather_evidence([a]), TASK_TEXT_LEFT_OUT) == (
        "task app image could not be pulled")
    assert describe_evidence(gather_evidence([a]), SHAPES_ONLY) == (
        "task app image could not be pulled: Failed to pull `x`: manifest unknown")
    unhealthy = alloc([event("Started", NOW),
                       event("Alloc Unhealthy", NOW, "Services not healthy by deadline")],
                      healthy=False)
    assert describe_evidence(gather_evidence([unhealthy]), TASK_TEXT_LEFT_OUT) == (
        "allocations of group web unhealthy")


def test_a_log_read_from_its_end_loses_its_first_line_when_it_may_be_cut() -> None:
    assert complete_lines("cretvalue rest\nline 2\n", read_bytes=22) == "line 2\n"
    assert complete_lines("whole log\nline 2\n", read_bytes=4096) == "whole log\nline 2\n"
    assert complete_lines("no newline at all", read_bytes=5) == ""
