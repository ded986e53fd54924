"""Retention: remove what is older than its keep-time.

* `--older-than`: the SDK history of conversations nobody has touched for a while. The
  visible messages stay, and a later message starts the agent with a fresh memory. With
  `--conversations`, whole conversations go: messages, runs, memory and traces.
* `--runs-older-than`: finished runs (their event logs, approvals and parked state). The
  messages stay, with their usage and cost (they only lose the link to the run), so usage
  reports and quotas do not change. Each conversation's latest run is always kept: editing
  or regenerating the last reply finds the turn (and its history mark) through it.
* `--traces-older-than`: stored SDK traces and their spans.

Conversations with a run in flight are never touched, and active runs never go.
"""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.selectors import user_for_command
from agents_app.models import AgentSession, SessionItem, SpanRecord, TraceRecord
from chat.models import Conversation, Run
from config.durations import parse_duration


class Command(BaseCommand):
    help = (
        "Remove SDK history (and, with --conversations, whole conversations) inactive for longer than "
        "--older-than; finished runs older than --runs-older-than; traces older than --traces-older-than."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", help="Inactivity threshold for SDK history, e.g. 30d, 12h, 45m, 2w.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be removed; change nothing.")
        parser.add_argument("--user", help="Only this user's conversations, runs and traces (email or username).")
        parser.add_argument(
            "--conversations", action="store_true", help="Also delete the conversations themselves (messages, runs)."
        )
        parser.add_argument(
            "--runs-older-than",
            help="Delete finished runs (event logs, approvals) older than this; messages and their usage stay.",
        )
        parser.add_argument("--traces-older-than", help="Delete stored traces and spans older than this.")

    def handle(self, *args, older_than, dry_run, user, conversations, runs_older_than, traces_older_than, **options):
        if not (older_than or runs_older_than or traces_older_than):
            raise CommandError("Say what to remove: --older-than, --runs-older-than and/or --traces-older-than.")
        if conversations and not older_than:
            raise CommandError("--conversations needs --older-than.")
        now = timezone.now()
        cutoffs = {
            name: self._cutoff(value, now)
            for name, value in (("sessions", older_than), ("runs", runs_older_than), ("traces", traces_older_than))
            if value
        }
        owner = user_for_command(user) if user else None
        self.verbose = options["verbosity"] >= 2
        self.verb = "Would remove" if dry_run else "Removed"

        with transaction.atomic():
            lines = []
            if "sessions" in cutoffs:
                lines.append(self._sessions(cutoffs["sessions"], owner=owner, conversations=conversations, dry_run=dry_run))
            if "runs" in cutoffs:
                lines.append(self._runs(cutoffs["runs"], owner=owner, dry_run=dry_run))
            if "traces" in cutoffs:
                lines.append(self._traces(cutoffs["traces"], owner=owner, dry_run=dry_run))
        for line in lines:
            self.stdout.write(self.style.SUCCESS(line))

    # --- SDK history and conversations ---------------------------------------------
    def _sessions(self, cutoff: datetime, *, owner, conversations: bool, dry_run: bool) -> str:
        stale_conversations = Conversation.objects.filter(updated_at__lt=cutoff).exclude(
            runs__status__in=Run.ACTIVE_STATUSES
        )
        sessions = AgentSession.objects.inactive_since(cutoff)
        if owner is not None:
            stale_conversations = stale_conversations.filter(owner=owner)
            owned = [c.session_id for c in Conversation.objects.filter(owner=owner).only("public_id")]
            sessions = sessions.filter(session_id__in=owned)
        busy = [c.session_id for c in Conversation.objects.filter(runs__status__in=Run.ACTIVE_STATUSES).only("public_id")]
        sessions = sessions.exclude(session_id__in=busy)

        session_ids = list(sessions.values_list("pk", flat=True))
        item_count = SessionItem.objects.filter(session_id__in=session_ids).count()
        if self.verbose:
            for session in AgentSession.objects.filter(pk__in=session_ids):
                self.stdout.write(f"  session {session.session_id} (last active {session.updated_at:%Y-%m-%d %H:%M})")
        conversation_count = 0
        doomed: list[int] = []
        if conversations:
            doomed_conversations = stale_conversations.distinct()
            if self.verbose:
                for conversation in doomed_conversations:
                    self.stdout.write(
                        f"  conversation {conversation.public_id} {conversation.title!r} of {conversation.owner}"
                    )
            doomed = list(doomed_conversations.values_list("pk", flat=True))
            doomed_ids = list(doomed_conversations.values_list("public_id", flat=True))
            conversation_count = len(doomed)
        summary = f"{self.verb} SDK history of {len(session_ids)} session(s) ({item_count} item(s))"
        if conversations:
            summary += f" and {conversation_count} conversation(s)"
        if not dry_run:
            AgentSession.objects.filter(pk__in=session_ids).delete()
            if conversations:  # with their traces, as deleting one on the page does
                TraceRecord.objects.of_groups(doomed_ids).delete()
                Conversation.objects.filter(pk__in=doomed).delete()
        return f"{summary}, inactive since {cutoff:%Y-%m-%d %H:%M %Z}."

    # --- finished runs ---------------------------------------------------------------
    def _runs(self, cutoff: datetime, *, owner, dry_run: bool) -> str:
        # "Latest" as the run service sees it when it looks for the last turn.
        latest = Run.objects.filter(conversation=OuterRef("conversation")).order_by("-created_at", "-id")
        runs = (
            Run.objects.exclude(status__in=Run.ACTIVE_STATUSES)
            .annotate(ended=Coalesce("finished_at", "created_at"), latest_pk=Subquery(latest.values("pk")[:1]))
            .filter(ended__lt=cutoff)
            .exclude(pk=F("latest_pk"))
        )
        if owner is not None:
            runs = runs.filter(conversation__owner=owner)
        doomed = list(runs.values_list("pk", flat=True))
        if self.verbose:
            for run in Run.objects.filter(pk__in=doomed).select_related("conversation"):
                self.stdout.write(f"  run {run.public_id} ({run.status}) of {run.conversation.public_id}")
        if not dry_run:
            Run.objects.filter(pk__in=doomed).delete()
        return f"{self.verb} {len(doomed)} finished run(s) older than {cutoff:%Y-%m-%d %H:%M %Z} (messages and usage kept)."

    # --- traces ------------------------------------------------------------------------
    def _traces(self, cutoff: datetime, *, owner, dry_run: bool) -> str:
        traces = TraceRecord.objects.filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, ended_at__lt=cutoff))
        if owner is not None:
            traces = traces.filter(user=owner)
        doomed = list(traces.values_list("pk", flat=True))
        span_count = SpanRecord.objects.filter(trace_id__in=doomed).count()
        if self.verbose:
            for trace in TraceRecord.objects.filter(pk__in=doomed):
                self.stdout.write(f"  trace {trace.trace_id} {trace.workflow_name!r} ({trace.started_at or trace.ended_at})")
        if not dry_run:
            TraceRecord.objects.filter(pk__in=doomed).delete()
        return f"{self.verb} {len(doomed)} trace(s) ({span_count} span(s)) older than {cutoff:%Y-%m-%d %H:%M %Z}."

    # --- helpers -------------------------------------------------------------------------
    @staticmethod
    def _cutoff(value: str, now: datetime) -> datetime:
        try:
            return now - parse_duration(value)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

