"""The watcher service: follows Nomad's event stream, reports rollouts on the timeline,
explains failures and decides automatic rollback (the single decider).

Entry points: `services.watcher.app.create_app(settings)` and `shaman-watcher`
(`__main__.main`). The pure decision logic is in `decide.py`, `failures.py` and
`explain.py`; everything that talks to NATS or Nomad is in `reconciler.py`,
`stream.py`, `outbox.py` and `watcher.py`.
"""
