"""Knowledge-base search (full-text on PostgreSQL, term matching on SQLite) and the seeded
help centre. Not transactional on purpose: the seed migration's rows are only there until the
first transactional test flushes the tables, and pytest-django runs these first."""

from __future__ import annotations

import pytest

from agents_app.knowledge import search_articles
from agents_app.models import KnowledgeArticle
from agents_app.tests.factories import KnowledgeArticleFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("question", "slug"),
    [
        ("I forgot my password", "reset-your-password"),
        ("refund for my annual subscription", "refunds-and-cancellation"),
        ("notes not syncing on my phone", "sync-troubleshooting"),
        ("how much does the Team plan cost", "plans-and-pricing"),
        ("lost phone with authenticator codes", "two-factor-authentication"),
    ],
)
def test_seeded_help_centre_answers_common_questions(question, slug):
    assert KnowledgeArticle.objects.published().count() >= 6
    assert search_articles(question)[0].article.slug == slug


def test_search_ranks_title_matches_first_and_skips_unpublished():
    KnowledgeArticle.objects.all().delete()
    KnowledgeArticleFactory(title="Billing overview", body="Invoices are emailed monthly. Refund rules apply.")
    KnowledgeArticleFactory(title="Refund policy", body="Refunds within 14 days.")
    KnowledgeArticleFactory(title="Refund secrets", body="Internal refund notes.", is_published=False)

    hits = search_articles("refund")

    assert [hit.article.title for hit in hits] == ["Refund policy", "Billing overview"]


def test_any_word_of_the_query_may_match():
    KnowledgeArticle.objects.all().delete()
    KnowledgeArticleFactory(title="Export your notes", body="Download a ZIP of Markdown files.")

    assert [hit.article.title for hit in search_articles("export everything to pdf please")] == ["Export your notes"]


def test_queries_without_searchable_words_find_nothing():
    assert search_articles("the of and") == []
    assert search_articles("'; -- !!") == []
