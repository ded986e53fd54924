"""Benchmark data through the app's own services (run by bench/load.py with DATABASE_URL set).

    seed.py prepare --state S.json --clients N --out C.json
        makes sure users bench-0 … bench-(N-1) exist, each with an API token
        (`accounts.services.api_token_create`; the secrets are kept in S.json, since a token is
        shown only once), then gives each a fresh conversation with the assistant
        (`chat.services.conversation_create`) and writes [{token, conversation}] to C.json.
    seed.py report --clients C.json
        prints, as JSON, the runs and replies stored for those conversations by status, and
        how many replies are shorter than the mock's reply (a reply the client never saw
        in full although it was stored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def prepare(args: argparse.Namespace) -> None:
    from django.contrib.auth import get_user_model

    from accounts.services import api_token_create
    from chat.services import conversation_create

    state_path = Path(args.state)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    tokens: dict[str, str] = state.setdefault("tokens", {})
    User = get_user_model()
    clients = []
    for n in range(args.clients):
        email = f"bench-{n}@example.com"
        user = User.objects.filter(email=email).first()
        if user is None or str(n) not in tokens:
            if user is None:
                # No password: hashing 500 of them would take minutes and nobody signs in.
                user = User.objects.create_user(f"bench-{n}", email, None)
            tokens[str(n)] = api_token_create(owner=user, name="load benchmark").secret
        conversation = conversation_create(owner=user, agent_key=args.agent)
        clients.append({"token": tokens[str(n)], "conversation": str(conversation.public_id)})
    state_path.write_text(json.dumps(state))
    Path(args.out).write_text(json.dumps(clients))


def report(args: argparse.Namespace) -> None:
    from django.db.models import Count

    from chat.models import Message, Run

    ids = [c["conversation"] for c in json.loads(Path(args.clients).read_text())]
    runs = Run.objects.filter(conversation__public_id__in=ids)
    replies = Message.objects.filter(conversation__public_id__in=ids, role="assistant")
    by_status = {row["status"]: row["n"] for row in runs.values("status").annotate(n=Count("id"))}
    reply_status = {row["status"]: row["n"] for row in replies.values("status").annotate(n=Count("id"))}
    short = sum(1 for content in replies.filter(status="completed").values_list("content", flat=True)
                if len(content.split()) < args.expected_tokens)
    print(json.dumps({"runs": by_status, "replies": reply_status, "completed_replies_shorter_than_expected": short}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--state", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--agent", default="assistant")
    r = sub.add_parser("report")
    r.add_argument("--clients", required=True)
    r.add_argument("--expected-tokens", type=int, default=0)
    args = parser.parse_args()

    import django

    django.setup()
    {"prepare": prepare, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
