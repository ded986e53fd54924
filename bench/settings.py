"""Settings for benchmark runs: exactly the app's settings, plus the counters of
`bench.instrument` (database statements and Redis commands of this process, dumped on
SIGUSR1). Used by bench/load.py as `DJANGO_SETTINGS_MODULE=bench.settings`; nothing else
changes, so the figures are the app's own."""

from bench import instrument
from config.settings import *  # noqa: F401,F403

instrument.install()
