"""Command line: `python -m llms status | chat "text" | check | disable KEY… | enable KEY… | serve`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llms.clock import client_time
from llms.exceptions import LLMError
from llms.outcomes import OutcomeKind, format_duration
from llms.smart_client import SmartClient, get_smart_client


def main(argv: Sequence[str] | None = None, client: SmartClient | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llms", description="LLM API-key rotation client")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="show every key: state, reason, cooldown left")
    chat = commands.add_parser("chat", help="send one message and show who answered")
    chat.add_argument("text")
    chat.add_argument("--max-tokens", type=int, default=500)
    chat.add_argument("--temperature", type=float, default=0.3)
    chat.add_argument("--model", help="auto (default), an alias, a provider, provider/model or a model id")
    commands.add_parser("check", help="one cheap call per key; report which keys are valid")
    for name, what in (
        ("disable", "take keys out of rotation (every process sharing the store)"),
        ("enable", "put them back"),
    ):
        switch = commands.add_parser(name, help=what)
        switch.add_argument("key_ids", nargs="+", metavar="KEY_ID", help="e.g. groq:2")
    serve = commands.add_parser("serve", help="run the OpenAI-compatible HTTP gateway over the key pool")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (non-loopback needs LLM_GATEWAY_TOKENS)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="serve the built-in simulator with demo keys")
    args = parser.parse_args(argv)

    if args.command == "serve":
        from gateway.server import serve as run_gateway  # the web stack loads only for this command

        return run_gateway(args.host, args.port, args.demo)
    try:
        client = client or get_smart_client()
    except ValueError as exc:  # a malformed setting: the message names the variable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        print_status(client)
        return 0
    if args.command == "chat":
        return _chat(client, args.text, args.temperature, args.max_tokens, args.model)
    if args.command in ("disable", "enable"):
        try:
            (client.admin.disable_key if args.command == "disable" else client.admin.enable_key)(*args.key_ids)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        print(f"{args.command}d: {', '.join(args.key_ids)}")
        return 0
    return _check(client)


def print_status(client: SmartClient) -> None:
    statuses = client.admin.provider_statuses()
    rows = [("provider", "key", "hint", "group", "state", "reason", "cooldown left", "backoff", "ok", "failed")]
    for info in statuses:
        for key in info.keys:
            rows.append(
                (
                    info.provider,
                    key.key_id,
                    key.hint,
                    key.group or "-",
                    "disabled" if key.disabled else "available" if key.available else "cooling",
                    key.reason or "-",
                    format_duration(key.cooldown_remaining) if not key.available else "-",
                    f"step {key.backoff_step}" if key.backoff_step else "-",
                    str(key.successes),
                    str(key.failures),
                )
            )
        if not info.keys:
            rows.append((info.provider, "-", "-", "-", "no keys", "-", "-", "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    totals = ", ".join(f"{info.provider} {info.available}/{info.total}" for info in statuses)
    print(f"\navailable: {totals}")
    now = client_time()
    for info in statuses:
        if info.paused_until:
            print(f"{info.title} paused ({info.pause_reason}) for {format_duration(info.paused_until - now)}")
        if info.problem:
            print(f"{info.title}: {info.problem}")
    store = client.admin.store_health()
    print(f"key state: {store.backend} at {store.location} · {'ok' if store.healthy else store.detail}")


def _chat(client: SmartClient, text: str, temperature: float, max_tokens: int, model: str | None) -> int:
    try:
        result = client.complete(
            [{"role": "user", "content": text}], temperature=temperature, max_tokens=max_tokens, model=model
        )
    except LLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an unknown model: the message lists what is served
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.text)
    skipped = ", ".join(a.describe() for a in result.attempts if a.kind is not OutcomeKind.OK)
    print(
        f"\n— {result.provider} · {result.model} · {result.key_id} ({result.key_hint}) · {result.latency_s:.2f} s"
        + (f" · skipped {skipped}" if skipped else ""),
        file=sys.stderr,
    )
    return 0


def _check(client: SmartClient) -> int:
    valid = 0
    total = 0
    for provider in client.settings.provider_order:
        for key in client.key_manager.keys(provider):
            total += 1
            outcome = client.admin.check_key(key.key_id)
            verdict = "valid" if outcome.kind is OutcomeKind.OK else outcome.kind.value
            valid += outcome.kind is OutcomeKind.OK
            detail = f"  {outcome.message}" if outcome.kind is not OutcomeKind.OK else ""
            print(f"{key.key_id:<16} {key.hint:<12} {verdict}{detail}")
    print(f"\n{valid}/{total} keys valid")
    return 0 if valid or not total else 1


if __name__ == "__main__":
    sys.exit(main())
