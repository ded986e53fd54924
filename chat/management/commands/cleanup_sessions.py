"""Remove the SDK history of conversations nobody has touched for a while.

By default only the agents' memory goes (the visible messages stay, and a later message
starts the agent with a fresh memory). With --conversations, whole conversations go:
messages, runs and memory. Conversations with a run in flight are never touched.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from agents_app.models import AgentSession, SessionItem
from chat.durations import parse_duration
from chat.models import Conversation, Run


class Command(BaseCommand):
    help = "Remove SDK history (and, with --conversations, whole conversations) inactive for longer than --older-than."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Inactivity threshold, e.g. 30d, 12h, 45m, 2w.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be removed; change nothing.")
        parser.add_argument("--user", help="Only this user's conversations (email or username).")
        parser.add_argument(
            "--conversations", action="store_true", help="Also delete the conversations themselves (messages, runs)."
        )

    def handle(self, *args, older_than, dry_run, user, conversations, **options):
        try:
            cutoff = timezone.now() - parse_duration(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        stale_conversations = Conversation.objects.filter(updated_at__lt=cutoff).exclude(
            runs__status__in=Run.ACTIVE_STATUSES
        )
        sessions = AgentSession.objects.inactive_since(cutoff)
        if user:
            owner = self._user(user)
            stale_conversations = stale_conversations.filter(owner=owner)
            owned = [c.session_id for c in Conversation.objects.filter(owner=owner).only("public_id")]
            sessions = sessions.filter(session_id__in=owned)
        busy = [c.session_id for c in Conversation.objects.filter(runs__status__in=Run.ACTIVE_STATUSES).only("public_id")]
        sessions = sessions.exclude(session_id__in=busy)

        with transaction.atomic():
            session_ids = list(sessions.values_list("pk", flat=True))
            item_count = SessionItem.objects.filter(session_id__in=session_ids).count()
            verbose = options["verbosity"] >= 2
            if verbose:
                for session in AgentSession.objects.filter(pk__in=session_ids):
                    self.stdout.write(f"  session {session.session_id} (last active {session.updated_at:%Y-%m-%d %H:%M})")
            conversation_count = 0
            if conversations:
                doomed = stale_conversations.distinct()
                if verbose:
                    for conversation in doomed:
                        self.stdout.write(f"  conversation {conversation.public_id} {conversation.title!r} of {conversation.owner}")
                conversation_count = doomed.count()
            verb = "Would remove" if dry_run else "Removed"
            summary = f"{verb} SDK history of {len(session_ids)} session(s) ({item_count} item(s))"
            if conversations:
                summary += f" and {conversation_count} conversation(s)"
            if not dry_run:
                AgentSession.objects.filter(pk__in=session_ids).delete()
                if conversations:
                    Conversation.objects.filter(pk__in=list(doomed.values_list("pk", flat=True))).delete()
        self.stdout.write(self.style.SUCCESS(f"{summary}, inactive since {cutoff:%Y-%m-%d %H:%M %Z}."))

    def _user(self, identifier: str):
        User = get_user_model()
        found = User.objects.filter(email__iexact=identifier).first() or User.objects.filter(username=identifier).first()
        if found is None:
            raise CommandError(f"No user {identifier!r}.")
        return found
