"""Write static/chat/pygments.css, the stylesheet of highlighted code (light and dark).

It is generated once and committed, so the app serves it like any other static file. Run it
again after changing Pygments or the styles in chat/rendering.py; `--check` fails when the
committed file is out of date (the tests do the same).
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.rendering import pygments_css

CSS_PATH = Path(settings.BASE_DIR) / "static" / "chat" / "pygments.css"


class Command(BaseCommand):
    help = "Write static/chat/pygments.css from the Pygments styles of chat/rendering.py."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--check", action="store_true", help="Fail if the committed file is out of date.")

    def handle(self, *args, check: bool = False, **options) -> None:
        css = pygments_css()
        if check:
            if not CSS_PATH.exists() or CSS_PATH.read_text() != css:
                raise CommandError(f"{CSS_PATH} is out of date: run `manage.py pygments_css`.")
            return
        CSS_PATH.write_text(css)
        if options["verbosity"]:
            self.stdout.write(f"Wrote {CSS_PATH} ({len(css):,} bytes).")
