"""Who may do what on NATS: one table, turned into nats-server users and permissions.

`ACCESS` says, in Shaman's own terms, what each NATS user needs: the subjects it publishes
into streams, the durable work consumers it runs, the streams it reads with ephemeral
consumers, the KV buckets and object stores it reads or writes, whether it may create or
also update streams, and plain subscriptions. `permissions(user)` derives from that the
exact publish / subscribe allow lists (JetStream API subjects included); everything not
listed is refused by the server.

Everything else is generated from here, so nothing can drift:
- the devstack's `nats.conf` (`authorization_block` with the stack's generated passwords,
  see `devstack.stack.StackConfig.nats_passwords`);
- the NATS config in `compose.yaml` (`compose_authorization_block`, passwords from the
  NATS containers' environment) and
- the tables in `docs/nats-permissions.md` (`docs_section`);
tests check the last two are current; `python -m devstack.nats_permissions --write`
rewrites them.

Not here: passwords themselves, accounts, nkeys, TLS; and no NATS connection is made.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from shared import subjects as s
from shared.bus.provision import kv_configs, stream_configs

SERVICE_USERS = ("api", "builder", "scheduler", "watcher")
#: Every user the server knows, in config order.
USERS = (*SERVICE_USERS, "client", "admin")

# JetStream's API and reply subjects (nats-server's own names, not Shaman's).
JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
JS_FLOW_CONTROL = "$JS.FC"
# nats-py names the streams behind buckets like this (KV_STREAM_TEMPLATE, OBJ_STREAM_TEMPLATE).
KV_STREAM = "KV_{bucket}"
OBJECT_STREAM = "OBJ_{bucket}"
# Plain NATS clients (the `client` user) reply on the default inbox.
DEFAULT_INBOX_ALL = f"{s.INBOX_ROOT}.>"


class Provision(Enum):
    NONE = "none"
    #: `$JS.API.STREAM.CREATE` on Shaman's streams: idempotent for the same config, refused
    #: for an existing stream with another config, so it cannot change or shrink one.
    CREATE = "create"
    #: CREATE plus `$JS.API.STREAM.UPDATE`: may change a stream's settings (limits,
    #: retention), so only the one service that owns provisioning has it.
    UPDATE = "create + update"


@dataclass(frozen=True)
class Access:
    """What one NATS user needs, in Shaman's terms; `permissions()` makes subjects of it."""

    what: str
    #: Subjects (wildcards allowed) it publishes into streams.
    publish: tuple[str, ...] = ()
    #: (stream, durable) of each WorkConsumer it runs (fetch, ack, dead-letter, advisory).
    consume: tuple[tuple[str, str], ...] = ()
    #: Streams it reads with ephemeral consumers (replays, live tails).
    read_streams: tuple[str, ...] = ()
    #: Streams it only looks at (STREAM.INFO: message counts, subjects).
    inspect_streams: tuple[str, ...] = ()
    kv_read: tuple[str, ...] = ()
    kv_write: tuple[str, ...] = ()  # implies read
    objects_read: tuple[str, ...] = ()
    objects_write: tuple[str, ...] = ()  # implies read
    provision: Provision = Provision.NONE
    #: Plain (core NATS) subscriptions.
    subscribe: tuple[str, ...] = ()
    #: Replies on `_INBOX_<user>.>` (what connect_bus asks for) instead of `_INBOX.>`.
    private_inbox: bool = True
    #: No permissions block at all: may publish and subscribe to anything.
    everything: bool = False


ACCESS: Mapping[str, Access] = {
    "api": Access(
        what="HTTP API, deploy requests from NATS, SSE, audit",
        publish=(s.EVENTS_ALL, s.BUILD_WORK_ALL, s.RELEASE_WORK_ALL, s.AUDIT_ALL),
        consume=((s.STREAM_REQUESTS, s.CONSUMER_API_REQUESTS),),
        read_streams=(s.STREAM_EVENTS, s.STREAM_AUDIT),
        # The re-drive sweep asks whether an app still has build work queued.
        inspect_streams=(s.STREAM_BUILD_WORK,),
        kv_write=(s.KV_APPS, s.KV_RELEASES, s.KV_DEPLOYS, s.KV_IDEMPOTENCY, s.KV_TOKENS),
        objects_read=(s.OBJECT_STORE_BUILD_LOGS,),
        objects_write=(s.OBJECT_STORE_SOURCES,),
        provision=Provision.UPDATE,
    ),
    "builder": Access(
        what="builds images from sources, resolves image references",
        publish=(s.EVENTS_ALL, s.RELEASE_WORK_ALL),
        consume=((s.STREAM_BUILD_WORK, s.CONSUMER_BUILDERS),),
        kv_read=(s.KV_APPS, s.KV_RELEASES),
        kv_write=(s.KV_DEPLOYS,),
        objects_read=(s.OBJECT_STORE_SOURCES,),
        objects_write=(s.OBJECT_STORE_BUILD_LOGS,),
        provision=Provision.CREATE,
    ),
    "scheduler": Access(
        what="releases and Nomad jobs",
        publish=(s.EVENTS_ALL,),
        consume=((s.STREAM_RELEASE_WORK, s.CONSUMER_SCHEDULER),),
        kv_write=(s.KV_APPS, s.KV_RELEASES, s.KV_DEPLOYS),
        provision=Provision.CREATE,
    ),
    "watcher": Access(
        what="follows Nomad rollouts, decides outcomes and automatic rollbacks",
        publish=(s.EVENTS_ALL, s.RELEASE_WORK_ALL),
        kv_write=(s.KV_APPS, s.KV_DEPLOYS, s.KV_WATCHER),
        provision=Provision.CREATE,
    ),
    "client": Access(
        what="any NATS client: requests deploys, follows the live timeline",
        publish=(f"{s.REQUESTS_ROOT}.*.deploy",),
        subscribe=(s.EVENTS_ALL,),
        private_inbox=False,
    ),
    "admin": Access(
        what="operators, tests, the `nats` CLI: everything",
        everything=True,
    ),
}


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def provisioned_streams() -> list[str]:
    """Every stream `shared.bus.provision` creates, buckets' and object stores' included."""
    names = [config.name for config in stream_configs(1) if config.name]
    names += [KV_STREAM.format(bucket=config.bucket) for config in kv_configs(1)]
    names += [OBJECT_STREAM.format(bucket=bucket)
              for bucket in (s.OBJECT_STORE_SOURCES, s.OBJECT_STORE_BUILD_LOGS)]
    return names


