from django.contrib import admin
from django.urls import include, path

from config.metrics import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("tickets/", include("agents_app.urls")),
    path("api-tokens/", include("accounts.urls")),
    path("api/", include("chat.api_urls")),
    path("usage/", include("usage.urls")),
    path("", include("chat.urls")),
]
