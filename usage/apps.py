from django.apps import AppConfig


class UsageConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "usage"
    verbose_name = "Usage and cost"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from usage.models import ModelPrice
        from usage.pricing import forget_prices

        # A price changed here applies at once in this process (others: within PRICE_CACHE_SECONDS).
        for signal in (post_save, post_delete):
            signal.connect(lambda **kwargs: forget_prices(), sender=ModelPrice, weak=False, dispatch_uid=f"prices-{signal}")
