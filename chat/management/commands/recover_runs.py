"""Mark runs whose process died (stale heartbeat) as interrupted, keep their partial text,
close their turn in the SDK history and release their conversation's lock."""

from django.core.management.base import BaseCommand

from chat.engine import release_dead_runs


class Command(BaseCommand):
    help = "Recover runs left active by a process that died: mark them interrupted and release their locks."

    def handle(self, *args, **options):
        count = release_dead_runs()
        self.stdout.write(self.style.SUCCESS(f"Released {count} run(s) left by dead processes or expired approvals."))
