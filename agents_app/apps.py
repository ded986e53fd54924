from django.apps import AppConfig


class AgentsAppConfig(AppConfig):
    name = "agents_app"
    verbose_name = "Agents"

    def ready(self) -> None:
        from agents_app import providers, tracing

        providers.catalogue()  # a malformed AGENTS_MODELS stops the start, with the entry named
        tracing.configure()
