"""The api service: Shaman's HTTP API, its Server-Sent Events stream, auth and audit.

It validates, authorises, records intent in NATS KV, publishes work and answers at once
(202); it never waits on a build or a rollout inside a request. It also consumes deploy
requests published directly on NATS (`shaman.requests.<app>.deploy`) through the same
code path as `POST /v1/apps/{app}/deploys`.

It does not build, render Nomad jobs or watch rollouts: those are the builder's, the
scheduler's and the watcher's.
"""
