"""Knowledge-base search (a selector), shared by the support and research agents.

PostgreSQL: full-text search, title weighted above tags above body, ranked. SQLite (the
zero-configuration dev box): a term-matching fallback with the same weights. Both treat the
query's words as alternatives, because the model writes queries like "refund annual plan
cancel" where an AND of every word would find nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import connection

from agents_app.models import KnowledgeArticle

_WORD = re.compile(r"[\w']+", re.UNICODE)
# Only needed by the fallback: PostgreSQL's `english` configuration drops stop words itself.
_STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from", "how", "i", "if", "in", "is", "it", "its", "me", "my", "not", "of", "on", "or", "our", "so", "that", "the", "their", "there", "this", "to", "us", "was", "we", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your"]
)


@dataclass(frozen=True)
class SearchHit:
    article: KnowledgeArticle
    score: float

    def excerpt(self, chars: int = 600) -> str:
        body = " ".join(self.article.body.split())
        return body if len(body) <= chars else body[:chars].rsplit(" ", 1)[0] + "…"


def _terms(query: str) -> list[str]:
    words = [w.strip("'").lower() for w in _WORD.findall(query)]
    return [w for w in dict.fromkeys(words) if len(w) > 1 and w not in _STOP_WORDS]


def search_articles(query: str, *, limit: int = 3) -> list[SearchHit]:
    """Published articles matching `query`, best first."""
    terms = _terms(query)
    if not terms:
        return []
    if connection.vendor == "postgresql":
        return _search_postgres(terms, limit)
    return _search_terms(terms, limit)


def _search_postgres(terms: list[str], limit: int) -> list[SearchHit]:
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    vector = (
        SearchVector("title", weight="A", config="english")
        + SearchVector("tags", weight="B", config="english")
        + SearchVector("body", weight="C", config="english")
    )
    # websearch syntax with "or" between the (already sanitised) words: any word may match.
    search = SearchQuery(" or ".join(terms), search_type="websearch", config="english")
    articles = (
        KnowledgeArticle.objects.published()
        .annotate(rank=SearchRank(vector, search))
        .filter(rank__gt=0)
        .order_by("-rank", "title")[:limit]
    )
    return [SearchHit(article, float(article.rank)) for article in articles]


def _search_terms(terms: list[str], limit: int) -> list[SearchHit]:
    hits = []
    for article in KnowledgeArticle.objects.published():
        title, tags, body = article.title.lower(), article.tags.lower(), article.body.lower()
        score = sum(3 * (term in title) + 2 * (term in tags) + min(body.count(term), 3) for term in terms)
        if score:
            hits.append(SearchHit(article, float(score)))
    hits.sort(key=lambda hit: (-hit.score, hit.article.title))
    return hits[:limit]