def inbox(user: str) -> str:
    """The reply subjects a user subscribes to."""
    return f"{s.inbox_prefix(user)}.>" if ACCESS[user].private_inbox else DEFAULT_INBOX_ALL


def max_deliveries_advisory(stream: str, durable: str) -> str:
    return s.MAX_DELIVERIES_ADVISORY.removesuffix(">") + f"{stream}.{durable}"


def _work_consumer(stream: str, durable: str) -> tuple[list[str], list[str]]:
    """shared.bus.WorkConsumer: create the durable, fetch, ack/nak/term/in-progress,
    dead-letter; on the MAX_DELIVERIES advisory read the message and delete it."""
    publish = [
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"{JS_ACK}.{stream}.{durable}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.STREAM.MSG.DELETE.{stream}",
        s.dead_letter_subject(stream, durable),
    ]
    return publish, [max_deliveries_advisory(stream, durable)]


def _stream_reader(stream: str) -> list[str]:
    """The stream's last sequence, ephemeral consumers (an unnamed push consumer with flow
    control for live tails, a named pull consumer for replays), fetching, deleting them."""
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.>",
        f"{JS_FLOW_CONTROL}.{stream}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    """Open the bucket and list keys (STREAM.INFO), get a key's value (a direct get by
    subject: the buckets are provisioned with direct gets on)."""
    stream = KV_STREAM.format(bucket=bucket)
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
    ]


def _object_read(bucket: str) -> list[str]:
    """Object info (the last meta message), then the chunks through an unnamed ordered
    push consumer (with flow control), whose stream nats-py looks up by subject."""
    stream = OBJECT_STREAM.format(bucket=bucket)
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.NAMES",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_FLOW_CONTROL}.{stream}.>",
    ]


def permissions(user: str) -> Permissions | None:
    """The allow lists of one user; None for a user allowed everything."""
    access = ACCESS[user]
    if access.everything:
        return None
    publish: list[str] = list(access.publish)
    subscribe: list[str] = [inbox(user), *access.subscribe]
    if access.provision is not Provision.NONE:
        publish += [f"{JS_API}.STREAM.CREATE.{name}" for name in provisioned_streams()]
    if access.provision is Provision.UPDATE:
        publish += [f"{JS_API}.STREAM.UPDATE.{name}" for name in provisioned_streams()]
    for stream, durable in access.consume:
        pub, sub = _work_consumer(stream, durable)
        publish += pub
        subscribe += sub
    for stream in access.read_streams:
        publish += _stream_reader(stream)
    publish += [f"{JS_API}.STREAM.INFO.{stream}" for stream in access.inspect_streams]
    for bucket in _unique([*access.kv_read, *access.kv_write]):
        publish += _kv_read(bucket)
    for bucket in access.kv_write:
        publish.append(f"$KV.{bucket}.>")
    for bucket in _unique([*access.objects_read, *access.objects_write]):
        publish += _object_read(bucket)
    for bucket in access.objects_write:
        # Chunks and metadata; replacing an object purges the old chunks.
        publish += [f"$O.{bucket}.>",
                    f"{JS_API}.STREAM.PURGE.{OBJECT_STREAM.format(bucket=bucket)}"]
    return Permissions(tuple(_unique(publish)), tuple(_unique(subscribe)))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- rendering ---------------------------------------------------------------------------------


def _quote(text: str) -> str:
    # NATS config strings: a quoted string is taken literally ($ included, no variables).
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _user_entry(user: str, password: str, indent: str) -> list[str]:
    lines = [f"{indent}{{", f"{indent}  user: {_quote(user)}", f"{indent}  password: {password}"]
    perms = permissions(user)
    if perms is not None:
        lines.append(f"{indent}  permissions: {{")
        for kind, allowed in (("publish", perms.publish), ("subscribe", perms.subscribe)):
            lines.append(f"{indent}    {kind}: {{ allow: [")
            lines += [f"{indent}      {_quote(subject)}" for subject in allowed]
            lines.append(f"{indent}    ] }}")
        lines.append(f"{indent}  }}")
    lines.append(f"{indent}}}")
    return lines


def authorization_block(passwords: Mapping[str, str]) -> str:
    """nats-server's `authorization { users = [...] }` with these (plain) passwords."""
    missing = [user for user in USERS if not passwords.get(user)]
    if missing:
        raise ValueError(f"no NATS password for {', '.join(missing)}")
    lines = ["authorization {", "  users = ["]
    for user in USERS:
        lines += _user_entry(user, _quote(passwords[user]), "    ")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def password_variable(user: str) -> str:
    """The NATS containers' environment variable holding a user's password in compose.yaml."""
    return f"NATS_PASSWORD_{user.upper()}"


