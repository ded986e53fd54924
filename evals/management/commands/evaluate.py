"""Run the agents' evaluation through the real run service and print a table per agent.

    python manage.py evaluate --provider local                      # every agent, the local model
    python manage.py evaluate --provider local --agent support --json var/eval-support.json
    python manage.py evaluate --provider scripted --case orders-   # ids starting with "orders-"

Each case gets a new conversation of the evaluation's own users (see evals.runner); the
previous evaluation's conversations and tickets are removed first, so the database (and admin)
shows the latest run. Use a database of its own (`make eval` uses var/eval.sqlite3).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings
from django.utils import timezone

from agents_app import providers
from agents_app.registry import all_specs
from evals import report
from evals.cases import DEFAULT_CASES, CaseFileError, load_cases
from evals.runner import CASE_TIMEOUT, run_cases

PROVIDERS = ("local", "openai", "scripted")


class Command(BaseCommand):
    help = "Evaluate the agents on the checked-in cases (tools, arguments, handoffs, forbidden behaviour)."

    def add_arguments(self, parser):
        parser.add_argument("--provider", choices=PROVIDERS, help="Model provider (default: the configured one).")
        parser.add_argument("--agent", action="append", default=[], help="Only this agent (repeatable).")
        parser.add_argument("--case", action="append", default=[], help="Only cases whose id starts with this (repeatable).")
        parser.add_argument("--cases", default=str(DEFAULT_CASES), help="The cases file (TOML).")
        parser.add_argument("--json", dest="json_path", help="Also write the results as JSON to this file.")
        parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="Seconds allowed per turn.")

    def handle(self, *args, provider, agent, case, cases, json_path, timeout, **options):
        known = {spec.key for spec in all_specs()}
        try:
            selected = load_cases(cases, agents=known)
        except CaseFileError as exc:
            raise CommandError(f"{cases}: {exc}") from None
        unknown = set(agent) - known
        if unknown:
            raise CommandError(f"Unknown agent(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))}).")
        if agent:
            selected = [c for c in selected if c.agent in agent]
        if case:
            selected = [c for c in selected if any(c.id.startswith(prefix) for prefix in case)]
        if not selected:
            raise CommandError("No case matches the selection.")

        self.json_path = json_path
        # The evaluation must not be cut short by its users' daily token budget.
        overrides = {"AGENTS_DAILY_TOKEN_BUDGET": 0}
        if provider:
            overrides["AGENTS_MODEL_PROVIDER"] = provider
        with override_settings(**overrides):
            providers.reset()
            try:
                verdicts, name, label, seconds, started_at = self._run(selected, provider, timeout, options)
            finally:
                providers.reset()

        self.stdout.write("")
        self.stdout.write(report.table(report.summarise(verdicts)))
        self.stdout.write(f"\n{len(verdicts)} case(s) in {seconds:.0f} s")
        if json_path:
            self._write_json(verdicts, name=name, label=label, started=started_at, seconds=seconds)
            self.stdout.write(f"Wrote {json_path}")

    def _run(self, selected, provider, timeout, options):
        try:
            resolved = providers.model_for_run()
        except providers.ProviderNotConfigured as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # e.g. the local model is not installed
            raise CommandError(f"The {provider or 'configured'} provider cannot run: {exc}") from None
        name = provider or providers.provider_name()
        self.stdout.write(f"Evaluating {len(selected)} case(s) on {name} ({resolved.label})")
        verbose = options["verbosity"] >= 2
        done = []
        began_at = timezone.now().isoformat()

        def progress(one, verdict, seconds):
            done.append(verdict)
            if self.json_path:  # written after every case: a long run can be read (or lost) halfway
                self._write_json(done, name=name, label=resolved.label, started=began_at, seconds=0.0)
            mark = "ok  " if verdict.routing_ok and not verdict.forbidden and not verdict.empty else "FAIL"
            self.stdout.write(f"  {mark} {one.id} ({seconds:.1f} s)")
            if verdict.problems and (verbose or mark == "FAIL"):
                for problem in verdict.problems:
                    self.stdout.write(f"       - {problem}")
            if verbose:
                self.stdout.write(f"       reply: {verdict.reply[:300]!r}")

        began = time.monotonic()
        verdicts = asyncio.run(run_cases(selected, timeout=timeout, on_result=progress))
        return verdicts, name, resolved.label, time.monotonic() - began, began_at

    def _write_json(self, verdicts, *, name, label, started, seconds):
        path = Path(self.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = report.as_json(verdicts, provider=name, model=label, started=started, seconds=seconds)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
