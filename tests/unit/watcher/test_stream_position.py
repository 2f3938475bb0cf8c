"""Stream position, replay de-duplication and index regression: no I/O."""

from __future__ import annotations

from services.watcher.checkpoint import Checkpoint, StreamPosition
from services.watcher.stream import apps_to_reconcile, job_id_of
from shared.nomad.event_stream import Envelope, NomadEvent


def ev(index: int, topic: str = "Deployment", key: str = "dep", type_: str = "PlanResult",
       job: str = "web") -> NomadEvent:
    return NomadEvent(Topic=topic, Type=type_, Key=key if topic != "Job" else job,
                      FilterKeys=None if topic == "Job" else [job, "dep"], Index=index)


def env(index: int, *events: NomadEvent) -> Envelope:
    return Envelope(Index=index, Events=list(events))


def test_each_topic_maps_to_its_job() -> None:
    assert job_id_of("Job", "web", None) == "web"
    assert job_id_of("Deployment", "dep-1", ["web"]) == "web"
    assert job_id_of("Allocation", "a", ["api", "dep"]) == "api"
    assert job_id_of("Node", "n", None) is None


def test_events_ask_for_their_apps_once() -> None:
    pos = StreamPosition()
    apps, regressed = apps_to_reconcile(
        env(5, ev(5), ev(5, "Allocation", "a1"), ev(5, "Job", job="api")), pos)
    assert apps == {"web", "api"} and not regressed
    assert pos.index == 5


def test_inclusive_resume_replays_the_last_envelope_and_it_is_skipped() -> None:
    pos = StreamPosition()
    apps_to_reconcile(env(5, ev(5)), pos)
    restored = StreamPosition(pos.checkpoint())
    apps, _ = apps_to_reconcile(env(5, ev(5)), restored)
    assert apps == set()
    assert restored.duplicates == 1


def test_second_envelope_with_the_same_index_is_not_a_duplicate() -> None:
    pos = StreamPosition()
    apps_to_reconcile(env(7, ev(7, "Job", type_="JobRegistered")), pos)
    apps, _ = apps_to_reconcile(env(7, ev(7, "Evaluation", "e1", "JobRegistered")), pos)
    assert apps == {"web"}


def test_index_going_backwards_resets_and_is_reported() -> None:
    pos = StreamPosition(Checkpoint(index=1000, seen=["Deployment|dep|PlanResult"]))
    apps, regressed = apps_to_reconcile(env(12, ev(12)), pos)
    assert regressed and apps == {"web"}
    assert pos.index == 12 and pos.regressions == 1
    # later events go on normally from the new position
    apps, regressed = apps_to_reconcile(env(13, ev(13)), pos)
    assert apps == {"web"} and not regressed


def test_checkpoint_round_trip_keeps_seen_keys() -> None:
    pos = StreamPosition()
    apps_to_reconcile(env(9, ev(9), ev(9, "Allocation", "a")), pos)
    cp = pos.checkpoint()
    assert cp.index == 9 and len(cp.seen) == 2
