import datetime
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from agents_app.models import KnowledgeArticle, Order, Ticket
from chat.tests.factories import UserFactory


class KnowledgeArticleFactory(DjangoModelFactory[KnowledgeArticle]):
    class Meta:
        model = KnowledgeArticle

    title = factory.Sequence(lambda n: f"Help article {n}")
    slug = factory.Sequence(lambda n: f"help-article-{n}")
    body = "Some help text."
    tags = ""


class TicketFactory(DjangoModelFactory[Ticket]):
    class Meta:
        model = Ticket

    owner = factory.SubFactory(UserFactory)
    subject = factory.Sequence(lambda n: f"Problem {n}")
    description = "Something does not work."


class OrderFactory(DjangoModelFactory[Order]):
    class Meta:
        model = Order

    owner = factory.SubFactory(UserFactory)
    number = factory.Sequence(lambda n: f"QM-{20000 + n}")
    status = Order.Status.SHIPPED
    items = factory.LazyFunction(lambda: [{"name": "Notebook stand", "quantity": 1}])
    total = Decimal("49.90")
    carrier = "DHL"
    estimated_delivery = factory.LazyFunction(lambda: datetime.date(2026, 12, 3))