COMPOSE_BEGIN = "# BEGIN users generated by devstack/nats_permissions.py (--write); do not edit"
COMPOSE_END = "# END users generated by devstack/nats_permissions.py"


def compose_authorization_block() -> str:
    """The same users for compose.yaml's NATS config: passwords are NATS config variables
    read from the container's environment, every `$` doubled for compose's interpolation."""
    lines = [COMPOSE_BEGIN, "authorization {", "  users = ["]
    for user in USERS:
        lines += _user_entry(user, f"${password_variable(user)}", "    ")
    lines += ["  ]", "}", COMPOSE_END]
    return "\n".join(line.replace("$", "$$") for line in lines) + "\n"


DOCS_BEGIN = "<!-- BEGIN generated by devstack/nats_permissions.py (--write); do not edit -->"
DOCS_END = "<!-- END generated by devstack/nats_permissions.py -->"


NONE_CELL = "-"


def _cell(items: Iterable[str]) -> str:
    text = ", ".join(f"`{item}`" for item in items)
    return text or NONE_CELL


def docs_section() -> str:
    """The summary table and every user's full allow lists, for docs/nats-permissions.md."""
    out = [DOCS_BEGIN, "",
           "| user | what | publishes into streams | work consumers (stream/durable) | "
           "reads streams | KV read | KV read + write | objects read | objects read + write"
           " | streams | subscribes |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for user in USERS:
        a = ACCESS[user]
        if a.everything:
            out.append(f"| `{user}` | {a.what} | everything | | | | | | | | |")
            continue
        out.append(" | ".join([
            f"| `{user}`", a.what, _cell(a.publish),
            _cell(f"{stream}/{durable}" for stream, durable in a.consume),
            _cell([*a.read_streams, *(f"{x} (info)" for x in a.inspect_streams)]),
            _cell(a.kv_read), _cell(a.kv_write), _cell(a.objects_read),
            _cell(a.objects_write),
            NONE_CELL if a.provision is Provision.NONE else a.provision.value,
            _cell([inbox(user), *a.subscribe]) + " |",
        ]))
    out += ["", "The exact allow lists the server enforces:", ""]
    for user in USERS:
        perms = permissions(user)
        if perms is None:
            out += [f"- `{user}`: no `permissions` block (allowed everything)."]
            continue
        out += [f"<details><summary><code>{user}</code>: {len(perms.publish)} publish, "
                f"{len(perms.subscribe)} subscribe subjects</summary>", "",
                "publish:", "", "```", *perms.publish, "```", "", "subscribe:", "", "```",
                *perms.subscribe, "```", "", "</details>", ""]
    out += ["", DOCS_END]
    return "\n".join(out) + "\n"


# -- keeping compose.yaml and the docs current ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
DOCS_FILE = ROOT / "docs" / "nats-permissions.md"


def _between(begin: str, end: str) -> re.Pattern[str]:
    return re.compile(rf"^([ \t]*){re.escape(begin)}\n.*?^[ \t]*{re.escape(end)}\n",
                      re.DOTALL | re.MULTILINE)


def compose_with_current_block(text: str) -> str:
    """compose.yaml's text with the generated block replaced by the current one (same indent)."""
    pattern = _between(COMPOSE_BEGIN, COMPOSE_END)
    match = pattern.search(text)
    if match is None:
        raise ValueError(f"compose.yaml has no '{COMPOSE_BEGIN}' block")
    indent = match.group(1)
    block = "".join(f"{indent}{line}\n" for line in compose_authorization_block().splitlines())
    return text[: match.start()] + block + text[match.end():]


def docs_with_current_section(text: str) -> str:
    pattern = _between(DOCS_BEGIN, DOCS_END)
    match = pattern.search(text)
    if match is None:
        raise ValueError(f"the docs have no '{DOCS_BEGIN}' section")
    return text[: match.start()] + docs_section() + text[match.end():]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite the generated parts of compose.yaml and the docs")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(compose_authorization_block())
        return 0
    for path, update in ((COMPOSE_FILE, compose_with_current_block),
                         (DOCS_FILE, docs_with_current_section)):
        old = path.read_text()
        new = update(old)
        if new != old:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
