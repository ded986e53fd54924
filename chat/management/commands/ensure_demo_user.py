"""Create (or reset) the demo login printed by the README's first command, with a few orders for
the Order status agent. DEBUG only. (Here, above both accounts and agents_app, which it seeds.)"""

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Create the demo user (demo@example.com) for local development; refuses when DEBUG is off."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Refusing to create a demo user with a known password when DEBUG is off.")
        User = get_user_model()
        user, created = User.objects.get_or_create(username="demo", defaults={"email": DEMO_EMAIL})
        user.email = DEMO_EMAIL
        user.set_password(DEMO_PASSWORD)
        user.save()
        EmailAddress.objects.update_or_create(
            user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True}
        )
        _ensure_demo_orders(user)
        self.stdout.write(self.style.SUCCESS(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}"))


def _ensure_demo_orders(user) -> None:
    """A few orders for the Order status agent to find (ask it about QM-10421)."""
    from datetime import timedelta

    from django.utils import timezone

    from agents_app.models import Order

    today = timezone.localdate()
    demo_orders = [
        ("QM-10421", "shipped", [{"name": "Quillmate Plus, 1 year", "quantity": 1}, {"name": "Notebook stand", "quantity": 1}], "89.90", "DHL", today + timedelta(days=2)),
        ("QM-10388", "delivered", [{"name": "Stylus pen", "quantity": 2}], "39.80", "UPS", today - timedelta(days=5)),
        ("QM-10455", "processing", [{"name": "Quillmate sticker pack", "quantity": 3}], "12.00", "", None),
    ]
    for number, status, items, total, carrier, eta in demo_orders:
        Order.objects.update_or_create(
            number=number,
            defaults={"owner": user, "status": status, "items": items, "total": total, "carrier": carrier, "estimated_delivery": eta},
        )
